"""The printable licence (照面): face data + QR code on an A4 page, sealed by the issuing department.

The QR code carries a presentation token signed by the department's active licence key
(``vault._presentation``), so a printed licence is checked online like a shown one; the
seal makes the paper itself verifiable (``yinxin seal verify``). A revoked or suspended
licence is not printed; an expired one gets no QR code and so is not printed either.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import Conflict
from signing import (
    LicenceFace,
    StampPlacement,
    prepare_cjk_font,
    presentation_url,
    qr_png,
    render_licence_pdf,
)
from vault._presentation import presentation_for
from vault._seal_types import SealedDocument, font_cache_dir
from vault._types import CHINA_TIME, LicenceStatus
from vault._vault import Vault

__all__ = ["licence_pdf"]

HOLDER_ID_TYPE_LABELS = {"001": "统一社会信用代码", "111": "公民身份号码"}


def licence_pdf(vault: Vault, identifier: str, *, actor: str) -> SealedDocument:
    """Render and seal *identifier*'s licence face; audited as ``licence.print``."""
    licence = vault.get(identifier)
    status = licence.effective_status(vault.clock())
    if status in (LicenceStatus.REVOKED, LicenceStatus.SUSPENDED):
        raise Conflict(f"licence {identifier} is {status}: a {status} licence is not printed")
    seal = vault.seals.active_seal(licence.issuer_code)  # NoActiveSeal before any signing
    url = presentation_url(vault.public_url, presentation_for(vault, identifier))
    licence_type = vault.types.get(licence.type_code)
    properties: dict[str, Any] = dict(licence_type.schema.get("properties", {}))
    number_field = licence_type.licence_number_field
    fields = tuple(
        (str(properties.get(name, {}).get("title", name)), _text(value))
        for name, value in licence.data.items()
        if name != number_field and value not in (None, "")
    )
    face = LicenceFace(
        title=licence_type.name,
        title_en=licence_type.name_en or None,
        identifier=licence.identifier,
        licence_number=_text(licence.data[number_field])
        if number_field and number_field in licence.data
        else None,
        holder_name=licence.holder_name,
        holder_id_type=HOLDER_ID_TYPE_LABELS.get(licence.holder_id_type, licence.holder_id_type),
        holder_id_masked=licence.holder_id_masked,
        issuer_name=licence.issuer_name,
        issuer_code=licence.issuer_code,
        valid_from=licence.valid_from,
        valid_until=licence.valid_until,
        issued_at=licence.issued_at.astimezone(CHINA_TIME).date(),
        fields=fields,
    )
    settings = vault.seals.settings
    cache = font_cache_dir(settings)
    rendered = render_licence_pdf(
        face,
        font=prepare_cjk_font(cache, settings.cjk_font),
        bold_font=prepare_cjk_font(cache, None, bold=True) if settings.cjk_font is None else None,
        qr_png=qr_png(url).data,
    )
    page_index, x1, y1, x2, y2 = rendered.seal_box
    return vault.seals.seal_document(
        seal.seal_id,
        rendered.pdf,
        placement=StampPlacement(page_index + 1, (x1, y1, x2, y2)),
        reason=f"{licence_type.name} {licence.identifier}",
        actor=actor,
        audit_action="licence.print",
        audit_subject=licence.identifier,
        audit_details={"seal_id": seal.seal_id},
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list):
        return "、".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "；".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)
