"""Licence identifiers (电子证照标识) per GB/T 36904-2018.

    1.2.156.3005.2.<type code>.<issuer code>.<serial>.<version>.<check>

- type code (证照类型代码): the 18-character USCC of the authority that defines the
  licence type, then 3 digits (21 characters);
- issuer code (颁发机构代码): the issuing department's 18-character USCC;
- serial (流水号): 4-digit year of issue and 7-digit sequence (11 digits);
- version (版本号): 3 digits, 001 on first issue, +1 on each re-issue;
- check (校验位): one character, ISO 7064 MOD 37,36 over type code + issuer code +
  serial + version, without the dots.

MOD 37,36 is an ISO 7064 hybrid system: it detects every single-character
substitution, and every adjacent transposition except one pair of characters per
running value (where the running sums of the two characters are 18 and 19 mod 36,
e.g. '0'/'1' right after a running value of 18). That blind spot is the standard's,
and is asserted in tests/schemas/test_licence_identifier.py.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from schemas.errors import InvalidIdentifier, InvalidUSCC
from schemas.uscc import validate_uscc

__all__ = [
    "ID_PREFIX",
    "MAX_IDENTIFIER_LENGTH",
    "LicenceIdentifier",
    "mod37_36_check_character",
    "validate_type_code",
]

# GB/T 36904-2018: OID arc of electronic licences in the national e-government tree.
ID_PREFIX = "1.2.156.3005.2"
# Well-formed identifiers are 73 characters; anything much longer is not worth parsing.
MAX_IDENTIFIER_LENGTH = 128

# ISO 7064 MOD 37,36: alphanumeric alphabet, '0'..'9' = 0..9 and 'A'..'Z' = 10..35.
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALUES = {character: value for value, character in enumerate(_ALPHABET)}
_M = 36
_DIGITS = frozenset("0123456789")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

_MIN_YEAR, _MAX_YEAR = 1900, 9999
_MAX_SEQUENCE = 9_999_999
_MAX_VERSION = 999


# The varying tail of the checked string: 11-character serial + 3-character version.
_VARYING_TAIL = 14


def _advance(running: int, text: str, first_position: int) -> int:
    # ISO/IEC 7064:2003, hybrid systems: P1 = M; S_j = (P_j + a_j) mod M, with 0 read as M;
    # P_{j+1} = 2·S_j mod (M+1).
    for position, character in enumerate(text, start=first_position):
        value = _VALUES.get(character)
        if value is None:
            raise InvalidIdentifier(
                f"character {position} is {character!r}; MOD 37,36 covers digits and capital letters only",
                position=position,
            )
        running = (((running + value) % _M or _M) * 2) % (_M + 1)
    return running


@functools.lru_cache(maxsize=4096)
def _prefix_state(prefix: str) -> int:
    # Type code + issuer code repeat across a bulk import; their state is computed once.
    return _advance(_M, prefix, 1)


def mod37_36_check_character(text: str) -> str:
    """ISO 7064 MOD 37,36 (hybrid system) check character over upper-case alphanumerics."""
    split = max(len(text) - _VARYING_TAIL, 0)
    running = _prefix_state(text[:split]) if split else _M
    running = _advance(running, text[split:], split + 1)
    # The check a_{n+1} makes (P_{n+1} + a_{n+1}) mod M == 1.
    return _ALPHABET[(_M + 1 - running) % _M]


def _uscc_part(label: str, text: str) -> str:
    try:
        return validate_uscc(text)
    except InvalidUSCC as exc:
        raise InvalidIdentifier(f"{label}: {exc.message}", part=label, **exc.details) from None


def validate_type_code(code: str) -> str:
    """Return the normalised 21-character type code or raise InvalidIdentifier."""
    if not isinstance(code, str):
        raise InvalidIdentifier(f"type code must be a string, found {type(code).__name__}")
    text = code.strip().translate(_ASCII_UPPER)
    if len(text) != 21:
        raise InvalidIdentifier(
            "type code must be 21 characters (the defining authority's 18-character USCC and 3 digits), "
            f"found {len(text)}",
            part="type code",
        )
    if not set(text[18:]) <= _DIGITS:
        raise InvalidIdentifier(
            f"type code characters 19-21 must be digits, found {text[18:]!r}", part="type code"
        )
    return _uscc_part("type code", text[:18]) + text[18:]


@dataclass(frozen=True)
class LicenceIdentifier:
    """A GB/T 36904 licence identifier; `str()` gives its canonical text."""

    type_code: str
    issuer_code: str
    year: int
    sequence: int
    version: int = 1

    def __post_init__(self) -> None:
        # Normalised values replace the given ones, so equal identifiers compare equal.
        object.__setattr__(self, "type_code", validate_type_code(self.type_code))
        object.__setattr__(self, "issuer_code", _uscc_part("issuer code", self.issuer_code))
        for name, value, low, high in (
            ("year", self.year, _MIN_YEAR, _MAX_YEAR),
            ("sequence", self.sequence, 1, _MAX_SEQUENCE),
            ("version", self.version, 1, _MAX_VERSION),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidIdentifier(f"{name} must be an integer from {low} to {high}, found {value!r}")

    @property
    def serial(self) -> str:
        return f"{self.year:04d}{self.sequence:07d}"

    @property
    def version_text(self) -> str:
        return f"{self.version:03d}"

    @property
    def check_character(self) -> str:
        return mod37_36_check_character(self.type_code + self.issuer_code + self.serial + self.version_text)

    def __str__(self) -> str:
        return ".".join(
            (
                ID_PREFIX,
                self.type_code,
                self.issuer_code,
                self.serial,
                self.version_text,
                self.check_character,
            )
        )

    @classmethod
    def format_range(
        cls, type_code: str, issuer_code: str, year: int, first_sequence: int, count: int, version: int = 1
    ) -> list[str]:
        """The identifiers of *count* consecutive serials, as text: bulk issuance's fast path.

        The first and last are built (and so validated) as :class:`LicenceIdentifier`;
        the ones between differ only in the sequence, which is then in range too.
        """
        if count <= 0:
            return []
        first = cls(type_code, issuer_code, year, first_sequence, version)
        cls(type_code, issuer_code, year, first_sequence + count - 1, version)
        head = f"{ID_PREFIX}.{first.type_code}.{first.issuer_code}."
        checked = first.type_code + first.issuer_code
        tail_version = first.version_text
        out = []
        for sequence in range(first_sequence, first_sequence + count):
            serial = f"{year:04d}{sequence:07d}"
            check = mod37_36_check_character(checked + serial + tail_version)
            out.append(f"{head}{serial}.{tail_version}.{check}")
        return out

    def next_version(self) -> LicenceIdentifier:
        """The identifier of the re-issued licence (same serial, version + 1)."""
        if self.version >= _MAX_VERSION:
            raise InvalidIdentifier(
                f"version {self.version_text} is the last; a licence is re-issued at most 998 times"
            )
        return dataclasses.replace(self, version=self.version + 1)

    @classmethod
    def parse(cls, text: str) -> LicenceIdentifier:
        """Parse and check an identifier; raise InvalidIdentifier saying which part is wrong."""
        if not isinstance(text, str):
            raise InvalidIdentifier(f"identifier must be a string, found {type(text).__name__}")
        if len(text) > MAX_IDENTIFIER_LENGTH:
            raise InvalidIdentifier(
                f"identifier is {len(text)} characters, longer than the limit of {MAX_IDENTIFIER_LENGTH}"
            )
        text = text.strip().translate(_ASCII_UPPER)
        if not text.startswith(ID_PREFIX + "."):
            raise InvalidIdentifier(f"identifier must start with '{ID_PREFIX}.' (GB/T 36904)")
        parts = text[len(ID_PREFIX) + 1 :].split(".")
        if len(parts) != 5:
            raise InvalidIdentifier(
                f"identifier must have 5 parts after '{ID_PREFIX}' "
                f"(type code, issuer code, serial, version, check), found {len(parts)}"
            )
        type_code, issuer_code, serial, version, check = parts
        # Left to right, so the message names the first malformed part.
        type_code = validate_type_code(type_code)
        issuer_code = _uscc_part("issuer code", issuer_code)
        if len(serial) != 11 or not set(serial) <= _DIGITS:
            raise InvalidIdentifier(
                f"serial must be 11 digits (4-digit year and 7-digit sequence), found {serial!r}",
                part="serial",
            )
        if len(version) != 3 or not set(version) <= _DIGITS:
            raise InvalidIdentifier(f"version must be 3 digits, found {version!r}", part="version")
        if len(check) != 1 or check not in _VALUES:
            raise InvalidIdentifier(
                f"check must be one digit or capital letter, found {check!r}", part="check"
            )
        identifier = cls(type_code, issuer_code, int(serial[:4]), int(serial[4:]), int(version))
        expected = identifier.check_character
        if check != expected:
            raise InvalidIdentifier(
                f"check character is {check!r}, expected {expected!r}", part="check", expected=expected
            )
        return identifier
