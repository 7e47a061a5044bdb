"""Poison on every subject a service consumes (issue 9): for each durable consumer and each subject
it reads, the identity that may publish there sends (a) undecodable bytes, (b) valid JSON of the
wrong shape, (c) a real event whose subject names another session (a replay into a session it
does not belong to), and, once per consumer, (d) a valid event padded to nearly max_payload; the
executor also gets signed grants recorded again, in another session, and unsigned, and a read
classified with args no reader accepts, near max_payload.

Each message is handled on its first delivery and never redelivered: a poison message is
terminated (the server's MSG_TERMINATED advisory says so, with deliveries=1) and logged by the
service; where it is trustworthy enough to name a session, the refusal is recorded in that
session; no MAX_DELIVERIES advisory is ever sent; nothing reached the cluster; and afterwards a
read and an approved write complete through the same consumers."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.js.errors import NotFoundError

from launcher.stack import Stack
from schemas import events as E
from schemas import subjects as S
from schemas.approval import (
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    ToolAmended,
    ToolClassified,
    ToolRefused,
)
from schemas.execution import CommandRefused, PreviewRecorded, ToolVerified
from schemas.planning import ToolProposed, ToolRequested
from schemas.session import SessionCancelled
from services.gate import domain
from services.runtime.bus import Bus
from services.runtime.identity import SIGNATURE_HEADER
from tests.chaos.support import (
    Driver,
    WatchedSandbox,
    Witness,
    admin_bus,
    audit,
    bus_as,
    create_targets,
    read_log,
    start_stack,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]

TARGET = "poison-target"
HUGE = 1_000_000  # the server's max_payload is 1 MiB
ADVISORIES = "$JS.EVENT.ADVISORY.CONSUMER"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` the rest (at least one token)."""
    pt, st = pattern.split("."), subject.split(".")
    for i, p in enumerate(pt):
        if p == ">":
            return len(st) > i
        if i >= len(st) or (p != "*" and p != st[i]):
            return False
    return len(pt) == len(st)


# The durable consumers this stack provisioned (CONSUMER_FILTERS also names the executor's
# consumers of another layout, which a stack does not provision at the same time).
CONSUMERS: dict[str, tuple[str, tuple[str, ...]]] = {}


async def provisioned(admin: Bus) -> dict[str, tuple[str, tuple[str, ...]]]:
    found = {}
    for durable, (stream, filters) in S.CONSUMER_FILTERS.items():
        try:
            await admin.js.consumer_info(stream, durable)
        except NotFoundError:
            continue
        found[durable] = (stream, filters)
    return found


def consumers_of(subject: str) -> list[str]:
    return [d for d, (s, filters) in CONSUMERS.items()
            if s == S.EVENTS_STREAM and any(matches(f, subject) for f in filters)]


def service_of(durable: str) -> str:
    """Each durable consumer is named after its service (`executor-write`: the executor)."""
    return durable.split("-", 1)[0]


@dataclass
class Poison:
    name: str
    publisher: str  # the NATS identity allowed to publish there
    subject: str
    data: bytes
    terminated: bool  # a poison message: terminated; otherwise handled (refused) and acked
    seq: int = 0


class Advisories:
    def __init__(self) -> None:
        self.terminated: dict[tuple[str, int], dict[str, Any]] = {}
        self.max_deliveries: list[dict[str, Any]] = []

    async def on_msg(self, msg: Any) -> None:
        body = json.loads(msg.data)
        if ".MSG_TERMINATED." in msg.subject:
            self.terminated[(body["consumer"], int(body["stream_seq"]))] = body
        elif ".MAX_DELIVERIES." in msg.subject:
            self.max_deliveries.append(body)


async def consumer_infos(admin: Bus) -> dict[str, Any]:
    return {d: await admin.js.consumer_info(stream, d) for d, (stream, _) in CONSUMERS.items()}


