"""Licence types (证照类型): one JSON file per type in `schemas/licence_types/`.

Each file holds the type code, names, the holder ID type, the defining authority, which
face-data field is printed as the licence number (证照编号), a JSON Schema (draft
2020-12) for the face data (照面信息), and a complete example issuance request.

Face data is checked with validators compiled once per type. Bulk issuance checks every
licence, so valid data takes the fast path: jsonschema-rs (a compiled validator, about 6 µs
per licence against about 60 µs for the pure-Python one). Only data it rejects goes through
the `jsonschema` validator, which explains the problem with the field path. Both read
``pattern`` as ECMA-262 (JSON Schema 2020-12 Validation §6.3.3), not as Python's ``re``,
where ``$`` also matches before a final line break; should they still disagree, the data is
refused: accepted face data satisfies both.

Face data goes into the signed token, which anyone scanning the QR code can read, so
it must not carry citizen ID numbers: the holder's number travels in `holder`, which
the vault masks in the token and encrypts at rest (DESIGN §5.10).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from schemas._json import loads_strict
from schemas.errors import FaceDataInvalid, InvalidInput, InvalidUSCC, UnknownLicenceType
from schemas.identifiers import validate_type_code
from schemas.uscc import is_valid_uscc, validate_uscc

__all__ = ["LicenceType", "LicenceTypeRegistry", "load_licence_types"]

_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_FILE_KEYS = (
    "code",
    "name",
    "name_en",
    "holder_id_type",
    "defining_authority",
    "licence_number_field",
    "schema",
    "example",
)
_HOLDER_ID_TYPES = ("001", "111")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FORMAT_LABELS = {"date": "date (YYYY-MM-DD)", "uscc": "USCC"}
# On failure, look at no more than this many errors to choose the one to report.
_MAX_ERRORS_CONSIDERED = 50


def _check_uscc_format(instance: object) -> bool:
    if isinstance(instance, str):
        validate_uscc(instance)
    return True


@functools.cache
def _format_checker() -> FormatChecker:
    # The standard formats (date, …) plus "uscc", whose failures carry our own message.
    checker = FormatChecker()
    checker.checks("uscc", raises=InvalidUSCC)(_check_uscc_format)
    return checker


@functools.cache
def _ecma_pattern(pattern: str) -> Any:
    return jsonschema_rs.validator_for({"pattern": pattern})


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # JSON Schema's pattern is an ECMA-262 regular expression; Python's re lets "^[0-9]+$" match
    # "123\n" and "\d" match any Unicode digit. jsonschema-rs implements ECMA-262: use it here too.
    if validator.is_type(instance, "string") and not _ecma_pattern(pattern).is_valid(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_ExplainingValidator: Any = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern}
)


@dataclass(frozen=True)
class LicenceType:
    """One licence type; `schema` and `example` are read-only by convention (do not mutate)."""

    code: str
    name: str
    name_en: str
    holder_id_type: str
    defining_authority: str
    licence_number_field: str | None
    schema: Mapping[str, Any] = field(compare=False, repr=False)
    example: Mapping[str, Any] = field(compare=False, repr=False)
    _validator: Draft202012Validator = field(init=False, compare=False, repr=False)
    _fast: Any = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        validator = _ExplainingValidator(self.schema, format_checker=_format_checker())
        object.__setattr__(self, "_validator", validator)
        fast = jsonschema_rs.validator_for(
            dict(self.schema), formats={"uscc": is_valid_uscc}, validate_formats=True
        )
        object.__setattr__(self, "_fast", fast)

    def validate_data(self, data: Any) -> None:
        """Check face data against the type's schema; raise FaceDataInvalid naming the field."""
        if self._fast.is_valid(data):
            return
        errors = self._validator.iter_errors(data)
        first = next(errors, None)
        if first is None:  # the validators disagree: refuse rather than guess which is right
            raise FaceDataInvalid(
                f"data: does not match the schema of licence type {self.code}", field="data", keyword="schema"
            )
        considered = itertools.chain([first], itertools.islice(errors, _MAX_ERRORS_CONSIDERED - 1))
        error = best_match(considered) or first
        path, message = _describe(error)
        raise FaceDataInvalid(f"{path}: {message}", field=path, keyword=str(error.validator))


