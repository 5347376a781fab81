"""Inputs the fuzz harnesses (fuzz/, issue 6) found, fed back to the product functions as found.

Each test holds the exact value the harness printed as ``product input:`` when it crashed,
and asserts the documented answer: an ``InvalidInput`` (or a pydantic ``ValidationError``,
which the API writes as 422 problem+json) instead of a third-party exception or a silent
acceptance. How a crash becomes one of these: fuzz/README.md.
"""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from schemas import LicenceCreate, load_licence_types, parse_licence_request
from schemas.errors import FaceDataInvalid, InvalidInput
from signing import presentation_url, qr_png, qr_svg, qr_version

# A genuine EdDSA presentation token from a harness run (its signature is beside the point:
# presentation_url only checks the token's characters).
TOKEN = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImZ1enotZWRkc2EiLCJ0eXAiOiJsaWNlbmNlLXByZXNlbnRhdGlvbitqd3QifQ."
    "eyJzdWIiOiIxLjIuMTU2LjMwMDUuMi4xMTEwMDAwMDAwMDAxMzIwMkgwMDMuMTExMTAxMDEwMDAwMDA0NTZRLjIwMjYwMDAwMDAxLjAw"
    "MS5FIiwiaWF0IjoxNzgwMjcxOTQwLCJleHAiOjE3ODAzNTg0MDB9."
    "_agPNVg_oDLTRuwSNs3oEexiiFY9nlgwj3xsZbjHeoyPn8IAKI--Vq9pxde2F5fAcEkj6WWfTvdeLgA3n1ecAg"
)


# -- fuzz_qr: presentation_url ------------------------------------------------------------------


def test_public_url_with_an_unbalanced_bracket_is_invalid_input() -> None:
    # Was: ValueError("Invalid IPv6 URL") from urllib.parse.urlsplit.
    with pytest.raises(InvalidInput, match="public URL"):
        presentation_url("https://z]+]]]]]]]]]]]]]]]]]]]]]]hengzhao.example.gov.cn", TOKEN)
    with pytest.raises(InvalidInput, match="public URL"):
        presentation_url("https://[zhengzhao.example.gov.cn", TOKEN)


def test_public_url_with_control_characters_is_invalid_input() -> None:
    # Was: accepted, and every QR code would have carried eight DEL characters.
    with pytest.raises(InvalidInput, match="public URL"):
        presentation_url("https://zhengzhVo.example.gov.c\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7fn", TOKEN)
    with pytest.raises(InvalidInput, match="public URL"):
        presentation_url("https://zhengzhao.example.gov.cn/\x00", TOKEN)


@pytest.mark.parametrize(
    "public_url", ["https://zhengzhao.example.gov.c?", "https://zhengzhao.example.gov.cn#"]
)
def test_public_url_ending_in_an_empty_query_or_fragment_is_invalid_input(public_url: str) -> None:
    # Was: accepted (urlsplit reports an empty query/fragment as none), giving
    # "https://host?/v/TOKEN": the token rode in the query, and the page never saw it.
    with pytest.raises(InvalidInput, match="without query or fragment"):
        presentation_url(public_url, TOKEN)


def test_a_sound_public_url_still_works() -> None:
    assert presentation_url("https://zhengzhao.example.gov.cn/yinxin/", TOKEN) == (
        f"https://zhengzhao.example.gov.cn/yinxin/v/{TOKEN}"
    )


# -- fuzz_qr: qr_version / qr_png / qr_svg -----------------------------------------------------

# A block of all-zero data codewords: qrcode 8.2 fails with ValueError("glog(0)").
ZERO_BLOCK = "\x03" * 10 + "\x02" * 3 + "\x00" * 104 + "\x02"


@pytest.mark.parametrize("render", [qr_version, qr_png, qr_svg])
def test_qr_content_that_qrcode_cannot_encode_is_invalid_input(render: object) -> None:
    assert callable(render)
    with pytest.raises(InvalidInput, match="cannot be encoded"):
        render(ZERO_BLOCK)


