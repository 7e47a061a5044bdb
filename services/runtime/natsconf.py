"""The nats-server configuration: the log in an account of its own, one account per service.

JetStream answers every API request (Direct Get, Stream Info, a pull, an acked publish) from the
server's own client, on the reply subject the requester chose, in the requester's account, and
publish permissions are not consulted (notes/nats.md §2 pitfall 4). In one shared account a reply
aimed at `evt.<sid>.gateway.…` was stored as the gateway's event. So:

- the streams (EVENTS, SEALED), their consumers and the admin identity live in an account of
  their own, the log account (LOG_ACCOUNT, named APP);
- each runtime identity (RUNTIME_USERS) has an account of its own, and reaches the log account
  only through service imports of exactly its own subjects. The server maps an imported
  request's reply to a private `_R_.` subject in the log account, so an answer can never land on
  a stream subject; and a service account has no stream subjects of its own for it to land on
  (notes/nats-accounts.conf, measured: 0 of 54 reflection attempts per target landed).

Per-user allow lists stay as a second layer: a publish outside the imports would vanish as "no
responders"; the allow list turns it into a permissions error that the service logs. No runtime
user may touch the JetStream admin API (a stream `republish` or a consumer `deliver_subject`
could inject into any subject); the service accounts have no JetStream of their own anyway.
Streams and consumers are provisioned once by the admin identity.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from schemas import subjects as S

RUNTIME_USERS: tuple[str, ...] = (*S.SERVICES, *S.OBSERVERS)
ADMIN_USER = "admin"
SYSTEM_USER = "sys"
# The log's account keeps the name the one shared account had before services were split into
# accounts of their own: JetStream files a stream under its account's name (and a cluster's
# meta layer assigns it by that name), so a log written before the split stays where it is and
# is read as it was, with no migration (tests/e2e/test_upgrade.py).
LOG_ACCOUNT = "APP"
SYSTEM_ACCOUNT = "SYS"
# The largest message a client may publish, and so the largest event (see provision).
MAX_PAYLOAD = 1 << 20
# How long the log account keeps the route back to a requester for a streamed answer (a
# batched Direct Get, a pull): answers after it are dropped, so it must outlast the longest pull
# wait (Bus fetches for 1 s, tests for up to 5 s) and the longest batch. Yet short: every such
# request's route lives this long (measured: 30,000 Direct Gets in 6 s took the server from 18
# to 41 MiB).
RESPONSE_THRESHOLD = "10s"

# Denied to every runtime user whatever its allow list says (deny wins in NATS).
_ADMIN_API_DENY = [
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.PAUSE.>",
    "$JS.API.ACCOUNT.PURGE.>",
]
# Imported by every runtime account only so that the server does not give these accounts
# (which have no JetStream) their default `$JS.API.>` import, whose "JetStream not enabled"
# (10039) answer would otherwise beat the real Stream Info / Consumer Info answer. Not in any
# allow list: nobody needs it.
_JS_INFO = "$JS.API.INFO"


def account_of(user: str) -> str:
    """The NATS account a user belongs to."""
    if user == ADMIN_USER:
        return LOG_ACCOUNT
    if user == SYSTEM_USER:
        return SYSTEM_ACCOUNT
    if user not in RUNTIME_USERS:
        raise ValueError(f"unknown NATS user {user!r}")
    return user.upper()


def durables_of(service: str) -> tuple[str, ...]:
    """The durable consumers a runtime identity may bind. The executor may bind each of its
    consumers (one layout is provisioned: see S.EXECUTOR_LAYOUTS); which one is its role."""
    durables = S.EXECUTOR_CONSUMERS if service == "executor" else (service,)
    return tuple(d for d in durables if d in S.CONSUMER_FILTERS)


def _event_reader() -> list[str]:
    return [
        f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}",
        f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}.>",
        f"$JS.API.STREAM.INFO.{S.EVENTS_STREAM}",
    ]


def _consumer(stream: str, durable: str) -> list[str]:
    return [
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


# Exports answering many messages to one request: a batched Direct Get, a pull of N messages.
# With the default (one answer), `fetch(5)` delivered 1 while 5 sat ack-pending.
def _streamed(subject: str) -> bool:
    return subject == f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}" or subject.startswith(
        "$JS.API.CONSUMER.MSG.NEXT.")


def log_imports(service: str) -> list[str]:
    """The log account's subjects a runtime identity reaches (service imports): its own event
    subjects (none for an observer), the read API, its own consumers.
    Every one is a wildcard or an API subject: a reply aimed at a literally imported stream
    subject would be stored (notes/nats.md §2)."""
    subjects: list[str] = []
    if service in S.SERVICES:  # an observer (the notifier) may publish no event at all
        subjects.append(S.emitter_publish_allow(service))
    # Secret values of proposed writes (services/runtime/sealing/): each sealer puts only on
    # its own subjects, only the executor reads (and only one blob at a time), nobody else
    # reaches the stream at all.
    if service in S.SEALERS:
        subjects.append(f"{S.SEALED_PREFIX}.{service}.>")
    if service == "executor":
        subjects.append(f"$JS.API.DIRECT.GET.{S.SEALED_STREAM}")
    subjects += _event_reader()
    for durable in durables_of(service):
        stream, _ = S.CONSUMER_FILTERS[durable]
        subjects += _consumer(stream, durable)
    return subjects


def permissions(service: str) -> dict[str, Any]:
    """The publish/subscribe permissions of one runtime user: what its account imports, and
    nothing else (the second layer; see the module docstring)."""
    publish = log_imports(service)
    subscribe = [f"_INBOX_{service}.>"]
    deny = list(_ADMIN_API_DENY)
    if service == "gateway":
        subscribe.append(f"{S.LIVE_PREFIX}.>")
        subscribe.append(f"{S.DELTA_PREFIX}.*")  # the planner's token deltas (core NATS)
    if service == "planner":
        publish.append(f"{S.DELTA_PREFIX}.*")
    deny.append(f"{S.LIVE_PREFIX}.>")  # only the server republishes there
    return {"publish": {"allow": publish, "deny": deny}, "subscribe": {"allow": subscribe}}


def accounts(credentials: dict[str, str]) -> dict[str, Any]:
    """The `accounts` block: the log account (streams, admin), one account per runtime
    identity, SYS."""
    importers: dict[str, list[str]] = {}
    for service in RUNTIME_USERS:
        for subject in log_imports(service):
            importers.setdefault(subject, []).append(account_of(service))
        importers.setdefault(_JS_INFO, []).append(account_of(service))
    exports: list[dict[str, Any]] = []
    for subject, accts in importers.items():
        # `accounts` restricts every export: any other account's import of it is refused at
        # start-up ("service import not authorized").
        export: dict[str, Any] = {"service": subject, "accounts": accts}
        if _streamed(subject):
            export["response_type"] = "stream"
            export["response_threshold"] = RESPONSE_THRESHOLD
        exports.append(export)
    gateway, planner = account_of("gateway"), account_of("planner")
    # EVENTS republishes every stored event on sse.> (in the log account): the gateway's live feed.
    exports.append({"stream": f"{S.LIVE_PREFIX}.>", "accounts": [gateway]})
    out: dict[str, Any] = {
        LOG_ACCOUNT: {
            "jetstream": "enabled",
            "users": [{"user": ADMIN_USER, "password": credentials[ADMIN_USER]}],
            "exports": exports,
        },
    }
    for service in RUNTIME_USERS:
        imports: list[dict[str, Any]] = [
            {"service": {"account": LOG_ACCOUNT, "subject": subject}}
            for subject in (*log_imports(service), _JS_INFO)
        ]
        account: dict[str, Any] = {
            "users": [{"user": service, "password": credentials[service],
                       "permissions": permissions(service)}],
            "imports": imports,
        }
        if service == "gateway":
            imports.append({"stream": {"account": LOG_ACCOUNT, "subject": f"{S.LIVE_PREFIX}.>"}})
            imports.append({"stream": {"account": planner, "subject": f"{S.DELTA_PREFIX}.>"}})
        if service == "planner":
            # Token deltas are core NATS, published in the planner's own account.
            account["exports"] = [{"stream": f"{S.DELTA_PREFIX}.>", "accounts": [gateway]}]
        out[account_of(service)] = account
    out[SYSTEM_ACCOUNT] = {"users": [{"user": SYSTEM_USER, "password": credentials[SYSTEM_USER]}]}
    return out


def users(conf: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every user of a rendered configuration: name -> (its account, its entry)."""
    return {u["user"]: (name, u) for name, acct in conf["accounts"].items()
            for u in acct.get("users", [])}


