"""Secrets and configuration for running Interlock outside `interlock up`.

    python deploy/generate.py compose [DIR]   # default deploy/secrets/ (what compose.yaml mounts)
    python deploy/generate.py k8s [DIR] [--cluster NAME ...]
                                              # default deploy/k8s/secrets/ (what
                                              # deploy/k8s/kustomization.yaml turns into Secrets)
    python deploy/generate.py spoke NAME --hub-leaf-url nats://HUB:7422 [DIR]
                                              # one cluster's spoke overlay, default
                                              # deploy/k8s/spokes/NAME/ (from deploy/k8s/secrets/)

writes, once (existing files are kept, so re-running never rotates a live secret):
  nats.conf           the generated accounts config: the streams in account APP, each service
                      in an account of its own with one least-privilege user
                      (services/runtime/natsconf.py), listening on 0.0.0.0:4222, JetStream in
                      /data/jetstream with sync_interval: always
  <user>.env          INTERLOCK_NATS_PASSWORD for each NATS user (admin: the provisioning job)
  gate.key, gate.pub  the gate's Ed25519 signing key and the executor's copy of its public half
  keys/<service>.key  each event-writing service's own Ed25519 event signing key (0600)
  keys/keyring.json   every service's public event key, by key id (all services and the audit)
  tokens.json         bearer tokens for the gateway (operator, approver, viewer)
  admin.key           the approver registry's admin key (issue 18): it signs enrolments of
                      people's keys (`interlock keys enroll --admin-key`). Move it off the
                      machine that runs Interlock: no service may hold it.
  admins.pub          its public half, the registry's trust root (gate and gateway)
k8s also writes
  nats-cluster.conf   the hub's config for the 3-node StatefulSet (deploy/k8s/nats.yaml): the
                      same accounts, routes to nats-{0,1,2}.nats-headless, and with --cluster a
                      leafnode listener on 7422 and one account SPOKE_<cluster> per cluster
  clusters.env        INTERLOCK_CLUSTERS (the --cluster list, first = the default cluster; kept
                      when a rerun names none; empty = one cluster, the executors of executor.yaml)
  spoke-<cluster>.env the password of the hub user spoke-<cluster> (its leaf connection)
spoke writes the overlay of one cluster (deploy/spoke.py): a kustomization.yaml over
deploy/k8s/spoke/, the leaf server's config (nats-leaf.conf, passwords as $VARIABLES only),
nats.env (the hub URL with spoke-<cluster>'s password, the local users' passwords), one env file
per executor role, and copies of gate.pub, keys/keyring.json and the cluster's own executor key
(the hub's keys/executor.<cluster>.key, as keys/executor.key: no other cluster's key).
For compose you provide DIR/kubeconfig: the cluster the executor works on. In Kubernetes the
executor needs none: it runs as its pod's ServiceAccount (deploy/k8s/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import spoke as spoke_manifests  # noqa: E402  (deploy/spoke.py)
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
)

from schemas import subjects as S  # noqa: E402
from services.runtime import approvers, identity, natsconf, signing  # noqa: E402

NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
STORE_DIR = Path("/data/jetstream")
# The hub's StatefulSet (deploy/k8s/nats.yaml): its pods' stable names, route and leaf ports.
NAMESPACE = spoke_manifests.NAMESPACE
HUB_REPLICAS = 3
CLUSTER_PORT = 6222
LEAF_PORT = 7422
HUB_HOSTS = [f"nats-{i}.nats-headless.{NAMESPACE}.svc" for i in range(HUB_REPLICAS)]
# The spoke's local nats-server users (natsconf.render_spoke): role all, read, write.
SPOKE_LOCAL_USERS = tuple(natsconf.SPOKE_LOCAL_USERS)
PEOPLE = {"operator": ["operator"], "approver": ["operator", "approver"], "viewer": ["viewer"]}


def _write(path: Path, text: str) -> None:
    if path.exists():
        return
    path.write_text(text)
    os.chmod(path, 0o600)


def _env_value(env: Path, key: str = "INTERLOCK_NATS_PASSWORD") -> str:
    line = next(x for x in env.read_text().splitlines() if x.startswith(f"{key}="))
    return line.split("=", 1)[1]


def credentials(out: Path, clusters: Sequence[str] = ()) -> dict[str, str]:
    """The NATS passwords, kept in <user>.env (created once)."""
    creds: dict[str, str] = {}
    fresh = natsconf.new_credentials()
    for user in (*natsconf.RUNTIME_USERS, natsconf.ADMIN_USER, "sys",
                 *(natsconf.spoke_user(c) for c in clusters)):
        env = out / f"{user}.env"
        if env.exists():
            creds[user] = _env_value(env)
        else:
            creds[user] = fresh.get(user) or secrets.token_urlsafe(24)
            _write(env, f"INTERLOCK_NATS_PASSWORD={creds[user]}\n")
    return creds


def compose(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    creds = credentials(out)
    _write(out / "nats.conf", natsconf.render(
        port=NATS_PORT, store_dir=STORE_DIR, credentials=creds, server_name="interlock",
        http_port=NATS_MONITOR_PORT, host="0.0.0.0") + "\n")
    if not (out / "gate.key").exists():
        signing.generate_keypair(out / "gate.key", out / "gate.pub")
    identity.provision_keys(out / "keys", S.SERVICES)
    if not (out / "admin.key").exists():
        approvers.write_private_key(out / "admin.key", Ed25519PrivateKey.generate())
    admin = approvers.load_private_key(out / "admin.key").public_key()
    _write(out / "admins.pub", approvers.public_line(admin, "interlock-admin") + "\n")
    _write(out / "tokens.json", json.dumps({"tokens": [
        {"principal": name, "roles": roles, "token": f"il_{name}_{secrets.token_urlsafe(18)}"}
        for name, roles in PEOPLE.items()]}, indent=2) + "\n")


def _clusters(out: Path, named: Sequence[str]) -> list[str]:
    """The --cluster list, or the one a previous run kept in clusters.env."""
    if named:
        return list(dict.fromkeys(named))
    env = out / "clusters.env"
    if env.exists() and env.read_text().strip():
        return [c for c in _env_value(env, "INTERLOCK_CLUSTERS").split(",") if c]
    return []


def k8s(out: Path, named: Sequence[str] = ()) -> list[str]:
    """compose's files, and the hub's: the cluster config for the StatefulSet, INTERLOCK_CLUSTERS
    and a password per spoke. The two derived files are rewritten on every run (from the kept
    passwords), so adding a cluster is a rerun with the longer list and an apply."""
    compose(out)
    clusters = _clusters(out, named)
    creds = credentials(out, clusters)
    # An executor signing key per cluster (keys/executor.<cluster>.key), each recorded in the
    # keyring as that cluster's: a spoke's overlay gets its own cluster's key alone.
    identity.provision_keys(out / "keys", S.SERVICES, clusters)
    # One cluster (no --cluster): today's single executor identity, no leafnode listener.
    text = natsconf.render(
        port=NATS_PORT, store_dir=STORE_DIR, credentials=creds, server_name="nats-0",
        http_port=NATS_MONITOR_PORT, host="0.0.0.0",
        cluster=natsconf.cluster_block_for_hosts(port=CLUSTER_PORT, hosts=HUB_HOSTS),
        clusters=tuple(clusters) if clusters else None,
        leaf_port=LEAF_PORT if clusters else None)
    _rewrite(out / "nats-cluster.conf", text + "\n")
    _rewrite(out / "clusters.env",
             f"INTERLOCK_CLUSTERS={','.join(clusters)}\n" if clusters else "")
    return clusters


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


_PLACEHOLDER = "interlock-placeholder-"


def spoke_config(cluster: str, hub_leaf_url: str) -> str:
    """The spoke's nats-server config with no secret in it: natsconf.render_spoke's, where the
    remote's URL (it carries spoke-<cluster>'s password) and every local password are
    $VARIABLES that nats-server reads from its environment (the Secret interlock-spoke-nats).
    Returns the config; `spoke_hub_url` gives the value of the URL's variable."""
    text = natsconf.render_spoke(
        cluster=cluster, hub_leaf_url=hub_leaf_url, hub_password=_PLACEHOLDER + "hub",
        port=spoke_manifests.NATS_PORT,
        local_credentials={u: _PLACEHOLDER + u for u in SPOKE_LOCAL_USERS}, host="0.0.0.0")
    text = re.sub(f'"[^"]*{_PLACEHOLDER}hub[^"]*"', "$" + spoke_manifests.HUB_URL_ENV, text)
    for user in SPOKE_LOCAL_USERS:
        text = text.replace(f'"{_PLACEHOLDER}{user}"', "$" + spoke_manifests.password_env(user))
    if _PLACEHOLDER in text:  # a secret would land in the ConfigMap
        raise RuntimeError("natsconf.render_spoke put a password where the deploy cannot "
                           "replace it by a variable")
    return text


