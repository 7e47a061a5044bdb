"""Event signatures (services/runtime/identity.py): what a signature covers, and each way an
event can fail to be its emitter's."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import ApprovalDecided
from schemas.ids import new_approval_id, new_session_id
from schemas.session import UserMessage
from services.runtime import audit, identity
from services.runtime.bus import Bus
from services.runtime.errors import ConfigError, PoisonMessage
from services.runtime.identity import ForgedEvent, Keyring, Signer


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    identity.provision_keys(out, S.SERVICES)
    return out


def signer(keys: Path, service: str) -> Signer:
    return identity.load_signer(keys / f"{service}.key", service)


def ring(keys: Path) -> Keyring:
    return identity.load_keyring(keys / identity.KEYRING_FILE)


def decision() -> tuple[str, bytes]:
    ev = ApprovalDecided(session_id=new_session_id(), approval_id=new_approval_id(),
                         decision="approve", approver="alice", actor="alice")
    return S.event_subject(ev), E.encode(ev)


def problem(keys: Path, subject: str, data: bytes, sig: str | None) -> str:
    with pytest.raises(ForgedEvent) as info:
        ring(keys).check(subject, data, sig)
    assert isinstance(info.value, PoisonMessage)  # terminated like any poison
    return info.value.problem


def test_the_emitters_signature_verifies(keys: Path) -> None:
    subject, data = decision()
    ring(keys).check(subject, data, signer(keys, "gateway").sign(subject, data))


def test_a_tampered_body_fails(keys: Path) -> None:
    subject, data = decision()
    sig = signer(keys, "gateway").sign(subject, data)
    assert problem(keys, subject, data.replace(b"alice", b"mallory"), sig) == "bad signature"


def test_a_signature_copied_onto_another_subject_fails(keys: Path) -> None:
    subject, data = decision()
    sig = signer(keys, "gateway").sign(subject, data)
    other = subject.rsplit(".", 1)[0] + ".a_other"
    assert problem(keys, other, data, sig) == "bad signature"


def test_another_services_key_is_the_wrong_key(keys: Path) -> None:
    subject, data = decision()  # the gateway's subject, signed by the planner
    sig = signer(keys, "planner").sign(subject, data)
    assert problem(keys, subject, data, sig) == "wrong key"


def test_an_unknown_key_id_and_a_missing_header(keys: Path) -> None:
    subject, data = decision()
    sig = signer(keys, "gateway").sign(subject, data)
    assert problem(keys, subject, data, "0123456789abcdef " + sig.split(" ", 1)[1]) == \
        "unknown key"
    assert problem(keys, subject, data, None) == "unsigned"
    assert problem(keys, subject, data, "") == "unsigned"
    assert problem(keys, subject, data, sig.split(" ", 1)[0] + " not-base64!") == \
        "bad signature"


def test_unsigned_history_is_read_only_below_where_signing_began(keys: Path) -> None:
    subject, data = decision()
    r = ring(keys)
    r.unsigned_before = 10
    r.check(subject, data, None, seq=9)
    with pytest.raises(ForgedEvent):
        r.check(subject, data, None, seq=10)
    with pytest.raises(ForgedEvent):
        r.check(subject, data, None)  # the audit: always says what it can prove


def test_provisioning_keeps_keys_and_writes_private_keys_0600(tmp_path: Path) -> None:
    first = identity.provision_keys(tmp_path, S.SERVICES)
    again = identity.provision_keys(tmp_path, S.SERVICES)  # re-running never rotates a key
    assert first.to_json() == again.to_json()
    assert {e.service for e in first.entries.values()} == set(S.SERVICES)
    for svc in S.SERVICES:
        assert stat.S_IMODE((tmp_path / f"{svc}.key").stat().st_mode) == 0o600
    assert "PRIVATE" not in (tmp_path / identity.KEYRING_FILE).read_text()
    # A rotated key: the old public key stays in the keyring, so what it signed still verifies.
    old = signer(tmp_path, "planner")
    (tmp_path / "planner.key").unlink()
    rotated = identity.provision_keys(tmp_path, S.SERVICES)
    assert old.kid in rotated.entries
    assert signer(tmp_path, "planner").kid in rotated.entries


def test_a_broken_keyring_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text(json.dumps({"version": 1, "keys": [{"kid": "x"}]}))
    with pytest.raises(ConfigError):
        identity.load_keyring(tmp_path / "k.json")
    with pytest.raises(ConfigError):
        identity.load_keyring(tmp_path / "missing.json")


def test_the_audit_names_each_unverifiable_event_at_its_seq(keys: Path) -> None:
    sid = new_session_id()
    msg = UserMessage(session_id=sid, text="hi", actor="otto")
    raw1 = E.encode(msg)
    good = chain.Link(1, S.event_subject(msg), raw1,
                      signer(keys, "gateway").sign(S.event_subject(msg), raw1))
    d = ApprovalDecided(session_id=sid, approval_id=new_approval_id(), decision="approve",
                        approver="alice", actor="alice", prev_seq=1,
                        prev_hash=chain.event_hash(raw1))
    subject, raw2 = S.event_subject(d), E.encode(d)
    for sig, kind in ((None, "unsigned"),
                      (signer(keys, "planner").sign(subject, raw2), "wrong key"),
                      (signer(keys, "gateway").sign(subject, raw2 + b" "), "bad signature")):
        report = audit.audit(sid, [good, chain.Link(2, subject, raw2, sig)], keyring=ring(keys))
        assert not report.ok
        assert report.chain.ok  # the chain alone would have said intact
        assert [(p["seq"], p["signature"]) for p in report.problems] == [(2, kind)]
        assert "NOT SIGNED BY ITS WRITER" in report.entries[1].text
        assert "signature problem at #2" in report.render()
    ok = audit.audit(sid, [good], keyring=ring(keys))
    assert ok.ok, ok.problems
    unchecked = audit.audit(sid, [good])  # no keyring: never ok, and says why
    assert not unchecked.ok
    assert unchecked.problems[0]["signature"] == "unchecked"


def test_an_export_keeps_signatures_and_an_edited_one_is_caught(keys: Path) -> None:
    sid = new_session_id()
    msg = UserMessage(session_id=sid, text="hi", actor="otto")
    raw = E.encode(msg)
    link = chain.Link(1, S.event_subject(msg), raw,
                      signer(keys, "gateway").sign(S.event_subject(msg), raw))
    text = audit.export_lines([link])
    [report] = audit.audit_file(text, keyring=ring(keys))
    assert report.ok
    forged = text.replace(link.signature or "", signer(keys, "planner").sign(link.subject, raw))
    [bad] = audit.audit_file(forged, keyring=ring(keys))
    assert [p["signature"] for p in bad.problems] == ["wrong key"]
    # An export made before events were signed is still read; its verdict names it unsigned.
    old = json.dumps({k: v for k, v in json.loads(text).items() if k != "signature"}) + "\n"
    [legacy] = audit.audit_file(old, keyring=ring(keys))
    assert [p["signature"] for p in legacy.problems] == ["unsigned"]
    assert legacy.entries
    assert not legacy.ok


def test_a_bus_verifies_once_per_stored_event_but_never_trusts_a_claimed_seq(keys: Path) -> None:
    bus = Bus(cast(Any, SimpleNamespace(jetstream=lambda: None)), "planner",
              signer(keys, "planner"), ring(keys))
    subject, data = decision()
    sig = signer(keys, "gateway").sign(subject, data)
    bus.verify(7, subject, data, sig)
    calls: list[str] = []
    real = bus.keyring.check  # type: ignore[union-attr]

    def counting(*args: Any) -> None:
        calls.append(args[0])
        real(*args)

    bus.keyring.check = counting  # type: ignore[union-attr,method-assign]
    bus.verify(7, subject, data, sig)  # consumed, then folded: verified once
    assert calls == []
    # Same seq and signature, other bytes or another subject (a spoofed live message): checked.
    with pytest.raises(ForgedEvent):
        bus.verify(7, subject, data.replace(b"alice", b"mallory"), sig)
    with pytest.raises(ForgedEvent):
        bus.verify(7, subject.rsplit(".", 1)[0] + ".a_other", data, sig)
    # Its own subjects are not verified, unless asked (the live feed).
    own = "evt.s_x.planner.tool.proposed.c_x"
    bus.verify(8, own, b"{}", None)
    with pytest.raises(ForgedEvent):
        bus.verify(8, own, b"{}", None, trust_own=False)


# -- per-cluster executor keys (issue 21) -----------------------------------------------------

def _result(cluster: str | None) -> tuple[str, bytes]:
    """An executor event on cluster `cluster`'s subject (None: a 6-token legacy subject)."""
    from schemas.execution import ToolResult
    ev = ToolResult(session_id=new_session_id(), call_id="c-1", tool="get", status="ok",
                    output="", cluster_name=cluster or "", actor="executor")
    subject = S.event_subject(ev)
    if cluster is None:
        subject = subject.rsplit(".", 1)[0]
    return subject, E.encode(ev)


