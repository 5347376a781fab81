"""USCC (统一社会信用代码) validation per GB 32100-2015."""

from __future__ import annotations

import pytest

from schemas import is_valid_uscc, make_uscc, uscc_check_character, validate_uscc
from schemas.errors import InvalidUSCC

KNOWN_GOOD = [
    "91350100M000100Y43",  # the example printed in countless GB 32100 explainers
    "91440300708461136T",
    "91110000100011743X",
    "91110000000000025" + "0",  # check value 31 is written '0' (GB 32100-2015)
    # Demo data used by the packaged licence types.
    "11100000000013101Q",
    "11100000000013202H",
    "11110101000000123B",
    "11110101000000456Q",
    "92110101MA01C8N2PH",
]


@pytest.mark.parametrize("code", KNOWN_GOOD)
def test_known_good_codes_validate(code: str) -> None:
    assert validate_uscc(code) == code
    assert is_valid_uscc(code)
    assert uscc_check_character(code[:17]) == code[17]


def test_weights_are_powers_of_three_mod_31() -> None:
    # GB 32100-2015, weights of the check character computation.
    from schemas.uscc import _WEIGHTS

    assert _WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def test_normalises_case_and_surrounding_whitespace() -> None:
    assert validate_uscc("  91350100m000100y43\n") == "91350100M000100Y43"


def test_make_uscc_appends_the_check_character() -> None:
    assert make_uscc("91350100M000100Y4") == "91350100M000100Y43"
    assert make_uscc("92110101ma01c8n2p") == "92110101MA01C8N2PH"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("91350100M000100Y4", "a USCC must be 18 characters, found 17"),
        ("91350100M000100Y433", "a USCC must be 18 characters, found 19"),
        ("", "a USCC must be 18 characters, found 0"),
        ("91350100O000100Y43", "character 9 is 'O', which is not in the USCC alphabet"),
        ("91350100M000100I43", "character 16 is 'I'"),
        ("9135010çM000100Y43", "character 8 is 'ç'"),
        ("913501A0M000100Y43", "character 7 is 'A', expected a digit (characters 3-8 are the administrative"),
        ("91350100M000100Y44", "check character is '4', expected '3'"),
        ("91350100M000100Y4X", "check character is 'X', expected '3'"),
    ],
)
def test_invalid_codes_say_what_and_where(code: str, message: str) -> None:
    with pytest.raises(InvalidUSCC) as caught:
        validate_uscc(code)
    assert message in caught.value.message
    assert not is_valid_uscc(code)


@pytest.mark.parametrize("letter", ["I", "O", "Z", "S", "V"])
def test_letters_never_used_are_named(letter: str) -> None:
    with pytest.raises(InvalidUSCC, match="I, O, Z, S and V are never used") as caught:
        validate_uscc("91350100M" + letter + "00100Y43")
    assert caught.value.details["position"] == 10


def test_check_error_carries_the_expected_character() -> None:
    with pytest.raises(InvalidUSCC) as caught:
        validate_uscc("91350100M000100Y44")
    assert caught.value.details == {"position": 18, "expected": "3"}


def test_check_character_needs_17_characters() -> None:
    with pytest.raises(InvalidUSCC, match="computed over 17 characters, found 18"):
        uscc_check_character("91350100M000100Y43")


def test_a_single_changed_character_is_caught() -> None:
    code = "91350100M000100Y43"
    for position in range(17):
        for replacement in "0123456789ABCDEFGHJKLMNPQRTUWXY":
            if replacement == code[position] or (2 <= position < 8 and not replacement.isdigit()):
                continue
            changed = code[:position] + replacement + code[position + 1 :]
            assert not is_valid_uscc(changed), changed
