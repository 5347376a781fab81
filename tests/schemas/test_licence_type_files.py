"""Licence types: the packaged JSON files, the loader's checks and face-data validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from schemas import LicenceCreate, LicenceType, is_valid_uscc, load_licence_types
from schemas.errors import FaceDataInvalid, InvalidInput, UnknownLicenceType

BUSINESS = "11100000000013101Q001"
HYGIENE = "11100000000013202H001"
MEDICAL = "11100000000013202H002"
BIRTH = "11100000000013202H003"
PACKAGED = Path(__file__).resolve().parents[2] / "schemas" / "licence_types"


@pytest.fixture(scope="module")
def registry() -> Any:
    return load_licence_types()


def test_the_four_packaged_types(registry: Any) -> None:
    summary = {(t.code, t.name, t.holder_id_type, t.defining_authority) for t in registry.all()}
    assert summary == {
        (BUSINESS, "个体工商户营业执照", "001", "国家市场监督管理总局"),
        (HYGIENE, "公共场所卫生许可证", "001", "国家卫生健康委员会"),
        (MEDICAL, "医疗机构执业许可证", "001", "国家卫生健康委员会"),
        (BIRTH, "生育登记服务单", "111", "国家卫生健康委员会"),
    }
    assert [t.code for t in registry.all()] == sorted(t.code for t in registry.all())


def test_default_registry_is_cached() -> None:
    assert load_licence_types() is load_licence_types()


@pytest.mark.parametrize("code", [BUSINESS, HYGIENE, MEDICAL, BIRTH])
def test_each_example_is_a_valid_issuance_request(registry: Any, code: str) -> None:
    licence_type: LicenceType = registry.get(code)
    request = LicenceCreate.model_validate(licence_type.example)
    assert request.licence_type == code
    assert request.holder.id_type == licence_type.holder_id_type
    assert is_valid_uscc(request.issuer)
    assert is_valid_uscc(code[:18])
    licence_type.validate_data(request.data)
    if licence_type.licence_number_field is not None:
        assert request.data[licence_type.licence_number_field]


def test_face_data_carries_no_citizen_id_numbers(registry: Any) -> None:
    # The token (and so the face data) is readable from the QR code; only `holder.id` may hold
    # a citizen ID number, and the vault masks it there.
    birth_form = registry.get(BIRTH)
    assert not any("id_number" in name for name in birth_form.schema["properties"])
    holder_id = birth_form.example["holder"]["id"]
    assert holder_id not in json.dumps(birth_form.example["data"], ensure_ascii=False)


def test_registry_lookup(registry: Any) -> None:
    assert BIRTH in registry
    assert "11100000000013202H999" not in registry
    assert len(registry) == 4
    with pytest.raises(UnknownLicenceType) as caught:
        registry.get("11100000000013202H999")
    message = caught.value.message
    assert message.startswith("unknown licence type '11100000000013202H999'; known types: ")
    assert f"{BUSINESS} (个体工商户营业执照)" in message


def _data(registry: Any, code: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(dict(registry.get(code).example["data"]))
    data.update(changes)
    return data


def _face_data_error(registry: Any, code: str, data: Any) -> str:
    with pytest.raises(FaceDataInvalid) as caught:
        registry.get(code).validate_data(data)
    assert "\n" not in caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("code", "changes", "message"),
    [
        (
            BUSINESS,
            {"operator_name": "x" * 300},
            "data.operator_name: 'xxxxxxxxxxxxxxxxxxxx…' (300 characters) "
            "is too long (at most 100 characters)",
        ),
        (BUSINESS, {"operator_name": ""}, "data.operator_name: must not be empty"),
        (
            BUSINESS,
            {"composition_form": "公司"},
            "data.composition_form: '公司' is not one of '个人经营', '家庭经营'",
        ),
        (
            BUSINESS,
            {"registration_date": "2024-02-30"},
            "data.registration_date: '2024-02-30' is not a valid date",
        ),
        (
            BUSINESS,
            {"registration_date": "20240201"},
            "data.registration_date: '20240201' is not a valid date",
        ),
        (
            BUSINESS,
            {"uscc": "92110101MA01C8N2PX"},
            "data.uscc: '92110101MA01C8N2PX' is not a valid USCC (check character is 'X', expected 'H')",
        ),
        (
            BUSINESS,
            {"surprise": 1},
            "data.surprise: unknown field; allowed fields are uscc, name, operator_name",
        ),
        (HYGIENE, {"permitted_items": ["住宿场所", "赌场"]}, "data.permitted_items[1]: '赌场' is not one of"),
        (HYGIENE, {"permitted_items": []}, "data.permitted_items: has 0 items, expected at least 1"),
        (HYGIENE, {"floor_area_m2": 0}, "data.floor_area_m2: 0 is out of range (must be more than 0)"),
        (MEDICAL, {"beds": "20"}, "data.beds: expected integer, found string"),
        (MEDICAL, {"beds": True}, "data.beds: expected integer, found boolean"),
        (
            MEDICAL,
            {"clinical_departments": ["内科", "内科"]},
            "data.clinical_departments: items must not repeat",
        ),
        (BIRTH, {"child_order": 0}, "data.child_order: 0 is out of range (must be at least 1)"),
    ],
)
def test_face_data_errors_name_the_path_and_problem(
    registry: Any, code: str, changes: dict[str, Any], message: str
) -> None:
    assert _face_data_error(registry, code, _data(registry, code, **changes)).startswith(message)


def test_missing_required_field_is_named(registry: Any) -> None:
    data = _data(registry, BUSINESS)
    del data["business_scope"]
    assert _face_data_error(registry, BUSINESS, data) == "data.business_scope: required field is missing"


def test_optional_fields_may_be_left_out(registry: Any) -> None:
    data = _data(registry, BUSINESS)
    del data["name"]  # 个体工商户 may trade without a name (字号)
    registry.get(BUSINESS).validate_data(data)


def test_face_data_must_be_an_object(registry: Any) -> None:
    assert _face_data_error(registry, BUSINESS, ["a"]) == "data: expected object, found array"


def test_huge_values_are_not_dumped(registry: Any) -> None:
    message = _face_data_error(registry, BUSINESS, _data(registry, BUSINESS, business_scope="经" * 100_000))
    assert len(message) < 200


# --- the loader -----------------------------------------------------------------------------


def _copy_packaged() -> dict[str, Any]:
    files: dict[str, Any] = {}
    for path in PACKAGED.glob("*.json"):
        files[path.name] = json.loads(path.read_text(encoding="utf-8"))
    return files


def _write(tmp_path: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_loading_a_directory(tmp_path: Path) -> None:
    registry = load_licence_types(_write(tmp_path, _copy_packaged()))
    assert len(registry) == 4
    assert registry is not load_licence_types()


def _load_error(tmp_path: Path, name: str, change: Any) -> str:
    files = _copy_packaged()
    files[name] = change(files[name]) if callable(change) else change
    with pytest.raises(InvalidInput) as caught:
        load_licence_types(_write(tmp_path, files))
    return caught.value.message


def _set(path: str, value: Any) -> Any:
    def change(content: dict[str, Any]) -> dict[str, Any]:
        node = content
        *parents, last = path.split("/")
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return content

    return change


BIRTH_FILE = "birth_registration_service_form.json"
BUSINESS_FILE = "individual_business_licence.json"


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            BIRTH_FILE,
            '{"code": ',
            "licence type file birth_registration_service_form.json: not valid JSON: line 1",
        ),
        (
            BIRTH_FILE,
            _set("code", "11100000000013202X003"),
            "code: type code: check character is 'X', expected",
        ),
        (
            BIRTH_FILE,
            lambda content: _set("example/licence_type", BUSINESS)(_set("code", BUSINESS)(content)),
            f"individual_business_licence.json: type code {BUSINESS} is also in {BIRTH_FILE}",
        ),
        (BIRTH_FILE, _set("holder_id_type", "002"), "holder_id_type must be '001' (USCC) or '111'"),
        (BIRTH_FILE, _set("extra", 1), "unknown keys ['extra']"),
        (
            BIRTH_FILE,
            _set("schema/properties/mother_name/type", "text"),
            "schema is not a valid JSON Schema at",
        ),
        (
            BIRTH_FILE,
            _set("schema/properties/mother_name/maxLength", KeyError),
            "every string needs maxLength",
        ),
        (
            BIRTH_FILE,
            _set("schema/properties/mother_name/title", KeyError),
            "every field needs a (Chinese) title",
        ),
        (BIRTH_FILE, _set("schema/additionalProperties", True), "needs additionalProperties: false"),
        (BIRTH_FILE, _set("schema/$schema", KeyError), "$schema must be"),
        (
            BIRTH_FILE,
            _set("licence_number_field", "nope"),
            "licence_number_field 'nope' must be null or a required",
        ),
        (
            BIRTH_FILE,
            _set("example/holder/id", "110101199203150023"),
            "example: holder.id: check character is",
        ),
        (
            BIRTH_FILE,
            _set("example/holder", {"name": "某公司", "id_type": "001", "id": "91350100M000100Y43"}),
            "example: holder.id_type is '001', expected '111'",
        ),
        (
            BIRTH_FILE,
            _set("example/licence_type", BUSINESS),
            f"example: licence_type is {BUSINESS}, expected",
        ),
        (BIRTH_FILE, _set("example/data/child_order", 0), "example: data.child_order: 0 is out of range"),
        (
            BUSINESS_FILE,
            _set("example/issuer", "11110101000000123C"),
            "example: issuer: check character is 'C'",
        ),
    ],
)
def test_loader_fails_loudly_naming_the_file(tmp_path: Path, name: str, change: Any, message: str) -> None:
    error = _load_error(tmp_path, name, change)
    assert error.startswith("licence type file ")
    assert message in error


def test_loader_needs_an_existing_directory_with_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no licence type files"):
        load_licence_types(tmp_path)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_licence_types(tmp_path / "missing")
