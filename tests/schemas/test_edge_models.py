"""Pydantic edge models and `parse_licence_request`."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    DepartmentCreate,
    HolderIn,
    LicenceCreate,
    load_licence_types,
    parse_licence_request,
    validate_licence_request,
)
from schemas.errors import InputTooLarge, InvalidInput

BIRTH = "11100000000013202H003"
BUSINESS = "11100000000013101Q001"
CITIZEN_ID = "11010519491231002X"


def _request(code: str = BIRTH, **changes: Any) -> dict[str, Any]:
    request = json.loads(json.dumps(load_licence_types().get(code).example))
    request.update(changes)
    assert isinstance(request, dict)
    return request


def _body(request: dict[str, Any]) -> bytes:
    return json.dumps(request, ensure_ascii=False).encode("utf-8")


def _parse_error(raw: bytes | str, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_licence_request(raw, **kwargs)
    assert "\n" not in caught.value.message
    return caught.value


# --- models ---------------------------------------------------------------------------------


def test_holder_ids_are_validated_and_normalised() -> None:
    assert HolderIn(name=" 张三 ", id_type="111", id=CITIZEN_ID.lower()).id == CITIZEN_ID
    holder = HolderIn(name="某店", id_type="001", id=" 91350100m000100y43 ")
    assert (holder.name, holder.id) == ("某店", "91350100M000100Y43")


def test_holder_id_errors_carry_our_message_at_holder_id() -> None:
    with pytest.raises(ValidationError) as caught:
        HolderIn(name="张三", id_type="111", id="110105194912310023")
    [error] = caught.value.errors()
    assert error["loc"] == ("id",)
    assert error["msg"] == "check character is '3', expected 'X'"
    assert error["type"] == "invalid_citizen_id"


def test_validation_errors_do_not_show_the_full_id_number() -> None:
    with pytest.raises(ValidationError) as caught:
        LicenceCreate.model_validate(
            _request(holder={"name": "张三", "id_type": "111", "id": "110105194912310023"})
        )
    assert "110105194912310023" not in str(caught.value)


def test_holder_id_type_must_be_known() -> None:
    with pytest.raises(ValidationError) as caught:
        HolderIn(name="张三", id_type="999", id=CITIZEN_ID)  # type: ignore[arg-type]
    assert [error["loc"] for error in caught.value.errors()] == [("id_type",)]


def test_licence_create_is_frozen_and_strict_about_fields() -> None:
    request = LicenceCreate.model_validate(_request())
    assert request.valid_from == date(2024, 6, 3)
    assert request.valid_until is None
    with pytest.raises(ValidationError):
        request.issuer = "91350100M000100Y43"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LicenceCreate.model_validate(_request(surprise=1))


def test_department_create() -> None:
    department = DepartmentCreate(code="11110101000000123b", name="北京市东城区市场监督管理局")
    assert department.code == "11110101000000123B"
    with pytest.raises(ValidationError, match="check character is 'C', expected 'B'"):
        DepartmentCreate(code="11110101000000123C", name="x")
    with pytest.raises(ValidationError):
        DepartmentCreate(code="11110101000000123B", name="")


# --- parse_licence_request ------------------------------------------------------------------


def test_parses_a_valid_request_from_bytes_and_str() -> None:
    request = _request(BUSINESS)
    parsed = parse_licence_request(_body(request))
    assert parsed.licence_type == BUSINESS
    assert parse_licence_request(_body(request).decode("utf-8")) == parsed


def test_oversize_input_is_rejected_before_parsing() -> None:
    with pytest.raises(InputTooLarge, match="request is 65537 bytes, more than the limit of 65536 bytes"):
        parse_licence_request(b"{" * 65_537)  # not even JSON: size comes first
    with pytest.raises(InputTooLarge, match="request is at least 100 bytes, more than the limit of 99 bytes"):
        parse_licence_request("x" * 100, max_bytes=99)
    # 40 characters, 120 bytes in UTF-8: the limit is on bytes.
    with pytest.raises(InputTooLarge, match="request is 120 bytes, more than the limit of 100 bytes"):
        parse_licence_request("经" * 40, max_bytes=100)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"licence_type": ', "request is not valid JSON: line 1 column 18: Expecting value"),
        (b'{\n  "a": 1,\n}', "request is not valid JSON: line 3 column 1: "),  # wording varies by Python
        (b'{"a": 1, "a": 2}', "request is not valid JSON: duplicate member name 'a'"),
        (b'{"a": NaN}', "request is not valid JSON: NaN is not a JSON number"),
        (b"\xff{}", "request is not valid UTF-8: byte 1 cannot be decoded"),
        (b"[" * 50_000, "request is not valid JSON: nested too deeply"),
        (b"[]", "request must be a JSON object, found an array"),
        (b"null", "request must be a JSON object, found null"),
    ],
)
def test_malformed_json(raw: bytes, message: str) -> None:
    assert _parse_error(raw).message.startswith(message)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"holder": {"name": "陈静", "id_type": "111", "id": "110105194912310023"}},
            "holder.id: check character is '3', expected 'X'",
        ),
        ({"issuer": "11110101000000456R"}, "issuer: check character is 'R', expected 'Q'"),
        ({"licence_type": "11100000000013202H03"}, "licence_type: type code must be 21 characters"),
        ({"valid_until": "2024-06-02"}, "valid_until: 2024-06-02 is before valid_from 2024-06-03"),
        ({"valid_from": "2024/06/03"}, "valid_from: expected a date as YYYY-MM-DD"),
        ({"valid_from": 1717372800}, "valid_from: expected a date as YYYY-MM-DD"),
        ({"valid_from": "2024-02-30"}, "valid_from: Input should be a valid date"),
        ({"data": []}, "data: Input should be a valid dictionary"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, Any], message: str) -> None:
    assert _parse_error(_body(_request(**changes))).message.startswith(message)


def test_missing_field_and_error_count() -> None:
    request = _request()
    del request["issuer"], request["valid_from"]
    error = _parse_error(_body(request))
    assert error.message == "issuer: Field required (and 1 more)"
    assert error.details["errors"] == [
        {"field": "issuer", "message": "Field required"},
        {"field": "valid_from", "message": "Field required"},
    ]


def test_validate_licence_request_takes_a_parsed_object() -> None:
    assert validate_licence_request(_request()).licence_type == BIRTH
    with pytest.raises(InvalidInput) as caught:
        validate_licence_request(_request(holder={"name": " ", "id_type": "111", "id": CITIZEN_ID}))
    assert caught.value.message == "holder.name: String should have at least 1 character"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"name": "\ud800"}, "name"),
        ({"outer": {"\udfff": 1}}, "outer"),
        ({"list": ["ok", {"deep": "x\ud83d"}]}, "list[1].deep"),
        # Data orjson cannot encode for another reason (an integer beyond 64 bits, nesting deeper
        # than it goes) still has its surrogate found by the walk.
        ({"big": 2**70, "text": "\udc00"}, "text"),
        ({"nest": json.loads("[" * 300 + '"\\ud800"' + "]" * 300)}, "nest" + "[0]" * 300),
    ],
)
def test_face_data_with_an_unpaired_surrogate_is_refused_anywhere(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LicenceCreate.model_validate(_request(data=data))
    [error] = caught.value.errors(include_url=False)
    assert error["type"] == "string_unicode"
    assert error["msg"].startswith(f"{where} holds an unpaired UTF-16 surrogate")


@pytest.mark.parametrize(
    "data",
    [
        {"pair": "😀", "name": "张伟"},
        {"big": 2**70, "nest": json.loads("[" * 300 + '"ok"' + "]" * 300)},
    ],
)
def test_face_data_that_is_text_passes_the_surrogate_check(data: dict[str, Any]) -> None:
    assert LicenceCreate.model_validate(_request(data=data)).data == data
