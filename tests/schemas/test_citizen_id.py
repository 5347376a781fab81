"""Citizen ID number (公民身份号码) validation per GB 11643-1999."""

from __future__ import annotations

from datetime import date

import pytest

from schemas import citizen_id_check_character, make_citizen_id, mask_holder_id, validate_citizen_id
from schemas.errors import InvalidCitizenID, InvalidInput

KNOWN_GOOD = [
    "11010519491231002X",  # widely published example
    "110101199203150024",  # demo holder of the 生育登记服务单 example
    "110101199005120019",
    "110101200002290018",  # 29 February of a leap year
]


@pytest.mark.parametrize("number", KNOWN_GOOD)
def test_known_good_numbers_validate(number: str) -> None:
    assert validate_citizen_id(number) == number
    assert citizen_id_check_character(number[:17]) == number[17]


def test_lower_case_x_and_whitespace_are_normalised() -> None:
    assert validate_citizen_id(" 11010519491231002x ") == "11010519491231002X"


def test_make_citizen_id_appends_the_check_character() -> None:
    assert make_citizen_id("11010519491231002") == "11010519491231002X"


def test_weights_follow_iso_7064_mod_11_2() -> None:
    from schemas.citizen_id import _WEIGHTS

    assert _WEIGHTS == (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("11010519491231002", "a citizen ID number must be 18 characters, found 17"),
        ("110105491231002", "found 15 (15-digit first-generation numbers are not accepted)"),
        ("11010519A91231002X", "character 9 is 'A', expected a digit"),
        ("11010519491231002Y", "character 18 is 'Y', expected a digit or 'X'"),
        ("110105199913320026", "birth date 19991332 is not a calendar date"),
        ("110105" + "19900230" + "0026", "birth date 19900230 is not a calendar date"),
        ("110105" + "19000229" + "0026", "birth date 19000229 is not a calendar date"),
        ("440524188001010014", "birth date 18800101 is before 1900"),  # GB 11643-1999's own example
        ("110105194912310023", "check character is '3', expected 'X'"),
    ],
)
def test_invalid_numbers_say_what_and_where(number: str, message: str) -> None:
    with pytest.raises(InvalidCitizenID) as caught:
        validate_citizen_id(number)
    assert message in caught.value.message


def test_future_birth_date_is_rejected_relative_to_the_given_day() -> None:
    # make_citizen_id would check against the real date; build the number by hand.
    number = "11010120240102001" + citizen_id_check_character("11010120240102001")
    assert validate_citizen_id(number, today=date(2024, 1, 2)) == number
    with pytest.raises(InvalidCitizenID, match="birth date 20240102 is in the future"):
        validate_citizen_id(number, today=date(2024, 1, 1))


@pytest.mark.parametrize(
    "number", ["110105194912310023", "11010519491231002Y", "110105199913320026", "11010519A91231002X"]
)
def test_messages_never_carry_the_full_number(number: str) -> None:
    with pytest.raises(InvalidCitizenID) as caught:
        validate_citizen_id(number)
    assert number not in str(caught.value)
    assert number[:17] not in str(caught.value)
    assert number not in repr(caught.value.details)


def test_mask_citizen_id_keeps_first_three_and_last_four() -> None:
    assert mask_holder_id("111", "11010519491231002X") == "110***********002X"


def test_mask_leaves_uscc_alone_and_hides_malformed_numbers() -> None:
    assert mask_holder_id("001", "91350100M000100Y43") == "91350100M000100Y43"
    assert mask_holder_id("111", "1101051949") == "**********"
    with pytest.raises(InvalidInput, match="unknown holder ID type '999'"):
        mask_holder_id("999", "x")
