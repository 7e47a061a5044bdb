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

Many clusters (issue 21, `clusters` given: INTERLOCK_CLUSTERS): each cluster's executor joins
through its own spoke nats-server, a leaf node of this one that authenticates as the cluster's
user `spoke-<ctok>` in an account of its own, `SPOKE_<ctok>`, importing exactly: its own
executor events (`evt.*.executor.*.*.*.<ctok>`), the event reader, SEALED's Direct Get, its own
durables and its own presence keys. The user's permissions bound everything the leaf connection
(and so every process behind it) can do. The legacy `executor` user then imports nothing.

Per-user allow lists stay as a second layer: a publish outside the imports would vanish as "no
responders"; the allow list turns it into a permissions error that the service logs. No runtime
user may touch the JetStream admin API (a stream `republish` or a consumer `deliver_subject`
could inject into any subject); the service accounts have no JetStream of their own anyway.
Streams and consumers are provisioned once by the admin identity.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


SPOKE_USER_PREFIX = "spoke-"
SPOKE_ACCOUNT_PREFIX = "SPOKE_"
# What the executors behind a spoke use as their reply inbox (Connection: `_INBOX_<service>`).
EXECUTOR_INBOX = "_INBOX_executor"


def _leaf_js_api(accounts: Iterable[str]) -> dict[str, str]:
    """`default_js_domain` for the accounts joined by a leaf connection. Without it both ends
    of a leaf connection deny `$JS.API.>`, `$KV.>` and `$OBJ.>` across it for any account but
    the system account (nats-server leafnode.go, "Adding deny"): a spoke's executor could
    publish its events but neither pull, nor read, nor put its presence. Mapping the account to
    the default ("") domain is the server's own exception to that deny (measured on 2.15.1,
    docs/architecture.md; the server warns that the option is a compatibility measure)."""
    return dict.fromkeys(accounts, "")


def spoke_user(cluster: str) -> str:
    """The hub's NATS user of one cluster's spoke (its leaf connection)."""
    return f"{SPOKE_USER_PREFIX}{S.cluster_token(cluster)}"


def spoke_account(cluster: str) -> str:
    return f"{SPOKE_ACCOUNT_PREFIX}{S.cluster_token(cluster)}"


def account_of(user: str) -> str:
    """The NATS account a user belongs to."""
    if user == ADMIN_USER:
        return LOG_ACCOUNT
    if user == SYSTEM_USER:
        return SYSTEM_ACCOUNT
    if user.startswith(SPOKE_USER_PREFIX):
        return SPOKE_ACCOUNT_PREFIX + user[len(SPOKE_USER_PREFIX):]
    if user not in RUNTIME_USERS:
        raise ValueError(f"unknown NATS user {user!r}")
    return user.upper()


def durables_of(service: str) -> tuple[str, ...]:
    """The durable consumers a runtime identity may bind. The executor may bind each of its
    consumers (one layout is provisioned: see S.EXECUTOR_LAYOUTS); which one is its role."""
    durables = S.EXECUTOR_CONSUMERS if service == "executor" else (service,)
    return tuple(d for d in durables if d in S.CONSUMER_FILTERS)


def _presence_reader() -> list[str]:
    """Direct Get of the presence bucket (services/runtime/presence.py): the gate refuses a
    call to a cluster that is not connected, the gateway lists the clusters."""
    return [f"$JS.API.DIRECT.GET.{S.PRESENCE_STREAM}",
            f"$JS.API.DIRECT.GET.{S.PRESENCE_STREAM}.>"]


PRESENCE_READERS: tuple[str, ...] = ("gate", "gateway")


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
    return subject in (f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}",
                       f"$JS.API.DIRECT.GET.{S.PRESENCE_STREAM}") or subject.startswith(
        "$JS.API.CONSUMER.MSG.NEXT.")


def spoke_imports(cluster: str) -> list[str]:
    """What one cluster's spoke reaches in the log account, and nothing else: its own executor
    events, the event reader, SEALED's Direct Get (one blob at a time), its own durables (of
    either layout; only one is provisioned) and its own presence keys."""
    tok = S.cluster_token(cluster)
    subjects = [f"{S.EVENTS_PREFIX}.*.executor.*.*.*.{tok}",
                f"$JS.API.DIRECT.GET.{S.SEALED_STREAM}", *_event_reader()]
    for role in S.EXECUTOR_ROLES:
        subjects += _consumer(S.EVENTS_STREAM, S.executor_durable(role, cluster))
    # Its presence keys exactly, not every key under its token: a reply reflected onto an
    # imported subject IS stored (measured: tests/integration/test_leaf_spokes.py), so a
    # wildcard would let a spoke make up keys until the bucket is full and no other cluster
    # could report. Three keys of at most 8 KiB each, one message per key: bounded.
    subjects += [S.presence_subject(cluster, role) for role in S.EXECUTOR_ROLES]
    return subjects


