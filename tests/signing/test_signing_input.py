"""What the signer refuses to put in a token: values JSON cannot carry exactly."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import InvalidInput
from signing import sign_licence_token
from tests.signing._support import Forge, licence_claims


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "NaN and infinities"),
        ({1: "x"}, "key must be str"),
        (2**70, "64-bit"),
        ({"nested": [1.5, float("-inf")]}, "NaN and infinities"),
    ],
)
def test_values_json_cannot_carry_are_refused(forge: Forge, value: Any, message: str) -> None:
    claims = licence_claims()
    claims["data"] = {"field": value}
    with pytest.raises(InvalidInput, match=message):
        sign_licence_token(forge.backend, forge.key(), claims)
