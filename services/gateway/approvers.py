"""The approver registry over HTTP (issue 18): list it, carry an admin's signed enrolment or
revocation into the log, and check a decision's signature early.

The gateway carries; it decides nothing. An enrolment counts only if an admin key the gate was
provisioned with signed it, and a decision only if the gate finds its approver's signature
valid — the checks here are the same ones (services/runtime/approvers.py), made early so that a
person gets a clear 4xx at once instead of a `decision.rejected` a moment later.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from schemas import subjects as S
from schemas.approval import ApprovalDecided, ApprovalRequested
from schemas.approvers import (
    REGISTRY_SESSION,
    ApproverEnrolled,
    ApproverKey,
    ApproverRevoked,
    PasskeyRegistered,
    Signature,
)
from services.gateway.errors import HttpError
from services.gateway.requests import body_of
from services.runtime import approvers
from services.runtime.bus import Bus

if TYPE_CHECKING:
    from services.gateway.routes import Api

REGISTRY_FILTER = f"{S.EVENTS_PREFIX}.{REGISTRY_SESSION}.gateway.approver.*.*"


class Enrolment(msgspec.Struct, forbid_unknown_fields=True):
    """An admin's enrolment of a key for a principal, signed with an admin key."""

    principal: str
    credential: ApproverKey
    admin: Signature


class Revocation(msgspec.Struct, forbid_unknown_fields=True):
    """An admin's revocation of a key, signed with an admin key."""

    principal: str
    key_id: str
    admin: Signature


class Registry:
    """The registry as the log has it (folded incrementally), and the passkeys registered in
    the Command Center that wait for an admin."""

    def __init__(self, bus: Bus, admin_keys_file: Path | None) -> None:
        self.bus = bus
        self.admin_keys_file = admin_keys_file
        # Without the admin keys the gateway cannot check anything early; the gate still does.
        self.registry: approvers.Registry | None = (
            approvers.Registry(approvers.load_admin_keys(admin_keys_file))
            if admin_keys_file is not None else None)
        self.registered: dict[str, tuple[PasskeyRegistered, int]] = {}
        self._cursor = 1
        self._lock = asyncio.Lock()

    async def refresh(self) -> approvers.Registry | None:
        async with self._lock:
            async for s in self.bus.read(REGISTRY_FILTER, self._cursor):
                self._cursor = s.seq + 1
                ev = s.event
                if isinstance(ev, PasskeyRegistered):
                    self.registered[ev.key()] = (ev, s.seq)
                elif self.registry is not None:
                    self.registry.apply(ev)
        return self.registry

    async def check_decision(self, request: ApprovalRequested, d: ApprovalDecided) -> None:
        """403 now if the gate would not count this decision's signature."""
        reg = await self.refresh()
        if reg is None:
            return
        try:
            reg.verify_decision(request, d)
        except approvers.Rejected as exc:
            raise HttpError(403, "bad_signature", str(exc)) from exc

    async def listing(self) -> dict[str, Any]:
        reg = await self.refresh()
        enrolled = [] if reg is None else [
            {"principal": e.principal, "key_id": e.key.key_id, "kind": e.key.kind,
             "label": e.key.label, "credential_id": e.key.credential_id,
             "rp_id": e.key.rp_id, "enrolled_by": e.by, "enrolled_at": e.at.isoformat(),
             "revoked": e.key.key_id in reg.revoked}
            for e in reg.keys.values()]
        known = set() if reg is None else set(reg.keys)
        pending = [{"request_id": rid, "principal": ev.principal,
                    "credential": msgspec.to_builtins(ev.credential),
                    "registered_at": ev.occurred_at.isoformat(), "seq": seq}
                   for rid, (ev, seq) in self.registered.items()
                   if ev.credential.key_id not in known]
        return {"approvers": enrolled, "registered": pending,
                "admin_keys": [] if reg is None else sorted(reg.admins)}

    async def enrol(self, who: str, body: Enrolment) -> dict[str, Any]:
        seq = await self._record(ApproverEnrolled(
            session_id=REGISTRY_SESSION, principal=body.principal, credential=body.credential,
            admin=body.admin, actor=who))
        return {"principal": body.principal, "key_id": body.credential.key_id, "seq": seq}

    async def revoke(self, who: str, body: Revocation) -> dict[str, Any]:
        seq = await self._record(ApproverRevoked(
            session_id=REGISTRY_SESSION, principal=body.principal, key_id=body.key_id,
            admin=body.admin, actor=who))
        return {"principal": body.principal, "key_id": body.key_id, "seq": seq}

    async def _record(self, ev: ApproverEnrolled | ApproverRevoked) -> int:
        """Appends an admin's act once, if the registry's rules would count it (else a 403)."""
        reg = await self.refresh()
        if reg is not None:
            self._check(reg, ev)
        link = await self.bus.append_once(ev)
        # Already recorded (the same enrolment again): the registry has it; say where.
        return link[0] if link is not None else 0

    @staticmethod
    def _check(reg: approvers.Registry, ev: ApproverEnrolled | ApproverRevoked) -> None:
        """The registry's own rules applied to a copy: a 403 if it would not count."""
        trial = approvers.Registry(reg.admins, dict(reg.keys), dict(reg.revoked))
        trial.apply(ev)
        if trial.refused:
            raise HttpError(403, "bad_signature", trial.refused[-1][1])



# -- the routes ---------------------------------------------------------------------------------

async def list_approvers(api: Api, request: web.Request) -> web.Response:
    api.principal(request, "viewer")
    return web.json_response(await api.registry.listing())

async def enrol(api: Api, request: web.Request) -> web.Response:
    who = api.principal(request, "admin")
    body = await body_of(request, Enrolment, required=True)
    return web.json_response(await api.registry.enrol(who.name, body), status=201)

async def revoke(api: Api, request: web.Request) -> web.Response:
    who = api.principal(request, "admin")
    body = await body_of(request, Revocation, required=True)
    return web.json_response(await api.registry.revoke(who.name, body), status=201)
