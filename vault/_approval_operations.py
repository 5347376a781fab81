"""The operations dual control guards: how each is checked when requested and run when approved.

``check`` normalises the parameters, refuses what cannot run (so a request that two officers
approve does not then fail), and describes the request in one sentence; ``run`` does it and
returns a result document. Every ``run`` is safe to repeat (``approvals execute``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from hsm import SignatureAlgorithm
from schemas.errors import Conflict, IllegalTransition, InvalidInput, YinxinError
from signing import REVOCATION_REASONS

if TYPE_CHECKING:
    from vault._vault import Vault

__all__ = ["OPERATIONS", "Operation", "Progress", "operation_named", "parse_time"]

Progress = Callable[[int, int], None]


# ---- the operations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    description: str
    # check(vault, raw params) -> (normalised params, subject, summary); raises for bad input
    check: Callable[[Vault, Mapping[str, Any]], tuple[dict[str, Any], str, str]]
    # run(vault, params, actor, progress) -> result document
    run: Callable[[Vault, Mapping[str, Any], str, Progress | None], dict[str, Any]]


def _text(params: Mapping[str, Any], name: str, limit: int = 500) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"parameter {name!r} is required (text)")
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"parameter {name!r} is longer than {limit} characters")
    return value


def _only(params: Mapping[str, Any], allowed: set[str], operation: str) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise InvalidInput(
            f"{operation} takes {', '.join(sorted(allowed)) or 'no parameters'}; unknown: {', '.join(extra)}"
        )


def _check_destroy(vault: Vault, params: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    _only(params, {"kid"}, "key.destroy")
    kid = _text(params, "kid", 128)
    info = vault.lifecycle.check_destroy(kid)
    return {"kid": kid}, kid, f"destroy the private key of {info.purpose} key {kid} ({info.state})"


def _run_destroy(
    vault: Vault, params: Mapping[str, Any], actor: str, progress: Progress | None
) -> dict[str, Any]:
    info = vault.lifecycle.destroy(params["kid"], actor=actor)
    return {"kid": info.kid, "state": info.state}


def parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(
            f"parameter {name!r} is required: an ISO 8601 time with zone, e.g. 2026-11-20T08:00+08:00"
        )
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name} {value[:40]!r} is not an ISO 8601 time: use e.g. 2026-11-20T08:00+08:00"
        ) from None
    if when.tzinfo is None:
        raise InvalidInput(f"{name} {value[:40]!r} has no time zone: add one, e.g. +08:00")
    return when


def _check_compromise(vault: Vault, params: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    _only(params, {"kid", "since", "reason"}, "key.compromise")
    kid = _text(params, "kid", 128)
    since = parse_time(params.get("since"), "since")
    reason = _text(params, "reason")
    info = vault.lifecycle.check_compromise(kid, since)
    return (
        {"kid": kid, "since": since.isoformat(), "reason": reason},
        kid,
        f"declare {info.purpose} key {kid} compromised since {since.isoformat()}: {reason}",
    )


def _run_compromise(
    vault: Vault, params: Mapping[str, Any], actor: str, progress: Progress | None
) -> dict[str, Any]:
    # resume=True: a request run again after an interruption finishes the follow-ups (seal revocation).
    result = vault.lifecycle.compromise(
        params["kid"],
        since=parse_time(params["since"], "since"),
        reason=params["reason"],
        actor=actor,
        resume=True,
    )
    return result.as_dict()


def _check_reissue(vault: Vault, params: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    _only(params, {"kid"}, "key.reissue")
    kid = _text(params, "kid", 128)
    vault.lifecycle.check_reissue(kid)
    count = vault.lifecycle.count_to_reissue(kid)
    return {"kid": kid}, kid, f"re-issue the {count} live licence(s) signed by compromised key {kid}"


def _run_reissue(
    vault: Vault, params: Mapping[str, Any], actor: str, progress: Progress | None
) -> dict[str, Any]:
    return vault.lifecycle.reissue_affected(params["kid"], actor=actor, progress=progress).as_dict()


def _check_seal_revoke(vault: Vault, params: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    _only(params, {"seal_id", "reason", "crl_reason"}, "seal.revoke")
    seal_id = _text(params, "seal_id", 32)
    reason = _text(params, "reason")
    crl_reason = params.get("crl_reason", "unspecified")
    if crl_reason not in REVOCATION_REASONS or crl_reason == "certificateHold":
        usable = sorted(r for r in REVOCATION_REASONS if r != "certificateHold")
        raise InvalidInput(
            f"crl_reason must be one of {', '.join(usable)} "
            "(certificateHold is a suspension: `yinxin seal suspend`)"
        )
    seal = vault.seals.get(seal_id)
    if seal.state == "revoked":
        raise IllegalTransition(f"seal {seal_id} is already revoked (revocation is final)")
    return (
        {"seal_id": seal_id, "reason": reason, "crl_reason": crl_reason},
        seal_id,
        f"revoke seal {seal_id} {seal.name} of {seal.department_code} ({crl_reason}): {reason}",
    )


def _run_seal_revoke(
    vault: Vault, params: Mapping[str, Any], actor: str, progress: Progress | None
) -> dict[str, Any]:
    seal = vault.seals.revoke(
        params["seal_id"], params["reason"], crl_reason=params["crl_reason"], actor=actor
    )
    return {"seal_id": seal.seal_id, "state": seal.state}


def _check_ca_init(vault: Vault, params: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    _only(params, {"algorithm"}, "ca.init")
    algorithm = SignatureAlgorithm.parse(str(params.get("algorithm", "ES256")))
    if algorithm is SignatureAlgorithm.EDDSA:
        raise InvalidInput("the CA key must be ES256 or PS256 (Ed25519 chains are not widely validated)")
    try:
        existing = vault.seals.ca()
    except YinxinError:
        existing = None
    if existing is not None:
        raise Conflict(f"the CA {existing.ca_id} already exists")
    return {"algorithm": algorithm.value}, "ca", f"create the CA root key ({algorithm.value}) and certificate"


def _run_ca_init(
    vault: Vault, params: Mapping[str, Any], actor: str, progress: Progress | None
) -> dict[str, Any]:
    ca = vault.seals.init_ca(SignatureAlgorithm.parse(params["algorithm"]), actor=actor)
    return {"ca_id": ca.ca_id, "kid": ca.kid}


OPERATIONS: Final[Mapping[str, Operation]] = {
    op.name: op
    for op in (
        Operation("key.destroy", "destroy a key's private half in the backend", _check_destroy, _run_destroy),
        Operation("key.compromise", "declare a key compromised", _check_compromise, _run_compromise),
        Operation(
            "key.reissue", "re-issue the licences a compromised key signed", _check_reissue, _run_reissue
        ),
        Operation("seal.revoke", "revoke a seal", _check_seal_revoke, _run_seal_revoke),
        Operation("ca.init", "create the CA", _check_ca_init, _run_ca_init),
    )
}


def operation_named(name: str) -> Operation:
    op = OPERATIONS.get(name) if isinstance(name, str) else None
    if op is None:
        raise InvalidInput(f"operation {str(name)[:40]!r} is not known: use one of {', '.join(OPERATIONS)}")
    return op