def test_presentation_urls_still_encode() -> None:
    assert 1 <= qr_version(f"https://zhengzhao.example.gov.cn/v/{TOKEN}") <= 40


# -- fuzz_issuance ------------------------------------------------------------------------------

# POST /v1/licences body (as bytes): a clinical department named with a UTF-8-encoded lone
# surrogate (ED B3 BF), which json.loads (FastAPI) decodes with "surrogatepass".
SURROGATE_BODY = base64.b64decode(
    "eyJsaWNlbmNlX3R5cGUiOiAiMTExMDAwMDAwMDAwMTMyMDJIMDAyIiwgImlzc3VlciI6ICIxMTExMDEwMTAwMDAwMDQ1NlEiLCAiaG9s"
    "ZGVyIjogeyJuYW1lIjogIuWMl+S6rOW4guS4nOWfjuWMuuS4nOWbm+ekvuWMuuWNq+eUn+acjeWKoeS4reW/gyIsICJpZF90eXBlIjog"
    "IjAwMSIsICJpZCI6ICIxMjExMDEwMU1CMTIzNDU2NzQifSwgImRhdGEiOiB7InJlZ2lzdHJhdGlvbl9udW1iZXIiOiAiUERZMDAwMTIt"
    "ODExMDEwMTE1QjEwMDEiLCAiaW5zdGl0dXRpb25fbmFtZSI6ICLljJfkuqzluILkuJzln47ljLrkuJzlm5vnpL7ljLrljavnlJ/mnI3l"
    "iqHkuK3lv4MiLCAiYWRkcmVzcyI6ICLljJfkuqzluILkuJzln47ljLrkuJzlm5vljYHmnaHnlLIyMuWPtyIsICJsZWdhbF9yZXByZXNl"
    "bnRhdGl2ZSI6ICLnjovoirMiLCAicHJpbmNpcGFsIjogIueOi+iKsyIsICJpbnN0aXR1dGlvbl9jYXRlZ29yeSI6ICLnpL7ljLrljavn"
    "lJ/mnI3liqHkuK3lv4MiLCAib3duZXJzaGlwX2Zvcm0iOiAi5YWo5rCRIiwgIm9wZXJhdGlvbl9uYXR1cmUiOiAi6Z2e6JCl5Yip5oCn"
    "IiwgImNsaW5pY2FsX2RlcGFydG1lbnRzIjogWyLpooTpmLLkv53lgaXnp5EiLCAi5YWo56eR5Yy755aX56eRIiwgIuWGheenkSIsICLl"
    "pofkuqfnp5HvvJvorqHliJLnlJ/ogrLkuJPkuJoiLCAi5Y+j6IWU56eRIiwgIuW6t+WkjeWMu+WtpuenkSIsICLljLvlrabmo4Dpqozn"
    "p5EiLCAiNDQ09I2zlPSNs5z0jbOc9I+kgO2zv/SPv7nxsJu49I+/uDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0"
    "NDQ0NCIsICLkuK3ljLvnp5EiXSwgImJlZHMiOiAyMCwgImRlbnRhbF9jaGFpcnMiOiAzLCAiaXNzdWVfZGF0ZSI6ICIyMDI0LTAxLTE1"
    "In0sICJ2YWxpZF9mcm9tIjogIjIwMjQtMDEtMTUiLCAidmFsaWRfdW50aWwiOiAiMjAyOS0wMS0xNCJ9"
)


def test_face_data_with_a_lone_surrogate_is_refused_by_the_api_model() -> None:
    # Was: accepted by LicenceCreate, then UnicodeEncodeError from jsonschema-rs in validate_data.
    with pytest.raises(ValidationError) as caught:
        LicenceCreate.model_validate(json.loads(SURROGATE_BODY))
    [error] = caught.value.errors(include_url=False)
    assert error["loc"] == ("data",) and error["type"] == "string_unicode"
    assert error["msg"].startswith("clinical_departments[7] holds an unpaired UTF-16 surrogate")


