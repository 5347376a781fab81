"""The verification page a licence's QR code opens: ``GET /v/{token}``.

Server-rendered HTML for a phone: no JavaScript, no external assets, one
inline style sheet, every value escaped. A coloured banner gives the answer
(有效 / Valid green; 无效 / Invalid red, with 已吊销 / Revoked under it; 已暂停 /
Suspended amber; 已过期 / Expired and 尚未生效 / Not yet valid grey), then the
licence's public facts (holder ID masked) and, when it is not valid, why.

Every verdict is answered with ``200 OK``: "invalid" is the page's answer to the
question it was asked, not a failed request (DESIGN §3), and a scanner app or
browser shows a 200 page as it is. Only a path longer than any token could be
(over 2 KiB) gets ``414 URI Too Long`` (RFC 9110 §15.5.15) without being read,
and a vault that cannot answer gets ``503``, both still as HTML pages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from html import escape
from typing import Any, Final

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from schemas.errors import YinxinError
from vault import CHINA_TIME, LicenceStatus, Verdict, verify_presentation_token
from verify_api.deps import VaultDep
from verify_api.ratelimit import rate_limited
from verify_api.routes._docs import problem_responses

__all__ = ["MAX_PAGE_TOKEN_BYTES", "SECURITY_HEADERS", "render_page", "router"]

log = logging.getLogger("yinxin.api")

router = APIRouter(tags=["verification page"])

MAX_PAGE_TOKEN_BYTES: Final = 2048
_UNAVAILABLE: Final = "unavailable"  # not a licence status: the vault could not be asked

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "X-Robots-Tag": "noindex, nofollow",  # holder names are not for search engines
}

# Banner per status: CSS class, main line, second line (or "").
_BANNERS: Final[Mapping[str, tuple[str, str, str]]] = {
    LicenceStatus.VALID: (
        "valid",
        "有效 / Valid",
        "证照真实有效，状态为实时查询结果 / Authentic and in force",
    ),
    LicenceStatus.REVOKED: ("invalid", "无效 / Invalid", "已吊销 / Revoked"),
    LicenceStatus.SUSPENDED: (
        "suspended",
        "已暂停 / Suspended",
        "证照暂停使用 / Not to be relied on for now",
    ),
    LicenceStatus.EXPIRED: ("expired", "已过期 / Expired", "证照已超过有效期 / Past its validity period"),
    LicenceStatus.NOT_YET_VALID: (
        "expired",
        "尚未生效 / Not yet valid",
        "证照有效期尚未开始 / Validity not begun",
    ),
    LicenceStatus.INVALID: (
        "invalid",
        "无效 / Invalid",
        "无法确认该证照 / This code does not prove a licence",
    ),
    _UNAVAILABLE: ("expired", "暂时无法核验 / Cannot check now", "请稍后再试 / Please try again later"),
}
_MARKS: Final = {"valid": "✓", "invalid": "✕", "suspended": "!", "expired": "◷"}

# What each verdict code means, for a person at a counter.
_CODE_TEXT: Final[Mapping[str, str]] = {
    "signature_invalid": "签名无法验证：二维码内容被改动，或并非由发证机构签发。",
    "unknown_key": "签名密钥不在信任列表中。",
    "algorithm_mismatch": "签名算法与发证密钥不符。",
    "unsupported_algorithm": "签名算法不被接受。",
    "forbidden_header": "签名格式不符合要求。",
    "crit_unsupported": "签名格式不符合要求。",
    "typ_invalid": "这不是电子证照核验码。",
    "malformed": "二维码内容不完整或格式错误。",
    "too_large": "二维码内容过长，不是电子证照核验码。",
    "claims_invalid": "核验码内容不完整。",
    "unknown_licence": "证照库中没有该证照。",
    "key_mismatch": "核验码不是由该证照发证机构的密钥签名的。",
    "revoked": "证照已被发证机构吊销。",
    "suspended": "证照已被发证机构暂停。",
    "expired": "证照已超过有效期。",
    "not_yet_valid": "证照尚未到生效日期。",
    "uri_too_long": "链接过长，不是电子证照核验码。",
    "unavailable": "核验服务暂时无法查询证照库，请稍后再试。",
}

_STYLE: Final = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#1f2328;font:16px/1.5 system-ui,-apple-system,"PingFang SC",
"Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC","Noto Sans SC",sans-serif}
main{max-width:40rem;margin:0 auto;padding:1rem}
.site{font-size:.95rem;color:#57606a;margin:0 0 .75rem}
.site b{color:#1f2328}
.banner{display:flex;gap:.9rem;align-items:center;border-radius:12px;padding:1.1rem 1rem;color:#fff}
.banner .mark{flex:none;width:3rem;height:3rem;border-radius:50%;background:rgba(255,255,255,.22);
display:flex;align-items:center;justify-content:center;font-size:1.8rem;font-weight:700}
.banner h1{margin:0;font-size:1.6rem;line-height:1.25}
.banner p{margin:.2rem 0 0;font-size:1rem}
.valid{background:#1a7f37}.invalid{background:#c62828}.suspended{background:#f0a500;color:#1f2328}
.suspended .mark{background:rgba(0,0,0,.12)}.expired{background:#6e7781}
.card{background:#fff;border-radius:12px;margin:1rem 0;padding:.25rem 1rem;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
dl{margin:0}
.row{padding:.7rem 0;border-bottom:1px solid #eaeef2}.row:last-child{border-bottom:0}
dt{font-size:.85rem;color:#57606a}
dd{margin:.1rem 0 0;font-size:1.05rem}
.code{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.9rem;
color:#57606a;overflow-wrap:anywhere}
h2{font-size:1.05rem;margin:.8rem 0 .4rem}
ul{margin:0 0 .8rem;padding-left:1.2rem}
li{margin:.3rem 0}
li small{display:block;color:#57606a;overflow-wrap:anywhere}
footer{font-size:.8rem;color:#656d76;margin:1rem 0 2rem}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _row(label_zh: str, label_en: str, value: str, code: str | None = None) -> str:
    extra = f'<div class="code">{_e(code)}</div>' if code else ""
    return f'<div class="row"><dt>{_e(label_zh)} / {_e(label_en)}</dt><dd>{_e(value)}{extra}</dd></div>'


def _validity(licence: Mapping[str, Any]) -> str:
    start = str(licence.get("valid_from") or "")
    until = licence.get("valid_until")
    return f"{start} 至 {until}" if until else f"{start} 至 长期 (no expiry)"


def _facts(verdict: Verdict) -> str:
    checked = verdict.checked_at.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S")
    rows: list[str] = []
    licence = verdict.licence
    # An invalid verdict shows no licence facts: a forged or misused code must not lend
    # a real licence's details credibility.
    if licence is not None and verdict.status != LicenceStatus.INVALID:
        rows += [
            _row("证照类型", "Licence type", str(licence["licence_type_name"]), str(licence["licence_type"])),
            _row("发证机构", "Issuer", str(licence["issuer_name"]), str(licence["issuer"])),
            _row("持证主体", "Holder", str(licence["holder_name"]), str(licence["holder_id_masked"])),
            _row("有效期", "Validity", _validity(licence)),
            _row("证照标识", "Identifier", "", str(licence["identifier"])),
        ]
    rows.append(_row("核验时间", "Checked", f"{checked} 北京时间 (UTC+8)"))
    return f'<section class="card"><dl>{"".join(rows)}</dl></section>'


def _reasons(verdict: Verdict) -> str:
    if verdict.valid or not verdict.codes:
        return ""
    items = []
    for code, reason in zip(verdict.codes, verdict.reasons, strict=False):
        text = _CODE_TEXT.get(code, "核验未通过。")
        items.append(f"<li>{_e(text)}<small>{_e(reason)}</small></li>")
    return f'<section class="card"><h2>原因 / Why</h2><ul>{"".join(items)}</ul></section>'


def render_page(verdict: Verdict) -> str:
    """The whole HTML document for *verdict*; every value from the verdict is escaped."""
    css, title, subtitle = _BANNERS.get(verdict.status, _BANNERS[LicenceStatus.INVALID])
    mark = _MARKS[css]
    second = f"<p>{_e(subtitle)}</p>" if subtitle else ""
    return (
        '<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(title)} · 电子证照核验</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        '<p class="site"><b>印信</b> 电子证照核验 · Licence verification</p>\n'
        f'<section class="banner {css}" role="status" data-status="{_e(verdict.status)}">'
        f'<div class="mark" aria-hidden="true">{mark}</div>'
        f"<div><h1>{_e(title)}</h1>{second}</div></section>\n"
        f"{_facts(verdict)}\n{_reasons(verdict)}\n"
        "<footer>本页为实时核验结果，以发证机构登记状态为准。持证人身份证件号码已部分隐藏。<br>"
        "Live result from the licence vault; the holder's ID number is partly hidden.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def _page(verdict: Verdict, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(render_page(verdict), status_code=status_code, headers=dict(SECURITY_HEADERS))


@router.get(
    "/v/{token:path}",
    response_class=HTMLResponse,
    summary="Verification page a licence QR code opens",
    responses={
        # The router's own answer to a path with a line break (Starlette's path pattern stops at
        # one, and no presentation token holds one): problem+json, not this page.
        404: {**problem_responses(404)[404], "description": "A path with a line break: no page"},
        414: {"description": "Path over 2 KiB: not a presentation token"},
        **problem_responses(429),
        503: {
            "description": "The vault could not be consulted: the page says so",
            "content": {"text/html": {}},
        },
    },
    # Public and each request reads the vault: the same per-address budget as POST /v1/verify.
    dependencies=[Depends(rate_limited("verify"))],
)
def verification_page(token: str, vault: VaultDep) -> HTMLResponse:
    now = vault.clock()
    if len(token.encode("utf-8", errors="replace")) > MAX_PAGE_TOKEN_BYTES:
        reason = (
            f"The link is {len(token)} characters long; a licence code is under 1 KiB, so it was not read."
        )
        return _page(Verdict(False, LicenceStatus.INVALID, (reason,), ("uri_too_long",), now), 414)
    try:
        verdict = verify_presentation_token(vault, token)
    except YinxinError as exc:
        # The vault could not answer (database or key backend down): say so, never guess.
        log.warning("verification page could not consult the vault: %s", exc.code)
        reason = "The licence vault could not be reached; try again in a minute."
        return _page(Verdict(False, _UNAVAILABLE, (reason,), (_UNAVAILABLE,), now), 503)
    return _page(verdict)