@pytest.fixture(scope="module")
def cluster_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cluster-keys")
    identity.provision_keys(out, S.SERVICES, ("a", "b", "arn:aws:eks:x/prod"))
    return out


def test_each_cluster_gets_its_own_executor_key_recorded_as_that_clusters(
        cluster_keys: Path) -> None:
    files = {c: cluster_keys / identity.executor_key_file(c) for c in ("a", "b")}
    assert files["a"].name == "executor.a.key"
    assert all(f.exists() for f in files.values())
    kids = {c: identity.load_signer(f, "executor").kid for c, f in files.items()}
    legacy = signer(cluster_keys, "executor").kid
    assert len({kids["a"], kids["b"], legacy}) == 3
    entries = ring(cluster_keys).entries
    assert (entries[kids["a"]].cluster, entries[kids["b"]].cluster) == ("a", "b")
    assert entries[legacy].cluster == ""
    # An EKS ARN's key file is named by its token.
    assert (cluster_keys / identity.executor_key_file("arn:aws:eks:x/prod")).exists()
    # Re-provisioning keeps them (never rotates a live key).
    again = identity.provision_keys(cluster_keys, S.SERVICES, ("a", "b"))
    assert identity.load_signer(files["a"], "executor").kid == kids["a"]
    assert again.entries[kids["a"]].cluster == "a"