def test_face_data_with_a_lone_surrogate_is_refused_by_the_cli_intake() -> None:
    # The CLI reads bytes as strict UTF-8, so the encoded surrogate is refused there ...
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        parse_licence_request(SURROGATE_BODY)
    # ... and the same request with the surrogate as a JSON escape reaches the model's check.
    escaped = json.dumps(json.loads(SURROGATE_BODY)).encode("ascii")
    with pytest.raises(InvalidInput, match=r"^data: clinical_departments\[7\] holds an unpaired"):
        parse_licence_request(escaped)


# A medical institution licence whose registration number ends in "\n": Python's re lets
# ^[0-9A-Z-]+$ match before a final line break, ECMA-262 (JSON Schema's dialect) does not.
NEWLINE_BODY = base64.b64decode(
    "eyJsaWNlbmNlX3R5cGUiOiAiMTExMDAwMDAwMDAwMTMyMDJIMDAyIiwgImlzc3VlciI6ICIxMTExMDEwMTAwMDAwMDQ1NlEiLCAiaG9s"
    "ZGVyIjogeyJuYW1lIjogIuWMl+S6rOW4guS4nOWfjuWMuuS4nOWbm+ekvuWMuuWNq+eUn+acjeWKoeS4reW/gyIsICJpZF90eXBlIjog"
    "IjAwMSIsICJpZCI6ICIxMjExMDEwMU1CMTIzNDU2NzQifSwgImRhdGEiOiB7InJlZ2lzdHJhdGlvbl9udW1iZXIiOiAiUERZMDAwMTIt"
    "ODExMDEwMTE1QjEwMDFcbiIsICJpbnN0aXR1dGlvbl9uYW1lIjogIuWMl+S6rOW4guS4nOWfjuWMuuS4nOWbm+ekvuWMuuWNq+eUn+ac"
    "jeWKoeS4reW/gyIsICJhZGRyZXNzIjogIuWMl+S6rOW4guS4nOWfjuWMuuS4nOWbm+WNgeadoeeUsjIy5Y+3IiwgImxlZ2FsX3JlcHJl"
    "c2VudGF0aXZlIjogIueOi+iKsyIsICJwcmluY2lwYWwiOiAi546L6IqzIiwgImluc3RpdHV0aW9uX2NhdGVnb3J5IjogIuekvuWMuuWN"
    "q+eUn+acjeWKoeS4reW/gyIsICJvd25lcnNoaXBfZm9ybSI6ICLlhajmsJEiLCAib3BlcmF0aW9uX25hdHVyZSI6ICLpnZ7okKXliKnm"
    "gKciLCAiY2xpbmljYWxfZGVwYXJ0bWVudHMiOiBbIumihOmYsuS/neWBpeenkSIsICLlhajnp5HljLvnlpfnp5EiLCAi5YaF56eRIiwg"
    "IuWmh+S6p+enke+8m+iuoeWIkueUn+iCsuS4k+S4miIsICLlj6PohZTnp5EiLCAi5bq35aSN5Yy75a2m56eRIiwgIuWMu+WtpuajgOmq"
    "jOenkSIsICLljLvlrablvbHlg4/np5EiLCAi5Lit5Yy756eRIl0sICJiZWRzIjogMjAsICJkZW50YWxfY2hhaXJzIjogMywgImlzc3Vl"
    "X2RhdGUiOiAiMjAyNC0wMS0xNSJ9LCAidmFsaWRfZnJvbSI6ICIyMDI0LTAxLTE1IiwgInZhbGlkX3VudGlsIjogIjIwMjktMDEtMTQi"
    "fQ=="
)


def test_a_pattern_is_not_satisfied_by_a_trailing_line_break() -> None:
    # Was: jsonschema-rs refused it, the explaining jsonschema validator (Python re) found no
    # error, and validate_data returned: the licence number went into the token with its "\n".
    request = parse_licence_request(NEWLINE_BODY)
    assert request.data["registration_number"].endswith("\n")
    licence_type = load_licence_types().get(request.licence_type)
    with pytest.raises(FaceDataInvalid, match=r"^data\.registration_number: .* does not match the pattern"):
        licence_type.validate_data(request.data)
