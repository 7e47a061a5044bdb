"""The audit endpoints: one session as a timeline with an integrity verdict, and the writes of
many sessions filtered by time, namespace, cluster and approver (for a SIEM, as JSON lines)."""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas import chain
from schemas import subjects as S
from schemas.approval import ApprovalRequested
from schemas.approvers import REGISTRY_SESSION
from schemas.ids import InvalidId, check_token
from services.gateway.errors import HttpError
from services.runtime import approvers, audit, audit_signers, cluster_names, signing
from services.runtime.errors import ConfigError

if TYPE_CHECKING:
    from services.gateway.routes import Api

FORMATS = ("json", "text", "jsonl")


@functools.cache
def gate_key() -> Ed25519PublicKey | None:
    """The gate's public key, to verify grants on replay (INTERLOCK_GATE_PUBKEY_FILE)."""
    path = os.environ.get("INTERLOCK_GATE_PUBKEY_FILE")
    return signing.load_public(Path(path)) if path else None


@functools.cache
def admin_keys() -> dict[str, Ed25519PublicKey] | None:
    """The admin public keys that the approver registry is trusted with, to check who signed
    each decision (INTERLOCK_ADMIN_KEYS_FILE, as the gate has them). Without them, or if they
    cannot be read, the audit says the decisions were not checked (never intact)."""
    path = os.environ.get("INTERLOCK_ADMIN_KEYS_FILE")
    if not path:
        return None
    try:
        return approvers.load_admin_keys(Path(path))
    except ConfigError:
        return None


async def _links(api: Api, session_id: str) -> list[chain.Link]:
    # Every stored event, forged ones too: the audit names them, where a read would skip them.
    stored = await api.bus.session(session_id, verify=False)
    return [chain.Link(s.seq, s.subject, s.raw, s.signature) for s in stored]


async def _approvers(api: Api) -> tuple[audit_signers.Approvers, list[chain.Link]]:
    """The approver registry as the log holds it, with the admin keys, and its stored events
    (an export carries them)."""
    links = await _links(api, REGISTRY_SESSION)
    return audit_signers.Approvers(admin_keys(), links, api.bus.keyring), links


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise HttpError(400, "invalid_format", f"format must be one of {', '.join(FORMATS)}")
    return fmt


def _time(request: web.Request, name: str) -> datetime | None:
    if name not in request.query:
        return None
    raw = request.query[name]
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HttpError(400, "invalid_time", f"{name} must be an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise HttpError(400, "invalid_time", f"{name} needs a timezone (e.g. Z)")
    return value


async def session_audit(api: Api, request: web.Request) -> web.Response:
    api.principal(request, "viewer")
    try:
        sid = check_token(request.match_info["session_id"], "session id")
    except InvalidId as exc:
        raise HttpError(400, "invalid_id", str(exc)) from exc
    fmt = _format(request)
    links = await _links(api, sid)
    if not links:
        raise HttpError(404, "not_found", f"no session {sid}")
    people, registry = await _approvers(api)
    if fmt == "jsonl":
        # The registry's events too: `interlock audit --verify` re-checks every decision's
        # signature with them (and the admin keys, which it takes from its reader, not the file).
        extra = registry if sid != REGISTRY_SESSION else []
        return web.Response(text=audit.export_lines(links + extra),
                            content_type="application/x-ndjson")
    report = audit.audit(sid, links, gate_key(), api.bus.keyring, people)
    if fmt == "text":
        return web.Response(text=report.render() + "\n", content_type="text/plain")
    return web.json_response(report.to_json())


async def search(api: Api, request: web.Request) -> web.Response:
    """Writes across sessions: who asked, who decided, what changed, what ran."""
    api.principal(request, "viewer")
    fmt = _format(request)
    if fmt == "text":
        raise HttpError(400, "invalid_format", "format must be json or jsonl here")
    since, until = _time(request, "since"), _time(request, "until")
    namespace = request.query.get("namespace", "")
    approver = request.query.get("approver", "")
    if len(namespace) > 63 or len(approver) > 200:
        raise HttpError(400, "invalid_filter", "namespace (63) or approver (200) too long")
    # A cluster nobody wrote to finds nothing (as a namespace does); a value that cannot be a
    # cluster name is a mistake, said as one.
    cluster = request.query.get("cluster", "")
    if "cluster" in request.query and not cluster_names.valid(cluster):
        raise HttpError(400, "invalid_filter", f"cluster: a cluster name is {cluster_names.RULE}")
    sessions: list[str] = []
    async for s in api.bus.read(S.tag_filter("gate", "approval.requested")):
        ev = s.event
        assert isinstance(ev, ApprovalRequested)
        if (since and ev.occurred_at < since) or (until and ev.occurred_at > until):
            continue
        if namespace and all(c.target.namespace != namespace for c in ev.calls):
            continue
        if cluster and not audit.on_cluster(ev, cluster):
            continue
        if ev.session_id not in sessions:
            sessions.append(ev.session_id)
    writes: list[dict[str, object]] = []
    integrity: dict[str, bool] = {}
    people, _ = await _approvers(api)
    for sid in sessions[:500]:
        report = audit.audit(sid, await _links(api, sid), gate_key(), api.bus.keyring, people)
        integrity[sid] = report.ok
        for w in report.writes:
            at = datetime.fromisoformat(w.requested_at)
            if (since and at < since) or (until and at > until):
                continue
            if namespace and w.target.get("namespace") != namespace:
                continue
            if cluster and w.cluster != cluster:
                continue
            if approver and approver not in w.approvers:
                continue
            writes.append(dict(w.__dict__))
    if fmt == "jsonl":
        body = "".join(json.dumps(w) + "\n" for w in writes)
        return web.Response(text=body, content_type="application/x-ndjson")
    return web.json_response({"writes": writes, "integrity": integrity,
                              "truncated": len(sessions) > 500})