def test_a_clusters_key_speaks_only_on_that_clusters_subjects(cluster_keys: Path) -> None:
    a = identity.load_signer(cluster_keys / identity.executor_key_file("a"), "executor")
    subject, data = _result("a")
    ring(cluster_keys).check(subject, data, a.sign(subject, data))
    # b's key on a's subject: a compromised spoke b speaking for a.
    b = identity.load_signer(cluster_keys / identity.executor_key_file("b"), "executor")
    assert problem(cluster_keys, subject, data, b.sign(subject, data)) == "wrong key"
    # a cluster's key on a subject bound to no cluster (6 tokens, as before issue 21)
    subject6, data6 = _result(None)
    assert problem(cluster_keys, subject6, data6, a.sign(subject6, data6)) == "wrong key"
    # The legacy executor key (no cluster) verifies as before: legacy mode and old logs.
    legacy = signer(cluster_keys, "executor")
    ring(cluster_keys).check(subject, data, legacy.sign(subject, data))
    ring(cluster_keys).check(subject6, data6, legacy.sign(subject6, data6))


def test_a_keyring_from_before_cluster_keys_still_loads(cluster_keys: Path) -> None:
    doc = json.loads((cluster_keys / identity.KEYRING_FILE).read_text())
    assert any(k.get("cluster") == "a" for k in doc["keys"])
    for k in doc["keys"]:
        k.pop("cluster", None)
    old = Keyring.from_json(doc)
    assert all(e.cluster == "" for e in old.entries.values())


def test_an_executor_given_another_clusters_key_does_not_start(cluster_keys: Path) -> None:
    keyring = ring(cluster_keys)
    kid = {c: identity.load_signer(cluster_keys / identity.executor_key_file(c), "executor").kid
           for c in ("a", "b")}
    assert identity.executor_key_problem(keyring, kid["a"], "a") is None
    fatal, why = identity.executor_key_problem(keyring, kid["a"], "b") or (False, "")
    assert fatal and "cluster 'a'" in why and "executor.b.key" in why
    assert (identity.executor_key_problem(keyring, kid["a"], "") or (False,))[0]
    legacy = signer(cluster_keys, "executor").kid
    assert identity.executor_key_problem(keyring, legacy, "") is None
    assert identity.executor_key_problem(keyring, legacy, "a") == (False, (
        f"the executor of cluster 'a' holds the legacy executor key {legacy}, not its "
        "cluster's own (executor.a.key): writes with sealed secret values will be refused"))
