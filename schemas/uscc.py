"""Unified social credit codes (统一社会信用代码, USCC) per GB 32100-2015.

A USCC is 18 characters (GB 32100-2015, 代码结构):

    position 1       registration authority code (登记管理部门代码)
    position 2       organisation category code (机构类别代码)
    positions 3-8    administrative division code (登记管理机关行政区划码, GB/T 2260), digits
    positions 9-17   organisation code (主体标识码, GB 11714)
    position 18      check character (校验码)

The alphabet is the digits and the upper-case Latin letters without I, O, Z, S and V
(GB 32100-2015 代码字符集), 31 characters worth 0..30 in the order below.

Organisations' codes are public (they are printed on every business licence), so
unlike citizen ID numbers they may appear in error messages.
"""

from __future__ import annotations

from schemas.errors import InvalidUSCC

__all__ = [
    "USCC_ALPHABET",
    "is_valid_uscc",
    "make_uscc",
    "uscc_check_character",
    "validate_uscc",
]

# GB 32100-2015 代码字符集: character values are their index in this string.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUES = {character: value for value, character in enumerate(USCC_ALPHABET)}

# GB 32100-2015 校验码计算: weight of position i (0-based) is 3^i mod 31.
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))

_DIGITS = frozenset("0123456789")

# Upper-case ASCII letters only: str.upper() would turn 'ß' into 'SS' and change the length.
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

_NEVER_USED = "the letters I, O, Z, S and V are never used"


def _normalise(code: str) -> str:
    return code.strip().translate(_ASCII_UPPER)


def _check_alphabet(text: str) -> None:
    for position, character in enumerate(text, start=1):
        if character not in _VALUES:
            raise InvalidUSCC(
                f"character {position} is {character!r}, which is not in the USCC alphabet "
                f"(digits and capital letters; {_NEVER_USED})",
                position=position,
            )


def _compute_check(first17: str) -> str:
    # GB 32100-2015 校验码计算: C18 = 31 - MOD(sum(Ci × Wi), 31); a result of 31 is written '0'.
    total = sum(_VALUES[character] * weight for character, weight in zip(first17, _WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_check_character(first17: str) -> str:
    """Return the check character (position 18) for the first 17 characters of a USCC."""
    text = _normalise(first17)
    if len(text) != 17:
        raise InvalidUSCC(
            f"a USCC check character is computed over 17 characters, found {len(text)}", length=len(text)
        )
    _check_alphabet(text)
    return _compute_check(text)


# Codes already found valid, so bulk issuance (the same issuer and type codes on every line)
# does not recompute check characters. Bounded; only valid codes are kept.
_KNOWN_VALID: dict[str, str] = {}
_KNOWN_VALID_MAX = 65536


def validate_uscc(code: str) -> str:
    """Return the normalised USCC (stripped, upper-case) or raise InvalidUSCC saying what is wrong."""
    if isinstance(code, str):
        known = _KNOWN_VALID.get(code)
        if known is not None:
            return known
    if not isinstance(code, str):
        raise InvalidUSCC(f"a USCC must be a string, found {type(code).__name__}")
    text = _normalise(code)
    if len(text) != 18:
        raise InvalidUSCC(f"a USCC must be 18 characters, found {len(text)}", length=len(text))
    _check_alphabet(text)
    for position in range(3, 9):
        character = text[position - 1]
        if character not in _DIGITS:
            raise InvalidUSCC(
                f"character {position} is {character!r}, expected a digit "
                "(characters 3-8 are the administrative division code)",
                position=position,
            )
    expected = _compute_check(text[:17])
    if text[17] != expected:
        raise InvalidUSCC(
            f"check character is {text[17]!r}, expected {expected!r}", position=18, expected=expected
        )
    if len(_KNOWN_VALID) < _KNOWN_VALID_MAX:
        _KNOWN_VALID[code] = text
    return text


def is_valid_uscc(code: str) -> bool:
    """True if `code` is a valid USCC (after stripping and upper-casing)."""
    try:
        validate_uscc(code)
    except InvalidUSCC:
        return False
    return True


def make_uscc(first17: str) -> str:
    """Complete 17 characters with their check character (for tests and demo data)."""
    return validate_uscc(_normalise(first17) + uscc_check_character(first17))
