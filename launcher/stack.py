"""The whole of Interlock on one machine: embedded nats-server, the sandbox cluster (unless a
kubeconfig is given) and the four services as separate processes. Used by `interlock up` and by
the end-to-end tests, so both run exactly the same thing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.childenv import base_env
from launcher.nats import NatsCluster, NatsServerProcess, free_port
from launcher.spoke import Spoke
from schemas import subjects as S
from services.runtime import approvers, identity, natsconf, provision, signing
from services.runtime.errors import ConfigError
from services.runtime.settings import NatsSettings

# Passed from the caller's environment to the planner (other INTERLOCK_* are the stack's own).
PLANNER_MODEL_ENV = ("INTERLOCK_MODEL", "INTERLOCK_TEMPERATURE", "INTERLOCK_MAX_ITERATIONS",
                     "INTERLOCK_MODEL_RETRIES", "INTERLOCK_MODEL_RETRY_BASE",
                     "INTERLOCK_MODEL_TIMEOUT", "INTERLOCK_CONTEXT_TOKENS")

# Passed through to the gate: a policy exported for `interlock up` (README, "Approvals and policy")
# must reach the gate — dropping it would silently run a looser gate than the person asked for.
# Slack's signing secret too (issue 20): the gate alone checks Slack clicks with it; whoever
# holds it can forge one, so no other service ever gets it.
GATE_ENV = ("INTERLOCK_POLICY_FILE", "INTERLOCK_SLACK_SIGNING_SECRET")
# The gateway's Slack settings: the bot token (the Deny dialog), the Web API, where replies go.
GATEWAY_ENV = ("INTERLOCK_SLACK_BOT_TOKEN", "INTERLOCK_SLACK_API_URL",
               "INTERLOCK_SLACK_RESPONSE_URL_PREFIX")

SERVICES = ("executor", "gate", "planner", "gateway", "notifier")
# The hub's services that read INTERLOCK_CLUSTERS (issue 21): which clusters a call may name,
# and the default. The executors are the spokes', one per cluster (INTERLOCK_CLUSTER).
HUB_CLUSTER_SERVICES = ("gate", "gateway", "planner")
# The principals `interlock up` makes that may approve: each gets a key, enrolled at start.
APPROVERS = ("admin", "approver")
# Passed through to the notifier from the environment of `interlock up`.
NOTIFIER_ENV = ("INTERLOCK_WEBHOOKS", "INTERLOCK_WEBHOOK_SECRET", "INTERLOCK_PUBLIC_URL",
                "INTERLOCK_WEBHOOK_ATTEMPTS", "INTERLOCK_WEBHOOK_TIMEOUT",
                "INTERLOCK_WEBHOOK_BACKOFF", "INTERLOCK_NOTIFY_MAX_AGE",
                # The Slack approval message (README, "Approve from Slack").
                "INTERLOCK_SLACK_BOT_TOKEN", "INTERLOCK_SLACK_CHANNEL", "INTERLOCK_SLACK_API_URL",
                "INTERLOCK_NOTIFIER_STATE_DIR")
# The model's client: its key, endpoint, organisation and project (OPENAI_*) — the planner's
# alone; no other service talks to the model.
PLANNER_PREFIXES = ("OPENAI_",)
# Passed through to the executor: which cluster (the caller's kubeconfig, or the in-cluster
# service account), and where a kubeconfig's exec credential plugin (aws, gcloud, az) finds its
# profile — names and paths, not credentials.
EXECUTOR_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                "KUBECACHEDIR", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
                "CLOUDSDK_CONFIG", "CLOUDSDK_CORE_PROJECT", "USE_GKE_GCLOUD_AUTH_PLUGIN",
                "AZURE_CONFIG_DIR")
# What each service takes from the caller's environment beyond childenv.base_env: names, and
# name prefixes. Anything not listed stays with the caller (issue 16: every service got the
# caller's whole environment, the model key included).
CALLER_ENV: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "planner": (PLANNER_MODEL_ENV, PLANNER_PREFIXES),
    "gate": (GATE_ENV, ()),
    # The executor reads the policy's key_signed_namespaces too (a Slack click is not enough
    # there: the gate, which checks Slack clicks, could make one up).
    "executor": ((*EXECUTOR_ENV, "INTERLOCK_POLICY_FILE"), ()),
    "notifier": (NOTIFIER_ENV, ()),
    # Sign-in with the company's OpenID Provider: the gateway alone verifies ID tokens and
    # holds the Command Center's client secret.
    "gateway": (GATEWAY_ENV, ("INTERLOCK_OIDC_",)),
}


def _claims(service: str, name: str) -> bool:
    names, prefixes = CALLER_ENV[service]
    return name in names or name.startswith(prefixes)


def own_setting(service: str, name: str) -> bool:
    """Whether a setting given to the stack (StackConfig.extra_env) goes to `service`: a setting
    some service claims goes to that service alone (the model key to the planner); any other
    (INTERLOCK_VERIFY_TIMEOUT, …) to every service, which reads what it knows."""
    claimed = [s for s in CALLER_ENV if _claims(s, name)]
    return not claimed or service in claimed


@dataclass
class StackConfig:
    data_dir: Path
    http_port: int = 8080
    nats_port: int = 0
    kubeconfig: Path | None = None
    kube_context: str = ""
    admin_token: str = ""
    approval_ttl_s: float = 900.0
    scenarios: tuple[str, ...] = ()
    sse_heartbeat_s: float = 15.0
    extra_env: dict[str, str] = field(default_factory=dict)
    # Instances per service. They share the durable consumers; the first gateway serves
    # http_port, every other gateway a port of its own (gateways are stateless).
    replicas: int = 1
    # nats-server nodes: 1, or an odd number ≥ 3 for a JetStream cluster on loopback whose
    # streams have that many replicas.
    nats_cluster: int = 1
    # The sandbox's pretend kubelet delays are multiplied by this (tests use a small value).
    sandbox_time_scale: float = 1.0
    # How long a consumer's unacknowledged message waits before redelivery (fault tests
    # shorten it so a killed instance's work comes back quickly).
    ack_wait_s: float = provision.ACK_WAIT_S
    # Issue 21 (INTERLOCK_CLUSTERS): the clusters, each served by its own spoke (launcher/spoke);
    # () = one executor for every context. `leaf_port` is where the spokes' leaf connections
    # come in (0: a free port, when there are clusters).
    clusters: tuple[str, ...] = ()
    leaf_port: int = 0
    # With clusters: start one local spoke per cluster (a leaf nats-server and an executor
    # holding that context of `kubeconfig`), as `interlock up --context` does. Off: the caller
    # runs the spokes (tests that kill or impersonate one); no hub executor either way.
    local_spokes: bool = False


def instance_name(service: str, index: int) -> str:
    """`gate` for the first instance, `gate-2`, `gate-3`… for the others."""
    return service if index == 0 else f"{service}-{index + 1}"


def service_of(name: str) -> str:
    return name.split("-", 1)[0]


def _load_or_create_json(path: Path, make: dict[str, object]) -> dict[str, object]:
    if path.exists():
        data: dict[str, object] = json.loads(path.read_text())
        return data
    path.write_text(json.dumps(make, indent=2))
    os.chmod(path, 0o600)
    return make


class Stack:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.data = cfg.data_dir.resolve()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nats: NatsServerProcess | None = None  # the only node, or the cluster's first
        self.cluster: NatsCluster | None = None
        self.gateway_ports: dict[str, int] = {}
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.sandbox_url = ""
        self.kubeconfig: Path | None = cfg.kubeconfig
        self.credentials: dict[str, str] = {}
        self.tokens: dict[str, dict[str, object]] = {}
        self._legacy_log = False  # a log from before events were signed (see start_nats)
        self.spokes: dict[str, Spoke] = {}  # cluster -> its local spoke (cfg.clusters)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.http_port}"

    @property
    def gateway_urls(self) -> list[str]:
        """Every gateway instance's base URL, the first one first."""
        return [self.url] + [f"http://127.0.0.1:{p}" for n, p in self.gateway_ports.items()
                             if n != "gateway"]

    @property
    def keys(self) -> Path:
        """Event signing keys: `<service>.key` (each given to that service alone) and
        `keyring.json` (every service's public keys, given to all and to the audit)."""
        return self.data / "keys"

    @property
    def admin_keys(self) -> Path:
        """The admin public keys the gate believes enrolments from (issue 18)."""
        return self.keys / "admins.pub"

    def person_key(self, principal: str) -> Path:
        """The Ed25519 key `interlock up` made for a principal it created that may approve
        (`admin`, `approver`): the people's own keys, which no service is given."""
        return self.data / "people" / f"{principal}.key"

    @property
    def leaf_url(self) -> str:
        """Where a spoke's leaf connection goes (clusters only)."""
        return f"nats://127.0.0.1:{self.cfg.leaf_port}"

    def nats_settings(self, user: str) -> NatsSettings:
        """NATS settings of one identity, with its signing key if it writes events and the
        keyring in any case (the admin reads, and verifies what it reads, but never writes)."""
        key = self.keys / f"{user}.key"
        return NatsSettings(url=self.nats_url, user=user, password=self.credentials[user],
                            signing_key_file=str(key) if user in S.SERVICES else "",
                            keyring_file=str(self.keys / identity.KEYRING_FILE))

    @property
    def nats_url(self) -> str:
        """What clients connect to: every node's URL, comma-separated, for a cluster."""
        if self.cluster is not None:
            return self.cluster.url
        return f"nats://127.0.0.1:{self.cfg.nats_port}"

    def instances(self, service: str) -> list[str]:
        return [instance_name(service, i) for i in range(max(1, self.cfg.replicas))]

    # -- set-up ------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        creds = _load_or_create_json(self.data / "nats-credentials.json",
                                     dict(natsconf.new_credentials(self.cfg.clusters)))
        self.credentials = {k: str(v) for k, v in creds.items()}
        # (a spoke-<ctok> password for each cluster added since, too)
        missing = {u: p for u, p in natsconf.new_credentials(self.cfg.clusters).items()
                   if u not in self.credentials}
        if missing:  # a data dir from before a service was added
            self.credentials.update(missing)
            (self.data / "nats-credentials.json").write_text(json.dumps(self.credentials,
                                                                        indent=2))
        if not (self.data / "gate.key").exists():
            signing.generate_keypair(self.data / "gate.key", self.data / "gate.pub")
        # A data dir whose log predates event signing: its old events stay readable (start_nats).
        self._legacy_log = not (self.keys / identity.KEYRING_FILE).exists() and \
            (self.data / "jetstream").exists()
        # Per-cluster mode: an executor key per cluster too, each given to its own spoke only.
        identity.provision_keys(self.keys, S.SERVICES, self.cfg.clusters)
        people = {
            "operator": ["operator"],
            "approver": ["operator", "approver"],
            "viewer": ["viewer"],
        }
        doc = _load_or_create_json(self.data / "tokens.json", {"tokens": [
            {"principal": name, "roles": roles, "token": f"il_{name}_{secrets.token_urlsafe(18)}"}
            for name, roles in people.items()
        ]})
        self.tokens = {str(t["principal"]): t for t in doc["tokens"]}  # type: ignore[attr-defined]
        self._prepare_people_keys()
        if not self.cfg.admin_token:
            self.cfg.admin_token = str(
                _load_or_create_json(self.data / "admin-token.json",
                                     {"token": f"il_admin_{secrets.token_urlsafe(24)}"})["token"]
            )

    def _prepare_people_keys(self) -> None:
        """A key for each principal made here that may approve, and the admin's public key as
        the trust root of the approver registry (appended to, never rewritten: an admin key
        added by hand stays)."""
        for principal in APPROVERS:
            path = self.person_key(principal)
            if not path.exists():
                approvers.write_private_key(path, Ed25519PrivateKey.generate())
        admin = approvers.load_private_key(self.person_key("admin")).public_key()
        line = approvers.public_line(admin, "interlock-admin")
        held = self.admin_keys.read_text() if self.admin_keys.exists() else ""
        if line.split()[1] not in held:
            self.admin_keys.write_text(held + line + "\n")

    async def enrol_people(self) -> None:
        """Enrols the key of each principal made here that may approve, signed by the admin
        key, through the gateway like any enrolment (once: a second time changes nothing)."""
        admin = approvers.load_private_key(self.person_key("admin"))
        headers = {"Authorization": f"Bearer {self.cfg.admin_token}"}
        async with aiohttp.ClientSession() as http:
            for principal in APPROVERS:
                if principal != "admin" and principal not in self.tokens:
                    continue
                key = approvers.ed25519_key(
                    approvers.load_private_key(self.person_key(principal)).public_key(),
                    label="made by interlock up")
                body = {"principal": principal, "credential": msgspec.to_builtins(key),
                        "admin": msgspec.to_builtins(approvers.sign_statement(
                            approvers.enrol_statement(principal, key), admin))}
                async with http.post(f"{self.url}/v1/approvers", json=body,
                                     headers=headers) as r:
                    if r.status != 201:
                        raise ConfigError(f"could not enrol the key of {principal}: "
                                          f"{r.status} {await r.text()}")

    async def start_nats(self) -> None:
        size = self.cfg.nats_cluster
        if size != 1 and (size < 3 or size % 2 == 0):
            raise ConfigError("a NATS cluster needs an odd number of nodes, at least 3")
        if size > 1 and self.cfg.clusters:
            raise ConfigError("clusters (spokes) on a NATS cluster are not run locally yet")
        if size > 1:
            self.cluster = NatsCluster.create(self.data / "nats", self.data / "jetstream",
                                              self.credentials, size, self.cfg.nats_port)
            self.nats = self.cluster.nodes[0]
            self.cfg.nats_port = self.nats.port
            await self.cluster.start()
        else:
            port = self.cfg.nats_port or free_port()
            self.cfg.nats_port = port
            if self.cfg.clusters:
                self.cfg.leaf_port = self.cfg.leaf_port or free_port()
            text = natsconf.render(port=port, store_dir=self.data / "jetstream",
                                   credentials=self.credentials,
                                   clusters=self.cfg.clusters or None,
                                   leaf_port=self.cfg.leaf_port or None)
            self.nats = NatsServerProcess(text, self.data / "nats", port)
            await self.nats.start()
        await provision.provision(self.nats_url, natsconf.ADMIN_USER,
                                  self.credentials[natsconf.ADMIN_USER], replicas=size,
                                  ack_wait=self.cfg.ack_wait_s,
                                  limits=provision.StreamLimits.from_env(os.environ),
                                  clusters=self.cfg.clusters or None)
        if self._legacy_log:
            await self._mark_unsigned_history()

    async def _mark_unsigned_history(self) -> None:
        """Records in the keyring where signing began in this log, before any service starts:
        events stored before it are still read unsigned (the audit names them unsigned), every
        later one must be signed."""
        import nats

        nc = await nats.connect(self.nats_url, user=natsconf.ADMIN_USER,
                                password=self.credentials[natsconf.ADMIN_USER])
        try:
            info = await nc.jetstream().stream_info(S.EVENTS_STREAM)
        finally:
            await nc.close()
        path = self.keys / identity.KEYRING_FILE
        ring = identity.load_keyring(path)
        ring.unsigned_before = int(info.state.last_seq) + 1
        identity.write_keyring(path, ring)
        self._legacy_log = False

    async def start_sandbox(self) -> None:
        kubeconfig = self.data / "kubeconfig"
        cmd = [sys.executable, "-m", "sandbox", "--port", "0", "--kubeconfig", str(kubeconfig)]
        for s in self.cfg.scenarios:
            cmd += ["--scenario", s]
        if self.cfg.sandbox_time_scale != 1.0:
            cmd += ["--time-scale", str(self.cfg.sandbox_time_scale)]
        with open(self.data / "logs" / "sandbox.log", "ab") as log:  # noqa: ASYNC230
            self.sandbox = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                env=base_env(os.environ))  # a pretend cluster: none of the caller's secrets
        assert self.sandbox.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.sandbox.stdout.readline), 30)
        # Nothing more is read from it; the sandbox logs to stderr.
        self.sandbox.stdout.close()
        text = line.decode().strip()
        if "ready at" not in text:
            # Its own words (e.g. "unknown scenario …") are on stderr, in its log.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sandbox.wait(timeout=10)  # it has exited or is exiting: its stdout ended
            lines = self.log_tail("sandbox", 500).strip().splitlines()
            why = lines[-1] if lines else repr(text)
            raise ConfigError(f"the sandbox did not start: {why}")
        self.sandbox_url = text.rsplit(" ", 1)[-1]
        self.kubeconfig = kubeconfig

    def setting(self, name: str) -> str:
        """A setting as the services get it: the stack's own over the environment's."""
        return self.cfg.extra_env.get(name, os.environ.get(name, ""))

    def env_for(self, name: str) -> dict[str, str]:
        """The environment of a service instance (`gate`, or `gate-2` for a second one)."""
        service = service_of(name)
        # From the caller's environment, only what any process needs and what this service
        # claims (CALLER_ENV); never the rest of it.
        env = base_env(os.environ)
        env.update({k: v for k, v in os.environ.items() if _claims(service, k)})
        env.update({
            "INTERLOCK_NATS_URL": self.nats_url,
            "INTERLOCK_NATS_USER": service,
            "INTERLOCK_NATS_PASSWORD": self.credentials[service],
            "INTERLOCK_KEYRING_FILE": str(self.keys / identity.KEYRING_FILE),
            "PYTHONUNBUFFERED": "1",
            # A launcher killed outright (SIGKILL, a crashed test run) takes its services along.
            "INTERLOCK_PARENT_PID": str(os.getpid()),
        })
        if service in S.SERVICES:  # its own key only; the notifier writes no event
            env["INTERLOCK_SIGNING_KEY_FILE"] = str(self.keys / f"{service}.key")
        if service in ("gate", "gateway"):
            env["INTERLOCK_ADMIN_KEYS_FILE"] = str(self.admin_keys)
        if service == "gate":
            env["INTERLOCK_GATE_KEY_FILE"] = str(self.data / "gate.key")
            env["INTERLOCK_APPROVAL_TTL"] = str(self.cfg.approval_ttl_s)
        if service == "executor":
            env["INTERLOCK_GATE_PUBKEY_FILE"] = str(self.data / "gate.pub")
            if self.kubeconfig:
                env["KUBECONFIG"] = str(self.kubeconfig)
            if self.cfg.kube_context:
                env["INTERLOCK_KUBE_CONTEXTS"] = self.cfg.kube_context
        if service == "gateway":
            # To verify the gate's signatures when it replays a session for an audit.
            env["INTERLOCK_GATE_PUBKEY_FILE"] = str(self.data / "gate.pub")
            port = self.cfg.http_port if name == service else \
                self.gateway_ports.setdefault(name, free_port())
            self.gateway_ports.setdefault(name, port)
            env["INTERLOCK_HTTP_PORT"] = str(port)
            env["INTERLOCK_TOKENS_FILE"] = str(self.data / "tokens.json")
            env["INTERLOCK_ADMIN_TOKEN"] = self.cfg.admin_token
            env["INTERLOCK_SSE_HEARTBEAT"] = str(self.cfg.sse_heartbeat_s)
        if self.cfg.clusters and service in HUB_CLUSTER_SERVICES:
            env["INTERLOCK_CLUSTERS"] = ",".join(self.cfg.clusters)
        if service == "notifier":
            env.setdefault("INTERLOCK_PUBLIC_URL", self.url)
            # Which Slack message shows which approval; shared by every notifier instance.
            env.setdefault("INTERLOCK_NOTIFIER_STATE_DIR", str(self.data / "notifier"))
        env.update({k: v for k, v in self.cfg.extra_env.items() if own_setting(service, k)})
        return env

    def start_service(self, name: str) -> subprocess.Popen[bytes]:
        """Starts one instance: `name` is a service (`gate`) or an instance of it (`gate-2`)."""
        service = service_of(name)
        if service not in SERVICES:
            raise ConfigError(f"unknown service {name!r}")
        log = open(self.data / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"], env=self.env_for(name),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    async def wait_gateway(self, timeout: float = 30.0, name: str = "gateway") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        port = self.cfg.http_port if name == "gateway" else self.gateway_ports[name]
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                gw = self.procs.get(name)
                if gw is not None and gw.poll() is not None:
                    raise ConfigError(f"the gateway exited: {self.log_tail(name)}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise ConfigError(f"the gateway was not ready in {timeout}s: {self.log_tail(name)}")

    def log_tail(self, service: str, size: int = 3000) -> str:
        path = self.data / "logs" / f"{service}.log"
        return path.read_bytes()[-size:].decode(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        self.prepare()
        await self.start_nats()
        # Every service but the executor needs only NATS: they start (and import) while the
        # sandbox starts; the executor needs the sandbox's kubeconfig.
        for s in SERVICES:
            for name in self.instances(s):
                if s != "executor":
                    self.start_service(name)
        if self.kubeconfig is None:
            await self.start_sandbox()
        if self.cfg.clusters:
            if self.cfg.local_spokes:
                await self.start_spokes()
        else:
            for name in self.instances("executor"):
                self.start_service(name)
        await asyncio.gather(*(self.wait_gateway(name=n) for n in self.instances("gateway")))
        await self.enrol_people()

    # -- clusters (issue 21) -----------------------------------------------------------------

    def spoke_env(self) -> dict[str, str]:
        """What a spoke's executors take beyond their own settings: what the executor claims
        of the caller's environment (a kubeconfig credential plugin's profile, the policy
        file) and of the stack's settings — never KUBECONFIG, which is the spoke's own."""
        env = {k: v for k, v in os.environ.items() if _claims("executor", k)}
        env.update({k: v for k, v in self.cfg.extra_env.items() if own_setting("executor", k)})
        env.pop("KUBECONFIG", None)
        return env

    def spoke(self, cluster: str) -> Spoke:
        """The local spoke of one cluster: a leaf nats-server joined to the hub as
        `spoke-<ctok>`, and an executor holding only that context of the kubeconfig."""
        tok = S.cluster_token(cluster)
        return Spoke(cluster, self.leaf_url, self.credentials[natsconf.spoke_user(cluster)],
                     self.kubeconfig, self.data / "spokes" / tok, self.data / "gate.pub",
                     self.keys / identity.KEYRING_FILE,
                     self.keys / identity.executor_key_file(cluster),  # its cluster's alone
                     extra_env=self.spoke_env())

    async def start_spokes(self) -> None:
        self.spokes = {c: self.spoke(c) for c in self.cfg.clusters}
        await asyncio.gather(*(s.start() for s in self.spokes.values()))

    # -- tear-down ---------------------------------------------------------------------------

    async def stop_service(self, service: str, sig: int = signal.SIGTERM) -> int | None:
        proc = self.procs.get(service)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    async def stop(self) -> dict[str, int | None]:
        names = list(self.procs)
        results = await asyncio.gather(*(self.stop_service(s) for s in names))
        codes = dict(zip(names, results, strict=True))
        await asyncio.gather(*(s.stop() for s in self.spokes.values()))
        if self.sandbox and self.sandbox.poll() is None:
            self.sandbox.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.sandbox.wait), 10)
            except TimeoutError:
                self.sandbox.kill()
        if self.cluster:
            await self.cluster.stop()
        elif self.nats:
            await self.nats.stop()
        return codes