async def quiescent(admin: Bus, timeout: float = 60.0) -> dict[str, Any]:
    """Consumer infos once every consumer has nothing pending, nothing unacknowledged, and the
    log stopped growing (two consecutive looks agree)."""
    prev: Any = None
    got: dict[str, Any] = {}

    async def idle() -> bool:
        nonlocal prev, got
        got = await consumer_infos(admin)
        events = await admin.js.stream_info(S.EVENTS_STREAM)
        key = (events.state.last_seq,
               tuple(i.delivered.consumer_seq for i in got.values()))
        quiet = all(i.num_pending == 0 and i.num_ack_pending == 0 for i in got.values())
        same, prev = quiet and key == prev, (key if quiet else None)
        return same

    await wait_until(idle, timeout, "every consumer to finish", interval=0.2)
    return got


def service_log(stack: Stack, service: str) -> list[dict[str, Any]]:
    lines = []
    for line in (stack.data / "logs" / f"{service}.log").read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # a traceback's continuation
    return lines


async def test_poison_on_every_consumed_subject_is_terminated_once_and_work_flows_on(
    cluster: WatchedSandbox, http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()
    await create_targets(cluster.sandbox.url, [TARGET])
    stack = await start_stack(tmp_path_factory.mktemp("poison"), cluster.sandbox)
    witness = Witness()
    buses: dict[str, Bus] = {}
    try:
        await witness.follow(stack)
        driver = Driver(http, stack, witness, timeout=90)
        admin = buses["admin"] = await admin_bus(stack)
        CONSUMERS.clear()
        CONSUMERS.update(await provisioned(admin))
        assert {service_of(d) for d in CONSUMERS} == {"planner", "gate", "executor", "notifier"}
        adv = Advisories()
        await admin.nc.subscribe(f"{ADVISORIES}.MSG_TERMINATED.>", cb=adv.on_msg)
        await admin.nc.subscribe(f"{ADVISORIES}.MAX_DELIVERIES.>", cb=adv.on_msg)
        for user in ("gateway", "planner", "gate", "executor"):
            buses[user] = await bus_as(stack, user)

        # -- real sessions to copy from and to aim at ----------------------------------------
        expected: dict[str, tuple[str, int]] = {}
        read_sid = await driver.read()
        write_sid, result = await driver.write(TARGET, 2)
        assert result["status"] == "ok", result
        expected[driver.approvals_by_session[write_sid]] = (TARGET, 2)
        await cluster.sandbox.wait_for(lambda: cluster.settled(TARGET), 30)
        deny_sid, _ = await driver.write(TARGET, 7, decision="deny")
        expected[driver.approvals_by_session[deny_sid]] = (TARGET, 7)
        victim = await driver.read()  # a finished session that poison is aimed at

        log = await read_log(admin)
        real: dict[str, Any] = {}
        for s in log:
            real.setdefault(s.event.type, s)
        requested = next(s.event for s in log if isinstance(s.event, ApprovalRequested)
                         and s.event.session_id == write_sid)
        granted = next(s.event for s in log if isinstance(s.event, ApprovalGranted)
                       and s.event.session_id == write_sid)
        read_call = next(s.event for s in log if isinstance(s.event, ToolProposed)
                         and s.event.session_id == read_sid)

        def forged_payload(tag: str) -> bytes:
            """A well-formed event of this type from another session (built where none is)."""
            if tag in real:
                return bytes(real[tag].raw)
            made: dict[str, Any] = {
                "session.cancelled": lambda: SessionCancelled(session_id=read_sid),
                "tool.refused": lambda: ToolRefused(session_id=read_sid, call_id="c_forged",
                                                    tool="get", reason="forged"),
                # An MCP client's call (issue 19): a read, as the gateway records it.
                "tool.requested": lambda: ToolRequested(
                    session_id=read_sid, actor="operator", tool="get", client="forged",
                    args={"kind": "deployment", "name": "web", "namespace": "shop"}),
                "approval.expired": lambda: ApprovalExpired(
                    session_id=write_sid, approval_id=requested.approval_id,
                    call_ids=requested.call_ids),
                # No approver changed args here: the gate's own amended call, as it would be.
                "tool.amended": lambda: ToolAmended(
                    session_id=write_sid, call_id="c_forged_amended",
                    replaces=requested.calls[0].call_id, tool=requested.calls[0].tool,
                    args=requested.calls[0].args, target=requested.calls[0].target,
                    amended_by="approver"),
                # The notifier follows a granted write to its results (issue 20's Slack
                # message): an executor's refusal, as it would record one.
                "command.refused": lambda: CommandRefused(session_id=read_sid,
                                                          call_id="c_forged", reason="forged"),
                # The write's verification may still be waiting for its rollout.
                "tool.verified": lambda: ToolVerified(
                    session_id=write_sid, call_id=requested.calls[0].call_id,
                    tool=requested.calls[0].tool, outcome="verified"),
            }
            return E.encode(made[tag]())

        def key_of(raw: bytes, fallback: str) -> str:
            try:
                return E.decode(raw).key()
            except (msgspec.DecodeError, msgspec.ValidationError):
                return fallback

        # -- the poison -----------------------------------------------------------------------
        poisons: list[Poison] = []
        seen_subjects: set[tuple[str, str]] = set()
        huge_done: set[str] = set()
        for durable, (stream, filters) in CONSUMERS.items():
            if stream != S.EVENTS_STREAM:
                continue
            for f in filters:
                _, _, emitter, noun, verb, _ = f.split(".")
                tag = f"{noun}.{verb}"
                if (emitter, tag) in seen_subjects:
                    continue
                seen_subjects.add((emitter, tag))
                at = f"{S.EVENTS_PREFIX}.{victim}.{emitter}.{tag}"
                n = len(poisons)
                poisons += [
                    Poison(f"{emitter} {tag}: undecodable", emitter, f"{at}.k_bytes{n}",
                           b"\xff\xfe\x00{not json", True),
                    Poison(f"{emitter} {tag}: wrong shape", emitter, f"{at}.k_shape{n}",
                           json.dumps({"type": tag, "session_id": 42, "event_id": [1]}).encode(),
                           True),
                ]
                raw = forged_payload(tag)
                poisons.append(Poison(f"{emitter} {tag}: another session's event", emitter,
                                      f"{at}.{key_of(raw, 'k_forged')}", raw, True))
                if durable not in huge_done:
                    huge_done.add(durable)
                    poisons.append(Poison(f"{emitter} {tag}: near max_payload", emitter,
                                          f"{at}.k_huge{n}", _huge(tag, victim), True))

        # Decodable and addressed to this session, but impossible: handled fail-closed and
        # recorded in the session (gate), never terminated silently.
        unknown_call = "c_poisonpreview"
        preview = PreviewRecorded(session_id=victim, call_id=unknown_call, ok=True)
        poisons.append(Poison("executor preview.recorded: unknown call", "executor",
                              S.event_subject(preview), E.encode(preview), True))
        decided = ApprovalDecided(session_id=victim, approval_id="a_nosuchapproval",
                                  decision="approve", approver="approver")
        poisons.append(Poison("gateway approval.decided: unknown approval", "gateway",
                              S.event_subject(decided), E.encode(decided), False))
        proposed = ToolProposed(session_id=victim, call_id="c_poisontool", tool="rm -rf /",
                                args={"x": 1})
        poisons.append(Poison("planner tool.proposed: unknown tool", "planner",
                              S.event_subject(proposed), E.encode(proposed), False))

        # What the executor runs is released by the gate's own events: the gate (which may
        # record them, signed with its key) records a real grant again, in another session,
        # and unsigned, and classifies a read whose args no reader accepts.
        call = requested.calls[0]
        grant = granted.grants[0]
        # Under approval ids of their own, so that the audit below still finds exactly one
        # outcome of the real approval: the grants inside are the real ones.
        elsewhere = ApprovalGranted(session_id=victim, approval_id="a_elsewhere",
                                    approver=granted.approver, grants=granted.grants)
        again = ApprovalGranted(session_id=write_sid, approval_id="a_again",
                                approver=granted.approver, grants=granted.grants)
        unsigned = ApprovalGranted(
            session_id=write_sid, approval_id="a_unsigned", approver=granted.approver,
            grants=(msgspec.structs.replace(grant, call_id="c_unsigned", signature=""),))
        huge_read = ToolClassified(session_id=victim, call_id="c_hugeread", access="read",
                                   rule="r", tool=read_call.tool,
                                   args={"pad": "x" * (HUGE - 2_000)})
        poisons += [
            Poison("gate approval.granted: a signed grant in another session", "gate",
                   S.event_subject(elsewhere), E.encode(elsewhere), False),
            Poison("gate approval.granted: a signed grant recorded again", "gate",
                   S.event_subject(again), E.encode(again), False),
            Poison("gate approval.granted: unsigned", "gate", S.event_subject(unsigned),
                   E.encode(unsigned), False),
            Poison("gate tool.classified: a read near max_payload", "gate",
                   S.event_subject(huge_read), E.encode(huge_read), False),
        ]
        assert {p.publisher for p in poisons} == {"gateway", "planner", "gate", "executor"}
        covered = {(d, f) for p in poisons for d in consumers_of(p.subject)
                   for f in CONSUMERS[d][1] if matches(f, p.subject)}
        every = {(d, f) for d, (_, fs) in CONSUMERS.items() for f in fs}
        assert covered == every, f"not poisoned: {every - covered}"

        before = await quiescent(admin)
        events_from = (await admin.js.stream_info(S.EVENTS_STREAM)).state.last_seq
        writes_before = len(cluster.writes)
        for p in poisons:
            # Poison from the identity that may write there, so signed with its own key: what
            # is tested here is a bad payload, not a forged signature (test_signatures.py).
            signer = buses[p.publisher].signer
            headers = {SIGNATURE_HEADER: signer.sign(p.subject, p.data)} \
                if signer is not None else None
            ack = await buses[p.publisher].js.publish(p.subject, p.data, timeout=10,
                                                      headers=headers)
            assert ack.stream == S.EVENTS_STREAM
            p.seq = int(ack.seq)
        after = await quiescent(admin)

        # 1. Every poison message was delivered once and terminated by each consumer reading
        #    its subject; handled ones were acknowledged on their first delivery.
        terminated = [(d, p) for p in poisons if p.terminated for d in consumers_of(p.subject)]

        async def all_terminated() -> bool:
            return all((d, p.seq) in adv.terminated for d, p in terminated)

        await wait_until(all_terminated, 30, "a MSG_TERMINATED advisory for every poison")
        for d, p in terminated:
            assert adv.terminated[(d, p.seq)]["deliveries"] == 1, (p.name, d)
        stray = {k for k in adv.terminated if k not in {(d, p.seq) for d, p in terminated}}
        assert not stray, f"terminated but not poison: {stray}"
        assert adv.max_deliveries == [], adv.max_deliveries

        # 2. No redelivery at all: each consumer's deliveries grew by exactly the number of
        #    messages it matched in the meantime (poison and the refusals it caused).
        events_to = (await admin.js.stream_info(S.EVENTS_STREAM)).state.last_seq
        subjects = [(await admin.js.get_msg(S.EVENTS_STREAM, seq)).subject
                    for seq in range(events_from + 1, events_to + 1)]
        for d, (_, filters) in CONSUMERS.items():
            delivered = (after[d].delivered.consumer_seq
                         - before[d].delivered.consumer_seq)
            matched = sum(any(matches(f, s) for f in filters) for s in subjects)
            assert delivered == matched, f"{d}: {delivered} deliveries of {matched} messages"
            assert after[d].num_redelivered == 0, (d, after[d])
            assert after[d].num_ack_pending == 0, (d, after[d])
            assert after[d].num_pending == 0, (d, after[d])

        # 3. Logged by the service that terminated it (subject and sequence).
        for d, p in terminated:
            service = service_of(d)
            logged = [r for r in service_log(stack, service)
                      if r.get("seq") == p.seq and r.get("subject") == p.subject
                      and r.get("level") in ("error", "warning")]
            assert logged, f"{service} did not log the poison {p.name} (seq {p.seq})"

        # 4. Recorded where a session exists, fail-closed.
        log = await read_log(admin)
        poisoned = {p.seq for p in poisons}
        new = [s.event for s in log if s.seq > events_from and s.seq not in poisoned]
        kinds = Counter((e.type, e.session_id) for e in new)
        rejected = [e for e in new if e.type == "decision.rejected" and e.session_id == victim]
        assert {e.approval_id for e in rejected} >= {  # type: ignore[attr-defined]
            domain.approval_id_for(unknown_call), "a_nosuchapproval"}, rejected
        assert any(e.type == "tool.refused" and e.call_id == "c_poisontool"  # type: ignore[attr-defined]
                   for e in new)
        refusals = [e for e in new if e.type == "command.refused"]
        reasons = " | ".join(e.reason for e in refusals)  # type: ignore[attr-defined]
        # The grant recorded again ran nothing and is refused nowhere: the call is done.
        assert kinds[("command.refused", write_sid)] == 1, reasons
        assert "unsigned" in reasons, reasons
        assert any(e.call_id == call.call_id and e.session_id == victim  # type: ignore[attr-defined]
                   and f"the grant is for session {write_sid}" in e.reason  # type: ignore[attr-defined]
                   for e in refusals), reasons
        assert any(getattr(e, "call_id", "") == "c_hugeread" for e in new
                   if e.type in ("command.refused", "tool.result")), "huge read not answered"
        # Nothing was forged into the log by the services on the poison's behalf (the
        # poison itself left out: the gate's grants above are poison).
        assert not any(isinstance(e, ApprovalGranted | ApprovalDenied) for e in new), new

        # 5. Zero executions: no claim, no write reached the cluster.
        assert not [e for e in new if e.type == "tool.started"]
        assert len(cluster.writes) == writes_before, cluster.writes[writes_before:]
        assert cluster.replicas(TARGET) == 2

        # 6. Later messages on the same consumers still flow.
        await driver.read()
        sid, result = await driver.write(TARGET, 3)
        assert result["status"] == "ok", result
        expected[driver.approvals_by_session[sid]] = (TARGET, 3)
        final = await quiescent(admin)
        for d in CONSUMERS:
            assert final[d].delivered.consumer_seq > after[d].delivered.consumer_seq, d
            assert final[d].num_redelivered == 0, (d, final[d])
        assert adv.max_deliveries == []
        assert cluster.replicas(TARGET) == 3

        # The server stored the poison (and the witness saw it republished), but it is no event:
        # readers skip it by design, so the audit's promise is about every other message.
        for p in poisons:
            if p.terminated:
                witness.acked.pop(p.seq, None)
        report = await audit(stack, driver, cluster, expected)
        print(report.line("poison", poison_messages=len(poisons),
                          terminations=len(terminated),
                          seconds=round(time.monotonic() - began, 1)))
        report.assert_clean()
    finally:
        for bus in buses.values():
            await bus.close()
        await witness.close()
        await stack.stop()


def _huge(tag: str, session_id: str) -> bytes:
    """Valid JSON just under max_payload that names an event type but is not a valid one."""
    body = {"type": tag, "session_id": session_id, "event_id": "e_huge", "call_id": "c_huge",
            "approval_id": "a_huge", "text": ""}
    body["text"] = "x" * (HUGE - 2_000 - len(json.dumps(body)))
    return json.dumps(body).encode()
