"""A secret value in a proposed write never enters the log (issue 16).

Attack: a person types `create secret generic … --from-literal=password=…`, `set env … \
DB_PASSWORD=…` or `apply -f -` of a Secret manifest in direct mode, and a model proposes the same
writes. Before issue 16 the plaintext was stored in `user.message`, `tool.proposed`,
`approval.requested` — and from there went to SSE, every viewer and, in model mode, back to the
external model. Now whichever service first holds the value (the gateway for a message, the
planner for a model's call) seals it to the executor outside the log; the log, SSE and the
model see only a reference with a keyed fingerprint, the approver sees *that* a value changes,
and after approval the cluster holds the real value.

The whole stack as processes, the model a scripted OpenAI-compatible server, the cluster read
with the official client, the log read raw with the admin identity (every stored byte).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from launcher.stack import Stack
from schemas import subjects as S
from schemas.ids import new_call_id
from schemas.planning import ToolProposed
from services.runtime.sealing.blobs import Ref
from services.runtime.sealing.sealer import sealer_for
from tests.e2e.conftest import bus_as, kube, people
from tests.support import Client, SseEvent
from tests.support_llm import Reply, Request, ScriptedLLM, calls, say

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
NS = "staging"
DEPLOY = "auth-service"  # in staging (sandbox scenario two-auth)
SCRIPT: dict[str, Callable[[Request], Reply]] = {}


API_KEY = "sk-sealed-e2e"


@pytest.fixture(scope="module")
def stack(scripted_stack: Stack) -> Stack:
    return scripted_stack


def secret_value(label: str) -> str:
    """A password nobody else in the log could contain by chance."""
    return f"{label}-{secrets.token_hex(6)}-Pw!"


def forms(value: str) -> list[str]:
    """Every way the value could be spelled in stored bytes: as is, base64, JSON-escaped."""
    b64 = base64.b64encode(value.encode()).decode()
    return [value, b64, json.dumps(value)[1:-1]]


async def log_bytes(stack: Stack) -> bytes:
    """Every message EVENTS holds, raw, headers included."""
    bus = await bus_as(stack, "admin")
    try:
        last = await bus.last_sequence()
        out = []
        for seq in range(1, last + 1):
            msg = await bus.js.get_msg(S.EVENTS_STREAM, seq=seq, direct=True)
            out.append(msg.data or b"")
            out.append(json.dumps(msg.headers or {}).encode())
        return b"\n".join(out)
    finally:
        await bus.close()


def assert_nowhere(values: list[str], where: str, data: bytes | str) -> None:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    for value in values:
        for form in forms(value):
            assert form not in text, f"{where} holds the secret {value!r} (as {form!r})"


def sse_text(events: list[SseEvent]) -> str:
    return "\n".join(json.dumps({"id": e.id, "event": e.event, "data": e.data})
                     for e in events)


def _of(events: list[SseEvent], tag: str) -> list[Any]:
    return [e.data for e in events if e.event == tag]


async def _approve_and_run(operator: Client, approver: Client, sid: str,
                           events: list[SseEvent]) -> list[SseEvent]:
    (req,) = _of(events, "approval.requested")
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    calls_ = {c["call_id"] for c in req["calls"]}
    done: set[tuple[str, str]] = set()

    def finished(e: SseEvent) -> bool:
        # Verified too: a rollout still running would change the deployment under the next
        # test's preview (a conflict, rightly).
        if e.event in ("tool.result", "tool.verified") and e.data["call_id"] in calls_:
            done.add((e.event, e.data["call_id"]))
        return len(done) == 2 * len(calls_)

    # Longer than the executor's verification timeout (120 s): it always says something.
    after = await operator.wait_for(sid, finished, after=events[-1].id or 0, timeout=150)
    everything = events + after
    results = [r for r in _of(everything, "tool.result") if r["call_id"] in calls_]
    assert {r["status"] for r in results} == {"ok"}, [r["output"] for r in results]
    # The executor compares what settled with the approved (sealed) diff: the real values hold
    # (a rollout slowed down by a loaded machine may time out; that is not what this checks).
    verified = [v for v in _of(everything, "tool.verified") if v["call_id"] in calls_]
    assert {v["outcome"] for v in verified} <= {"verified", "timed_out"}, verified
    return everything


def _secret_data(stack: Stack, name: str) -> dict[str, str]:
    sec = client.CoreV1Api(kube(stack)).read_namespaced_secret(name, NS)
    return {k: base64.b64decode(v).decode() for k, v in (sec.data or {}).items()}


def _env(stack: Stack) -> dict[str, str]:
    dep = client.AppsV1Api(kube(stack)).read_namespaced_deployment(DEPLOY, NS)
    (c,) = dep.spec.template.spec.containers
    return {e.name: e.value for e in c.env or [] if e.value is not None}


def _card_shows_sealed_changes(req: dict[str, Any], paths: list[str]) -> None:
    """The approver sees that each value changes, by its fingerprint, never the value."""
    changes = [c for call in req["calls"] for c in call.get("diff", [])] or req.get("diff", [])
    shown = {c["path"]: c for c in changes}
    for path in paths:
        assert path in shown, (path, list(shown))
        assert "fingerprint" in str(shown[path]["after"]), json.dumps([shown[path], req["calls"]])


async def test_direct_mode_secrets_are_sealed_end_to_end(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    operator, approver = people(stack, http)
    literal, env_pw, url_pw = (secret_value("lit"), secret_value("env"), secret_value("url"))
    data_pw, string_pw = secret_value("data"), secret_value("string")
    url = f"postgres://app:{url_pw}@db.staging:5432/app"
    everything: list[SseEvent] = []

    # create secret generic --from-literal
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl create secret generic db-lit -n {NS} "
                            f"--from-literal=password={literal} --from-literal=user=app")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    assert_nowhere([literal], "SSE", sse_text(events))
    (req,) = _of(events, "approval.requested")
    _card_shows_sealed_changes(req, ["data.password"])
    everything += await _approve_and_run(operator, approver, sid, events)
    assert _secret_data(stack, "db-lit") == {"password": literal, "user": "app"}

    # set env with a credential by name and one by shape under an innocent name
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl set env deploy/{DEPLOY} -n {NS} DB_PASSWORD={env_pw} "
                            f"DATABASE_URL={url} LOG_LEVEL=debug")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    assert_nowhere([env_pw, url_pw], "SSE", sse_text(events))
    (req,) = _of(events, "approval.requested")
    prefix = f"spec.template.spec.containers[name={DEPLOY}].env"
    _card_shows_sealed_changes(req, [f"{prefix}[name=DB_PASSWORD].value",
                                     f"{prefix}[name=DATABASE_URL].value"])
    # What is not a secret stays readable on the card.
    assert req["calls"][0]["args"]["env"]["LOG_LEVEL"] == "debug"
    everything += await _approve_and_run(operator, approver, sid, events)
    env = _env(stack)
    assert (env["DB_PASSWORD"], env["DATABASE_URL"], env["LOG_LEVEL"]) == (env_pw, url, "debug")

    # apply -f - of a Secret manifest: data (base64) and stringData
    sid = await operator.new_session()
    b64 = base64.b64encode(data_pw.encode()).decode()
    await operator.say(sid, "kubectl apply -f - <<EOF\n"
                            "apiVersion: v1\nkind: Secret\n"
                            f"metadata:\n  name: db-applied\n  namespace: {NS}\n"
                            f"data:\n  password: {b64}\n"
                            f"stringData:\n  api-token: \"{string_pw}\"\nEOF")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    assert_nowhere([data_pw, string_pw], "SSE", sse_text(events))
    (req,) = _of(events, "approval.requested")
    _card_shows_sealed_changes(req, ["data.password", "data.api-token"])
    everything += await _approve_and_run(operator, approver, sid, events)
    assert _secret_data(stack, "db-applied") == {"password": data_pw, "api-token": string_pw}

    values = [literal, env_pw, url_pw, data_pw, string_pw]
    assert_nowhere(values, "SSE", sse_text(everything))
    assert_nowhere(values, "the EVENTS stream", await log_bytes(stack))


def _rotation(env_pw: str, url: str, data_pw: str, string_pw: str) -> Callable[[Request], Reply]:
    """A model that proposes the same writes in one step (one card), then answers."""

    def script(req: Request) -> Reply:
        if not req.tool_results():
            meta = {"rationale": "rotate the database credentials as asked",
                    "evidence": ["Rotate the database credentials"],
                    "expected_outcome": "the new credentials are in place"}
            return calls(
                ("set_env", {"kind": "deployment", "name": DEPLOY, "namespace": NS,
                             "env": {"DB_PASSWORD": env_pw, "DATABASE_URL": url}, **meta}),
                ("create", {"namespace": NS, "manifest": {
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "db-model", "namespace": NS},
                    "data": {"password": base64.b64encode(data_pw.encode()).decode()},
                    "stringData": {"api-token": string_pw}}, **meta}),
                text=f"Rotating: DB_PASSWORD will be {env_pw}.")
        return say("Done: the credentials are rotated.")

    return script


async def test_model_mode_secrets_are_sealed_and_never_sent_back_to_the_model(
    stack: Stack, http: aiohttp.ClientSession, llm: ScriptedLLM
) -> None:
    env_pw, url_pw = secret_value("menv"), secret_value("murl")
    data_pw, string_pw = secret_value("mdata"), secret_value("mstring")
    url = f"mysql://svc:{url_pw}@db.staging/app"
    SCRIPT["now"] = _rotation(env_pw, url, data_pw, string_pw)
    asked = len(llm.requests)
    operator, approver = people(stack, http)
    sid = await operator.new_session()
    await operator.say(sid, f"Rotate the database credentials of {DEPLOY} in {NS}.")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    values = [env_pw, url_pw, data_pw, string_pw]
    assert_nowhere(values, "SSE", sse_text(events))
    (req,) = _of(events, "approval.requested")
    prefix = f"spec.template.spec.containers[name={DEPLOY}].env"
    _card_shows_sealed_changes(req, [f"{prefix}[name=DB_PASSWORD].value",
                                     f"{prefix}[name=DATABASE_URL].value",
                                     "data.password", "data.api-token"])
    everything = await _approve_and_run(operator, approver, sid, events)
    everything += await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                          after=everything[-1].id or 0, timeout=60)
    env = _env(stack)
    assert (env["DB_PASSWORD"], env["DATABASE_URL"]) == (env_pw, url)
    assert _secret_data(stack, "db-model") == {"password": data_pw, "api-token": string_pw}

    assert_nowhere(values, "SSE", sse_text(everything))
    assert_nowhere(values, "the EVENTS stream", await log_bytes(stack))
    # The model was asked again after the writes ran; what it was sent holds its own calls and
    # their results — sealed, never the values it wrote.
    later = llm.requests[asked + 1:]
    assert later, "the model was not asked again after the writes"
    assert_nowhere(values, "what the model was sent", json.dumps([r.body for r in later]))


async def _propose_sealed_env(stack: Stack, operator: Client, sid: str, name: str,
                              ref: str) -> list[SseEvent]:
    """A proposal carrying a reference, appended with the planner's own identity (as a
    compromised planner could), and its card."""
    bus = await bus_as(stack, "planner")
    try:
        await bus.append(ToolProposed(
            session_id=sid, call_id=new_call_id(), tool="set_env", source="llm",
            args={"kind": "deployment", "name": DEPLOY, "namespace": NS, "env": {name: ref}},
            requested_by="operator", rationale="rotate"))
    finally:
        await bus.close()
    return await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)


async def _approved_write_is_refused(operator: Client, approver: Client, sid: str,
                                     events: list[SseEvent], why: str) -> None:
    (req,) = _of(events, "approval.requested")
    assert any("dry run failed" in f and why in f for f in req["risk_flags"]), req["risk_flags"]
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    after = await operator.wait_for(sid, lambda e: e.event == "command.refused",
                                    after=events[-1].id or 0, timeout=60)
    (refused,) = _of(after, "command.refused")
    assert why in refused["reason"], refused
    assert not _of(after, "tool.started")
    assert not _of(after, "tool.result")


async def test_a_sealed_value_that_is_missing_or_not_the_approved_one_never_runs(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    operator, approver = people(stack, http)
    # Missing (expired, or never stored): the dry run says so, and an approval runs nothing.
    sid = await operator.new_session()
    ghost = f"sealed:planner:{secrets.token_hex(16)}:{secrets.token_hex(32)}"
    events = await _propose_sealed_env(stack, operator, sid, "GHOST_TOKEN", ghost)
    await _approved_write_is_refused(operator, approver, sid, events, "is not available")
    assert "GHOST_TOKEN" not in _env(stack)

    # A blob that is there, but whose value is not the one the approved fingerprint names (a
    # reference re-pointed at another blob): refused, nothing runs.
    sid = await operator.new_session()
    planner = await bus_as(stack, "planner")
    try:
        real = await sealer_for(planner).value(sid, secret_value("real"))
        other = await sealer_for(planner).value(sid, secret_value("other"))
    finally:
        await planner.close()
    swapped = Ref(real.sealer, real.blob_id, other.fingerprint).text
    events = await _propose_sealed_env(stack, operator, sid, "SWAPPED_TOKEN", swapped)
    await _approved_write_is_refused(operator, approver, sid, events,
                                     "does not match the approved fingerprint")
    # A reference copied from another session does not open here either.
    sid2 = await operator.new_session()
    events = await _propose_sealed_env(stack, operator, sid2, "COPIED_TOKEN", real.text)
    await _approved_write_is_refused(operator, approver, sid2, events, "is not available")
    env = _env(stack)
    assert "SWAPPED_TOKEN" not in env
    assert "COPIED_TOKEN" not in env


async def test_a_value_an_approver_types_into_a_modify_is_sealed_too(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    operator, approver = people(stack, http)
    first, second = secret_value("first"), secret_value("modified")
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl set env deploy/{DEPLOY} -n {NS} API_TOKEN={first}")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    (req,) = _of(events, "approval.requested")
    status, body = await approver.call(
        "POST", f"/v1/approvals/{req['approval_id']}/decision",
        {"decision": "approve", "args": {"env": {"API_TOKEN": second}}})
    assert status == 202, body
    amended = await operator.wait_for(
        sid, lambda e: e.event == "approval.requested"
        and e.data["approval_id"] != req["approval_id"], after=events[-1].id or 0, timeout=60)
    assert_nowhere([first, second], "SSE", sse_text(events + amended))
    everything = events + await _approve_and_run(
        operator, approver, sid, [e for e in amended if e.event != "approval.requested"
                                  or e.data["approval_id"] != req["approval_id"]])
    assert _env(stack)["API_TOKEN"] == second
    assert_nowhere([first, second], "SSE", sse_text(everything))
    assert_nowhere([first, second], "the EVENTS stream", await log_bytes(stack))

    # A manifest the gateway cannot read, that may hold a secret, is refused, not recorded.
    status, body = await operator.call("POST", f"/v1/sessions/{sid}/messages", {
        "text": f"kubectl apply -f -\nkind: Secret\nstringData: {{password: [{first}"})
    assert status == 400, body
    assert body["error"]["code"] == "unreadable_secret"
    assert_nowhere([first], "the EVENTS stream", await log_bytes(stack))


async def test_a_command_typed_without_kubectl_is_sealed_before_the_model_sees_it(
    stack: Stack, http: aiohttp.ClientSession, llm: ScriptedLLM
) -> None:
    """Forgetting the word kubectl must not put the value in the log: the gateway reads
    `create secret generic …` as the command direct mode would run, and seals its literal."""
    pw = secret_value("bare")
    SCRIPT["now"] = lambda req: say("That looks like a kubectl command; prefix it with /kubectl.")
    asked = len(llm.requests)
    operator, _ = people(stack, http)
    sid = await operator.new_session()
    await operator.say(sid, f"create secret generic db-bare -n {NS} --from-literal=password={pw}")
    events = await operator.wait_for(sid, lambda e: e.event == "turn.completed", timeout=60)
    assert_nowhere([pw], "SSE", sse_text(events))
    assert_nowhere([pw], "the EVENTS stream", await log_bytes(stack))
    sent = json.dumps([r.body for r in llm.requests[asked:]])
    assert "sealed:gateway:" in sent
    assert_nowhere([pw], "what the model was sent", sent)