class LicenceTypeRegistry:
    """The licence types known to this deployment, by type code."""

    def __init__(self, types: Iterable[LicenceType]) -> None:
        self._types = {
            licence_type.code: licence_type for licence_type in sorted(types, key=lambda t: t.code)
        }

    def get(self, code: str) -> LicenceType:
        licence_type = self._types.get(code)
        if licence_type is not None:
            return licence_type
        known = [f"{t.code} ({t.name})" for t in self._types.values()]
        listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise UnknownLicenceType(
            f"unknown licence type {_show(code)}; known types: {listed or 'none'}", code=str(code)[:40]
        )

    def all(self) -> list[LicenceType]:
        return list(self._types.values())

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._types

    def __iter__(self) -> Iterator[LicenceType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)


def load_licence_types(directory: Path | None = None) -> LicenceTypeRegistry:
    """Load and check every `*.json` licence type file; the packaged set by default (cached).

    Raises InvalidInput naming the file for anything wrong: bad JSON, a bad type code,
    an invalid or too permissive schema, or an example request that does not validate.
    """
    if directory is None:
        return _packaged_registry()
    if not directory.is_dir():
        raise InvalidInput(f"licence type directory {directory} does not exist or is not a directory")
    return _load(directory)


@functools.cache
def _packaged_registry() -> LicenceTypeRegistry:
    return _load(resources.files("schemas") / "licence_types")


def _load(directory: Traversable) -> LicenceTypeRegistry:
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    if not files:
        raise InvalidInput(f"no licence type files (*.json) in {directory}")
    types: dict[str, tuple[str, LicenceType]] = {}
    for file in files:
        licence_type = _load_file(file)
        if licence_type.code in types:
            other = types[licence_type.code][0]
            raise InvalidInput(
                f"licence type file {file.name}: type code {licence_type.code} is also in {other}"
            )
        types[licence_type.code] = (file.name, licence_type)
    return LicenceTypeRegistry(t for _, t in types.values())


