"""Secrets and configuration for running Interlock outside `interlock up`.

    python deploy/generate.py compose [DIR]   # default deploy/secrets/ (what compose.yaml mounts)
    python deploy/generate.py k8s [DIR]       # default deploy/k8s/secrets/ (what
                                              # deploy/k8s/kustomization.yaml turns into Secrets)

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
For compose you provide DIR/kubeconfig: the cluster the executor works on. In Kubernetes the
executor needs none: it runs as its pod's ServiceAccount (deploy/k8s/README.md).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
)

from schemas import subjects as S  # noqa: E402
from services.runtime import approvers, identity, natsconf, signing  # noqa: E402

NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
STORE_DIR = Path("/data/jetstream")
PEOPLE = {"operator": ["operator"], "approver": ["operator", "approver"], "viewer": ["viewer"]}


def _write(path: Path, text: str) -> None:
    if path.exists():
        return
    path.write_text(text)
    os.chmod(path, 0o600)


def credentials(out: Path) -> dict[str, str]:
    """The NATS passwords, kept in <user>.env (created once)."""
    creds: dict[str, str] = {}
    fresh = natsconf.new_credentials()
    for user in (*natsconf.RUNTIME_USERS, natsconf.ADMIN_USER, "sys"):
        env = out / f"{user}.env"
        if env.exists():
            line = next(x for x in env.read_text().splitlines()
                        if x.startswith("INTERLOCK_NATS_PASSWORD="))
            creds[user] = line.split("=", 1)[1]
        else:
            creds[user] = fresh[user]
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


DEFAULT_DIRS = {"compose": ROOT / "deploy" / "secrets", "k8s": ROOT / "deploy" / "k8s" / "secrets"}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in DEFAULT_DIRS:
        sys.stderr.write(__doc__ or "")
        return 2
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_DIRS[argv[1]]
    compose(out)  # the same files serve both: Kubernetes reads them through kustomize
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
