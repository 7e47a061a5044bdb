"""The log has a size limit (issue 14: no identity can grow it without bound). Long before the
limit the gateway says so (/metrics and a log line); at the limit every write is refused with a
clear answer, nothing acknowledged is lost, and raising the limit (re-provisioning) lets writes
resume."""

from __future__ import annotations

import logging
import re

import pytest

from schemas.session import UserMessage
from services.runtime import natsconf, provision
from services.runtime.errors import LogFull
from tests.integration.gateway.conftest import Gateway

LIMIT = 24 * 1024
SMALL = provision.StreamLimits(events_max_bytes=LIMIT, max_msg_size=4096)


def _gauge(text: str, name: str) -> float:
    match = re.search(rf'^{name}{{stream="EVENTS"}} (\S+)$', text, re.M)
    assert match is not None, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


async def _reprovision(gateway: Gateway, limits: provision.StreamLimits) -> None:
    env = gateway.env
    await provision.provision(env.url, natsconf.ADMIN_USER,
                              env.credentials[natsconf.ADMIN_USER], limits=limits)


async def test_the_log_fills_up_with_an_early_alert_and_a_clear_refusal(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.gateway.routes")
    await _reprovision(gateway, SMALL)  # an update of the existing stream
    operator, viewer = gateway.client("operator"), gateway.client("viewer")
    sid = await operator.new_session()
    accepted, alerted_at = 0, None
    for _ in range(200):
        status, body = await operator.call("POST", f"/v1/sessions/{sid}/messages",
                                           {"text": "disk " * 40})
        if status != 202:
            break
        accepted += 1
        status_m, text = await viewer.call("GET", "/metrics")
        assert status_m == 200
        ratio = _gauge(text, "interlock_log_fill_ratio")
        if alerted_at is None and any("event log is" in r.getMessage() for r in caplog.records):
            alerted_at = ratio
    # Writes stop, and say why: 507 with a stable code, not a 500 or a bare "retry".
    assert status == 507, body
    assert body["error"]["code"] == "log_full"
    assert "full" in body["error"]["message"]
    # The early alert came while writes were still accepted, at the first level crossed.
    assert alerted_at is not None
    assert 0.8 <= alerted_at < 1.0
    _, text = await viewer.call("GET", "/metrics")
    assert _gauge(text, "interlock_log_max_bytes") == LIMIT
    assert 0.8 <= _gauge(text, "interlock_log_fill_ratio") <= 1.0
    assert _gauge(text, "interlock_log_bytes") <= LIMIT
    # A service's append of the same size says the same (a retryable LogFull, never an
    # unexpected error); a smaller one could still fit in what is left.
    with pytest.raises(LogFull, match="is full"):
        await gateway.bus.append(UserMessage(session_id=sid, text="disk " * 40, actor="otto"))
    # Nothing acknowledged was lost.
    stored = [s for s in await gateway.bus.session(sid) if s.event.type == "user.message"]
    assert len(stored) == accepted > 0
    # An event larger than max_msg_size is refused as such.
    status, body = await operator.call("POST", f"/v1/sessions/{sid}/messages",
                                       {"text": "x" * 8000})
    assert status in (413, 507), body  # too large, or refused for the full log first
    # Raising the limit is a re-run of provisioning: writes resume where they stopped.
    await _reprovision(gateway, provision.StreamLimits(events_max_bytes=4 * LIMIT,
                                                       max_msg_size=4096))
    status, body = await operator.call("POST", f"/v1/sessions/{sid}/messages", {"text": "again"})
    assert status == 202, body
    _, text = await viewer.call("GET", "/metrics")
    assert _gauge(text, "interlock_log_max_bytes") == 4 * LIMIT


async def test_an_event_over_the_size_limit_is_refused_as_too_large(gateway: Gateway) -> None:
    await _reprovision(gateway, SMALL)
    operator = gateway.client("operator")
    sid = await operator.new_session()
    status, body = await operator.call("POST", f"/v1/sessions/{sid}/messages",
                                       {"text": "x" * 8000})
    assert status == 413, body
    assert body["error"]["code"] == "too_large"


def test_limits_come_from_the_environment() -> None:
    # The EXEC stream's limit of earlier versions is accepted and ignored (there is no EXEC).
    limits = provision.StreamLimits.from_env({"INTERLOCK_EVENTS_MAX_BYTES": str(8 << 30),
                                              "INTERLOCK_EXEC_MAX_BYTES": "1000"})
    assert limits.events_max_bytes == 8 << 30
    with pytest.raises(ValueError, match="at least"):
        provision.StreamLimits.from_env({"INTERLOCK_EVENTS_MAX_BYTES": "1000"})
    cfg = provision.events_stream(limits=limits)
    assert cfg.max_bytes == 8 << 30
    assert cfg.max_msg_size == natsconf.MAX_PAYLOAD
    assert cfg.discard is not None
    assert cfg.discard.value == "new"


async def test_a_limit_below_what_is_stored_evicts_nothing(gateway: Gateway) -> None:
    """An upgrade may set a limit below an existing log's size: discard NEW keeps every stored
    event and only refuses new ones."""
    operator = gateway.client("operator")
    sid = await operator.new_session()
    for i in range(20):
        await operator.say(sid, f"message {i} " + "y" * 200)
    before = [s.seq for s in await gateway.bus.session(sid)]
    used, _ = await gateway.bus.log_usage()
    await _reprovision(gateway, provision.StreamLimits(events_max_bytes=used // 2,
                                                       max_msg_size=1024))
    assert [s.seq for s in await gateway.bus.session(sid)] == before
    with pytest.raises(LogFull):
        await gateway.bus.append(UserMessage(session_id=sid, text="one more", actor="otto"))
