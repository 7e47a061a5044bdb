from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox.controllers.kubelet import Behaviour, timeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_start_then_ready() -> None:
    b = Behaviour(start_delay=1, ready_delay=2)
    creating = timeline(b, T0, at(0.5), "Always", "c")
    assert creating.state == {"waiting": {"reason": "ContainerCreating"}}
    assert creating.next_change == 0.5
    running = timeline(b, T0, at(2), "Always", "c")
    assert "running" in running.state
    assert not running.ready
    assert running.next_change == 1
    ready = timeline(b, T0, at(3), "Always", "c")
    assert ready.ready
    assert ready.ready_since == at(3)
    assert ready.next_change is None


def test_oom_every_interval_restarts() -> None:
    b = Behaviour(start_delay=0, ready_delay=0, oom_every=60)
    tl = timeline(b, T0, at(200), "Always", "c")
    assert tl.restarts == 3
    assert tl.last_state["terminated"]["reason"] == "OOMKilled"
    assert tl.last_state["terminated"]["exitCode"] == 137
    assert tl.next_change == 40


def test_crash_loop_backs_off_exponentially() -> None:
    b = Behaviour(start_delay=0, ready_delay=0, crash_after=1, crash_backoff=10)
    # run 0-1, wait 10 -> run 11-12, wait 20 -> run 32-33, wait 40 ...
    assert timeline(b, T0, at(5), "Always", "c").state["waiting"]["reason"] == "CrashLoopBackOff"
    assert timeline(b, T0, at(11.5), "Always", "c").restarts == 1
    tl = timeline(b, T0, at(20), "Always", "c")
    assert (tl.restarts, tl.state["waiting"]["message"][:11]) == (1, "back-off 20")
    assert timeline(b, T0, at(32.5), "Always", "c").restarts == 2


def test_run_for_completes_without_restart() -> None:
    b = Behaviour(start_delay=0, ready_delay=0, run_for=5)
    tl = timeline(b, T0, at(9), "Never", "c")
    assert tl.state["terminated"]["reason"] == "Completed"
    assert tl.restarts == 0
    assert tl.next_change is None
