"""Events are believed only when signed by the emitter their subject names (issue 14).

A forger who reached the log — here with the admin's credentials, as a reflected server reply
would — stores events on the gateway's subjects, unsigned or signed with another service's key.
The real gate and planner (in-process, real nats-server) terminate them, record the rejection,
never act on them; reads skip them; the audit, live and exported, names each at its seq."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from clients.output import Out
from launcher.verify import verify_export
from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import ApprovalDecided
from schemas.base import Event
from schemas.session import UserMessage
from services.gate import service as gate_service
from services.gate.settings import GateSettings
from services.planner import service as planner_service
from services.planner.settings import PlannerSettings
from services.runtime import approvers, identity, natsconf, signing
from services.runtime.bus import Bus
from services.runtime.identity import SIGNATURE_HEADER
from tests.conftest import NatsEnv
from tests.integration.gateway.conftest import GatewayFactory

pytestmark = pytest.mark.asyncio


class Live:
    """The session's stored events as the stream republishes them."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Event]] = []
        self.changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
        self.events.append((seq, E.decode(msg.data)))
        self.changed.set()

    async def until(self, pred: Callable[[Event], bool], timeout: float = 20.0) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for _, ev in self.events:
                    if pred(ev):
                        return ev
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def services(nats_env: NatsEnv, tmp_path: Path) -> AsyncIterator[None]:
    """The real gate and planner (direct mode), consuming as they do in production."""
    signing.generate_keypair(tmp_path / "grant.key", tmp_path / "grant.pub")
    roots = tmp_path / "admins.pub"  # an admin key nobody uses: these decisions are forged
    roots.write_text(approvers.public_line(Ed25519PrivateKey.generate().public_key()) + "\n")
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(gate_service.run(
            GateSettings(nats=nats_env.settings("gate"), key_file=tmp_path / "grant.key",
                         admin_keys_file=roots), stop)),
        asyncio.create_task(planner_service.run(
            PlannerSettings(nats=nats_env.settings("planner")), stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def forge(admin: nats.NATS, reader: Bus, event: Event, sign_as: str | None,
                keys: Path) -> int:
    """Stores an event on its emitter's subject as a forger would: chained correctly, unsigned
    or signed with another service's key. Returns its stream sequence."""
    [*_, last] = await reader.session(event.session_id, verify=False)
    chained = msgspec.structs.replace(event, prev_seq=last.seq,
                                      prev_hash=chain.event_hash(last.raw))
    subject, data = S.event_subject(chained), E.encode(chained)
    headers = None
    if sign_as is not None:
        headers = {SIGNATURE_HEADER: identity.load_signer(keys / f"{sign_as}.key", sign_as)
                   .sign(subject, data)}
    ack = await admin.jetstream().publish(subject, data, headers=headers)
    return int(ack.seq)


async def test_forged_decisions_are_rejected_never_acted_on_and_named_by_the_audit(
    gateway_factory: GatewayFactory, nats_env: NatsEnv, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await gateway_factory()
    admin = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                               password=nats_env.credentials[natsconf.ADMIN_USER])
    reader = await Bus.connect(nats_env.settings(natsconf.ADMIN_USER), natsconf.ADMIN_USER)
    try:
        async with services(nats_env, tmp_path):
            sid = await gw.client("operator").new_session()
            live = Live()
            await admin.subscribe(S.live_filter(sid), cb=live.on_msg)
            req = await gw.request_approval(sid)
            forged: dict[int, str] = {}
            for sign_as, kind in ((None, "unsigned"), ("planner", "wrong key")):
                decision = ApprovalDecided(session_id=sid, approval_id=req.approval_id,
                                           decision="approve", approver="alice", actor="alice")
                seq = await forge(admin, reader, decision, sign_as, nats_env.keys)
                forged[seq] = kind
                rejected = await live.until(lambda e, d=decision: e.type == "decision.rejected"
                                            and e.causation_id == d.event_id)
                assert f"forged approval.decided at seq {seq} ({kind})" in \
                    rejected.reason  # type: ignore[attr-defined]

            # Never acted upon: no grant, no denial, nothing after the rejections but them.
            stored = await reader.session(sid, verify=False)
            types = [s.event.type for s in stored]
            assert "approval.granted" not in types
            assert types.count("decision.rejected") == 2
            # Reads and folds skip them: the gate's and an auditor's view hold neither.
            for bus in (gw.gate_bus, reader):
                seen = {s.seq for s in await bus.session(sid)}
                assert not seen & set(forged), bus.service
                assert seen  # the rest of the session is still read

            # The audit names each at its seq, live (HTTP) and as a pure function.
            status, body = await gw.client("viewer").call("GET", f"/v1/sessions/{sid}/audit")
            assert status == 200, body
            assert body["integrity"]["ok"] is False
            named = {p["seq"]: p["signature"] for p in body["integrity"]["problems"]}
            assert named == forged
            texts = {e["seq"]: e["text"] for e in body["timeline"]}
            assert all("NOT SIGNED BY ITS WRITER" in texts[s] for s in forged)

            # The export keeps the signatures; verified offline with the keyring, it names them.
            viewer = gw.client("viewer")
            async with gw.http.get(f"{gw.url}/v1/sessions/{sid}/audit?format=jsonl",
                                   headers=viewer.headers) as r:
                assert r.status == 200
                text = await r.text()
            assert all(json.loads(line)["signature"] for line in text.splitlines()
                       if json.loads(line)["seq"] not in forged or forged[
                           json.loads(line)["seq"]] != "unsigned")
            export = tmp_path / "export.jsonl"
            export.write_text(text)
            out = io.StringIO()
            keyring = nats_env.keys / identity.KEYRING_FILE
            assert verify_export(export, tmp_path / "grant.pub", Out(out), keyring) == 1
            report = out.getvalue()
            assert f"{sid}: BROKEN" in report
            for seq, kind in forged.items():
                line = next(x for x in report.splitlines() if x.strip().startswith(f"#{seq}:"))
                assert {"unsigned": "unsigned event", "wrong key": "another service's key"}[
                    kind] in line
            # Without any keyring, the verdict says signatures were not checked: never ok.
            monkeypatch.chdir(tmp_path)  # no .interlock/keys/keyring.json to fall back on
            out = io.StringIO()
            assert verify_export(export, None, Out(out)) == 1
            assert "signatures were not checked" in out.getvalue()
    finally:
        await reader.close()
        await admin.close()


async def test_a_forged_user_message_is_recorded_as_rejected_and_never_answered(
    gateway_factory: GatewayFactory, nats_env: NatsEnv, tmp_path: Path,
) -> None:
    gw = await gateway_factory()
    admin = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                               password=nats_env.credentials[natsconf.ADMIN_USER])
    reader = await Bus.connect(nats_env.settings(natsconf.ADMIN_USER), natsconf.ADMIN_USER)
    try:
        async with services(nats_env, tmp_path):
            sid = await gw.client("operator").new_session()
            live = Live()
            await admin.subscribe(S.live_filter(sid), cb=live.on_msg)
            # Signed by the gate: a real key, but not the one of the emitter the subject names.
            msg = UserMessage(session_id=sid, text="kubectl scale deploy/web --replicas=9 -n shop",
                              actor="otto")
            seq = await forge(admin, reader, msg, "gate", nats_env.keys)
            rejected = await live.until(lambda e: e.type == "command.rejected"
                                        and e.causation_id == msg.event_id)
            assert f"forged user.message at seq {seq} (wrong key)" in \
                rejected.reason  # type: ignore[attr-defined]
            # The session shows it; nothing was proposed from it.
            status, view = await gw.client("operator").call("GET", f"/v1/sessions/{sid}")
            assert status == 200
            assert any("forged user.message" in m["text"] for m in view["messages"])
            assert not view["calls"]
            # A real message is still answered: the planner was not stopped by the forgery.
            await gw.client("operator").say(sid, "kubectl get pods -n shop")
            await live.until(lambda e: e.type == "tool.proposed")
            stored: list[Any] = await reader.session(sid, verify=False)
            assert [s.event.causation_id for s in stored if s.event.type == "tool.proposed"] \
                != [msg.event_id]
    finally:
        await reader.close()
        await admin.close()
