"""Fuzz the issuance request intake: ``schemas.parse_licence_request`` and face-data validation.

Two ways a request comes in, both fed raw JSON bytes:

- the CLI and ``yinxin issue-bulk`` lines: ``parse_licence_request(raw)`` (size, strict JSON,
  ``LicenceCreate``); only ``InvalidInput`` (and its ``InputTooLarge``) may come out;
- ``POST /v1/licences``: FastAPI's ``json.loads`` then ``LicenceCreate`` validation; only a
  pydantic ``ValidationError`` (the 422 FastAPI writes) may come out.

Whatever parses goes on as the vault takes it (``vault._issuance.check_request``): the
licence type from the registry (``UnknownLicenceType``), then
``LicenceType.validate_data(data)`` (``FaceDataInvalid``).

Modes (first input byte): 0 raw bytes; 1 a licence type's example request with fields
changed, removed or added (structured, from ``FuzzedDataProvider``); 2 the same as ``str``,
lone surrogates included.

Crashes: an undocumented exception; face data accepted that the type's JSON Schema forbids,
as judged by both jsonschema-rs (ECMA-262 regular expressions, as JSON Schema specifies) and
the ``jsonschema`` package; a request the CLI accepts and the API refuses (or reads
differently); an error message that repeats the holder's full ID number (DESIGN §5.10) or
spans several lines.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["schemas", "jsonschema"]):
    from pydantic import ValidationError

    from schemas import LicenceCreate, load_licence_types, parse_licence_request
    from schemas.errors import FaceDataInvalid, InvalidInput, UnknownLicenceType

# Everything below is imported after the instrumented block (see _common's docstring).
import _common
import jsonschema_rs
from _common import finding
from jsonschema import Draft202012Validator

MODES = 3
REGISTRY = load_licence_types()
TYPES = REGISTRY.all()
EXAMPLES = [copy.deepcopy(dict(t.example)) for t in TYPES]
# Independent judges of face data, built from the schema files alone.
ECMA_JUDGES = {t.code: jsonschema_rs.validator_for(dict(t.schema), validate_formats=False) for t in TYPES}
PY_JUDGES = {t.code: Draft202012Validator(dict(t.schema)) for t in TYPES}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree (container members and items), for picking one to change."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _text_like(fdp: atheris.FuzzedDataProvider, current: str) -> str:
    """A string near *current*: edited, padded with whitespace or line breaks, or digits swapped."""
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        return _common.mutate_text(fdp, current, "0123456789X-\n\t 　年月日〔〕")
    if choice == 1:
        pad = str(fdp.PickValueInList([" ", "\n", "\t", "\u3000", "\u200b", "\r\n", "\x00", "\ufeff"]))
        return current + pad if fdp.ConsumeBool() else pad + current
    if choice == 2:
        # Unicode digits (Arabic-Indic, fullwidth) that a \\d or [0-9] may or may not take.
        table = str.maketrans("0123456789", fdp.PickValueInList(["٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９"]))
        return current.translate(table)
    if choice == 3:
        return current * int(fdp.ConsumeIntInRange(2, 40))
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)))


def structured_request(fdp: atheris.FuzzedDataProvider) -> Any:
    request: Any = copy.deepcopy(fdp.PickValueInList(EXAMPLES))
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        paths = _paths(request)
        path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
        if not path:
            if fdp.ConsumeIntInRange(0, 15) == 0:
                request = _common.json_value(fdp)
            continue
        parent = request
        for part in path[:-1]:
            parent = parent[part]
        key, current = path[-1], parent[path[-1]]
        op = fdp.ConsumeIntInRange(0, 5)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(parent, dict):
            parent[fdp.PickValueInList(["extra", "", "data", "holder", "valid_until", key + " "])] = current
        elif op in (2, 3) and isinstance(current, str):
            parent[key] = _text_like(fdp, current)
        elif op == 4 and isinstance(current, int | float) and not isinstance(current, bool):
            parent[key] = fdp.PickValueInList([-1, 0, 2**31, 2**63, 2**64, 10**400, 1e308, -0.0, 0.5, True])
        else:
            parent[key] = _common.json_value(fdp)
    return request


def _holder_id(obj: Any) -> str | None:
    holder = obj.get("holder") if isinstance(obj, dict) else None
    value = holder.get("id") if isinstance(holder, dict) else None
    return value.strip() if isinstance(value, str) and len(value.strip()) >= 15 else None


def check_message(call: str, raw: bytes | str, obj: Any, error: BaseException) -> None:
    if isinstance(error, ValidationError):
        # The API's problem+json shows each error's "msg" (verify_api/problems.py).
        lines = [str(e["msg"]) for e in error.errors(include_url=False, include_input=False)]
        shown = str(error) + repr(lines)
    else:
        lines = [str(error)]
        shown = str(error) + repr(getattr(error, "details", ""))
    for line in lines:
        if "\n" in line or len(line) > 2000:
            finding(call, raw, f"error message is not one bounded line: {line!r:.300}")
    secret = _holder_id(obj)
    if secret is not None and secret in shown:
        finding(call, raw, "an error message repeats the holder's full ID number (DESIGN §5.10)")


def check_face_data(call: str, raw: bytes | str, request: LicenceCreate) -> None:
    """As the vault does: known type, then face data; accepted data must satisfy the schema."""
    try:
        licence_type = REGISTRY.get(request.licence_type)
    except UnknownLicenceType:
        return
    except Exception:
        _common._show_input(call, raw)
        raise
    data = request.data
    try:
        licence_type.validate_data(data)
    except FaceDataInvalid as exc:
        check_message(call, raw, None, exc)
        return
    except Exception:
        _common._show_input(call, raw)
        raise
    ecma_ok = ECMA_JUDGES[licence_type.code].is_valid(data)
    py_ok = PY_JUDGES[licence_type.code].is_valid(data)
    if not (ecma_ok and py_ok):
        judge = "jsonschema-rs (ECMA-262 patterns)" if not ecma_ok else "jsonschema"
        finding(call, raw, f"face data accepted that the {licence_type.code} schema forbids ({judge})")


def run_intake(raw: bytes | str) -> None:
    # The CLI / issue-bulk path.
    cli: LicenceCreate | None = None
    try:
        cli = parse_licence_request(raw)
    except InvalidInput as exc:
        check_message("parse_licence_request", raw, _loose(raw), exc)
    except Exception:
        _common._show_input("parse_licence_request", raw)
        raise
    if cli is not None:
        check_face_data("parse_licence_request", raw, cli)

    # The HTTP path: FastAPI parses with json.loads, then validates the model (422 on failure).
    obj = _loose(raw)
    if obj is _UNREADABLE:
        return
    api: LicenceCreate | None = None
    try:
        api = LicenceCreate.model_validate(obj)
    except ValidationError as exc:
        check_message("LicenceCreate.model_validate", raw, obj, exc)
    except Exception:
        _common._show_input("LicenceCreate.model_validate", raw)
        raise
    if cli is not None and api != cli:
        finding("LicenceCreate.model_validate", raw, "the API reads a request differently from the CLI")
    if api is not None and cli is None:
        check_face_data("LicenceCreate.model_validate", raw, api)


_UNREADABLE = object()


def _loose(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _UNREADABLE


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % MODES, data[1:]
    if mode == 0:
        run_intake(body)
        return
    fdp = atheris.FuzzedDataProvider(body)
    request = structured_request(fdp)
    ensure_ascii = fdp.ConsumeBool()
    try:
        text = json.dumps(request, ensure_ascii=ensure_ascii)
    except (TypeError, ValueError):
        return
    if mode == 1:
        run_intake(text.encode("utf-8", "surrogatepass"))
    else:
        run_intake(text)


def seeds() -> list[bytes]:
    out = [bytes([0]) + json.dumps(example, ensure_ascii=False).encode() for example in EXAMPLES]
    for mode in (1, 2):
        out += [bytes([mode]) + bytes([i]) * 32 for i in range(8)]
    out += [bytes([0]) + b"{}", bytes([0]) + b"[" * 64, bytes([0]) + b'{"a":1,"a":2}']
    return out


if __name__ == "__main__":
    _common.main("issuance", test_one_input, seeds)
    sys.exit(0)
