"""The hub's and a spoke's nats-server configuration in per-cluster mode (issue 21), and the
durables and presence that go with it. The server side of each is shown on real servers in
tests/integration/test_leaf_spokes.py; here, what is rendered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from schemas import subjects as S
from services.runtime import natsconf, presence, provision

ARN = "arn:aws:eks:eu-west-1:1:cluster/prod"


def _hub(clusters: tuple[str, ...] | None, leaf_port: int | None = 7422) -> dict[str, object]:
    creds = natsconf.new_credentials(clusters or ())
    return json.loads(natsconf.render(port=4222, store_dir=Path("/x"),
                                      credentials=creds, clusters=clusters,
                                      leaf_port=leaf_port))


def test_legacy_mode_is_unchanged_but_for_presence() -> None:
    conf = _hub(None, None)
    assert "leafnodes" not in conf
    assert "default_js_domain" not in conf
    assert not [a for a in conf["accounts"] if a.startswith("SPOKE_")]  # type: ignore[union-attr]
    users = natsconf.users(conf)  # type: ignore[arg-type]
    allow = users["executor"][1]["permissions"]["publish"]["allow"]
    assert "evt.*.executor.>" in allow
    assert S.presence_subject("", "all") == "$KV.CLUSTERS._.all"
    assert {S.presence_subject("", r) for r in S.EXECUTOR_ROLES} <= set(allow)
    for reader in ("gate", "gateway"):
        assert f"$JS.API.DIRECT.GET.{S.PRESENCE_STREAM}" in \
            users[reader][1]["permissions"]["publish"]["allow"]
    assert f"$JS.API.DIRECT.GET.{S.PRESENCE_STREAM}" not in \
        users["planner"][1]["permissions"]["publish"]["allow"]


def test_each_cluster_has_a_spoke_account_reaching_only_its_own() -> None:
    clusters = ("a", ARN)
    conf = _hub(clusters)
    assert conf["leafnodes"] == {"listen": "127.0.0.1:7422"}
    tok = S.cluster_token(ARN)
    users = natsconf.users(conf)  # type: ignore[arg-type]
    account, entry = users[f"spoke-{tok}"]
    assert account == f"SPOKE_{tok}" == natsconf.account_of(f"spoke-{tok}")
    assert conf["default_js_domain"] == {"SPOKE_a": "", f"SPOKE_{tok}": ""}
    allow = entry["permissions"]["publish"]["allow"]
    assert allow == natsconf.spoke_imports(ARN)
    assert f"evt.*.executor.*.*.*.{tok}" in allow
    assert f"$JS.API.CONSUMER.MSG.NEXT.EVENTS.executor-write_{tok}" in allow
    assert f"$JS.ACK.EVENTS.executor_{tok}.>" in allow
    assert f"$JS.API.DIRECT.GET.{S.SEALED_STREAM}" in allow
    assert f"$KV.CLUSTERS.{tok}.read" in allow
    # Nothing of cluster a, no wildcard over other tokens, no consumer creation.
    assert not [s for s in allow if s.endswith(".a") or "_a" in s or ".a." in s]
    assert not [s for s in allow if s.startswith("$KV.") and s.endswith(">")]
    assert "$JS.API.CONSUMER.CREATE.>" in entry["permissions"]["publish"]["deny"]
    assert entry["permissions"]["subscribe"] == {"allow": ["_INBOX_executor.>"]}
    acct = conf["accounts"][f"SPOKE_{tok}"]  # type: ignore[index]
    imported = [i["service"]["subject"] for i in acct["imports"]]
    assert imported == [*allow, "$JS.API.INFO"]
    # Only its own account may import a durable's API (the log account's export says who).
    exports = {e["service"]: e["accounts"] for e in conf["accounts"]["APP"]["exports"]  # type: ignore[index]
               if "service" in e}
    assert exports["$JS.API.CONSUMER.MSG.NEXT.EVENTS.executor_a"] == ["SPOKE_a"]
    assert exports["evt.*.executor.*.*.*.a"] == ["SPOKE_a"]


def test_the_legacy_executor_reaches_nothing_in_per_cluster_mode() -> None:
    conf = _hub(("a",))
    account, entry = natsconf.users(conf)["executor"]  # type: ignore[arg-type]
    assert entry["permissions"] == {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}
    assert conf["accounts"][account]["imports"] == []  # type: ignore[index]
    exports = [e for e in conf["accounts"]["APP"]["exports"]  # type: ignore[index]
               if "EXECUTOR" in e["accounts"]]
    assert exports == []


def test_one_cluster_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        natsconf.accounts(natsconf.new_credentials(("a",)), ("a", "a"))


def test_a_spoke_server_has_local_users_and_one_outbound_leaf() -> None:
    local = natsconf.new_spoke_credentials()
    assert set(local) == {"executor", "executor-read", "executor-write"}
    conf = json.loads(natsconf.render_spoke(
        cluster="b", hub_leaf_url="nats://hub.example:7422", hub_password="p/w@x",
        port=4223, local_credentials=local))
    assert "jetstream" not in conf
    assert conf["listen"] == "127.0.0.1:4223"
    assert conf["leafnodes"] == {"remotes": [{
        "url": "nats://spoke-b:p%2Fw%40x@hub.example:7422", "account": "SPOKE"}]}
    assert "listen" not in conf["leafnodes"]  # outbound only: no port into the cluster
    users = {u["user"]: u for u in conf["accounts"]["SPOKE"]["users"]}
    read = users["executor-read"]["permissions"]["publish"]["allow"]
    assert "$JS.API.CONSUMER.MSG.NEXT.EVENTS.executor-read_b" in read
    assert not [s for s in read if "executor-write_b" in s or "executor_b" in s]
    assert "$KV.CLUSTERS.b.read" in read
    with pytest.raises(ValueError, match="expected"):
        natsconf.render_spoke(cluster="b", hub_leaf_url="nats://u:p@hub:7422",
                              hub_password="x", port=1, local_credentials=local)


def test_provisioned_durables_per_mode() -> None:
    legacy = provision.consumers("single")
    assert "executor" in legacy
    per = provision.consumers("single", ("a", "b"))
    assert "executor" not in per
    assert per["executor_b"] == (S.EVENTS_STREAM, S.executor_filters("all", "b"))
    assert provision.clusters_from_env({"INTERLOCK_CLUSTERS": " a, b ,"}) == ("a", "b")
    assert provision.clusters_from_env({"INTERLOCK_CLUSTERS": ""}) is None
    assert provision.clusters_from_env({}) is None
    cfg = provision.presence_stream()
    assert (cfg.name, cfg.max_msgs_per_subject, cfg.max_age, cfg.allow_direct) == (
        "KV_CLUSTERS", 1, provision.PRESENCE_MAX_AGE_S, True)


def _status(cluster: str, role: str = "all", ago: float = 0.0) -> presence.ClusterStatus:
    return presence.ClusterStatus(cluster=cluster, role=role,
                                  seen_at=datetime.now(UTC) - timedelta(seconds=ago))


def test_presence_is_believed_only_on_its_own_key_and_while_fresh() -> None:
    ok = msgspec.json.encode(_status("b"))
    believed = presence._believed("$KV.CLUSTERS.b.all", ok, "2026-12-07T23:31:20.412208477Z")
    assert believed is not None
    assert believed.seen_at == datetime(2026, 12, 7, 23, 31, 20, 412208, tzinfo=UTC)
    # Spoke b's key claiming to be cluster a (or another role): not believed.
    assert presence._believed("$KV.CLUSTERS.b.all", msgspec.json.encode(_status("a")), None) \
        is None
    assert presence._believed("$KV.CLUSTERS.b.read", ok, None) is None
    assert presence._believed("$KV.CLUSTERS.b.all", b"junk", None) is None
    now = datetime.now(UTC)
    assert presence.connected([_status("b", ago=14)], now, 5.0)
    assert not presence.connected([_status("b", ago=16)], now, 5.0)
    assert presence.connected([_status("b", "read", 60), _status("b", "write", 1)], now, 5.0)
    assert not presence.connected([], now, 5.0)
    assert presence.interval_from_env({"INTERLOCK_PRESENCE_INTERVAL": "0.5"}) == 0.5
    assert presence.interval_from_env({}) == presence.DEFAULT_INTERVAL_S
