"""Pydantic edge models: what the HTTP API and the CLI accept (DESIGN §5.3).

`parse_licence_request` is the one way in for an issuance request from outside:
size check first, strict JSON, then the model; every failure is an InvalidInput
(or InputTooLarge) with a one-line message naming the field, e.g.
"holder.id: check character is '3', expected 'X'".

Input values are hidden from pydantic's own error text (`hide_input_in_errors`), so a
full citizen ID number never reaches a log through a ValidationError (DESIGN §5.10).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas._json import loads_strict
from schemas.citizen_id import validate_citizen_id
from schemas.errors import InputTooLarge, InvalidInput, YinxinError
from schemas.identifiers import validate_type_code
from schemas.uscc import validate_uscc

__all__ = [
    "USCC",
    "DepartmentCreate",
    "HolderIn",
    "LicenceCreate",
    "parse_licence_request",
    "validate_licence_request",
]

DEFAULT_MAX_REQUEST_BYTES = 65_536
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def _as_pydantic(exc: YinxinError) -> PydanticCustomError:
    # Validators must raise ValueError-like errors for pydantic to collect them; this keeps
    # our message verbatim (a plain ValueError would be prefixed "Value error, ").
    return PydanticCustomError(exc.code, "{reason}", {"reason": exc.message})


def _ours(validate: Callable[[str], str]) -> Callable[[str], str]:
    def validator(value: str) -> str:
        try:
            return validate(value)
        except YinxinError as exc:
            raise _as_pydantic(exc) from None

    return validator


def _iso_date(value: object) -> object:
    # Dates cross the edge as "YYYY-MM-DD" only; pydantic alone would also take timestamps.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise PydanticCustomError("date_format", "expected a date as YYYY-MM-DD")
    if isinstance(value, int | float):
        raise PydanticCustomError("date_format", "expected a date as YYYY-MM-DD")
    return value


USCC = Annotated[str, AfterValidator(_ours(validate_uscc))]
"""A unified social credit code (GB 32100-2015), normalised to upper case."""

TypeCode = Annotated[str, AfterValidator(_ours(validate_type_code))]
ISODate = Annotated[date, BeforeValidator(_iso_date)]
Name = Annotated[str, Field(min_length=1, max_length=200)]

_EDGE = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True, hide_input_in_errors=True)


class HolderIn(BaseModel):
    """The holder (持证主体): name, ID type ('001' USCC, '111' citizen ID) and ID."""

    model_config = _EDGE

    name: Name
    id_type: Literal["001", "111"]
    id: Annotated[str, Field(min_length=1, max_length=64)]

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str, info: ValidationInfo) -> str:
        # A field validator rather than a model validator, so errors point at holder.id.
        id_type = info.data.get("id_type")
        try:
            if id_type == "001":
                return validate_uscc(value)
            if id_type == "111":
                return validate_citizen_id(value)
        except YinxinError as exc:
            raise _as_pydantic(exc) from None
        return value  # id_type itself is invalid and already reported


class LicenceCreate(BaseModel):
    """An issuance request; `data` is checked against the licence type's schema separately."""

    model_config = _EDGE

    licence_type: TypeCode
    issuer: USCC
    holder: HolderIn
    data: dict[str, Any]
    valid_from: ISODate
    valid_until: ISODate | None = None

    @field_validator("data")
    @classmethod
    def _data_is_text(cls, value: dict[str, Any]) -> dict[str, Any]:
        # JSON's "\ud800" escape gives Python a lone surrogate, which is not text (RFC 7493 §2.1):
        # typed fields refuse it, but face data is Any, and jsonschema-rs, orjson and the database
        # would each fail on it later with an exception of their own.
        where = _unpaired_surrogate(value)
        if where is not None:
            raise PydanticCustomError(
                "string_unicode",
                "{where} holds an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape), which is not text",
                {"where": where.lstrip(".") or "a member name"},
            )
        return value

    @field_validator("valid_until")
    @classmethod
    def _not_before_valid_from(cls, value: date | None, info: ValidationInfo) -> date | None:
        valid_from = info.data.get("valid_from")
        if value is not None and valid_from is not None and value < valid_from:
            raise PydanticCustomError(
                "date_order",
                "{until} is before valid_from {start}",
                {"until": value.isoformat(), "start": valid_from.isoformat()},
            )
        return value


class DepartmentCreate(BaseModel):
    """A department (issuer or verifier) to register."""

    model_config = _EDGE

    code: USCC
    name: Name


def _unpaired_surrogate(value: Any) -> str | None:
    """The path ("names[0]") to the first key or string holding an unpaired surrogate, or None."""
    try:
        # Fast path for the common case (0.3 against 5.9 µs for the walk below): orjson refuses to encode
        # any str (key or value) that is not valid UTF-8. It also refuses non-str keys,
        # integers beyond 64 bits and deep nesting; the walk sorts those out.
        orjson.dumps(value)
    except TypeError:
        pass
    else:
        return None

    def is_text(text: str) -> bool:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    pending: list[tuple[str, Any]] = [("", value)]
    while pending:  # iterative: nesting depth costs no stack
        path, item = pending.pop()
        if isinstance(item, str) and not is_text(item):
            return path
        if isinstance(item, dict):
            for key, member in item.items():
                if not isinstance(key, str) or not is_text(key):
                    return path
                name = f".{key}" if key.isascii() and key.isidentifier() else f"[{key[:40]!r}]"
                pending.append((path + name, member))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", member) for index, member in enumerate(item))
    return None


def _field_path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def validate_licence_request(obj: Mapping[str, Any]) -> LicenceCreate:
    """Validate an already-parsed request; raise InvalidInput naming the first bad field."""
    if not isinstance(obj, Mapping):
        raise InvalidInput("request must be a JSON object")
    try:
        return LicenceCreate.model_validate(dict(obj))
    except ValidationError as exc:
        errors = [
            {"field": _field_path(error["loc"]), "message": _one_line(error["msg"])}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInput(f"{first['field']}: {first['message']}{more}", errors=errors[:20]) from None


def parse_licence_request(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> LicenceCreate:
    """Parse an issuance request body: size check, strict JSON, then LicenceCreate."""
    # Size first, before any parsing work. A str of more than max_bytes characters is more
    # than max_bytes bytes in UTF-8, so only strings of plausible length are encoded to count.
    if isinstance(raw, str) and len(raw) > max_bytes:
        raise InputTooLarge(
            f"request is at least {len(raw)} bytes, more than the limit of {max_bytes} bytes", limit=max_bytes
        )
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InputTooLarge(
            f"request is {size} bytes, more than the limit of {max_bytes} bytes", limit=max_bytes
        )
    try:
        obj = loads_strict(raw)
    except InvalidInput as exc:
        raise InvalidInput(f"request is {exc.message}") from None
    if not isinstance(obj, dict):
        raise InvalidInput(f"request must be a JSON object, found {_JSON_TYPES.get(type(obj), 'a value')}")
    return validate_licence_request(obj)
