"""Which clusters `interlock up` serves (issue 21): repeatable --context, --all-contexts, the
caller's INTERLOCK_KUBE_CONTEXTS (dropped before), and the errors that stop it before anything
starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher import cli, contexts
from launcher.stack import StackConfig
from services.runtime import cluster_names
from services.runtime.errors import ConfigError


def _kubeconfig(path: Path, *names: str, broken: str = "") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": f"https://127.0.0.1:{6443 + i}"}}
                     for i, n in enumerate(names) if n != broken],
        "users": [{"name": f"{n}-user", "user": {"token": "t"}} for n in names],
        "contexts": [{"name": n, "context": {"cluster": n, "user": f"{n}-user"}}
                     for n in names],
        "current-context": names[0] if names else "",
    }))
    return path


def _config(argv: list[str], env: dict[str, str] | None = None) -> StackConfig:
    return cli.up_config(cli.parse(["up", *argv]), env or {})


def test_the_callers_kube_contexts_are_served(tmp_path: Path) -> None:
    """INTERLOCK_KUBE_CONTEXTS=a,b exported before `interlock up` serves a and b, as
    `--context a --context b` does (it reached no service before: the second context was
    refused as "not allowed")."""
    kc = _kubeconfig(tmp_path / "merged.yaml", "a", "b", "c")
    cfg = _config(["--kubeconfig", str(kc)], {"INTERLOCK_KUBE_CONTEXTS": "a,b"})
    assert cfg.clusters == ("a", "b")
    assert cfg.local_spokes
    assert cfg.kubeconfig == kc.resolve()
    flags = _config(["--kubeconfig", str(kc), "--context", "a", "--context", "b"])
    assert flags.clusters == ("a", "b")
    # The flags win over the environment.
    assert _config(["--kubeconfig", str(kc), "--context", "c"],
                   {"INTERLOCK_KUBE_CONTEXTS": "a,b"}).clusters == ("c",)


def test_all_contexts_in_the_files_order_the_first_is_the_default(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "merged.yaml", "b", "a")
    assert _config(["--kubeconfig", str(kc), "--all-contexts"]).clusters == ("b", "a")


def test_without_contexts_nothing_changes(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "k.yaml", "a")
    cfg = _config(["--kubeconfig", str(kc)])
    assert cfg.clusters == ()
    assert not cfg.local_spokes
    assert cfg.kube_context == ""
    assert _config([]).kubeconfig is None  # the sandbox


def test_without_a_kubeconfig_flag_contexts_come_from_the_callers_kubeconfig(
        tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "mine.yaml", "a", "b")
    cfg = _config(["--context", "b"], {"KUBECONFIG": str(kc)})
    assert (cfg.clusters, cfg.kubeconfig) == (("b",), kc.resolve())


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--context", "prod"], {}, "context 'prod' is not in {kc} (its contexts: a, b)"),
    (["--all-contexts", "--context", "a"], {}, "give --context or --all-contexts, not both"),
    ([], {"INTERLOCK_KUBE_CONTEXTS": "a,x"}, "context 'x' is not in {kc}"),
    (["--context", "a b"], {}, "context 'a b' cannot name a cluster: it contains white space"),
    (["--context", "a,b"], {}, "context 'a,b' cannot name a cluster: it contains a comma"),
    (["--context", ""], {}, "context '' cannot name a cluster: it is empty"),
    (["--context", "x" * 254], {}, "longer than 253 characters"),
    (["--context", "a", "--nats-cluster", "3"], {}, "local spokes join a single nats-server"),
])
def test_contexts_that_cannot_be_served_are_said_plainly(
        tmp_path: Path, argv: list[str], env: dict[str, str], message: str) -> None:
    kc = _kubeconfig(tmp_path / "merged.yaml", "a", "b")
    with pytest.raises(ConfigError) as err:
        _config(["--kubeconfig", str(kc), *argv], env)
    assert message.format(kc=kc) in str(err.value)


def test_all_contexts_of_an_empty_kubeconfig(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    with pytest.raises(ConfigError, match=r"--all-contexts: .*empty.yaml has no contexts"):
        _config(["--kubeconfig", str(empty), "--all-contexts"])
    with pytest.raises(ConfigError, match="no kubeconfig at"):
        _config(["--kubeconfig", str(tmp_path / "nothing.yaml"), "--all-contexts"])


def test_a_context_whose_cluster_is_missing_is_not_usable(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "merged.yaml", "a", "b", broken="b")
    with pytest.raises(ConfigError, match=r"context 'b' of .* names cluster 'b', which the file "
                                          r"does not define"):
        _config(["--kubeconfig", str(kc), "--all-contexts"])


def test_several_kubeconfig_files_must_be_merged_first(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kubectl config view --flatten"):
        _config(["--context", "a"], {"KUBECONFIG": f"{tmp_path}/x:{tmp_path}/y"})


@pytest.mark.parametrize("name", ["a", "arn:aws:eks:eu-west-1:1:cluster/prod", "_", "x" * 253,
                                  "", "a,b", "a b", "a\tb", "a\x1bb", "x" * 254, "ç-é"])
def test_interlock_up_and_the_hub_agree_on_what_names_a_cluster(name: str) -> None:
    """A context `interlock up` accepts never stops the gateway or the gate, which check
    INTERLOCK_CLUSTERS by services/runtime/cluster_names."""
    assert (contexts.unusable(name) == "") == cluster_names.valid(name)
