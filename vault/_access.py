"""The access log (用证记录): who looked at which licence or holder, and why (用证事由).

Every look-up through the API is recorded in the same transaction that reads,
including look-ups that found nothing. Holder look-ups keep the keyed hash of
the holder ID (so a holder's access history can be produced) and its masked
form, never the number itself.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.errors import InvalidInput
from vault._models import AccessLogRecord

__all__ = ["MAX_PURPOSE_CHARS", "AccessEntry", "Accessor", "check_purpose", "list_access", "record_access"]

MAX_PURPOSE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Accessor:
    """Who is looking: the API client and its department, and the stated purpose."""

    client_id: str
    department_code: str
    purpose: str


@dataclass(frozen=True, slots=True)
class AccessEntry:
    at: datetime
    client_id: str
    department_code: str
    purpose: str
    action: str
    identifier: str | None
    holder_id_masked: str | None
    result_count: int


def check_purpose(purpose: str) -> str:
    """A purpose is 1-200 characters of text (no control characters): what the look-up is for."""
    text = unicodedata.normalize("NFC", purpose or "").strip()
    if not 1 <= len(text) <= MAX_PURPOSE_CHARS:
        raise InvalidInput(
            f"purpose (用证事由) must be 1-{MAX_PURPOSE_CHARS} characters saying why the licence is needed, "
            f"e.g. 'purpose=办理食品经营许可'; found {len(text)}"
        )
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        raise InvalidInput("purpose (用证事由) must not contain control or format characters")
    return text


def record_access(
    session: Session,
    who: Accessor,
    *,
    action: str,
    at: datetime,
    result_count: int,
    identifier: str | None = None,
    holder_id_index: str | None = None,
    holder_id_masked: str | None = None,
) -> None:
    session.add(
        AccessLogRecord(
            at=at,
            client_id=who.client_id,
            department_code=who.department_code,
            purpose=who.purpose,
            action=action,
            identifier=identifier,
            holder_id_index=holder_id_index,
            holder_id_masked=holder_id_masked,
            result_count=result_count,
        )
    )


def list_access(session: Session, identifier: str, *, limit: int = 200) -> list[AccessEntry]:
    rows = session.execute(
        select(AccessLogRecord)
        .where(AccessLogRecord.identifier == identifier)
        .order_by(AccessLogRecord.id.desc())
        .limit(limit)
    ).scalars()
    return [
        AccessEntry(
            r.at,
            r.client_id,
            r.department_code,
            r.purpose,
            r.action,
            r.identifier,
            r.holder_id_masked,
            r.result_count,
        )
        for r in rows
    ]
