"""Officers: the named people who run the keys (安全管理员), audit them (审计员) or issue (operators).

An officer proves who they are with a password (kept only as an scrypt hash,
RFC 7914, like API client secrets) or acts through an API client with the
``keys:manage`` scope that is bound to them. Roles (ETSI EN 319 401 §7.2,
trusted roles):

- ``security-officer``: key generation, rotation, activation; requests and
  approves dual-control operations; enrols officers;
- ``auditor``: reads the audit log and the key inventory, makes checkpoints;
- ``operator``: issues licences; no key or audit operations.

Until the first security officer is enrolled the installation is in *setup
mode*: key commands run as the local user (the installation ceremony), and no
dual-control operation can run at all. The first security officer may be
enrolled freely; every later officer only by a security officer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schemas.errors import (
    AlreadyExists,
    AuthenticationFailed,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from vault._audit import AuditEntry, AuditLog
from vault._clients import hash_client_secret, secret_matches
from vault._models import ApiClientRecord, OfficerRecord

__all__ = [
    "ROLES",
    "Officer",
    "OfficerRegistry",
    "Role",
]

log = logging.getLogger("yinxin.vault")


class Role:
    SECURITY_OFFICER: Final = "security-officer"
    AUDITOR: Final = "auditor"
    OPERATOR: Final = "operator"


ROLES: Final = (Role.SECURITY_OFFICER, Role.AUDITOR, Role.OPERATOR)

_NAME_RE: Final = re.compile(r"[a-z][a-z0-9._-]{1,63}")
MIN_PASSWORD_CHARS: Final = 12  # NIST SP 800-63B §3.1.1.2 asks for at least 8; these are key custodians
MAX_PASSWORD_CHARS: Final = 256
# Checked for unknown names so that timing does not tell which officers exist.
_DUMMY_HASH: Final = hash_client_secret("not an officer password, never matches")


@dataclass(frozen=True, slots=True)
class Officer:
    name: str
    role: str
    client_id: str | None
    has_password: bool
    created_at: datetime
    created_by: str
    disabled_at: datetime | None

    @property
    def actor(self) -> str:
        """How the audit log names this officer."""
        return f"officer:{self.name}"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "client_id": self.client_id,
            "password": self.has_password,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


def _to_officer(row: OfficerRecord) -> Officer:
    return Officer(
        row.name,
        row.role,
        row.client_id,
        row.password_hash is not None,
        row.created_at,
        row.created_by,
        row.disabled_at,
    )


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidInput(
            f"an officer password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters "
            "(a passphrase of several words is easiest)"
        )
    return password


def require_role(officer: Officer, roles: Sequence[str], what: str) -> None:
    if officer.role not in roles:
        allowed = " or ".join(roles)
        raise PermissionDenied(f"officer {officer.name} is {officer.role}: only a {allowed} may {what}")


class OfficerRegistry:
    """Officer accounts; methods take the caller's session and never commit."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def setup_mode(self, session: Session) -> bool:
        """True until the first (enabled) security officer exists."""
        return self.count_security_officers(session) == 0

    def count_security_officers(self, session: Session) -> int:
        return int(
            session.execute(
                select(func.count())
                .select_from(OfficerRecord)
                .where(OfficerRecord.role == Role.SECURITY_OFFICER, OfficerRecord.disabled_at.is_(None))
            ).scalar_one()
        )

    def add(
        self,
        session: Session,
        name: str,
        role: str,
        *,
        password: str | None,
        client_id: str | None,
        acting: Officer | None,
        actor: str,
        now: datetime,
    ) -> Officer:
        if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
            raise InvalidInput(
                "an officer name is 2-64 characters: a lower-case letter, then a-z 0-9 . _ - (e.g. zhang.wei)"
            )
        if role not in ROLES:
            raise InvalidInput(f"role {str(role)[:40]!r} is not known: use one of {', '.join(ROLES)}")
        if password is None and client_id is None:
            raise InvalidInput(
                "an officer needs a credential: a password (prompt or --password-file) "
                "or an API client (--client CLIENT_ID)"
            )
        if password is not None:
            check_password(password)
        # Serialise enrolments: the first-officer rule must hold under concurrency.
        self._audit.lock_head(session)
        bootstrap = self.setup_mode(session)
        if acting is None:
            if not bootstrap:
                raise PermissionDenied(
                    "security officers are enrolled: a new officer is added by one of them "
                    "(give --officer NAME)"
                )
            if role != Role.SECURITY_OFFICER:
                raise PermissionDenied(
                    "enrol the first security officer first: "
                    "`yinxin officer add NAME --role security-officer`"
                )
        else:
            require_role(acting, (Role.SECURITY_OFFICER,), "enrol officers")
        if session.get(OfficerRecord, name) is not None:
            raise AlreadyExists(f"officer {name} already exists")
        if client_id is not None:
            client = session.get(ApiClientRecord, client_id)
            if client is None or client.disabled_at is not None:
                raise NotFound(f"no enabled API client {client_id[:64]!r}: `yinxin client list` shows them")
            if "keys:manage" not in client.scopes.split():
                raise InvalidInput(
                    f"API client {client_id} lacks the keys:manage scope: create one with "
                    "`yinxin client add --dept USCC --scopes keys:manage`"
                )
            taken = session.execute(
                select(OfficerRecord.name).where(OfficerRecord.client_id == client_id)
            ).scalar_one_or_none()
            if taken is not None:
                raise AlreadyExists(f"API client {client_id} already acts for officer {taken}")
        row = OfficerRecord(
            name=name,
            role=role,
            password_hash=hash_client_secret(password) if password is not None else None,
            client_id=client_id,
            created_at=now,
            created_by=acting.name if acting is not None else actor,
            disabled_at=None,
        )
        session.add(row)
        self._audit.append(
            session,
            AuditEntry(
                acting.actor if acting is not None else actor,
                "officer.add",
                name,
                {"role": role, "client_id": client_id, "password": password is not None, "setup": bootstrap},
            ),
            at=now,
        )
        session.flush()
        return _to_officer(row)

    def authenticate(self, session: Session, name: str, password: str) -> Officer:
        """The officer *name* if *password* is theirs and they are enabled; else AuthenticationFailed.

        The failure does not say whether the name exists; the caller audits it.
        """
        row = session.get(OfficerRecord, name) if isinstance(name, str) and len(name) <= 64 else None
        stored = row.password_hash if row is not None and row.password_hash is not None else _DUMMY_HASH
        ok = (
            isinstance(password, str)
            and len(password) <= MAX_PASSWORD_CHARS
            and secret_matches(password, stored)
        )
        if row is None or row.password_hash is None or row.disabled_at is not None or not ok:
            raise AuthenticationFailed(
                "officer authentication failed: wrong name or password, or the officer is disabled"
            )
        return _to_officer(row)

    def for_client(self, session: Session, client_id: str) -> Officer | None:
        row = session.execute(
            select(OfficerRecord).where(
                OfficerRecord.client_id == client_id, OfficerRecord.disabled_at.is_(None)
            )
        ).scalar_one_or_none()
        return None if row is None else _to_officer(row)

    def get(self, session: Session, name: str) -> Officer:
        row = session.get(OfficerRecord, name) if isinstance(name, str) else None
        if row is None:
            raise NotFound(f"no officer named {str(name)[:64]!r}: `yinxin officer list` shows them")
        return _to_officer(row)

    def list(self, session: Session) -> list[Officer]:
        rows = session.execute(select(OfficerRecord).order_by(OfficerRecord.name)).scalars()
        return [_to_officer(r) for r in rows]

    def disable(self, session: Session, name: str, *, acting: Officer, now: datetime) -> Officer:
        require_role(acting, (Role.SECURITY_OFFICER,), "disable officers")
        row = session.get(OfficerRecord, name, with_for_update=True)
        if row is None:
            raise NotFound(f"no officer named {name[:64]!r}: `yinxin officer list` shows them")
        if row.disabled_at is not None:
            raise IllegalTransition(f"officer {name} is already disabled")
        if row.role == Role.SECURITY_OFFICER and self.count_security_officers(session) <= 1:
            raise IllegalTransition(
                f"officer {name} is the last security officer: enrol another before disabling this one"
            )
        row.disabled_at = now
        self._audit.append(
            session, AuditEntry(acting.actor, "officer.disable", name, {"role": row.role}), at=now
        )
        session.flush()
        return _to_officer(row)