def new_credentials() -> dict[str, str]:
    return {u: secrets.token_urlsafe(24) for u in (*RUNTIME_USERS, ADMIN_USER, SYSTEM_USER)}


def render(
    *,
    port: int,
    store_dir: Path,
    credentials: dict[str, str],
    server_name: str = "interlock",
    http_port: int | None = None,
    cluster: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
) -> str:
    """The server's configuration (JSON, which nats-server reads as its own syntax).

    `host` is where it listens (loopback for `interlock up`; 0.0.0.0 in a container); `cluster`
    is a `cluster_block` for one node of a JetStream cluster, whose `server_name` must be unique.
    """
    conf: dict[str, Any] = {
        "server_name": server_name,
        "listen": f"{host}:{port}",
        "max_payload": MAX_PAYLOAD,
        # The audit log is fsynced on every write: an acknowledged event survives a power cut.
        "jetstream": {"store_dir": str(store_dir), "sync_interval": "always"},
        "accounts": accounts(credentials),
        "system_account": SYSTEM_ACCOUNT,
    }
    if http_port is not None:
        conf["http"] = f"{host}:{http_port}"
    if cluster:
        conf["cluster"] = cluster
    # JSON is valid nats-server configuration syntax.
    return json.dumps(conf, indent=2)


def cluster_block(
    *, port: int, route_ports: list[int], name: str = "interlock", host: str = "127.0.0.1"
) -> dict[str, Any]:
    """The `cluster` section of one node: where it listens for routes, and every node's route
    (its own included; the server ignores a route to itself). Routes carry no client traffic
    permissions: they are server-to-server only."""
    return {
        "name": name,
        "listen": f"{host}:{port}",
        "routes": [f"nats://{host}:{p}" for p in route_ports],
    }


def cluster_block_for_hosts(
    *, port: int, hosts: list[str], name: str = "interlock"
) -> dict[str, Any]:
    """The `cluster` section for nodes on different hosts that share one port (a StatefulSet)."""
    return {
        "name": name,
        "listen": f"0.0.0.0:{port}",
        "routes": [f"nats://{h}:{port}" for h in hosts],
    }