def spoke_hub_url(cluster: str, hub_leaf_url: str, password: str) -> str:
    """The remote URL render_spoke writes for this cluster, with the real password."""
    text = natsconf.render_spoke(
        cluster=cluster, hub_leaf_url=hub_leaf_url, hub_password=_PLACEHOLDER + "hub",
        port=spoke_manifests.NATS_PORT,
        local_credentials={u: _PLACEHOLDER + u for u in SPOKE_LOCAL_USERS}, host="0.0.0.0")
    match = re.search(f'"([^"]*{_PLACEHOLDER}hub[^"]*)"', text)
    if not match:
        raise RuntimeError("natsconf.render_spoke wrote no leafnode remote URL")
    return match.group(1).replace(_PLACEHOLDER + "hub", urllib.parse.quote(password, safe=""))


def spoke(out: Path, cluster: str, hub_leaf_url: str, hub: Path) -> None:
    """One cluster's overlay of deploy/k8s/spoke/ in `out`, from the hub's files in `hub`
    (`generate.py k8s --cluster NAME` first). Local passwords are kept across runs; the rest is
    rewritten from the hub's (so a rerun picks up a new keyring or hub address)."""
    user = natsconf.spoke_user(cluster)
    if not (hub / f"{user}.env").exists():
        raise SystemExit(f"{hub} has no password for cluster {cluster!r} ({user}.env): run "
                         f"`python deploy/generate.py k8s {hub} --cluster {cluster} ...` (every "
                         f"cluster of the hub) and apply the hub first")
    (out / "keys").mkdir(parents=True, exist_ok=True)
    nats_env = out / "nats.env"
    local = {u: (_env_value(nats_env, spoke_manifests.password_env(u)) if nats_env.exists()
                 else secrets.token_urlsafe(24)) for u in SPOKE_LOCAL_USERS}
    url = spoke_hub_url(cluster, hub_leaf_url, _env_value(hub / f"{user}.env"))
    _rewrite(nats_env, f"{spoke_manifests.HUB_URL_ENV}={url}\n" + "".join(
        f"{spoke_manifests.password_env(u)}={pw}\n" for u, pw in local.items()))
    for role, (local_user, _) in spoke_manifests.ROLES.items():
        _rewrite(out / f"executor-{role}.env", f"INTERLOCK_NATS_PASSWORD={local[local_user]}\n")
    _rewrite(out / "nats-leaf.conf", spoke_config(cluster, hub_leaf_url) + "\n")
    _rewrite(out / "cluster.env", f"INTERLOCK_CLUSTER={cluster}\n")
    own_key = hub / "keys" / identity.executor_key_file(cluster)
    if not own_key.exists():
        raise SystemExit(f"{hub} has no executor key for cluster {cluster!r} ({own_key.name}): "
                         f"run `python deploy/generate.py k8s {hub} --cluster {cluster} ...` "
                         "(every cluster of the hub) and apply the hub first")
    for name in ("gate.pub", "keys/keyring.json"):
        _rewrite(out / name, (hub / name).read_text())
    # This cluster's executor key only, under the name the Secret and the executor use: the
    # legacy executor.key and other clusters' keys never leave the hub's directory.
    _rewrite(out / "keys" / "executor.key", own_key.read_text())
    base = os.path.relpath(spoke_manifests.SPOKE_DIR, out)
    _rewrite(out / "kustomization.yaml", spoke_kustomization(cluster, base))