def spoke_permissions(cluster: str) -> dict[str, Any]:
    """The hub user of one cluster's spoke: exactly its imports. Replies reach the executors
    behind it on their inbox."""
    publish = spoke_imports(cluster)
    return {"publish": {"allow": publish, "deny": [*_ADMIN_API_DENY, f"{S.LIVE_PREFIX}.>"]},
            "subscribe": {"allow": [f"{EXECUTOR_INBOX}.>"]}}


def log_imports(service: str, clusters: tuple[str, ...] | None = None) -> list[str]:
    """The log account's subjects a runtime identity reaches (service imports): its own event
    subjects (none for an observer), the read API, its own consumers.
    Every one is a wildcard or an API subject: a reply aimed at a literally imported stream
    subject would be stored (notes/nats.md §2).

    `clusters` (per-cluster mode): the legacy `executor` identity reaches nothing — each
    cluster's executor is its spoke's (spoke_imports)."""
    if service == "executor" and clusters is not None:
        return []
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
        # One executor for every context: its presence is the "no cluster" token's.
        subjects += [S.presence_subject("", role) for role in S.EXECUTOR_ROLES]
    if service in PRESENCE_READERS:
        subjects += _presence_reader()
    subjects += _event_reader()
    for durable in durables_of(service):
        stream, _ = S.CONSUMER_FILTERS[durable]
        subjects += _consumer(stream, durable)
    return subjects


