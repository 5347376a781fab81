"""Strict JSON parsing for untrusted input (requests, licence type files).

Stricter than `json.loads` where RFC 8259 leaves room for disagreement between
parsers, because what we parse is later signed and verified by others:

- duplicate member names are rejected (RFC 8259 §4 says names SHOULD be unique;
  I-JSON, RFC 7493 §2.3, says MUST), so no two readers see different values;
- NaN and Infinity are rejected (not JSON, RFC 8259 §6);
- text must be UTF-8 (RFC 8259 §8.1).

Every failure is an InvalidInput with a one-line message.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from schemas.errors import InvalidInput

__all__ = ["loads_strict"]


class _Reject(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Reject(f"duplicate member name {key[:40]!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> NoReturn:
    raise _Reject(f"{name} is not a JSON number")


# One decoder for every call: json.loads with hooks builds a new JSONDecoder each time (a
# tenth of the cost of parsing a bulk line). JSONDecoder keeps no state between calls.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON text; raise InvalidInput("not valid JSON: line L column C: msg") on failure."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"not valid UTF-8: byte {exc.start + 1} cannot be decoded") from None
    else:
        text = raw
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _Reject as exc:
        raise InvalidInput(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("not valid JSON: nested too deeply") from None
    except ValueError as exc:
        # e.g. an integer with more digits than int() accepts (sys.int_info.default_max_str_digits).
        raise InvalidInput(f"not valid JSON: {' '.join(str(exc).split())[:200]}") from None