def spoke_kustomization(cluster: str, base: str) -> str:
    m = spoke_manifests
    return f"""# The spoke of cluster {cluster!r}, generated by deploy/generate.py. Apply it in that
# cluster:
#   kubectl --context <its context> apply -k <this directory>
# Holds secrets (nats.env, executor-*.env, keys/): keep this directory out of git.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {m.NAMESPACE}
resources: [{base}]
generatorOptions:
  disableNameSuffixHash: true
  labels: {{app.kubernetes.io/part-of: interlock}}
secretGenerator:
  # the hub URL with spoke-<cluster>'s password, the local users' passwords: the leaf server's
  - name: {m.LEAF_SECRET}
    envs: [nats.env]
  - name: interlock-executor-read
    envs: [executor-read.env]
  - name: interlock-executor-write
    envs: [executor-write.env]
  - name: {m.SIGNING_KEY}
    files: [executor.key=keys/executor.key]
configMapGenerator:
  - name: {m.LEAF_CONFIG}
    files: [nats.conf=nats-leaf.conf]
  - name: {m.CLUSTER_CONFIG}
    envs: [cluster.env]
  - name: {m.KEYRING}
    files: [keyring.json=keys/keyring.json]
  - name: {m.GATE_PUBKEY}
    files: [gate.pub=gate.pub]
"""


DEFAULT_DIRS = {"compose": ROOT / "deploy" / "secrets", "k8s": ROOT / "deploy" / "k8s" / "secrets"}
SPOKES_DIR = ROOT / "deploy" / "k8s" / "spokes"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("compose").add_argument("dir", nargs="?", type=Path)
    hub = sub.add_parser("k8s")
    hub.add_argument("dir", nargs="?", type=Path)
    hub.add_argument("--cluster", action="append", default=[], metavar="NAME",
                     help="a cluster with a spoke (repeat; the first is the default)")
    one = sub.add_parser("spoke")
    one.add_argument("cluster")
    one.add_argument("dir", nargs="?", type=Path)
    one.add_argument("--hub-leaf-url", required=True,
                     help="where the spoke reaches the hub's leafnode port, nats://HOST:7422")
    one.add_argument("--hub-secrets", type=Path, default=DEFAULT_DIRS["k8s"])
    args = parser.parse_args(argv[1:])
    if args.what == "spoke":
        out = args.dir or SPOKES_DIR / args.cluster
        spoke(out, args.cluster, args.hub_leaf_url, args.hub_secrets)
    else:
        out = args.dir or DEFAULT_DIRS[args.what]
        if args.what == "k8s":
            k8s(out, args.cluster)
        else:
            compose(out)
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