def permissions(service: str, clusters: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The publish/subscribe permissions of one runtime user: what its account imports, and
    nothing else (the second layer; see the module docstring)."""
    publish = log_imports(service, clusters)
    if not publish:  # NATS reads an empty allow list as "allow all": deny everything instead
        return {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}
    subscribe = [f"_INBOX_{service}.>"]
    deny = list(_ADMIN_API_DENY)
    if service == "gateway":
        subscribe.append(f"{S.LIVE_PREFIX}.>")
        subscribe.append(f"{S.DELTA_PREFIX}.*")  # the planner's token deltas (core NATS)
    if service == "planner":
        publish.append(f"{S.DELTA_PREFIX}.*")
    deny.append(f"{S.LIVE_PREFIX}.>")  # only the server republishes there
    return {"publish": {"allow": publish, "deny": deny}, "subscribe": {"allow": subscribe}}


def accounts(credentials: dict[str, str],
             clusters: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The `accounts` block: the log account (streams, admin), one account per runtime
    identity, one per cluster's spoke (`clusters`: per-cluster mode), SYS."""
    spokes = tuple(dict.fromkeys(S.cluster_token(c) for c in clusters or ()))
    if len(spokes) != len(clusters or ()):
        raise ValueError(f"clusters {clusters!r} name one cluster twice")
    importers: dict[str, list[str]] = {}
    for service in RUNTIME_USERS:
        own = log_imports(service, clusters)
        for subject in (*own, _JS_INFO) if own else ():
            importers.setdefault(subject, []).append(account_of(service))
    for cluster in clusters or ():
        for subject in (*spoke_imports(cluster), _JS_INFO):
            importers.setdefault(subject, []).append(spoke_account(cluster))
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
        own = log_imports(service, clusters)
        imports: list[dict[str, Any]] = [
            {"service": {"account": LOG_ACCOUNT, "subject": subject}}
            for subject in ((*own, _JS_INFO) if own else ())
        ]
        account: dict[str, Any] = {
            "users": [{"user": service, "password": credentials[service],
                       "permissions": permissions(service, clusters)}],
            "imports": imports,
        }
        if service == "gateway":
            imports.append({"stream": {"account": LOG_ACCOUNT, "subject": f"{S.LIVE_PREFIX}.>"}})
            imports.append({"stream": {"account": planner, "subject": f"{S.DELTA_PREFIX}.>"}})
        if service == "planner":
            # Token deltas are core NATS, published in the planner's own account.
            account["exports"] = [{"stream": f"{S.DELTA_PREFIX}.>", "accounts": [gateway]}]
        out[account_of(service)] = account
    for cluster in clusters or ():
        user = spoke_user(cluster)
        out[spoke_account(cluster)] = {
            "users": [{"user": user, "password": credentials[user],
                       "permissions": spoke_permissions(cluster)}],
            "imports": [{"service": {"account": LOG_ACCOUNT, "subject": subject}}
                        for subject in (*spoke_imports(cluster), _JS_INFO)],
        }
    out[SYSTEM_ACCOUNT] = {"users": [{"user": SYSTEM_USER, "password": credentials[SYSTEM_USER]}]}
    return out


def users(conf: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every user of a rendered configuration: name -> (its account, its entry)."""
    return {u["user"]: (name, u) for name, acct in conf["accounts"].items()
            for u in acct.get("users", [])}


def new_credentials(clusters: tuple[str, ...] = ()) -> dict[str, str]:
    """A password per user: every runtime identity, admin, sys, and each cluster's spoke."""
    return {u: secrets.token_urlsafe(24) for u in (
        *RUNTIME_USERS, ADMIN_USER, SYSTEM_USER, *(spoke_user(c) for c in clusters))}


def render(
    *,
    port: int,
    store_dir: Path,
    credentials: dict[str, str],
    server_name: str = "interlock",
    http_port: int | None = None,
    cluster: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
    clusters: tuple[str, ...] | None = None,
    leaf_port: int | None = None,
) -> str:
    """The server's configuration (JSON, which nats-server reads as its own syntax).

    `host` is where it listens (loopback for `interlock up`; 0.0.0.0 in a container); `cluster`
    is a `cluster_block` for one node of a JetStream cluster, whose `server_name` must be unique.
    `clusters` (INTERLOCK_CLUSTERS; None: one executor identity for everything) adds a spoke
    account per cluster; `leaf_port` is where the spokes' leaf connections come in.
    """
    conf: dict[str, Any] = {
        "server_name": server_name,
        "listen": f"{host}:{port}",
        "max_payload": MAX_PAYLOAD,
        # The audit log is fsynced on every write: an acknowledged event survives a power cut.
        "jetstream": {"store_dir": str(store_dir), "sync_interval": "always"},
        "accounts": accounts(credentials, clusters),
        "system_account": SYSTEM_ACCOUNT,
    }
    if leaf_port is not None:
        # A leaf connection authenticates as one of the users above (a spoke's): that user's
        # account and permissions bound everything behind it (docs/architecture.md).
        conf["leafnodes"] = {"listen": f"{host}:{leaf_port}"}
    if clusters:
        conf["default_js_domain"] = _leaf_js_api(spoke_account(c) for c in clusters)
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


# -- a spoke's own nats-server (issue 21) ------------------------------------------------------

SPOKE_LOCAL_ACCOUNT = "SPOKE"
# A spoke's local users: one per executor role (S.EXECUTOR_ROLES), named like the durable
# prefix its role binds, so `executor` (role all) / `executor-read` / `executor-write`.
SPOKE_LOCAL_USERS: dict[str, str] = {S.EXECUTOR_ROLES[r][0]: r for r in S.EXECUTOR_ROLES}


def spoke_local_permissions(cluster: str, role: str) -> dict[str, Any]:
    """What one executor of a spoke may do on the spoke's server: its role's durable only, its
    cluster's events, the readers, its own presence key. (The hub bounds the spoke as a whole:
    spoke_permissions; this keeps a read executor off the write durable inside the cluster.)"""
    durable = S.executor_durable(role, cluster)
    publish = [f"{S.EVENTS_PREFIX}.*.executor.*.*.*.{S.cluster_token(cluster)}",
               f"$JS.API.DIRECT.GET.{S.SEALED_STREAM}", *_event_reader(),
               *_consumer(S.EVENTS_STREAM, durable), S.presence_subject(cluster, role)]
    return {"publish": {"allow": publish, "deny": [*_ADMIN_API_DENY, f"{S.LIVE_PREFIX}.>"]},
            "subscribe": {"allow": [f"{EXECUTOR_INBOX}.>"]}}


def new_spoke_credentials() -> dict[str, str]:
    """Passwords of a spoke's local users (they never leave the spoke)."""
    return {u: secrets.token_urlsafe(24) for u in SPOKE_LOCAL_USERS}


def render_spoke(*, cluster: str, hub_leaf_url: str, hub_password: str, port: int,
                 local_credentials: dict[str, str], host: str = "127.0.0.1",
                 server_name: str = "") -> str:
    """A spoke's nats-server: no JetStream, one local account whose users are the cluster's
    executors, and ONE outbound leaf connection to the hub (`hub_leaf_url`, e.g.
    nats://hub:7422) as `spoke-<ctok>` bound to that account — so no inbound port into the
    cluster, and the hub's permissions of that user bound everything the spoke can do."""
    scheme, sep, rest = hub_leaf_url.partition("://")
    if not sep or "@" in rest:
        raise ValueError(f"hub leaf url {hub_leaf_url!r}: expected nats://host:port")
    user = spoke_user(cluster)
    remote = f"{scheme}://{quote(user, safe='')}:{quote(hub_password, safe='')}@{rest}"
    conf: dict[str, Any] = {
        "server_name": server_name or f"spoke-{S.cluster_token(cluster)}",
        "listen": f"{host}:{port}",
        "max_payload": MAX_PAYLOAD,
        "accounts": {SPOKE_LOCAL_ACCOUNT: {"users": [
            {"user": name, "password": local_credentials[name],
             "permissions": spoke_local_permissions(cluster, role)}
            for name, role in SPOKE_LOCAL_USERS.items()]}},
        "leafnodes": {"remotes": [{"url": remote, "account": SPOKE_LOCAL_ACCOUNT}]},
        "default_js_domain": _leaf_js_api([SPOKE_LOCAL_ACCOUNT]),
    }
    return json.dumps(conf, indent=2)
