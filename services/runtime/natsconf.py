"""The nats-server configuration: one NATS user per service, least privilege.

Only the gate may publish to exec.>; each service may publish only events that name it as their
emitter; no runtime user may touch the JetStream admin API (streams, consumers), because a stream
`republish` or a consumer `deliver_subject` could inject into any subject (notes/nats.md §2).
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


def permissions(service: str) -> dict[str, Any]:
    """The publish/subscribe permissions of one runtime user."""
    publish = [*_event_reader()]
    if service in S.SERVICES:  # an observer (the notifier) may publish no event at all
        publish.insert(0, S.emitter_publish_allow(service))
    subscribe = [f"_INBOX_{service}.>"]
    deny = list(_ADMIN_API_DENY)
    if service == "gate":
        publish.append(f"{S.EXEC_PREFIX}.>")
    else:
        deny.append(f"{S.EXEC_PREFIX}.>")
    # The executor may bind each of its consumers (one layout is provisioned: see
    # S.EXECUTOR_LAYOUTS); which one a process binds is its role.
    durables = S.EXECUTOR_CONSUMERS if service == "executor" else (service,)
    for durable in durables:
        if durable in S.CONSUMER_FILTERS:
            stream, _ = S.CONSUMER_FILTERS[durable]
            publish += _consumer(stream, durable)
    if service == "gateway":
        subscribe.append(f"{S.LIVE_PREFIX}.>")
        subscribe.append(f"{S.DELTA_PREFIX}.*")  # the planner's token deltas (core NATS)
    if service == "planner":
        publish.append(f"{S.DELTA_PREFIX}.*")
    deny.append(f"{S.LIVE_PREFIX}.>")  # only the server republishes there
    return {"publish": {"allow": publish, "deny": deny}, "subscribe": {"allow": subscribe}}


def new_credentials() -> dict[str, str]:
    return {u: secrets.token_urlsafe(24) for u in (*RUNTIME_USERS, ADMIN_USER, "sys")}


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
    users: list[dict[str, Any]] = [{"user": ADMIN_USER, "password": credentials[ADMIN_USER]}]
    for service in RUNTIME_USERS:
        users.append(
            {
                "user": service,
                "password": credentials[service],
                "permissions": permissions(service),
            }
        )
    conf: dict[str, Any] = {
        "server_name": server_name,
        "listen": f"{host}:{port}",
        "max_payload": 1048576,
        # The audit log is fsynced on every write: an acknowledged event survives a power cut.
        "jetstream": {"store_dir": str(store_dir), "sync_interval": "always"},
        "accounts": {
            "APP": {"jetstream": "enabled", "users": users},
            "SYS": {"users": [{"user": "sys", "password": credentials["sys"]}]},
        },
        "system_account": "SYS",
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
