"""`interlock clusters` as a table: every cell one plain line, a disconnected cluster shouted."""

from __future__ import annotations

from clients.clusters import table


def test_the_table_names_the_default_and_the_disconnected() -> None:
    text = table([
        {"name": "a", "default": True, "connected": True, "last_seen": "2026-12-07T23:40:01.5Z",
         "roles": ["all"], "version": "0.1.0"},
        {"name": "arn:aws:eks:eu-west-1:1:cluster/b\x1b[2J", "default": False,
         "connected": False, "last_seen": None, "roles": [], "version": ""},
    ])
    head, a, b, total = text.splitlines()
    assert head.split() == ["CLUSTER", "DEFAULT", "CONNECTED", "LAST", "SEEN", "(UTC)", "ROLES",
                            "VERSION"]
    assert a.split() == ["a", "yes", "yes", "2026-12-07", "23:40:01", "all", "0.1.0"]
    assert "\x1b" not in b
    assert b.split()[1:] == ["NO", "never", "-", "-"]
    assert total == "1 of 2 cluster(s) connected"


def test_a_deployment_without_clusters_names_the_executors_kubeconfig() -> None:
    text = table([{"name": "", "default": True, "connected": True, "last_seen": None,
                   "roles": ["all"], "version": "0.1.0"}])
    assert text.splitlines()[1].startswith("(the executor's kubeconfig)  yes")