def _load_file(file: Traversable) -> LicenceType:
    def fail(problem: str) -> InvalidInput:
        return InvalidInput(f"licence type file {file.name}: {problem}", file=file.name)

    try:
        raw = loads_strict(file.read_bytes())
    except InvalidInput as exc:
        raise fail(exc.message) from None
    if not isinstance(raw, dict):
        raise fail("expected a JSON object")
    missing = [key for key in _FILE_KEYS if key not in raw]
    unknown = sorted(set(raw) - set(_FILE_KEYS))
    if missing or unknown:
        raise fail(f"missing keys {missing}, unknown keys {unknown}; expected exactly {list(_FILE_KEYS)}")
    for key in ("name", "name_en", "defining_authority"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise fail(f"{key} must be a non-empty string")
    if raw["holder_id_type"] not in _HOLDER_ID_TYPES:
        raise fail(
            f"holder_id_type must be '001' (USCC) or '111' (citizen ID), found {_show(raw['holder_id_type'])}"
        )
    try:
        code = validate_type_code(raw["code"])
    except InvalidInput as exc:
        raise fail(f"code: {exc.message}") from None
    schema = raw["schema"]
    if not isinstance(schema, dict):
        raise fail("schema must be a JSON object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise fail(f"schema is not a valid JSON Schema at {where}: {_one_line(exc.message)}") from None
    problem = _house_rule_problem(schema, raw["licence_number_field"])
    if problem:
        raise fail(f"schema: {problem}")
    licence_type = LicenceType(
        code=code,
        name=raw["name"],
        name_en=raw["name_en"],
        holder_id_type=raw["holder_id_type"],
        defining_authority=raw["defining_authority"],
        licence_number_field=raw["licence_number_field"],
        schema=schema,
        example=raw["example"],
    )
    try:
        _check_example(licence_type)
    except InvalidInput as exc:
        raise fail(f"example: {exc.message}") from None
    return licence_type


def _check_example(licence_type: LicenceType) -> None:
    # Imported here: requests is the pydantic edge, needed only to check examples at load time.
    from schemas.requests import validate_licence_request

    if not isinstance(licence_type.example, dict):
        raise InvalidInput("expected a JSON object")
    request = validate_licence_request(licence_type.example)
    if request.licence_type != licence_type.code:
        raise InvalidInput(f"licence_type is {request.licence_type}, expected {licence_type.code}")
    if request.holder.id_type != licence_type.holder_id_type:
        raise InvalidInput(
            f"holder.id_type is {request.holder.id_type!r}, expected {licence_type.holder_id_type!r}"
        )
    licence_type.validate_data(request.data)


def _house_rule_problem(schema: Mapping[str, Any], licence_number_field: object) -> str | None:
    """House rules beyond JSON Schema validity, so face data stays bounded and explicit:
    additionalProperties false, maxLength on every string, maxItems on every array, a
    title on every field, and the licence number (if any) among the required fields."""
    if schema.get("$schema") != _DRAFT_2020_12:
        return f"$schema must be {_DRAFT_2020_12!r}"
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        return "must be an object schema with properties"
    required = schema.get("required")
    if not isinstance(required, list) or not required:
        return "must list required fields"
    unknown = [name for name in required if name not in schema["properties"]]
    if unknown:
        return f"required fields {unknown} are not in properties"
    if licence_number_field is not None and licence_number_field not in required:
        return f"licence_number_field {_show(licence_number_field)} must be null or a required field"
    return _node_problem(schema, "data")


def _node_problem(node: Mapping[str, Any], where: str) -> str | None:
    declared = node.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    if "string" in types and "maxLength" not in node:
        return f"{where}: every string needs maxLength"
    if "array" in types:
        if "maxItems" not in node or not isinstance(node.get("items"), dict):
            return f"{where}: every array needs maxItems and an items schema"
        return _node_problem(node["items"], f"{where}[]")
    if "object" in types:
        if node.get("additionalProperties") is not False:
            return f"{where}: every object needs additionalProperties: false"
        for name, sub in node.get("properties", {}).items():
            if not isinstance(sub, dict) or not sub.get("title"):
                return f"{where}.{name}: every field needs a (Chinese) title"
            problem = _node_problem(sub, f"{where}.{name}")
            if problem:
                return problem
    return None


# --- messages -------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _show(value: object) -> str:
    """A short, one-line rendering of a user-supplied value."""
    if isinstance(value, str) and len(value) > 40:
        head = repr(value[:20])
        return f"{head[:-1]}…{head[-1]} ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: object) -> str:
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, python_type):
            return name
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _path(parts: Iterable[object]) -> str:
    text = "data"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.match(part):
            text += f".{part}"
        else:
            text += f"[{_show(part)}]"
    return text


def _describe(error: ValidationError) -> tuple[str, str]:
    """(JSON path, problem) for one jsonschema error, without dumping large values."""
    path = _path(error.absolute_path)
    keyword, instance = error.validator, error.instance
    expected: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = _show(instance)
    if keyword == "required" and isinstance(instance, dict):
        missing = next((name for name in expected if name not in instance), "?")
        return _path([*error.absolute_path, missing]), "required field is missing"
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        extra = next((name for name in instance if name not in allowed), "?")
        return _path([*error.absolute_path, extra]), f"unknown field; allowed fields are {', '.join(allowed)}"
    if keyword == "type":
        wanted = " or ".join([expected] if isinstance(expected, str) else expected)
        return path, f"expected {wanted}, found {_json_type(instance)}"
    if keyword == "maxLength":
        return path, f"{value} is too long (at most {expected} characters)"
    if keyword == "minLength":
        if expected == 1:
            return path, "must not be empty"
        return path, f"{value} is too short (at least {expected} characters)"
    if keyword == "enum":
        options = ", ".join(repr(option) for option in expected[:10]) + (", …" if len(expected) > 10 else "")
        return path, f"{value} is not one of {options}"
    if keyword == "format":
        reason = f" ({error.cause})" if isinstance(error.cause, InvalidInput) else ""
        label = _FORMAT_LABELS.get(expected, expected)
        return path, f"{value} is not a valid {label}{reason}"
    if keyword == "pattern":
        return path, f"{value} does not match the pattern {expected}"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {
            "minimum": "at least",
            "exclusiveMinimum": "more than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[keyword]
        return path, f"{value} is out of range (must be {relation} {expected})"
    if keyword in ("minItems", "maxItems") and isinstance(instance, list):
        bound = "at least" if keyword == "minItems" else "at most"
        return path, f"has {len(instance)} items, expected {bound} {expected}"
    if keyword == "uniqueItems":
        return path, "items must not repeat"
    return path, _one_line(error.message)
