"""Citizen ID numbers (公民身份号码) per GB 11643-1999.

An 18-character number (GB 11643-1999, 号码的结构):

    positions 1-6    address code (地址码, GB/T 2260)
    positions 7-14   birth date code (出生日期码), YYYYMMDD
    positions 15-17  sequence code (顺序码); the 17th digit is odd for men, even for women
    position 18      check character (校验码), ISO 7064 MOD 11-2

Full numbers are personal data: messages here name a position and a character,
never the whole number (DESIGN §5.10), and holder IDs are masked for display.
"""

from __future__ import annotations

from datetime import date

from schemas.errors import InvalidCitizenID, InvalidInput

__all__ = [
    "citizen_id_check_character",
    "make_citizen_id",
    "mask_holder_id",
    "validate_citizen_id",
]

# GB 11643-1999 校验码 (ISO 7064 MOD 11-2): weight of position i (1-based from the left) is 2^(18-i) mod 11.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
# GB 11643-1999 校验码: the check character indexed by (weighted sum mod 11); 10 is written 'X'.
_CHECK_MAP = "10X98765432"

_DIGITS = frozenset("0123456789")
_EARLIEST_BIRTH = date(1900, 1, 1)


def _check_digits(text: str) -> None:
    for position, character in enumerate(text, start=1):
        if character not in _DIGITS:
            raise InvalidCitizenID(
                f"character {position} is {character!r}, expected a digit", position=position
            )


def _compute_check(first17: str) -> str:
    total = sum(int(character) * weight for character, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_MAP[total % 11]


def citizen_id_check_character(first17: str) -> str:
    """Return the check character (position 18) for the first 17 digits of a citizen ID number."""
    text = first17.strip()
    if len(text) != 17:
        raise InvalidCitizenID(
            f"a citizen ID check character is computed over 17 digits, found {len(text)} characters",
            length=len(text),
        )
    _check_digits(text)
    return _compute_check(text)


def validate_citizen_id(number: str, *, today: date | None = None) -> str:
    """Return the normalised number (stripped, 'x' as 'X') or raise InvalidCitizenID.

    `today` bounds the birth date from above; pass the injected clock's date (DESIGN §5.5).
    """
    if not isinstance(number, str):
        raise InvalidCitizenID(f"a citizen ID number must be a string, found {type(number).__name__}")
    text = number.strip()
    if len(text) != 18:
        hint = " (15-digit first-generation numbers are not accepted)" if len(text) == 15 else ""
        raise InvalidCitizenID(
            f"a citizen ID number must be 18 characters, found {len(text)}{hint}", length=len(text)
        )
    if text[17] == "x":
        text = text[:17] + "X"
    _check_digits(text[:17])
    if text[17] not in _DIGITS and text[17] != "X":
        raise InvalidCitizenID(f"character 18 is {text[17]!r}, expected a digit or 'X'", position=18)

    birth_text = text[6:14]
    try:
        birth = date(int(birth_text[:4]), int(birth_text[4:6]), int(birth_text[6:]))
    except ValueError:
        raise InvalidCitizenID(f"birth date {birth_text} is not a calendar date", position=7) from None
    if birth < _EARLIEST_BIRTH:
        raise InvalidCitizenID(f"birth date {birth_text} is before 1900", position=7)
    if birth > (today if today is not None else date.today()):
        raise InvalidCitizenID(f"birth date {birth_text} is in the future", position=7)

    expected = _compute_check(text[:17])
    if text[17] != expected:
        raise InvalidCitizenID(
            f"check character is {text[17]!r}, expected {expected!r}", position=18, expected=expected
        )
    return text


def make_citizen_id(first17: str) -> str:
    """Complete 17 digits with their check character (for tests and demo data)."""
    return validate_citizen_id(first17.strip() + citizen_id_check_character(first17))


def mask_holder_id(id_type: str, holder_id: str) -> str:
    """Return a holder ID fit for display and logs.

    Citizen ID numbers ('111') keep the first 3 and last 4 characters, the common
    practice on Chinese government sites ("110***********1234"); anything that is not
    18 characters is masked entirely. USCCs ('001') are public and returned unchanged.
    """
    if id_type == "001":
        return holder_id
    if id_type == "111":
        if len(holder_id) != 18:
            return "*" * len(holder_id)
        return holder_id[:3] + "*" * 11 + holder_id[-4:]
    raise InvalidInput(f"unknown holder ID type {id_type!r}; expected '001' (USCC) or '111' (citizen ID)")
