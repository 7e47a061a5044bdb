"""Container health check: `python deploy/healthcheck.py <service>`.

The gateway is healthy when its /healthz answers; every other service when it can reach NATS as
itself and its durable consumer exists (CONSUMER.INFO is in each service's permissions). It reads
the same environment as the service (INTERLOCK_NATS_URL/USER/PASSWORD, INTERLOCK_HTTP_PORT)."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request


def gateway() -> int:
    port = os.environ.get("INTERLOCK_HTTP_PORT", "8080")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
        return 0 if r.status == 200 else 1


async def consumer(service: str) -> int:
    import nats

    from schemas import subjects as S

    urls = [u for u in os.environ.get("INTERLOCK_NATS_URL", "").split(",") if u]
    nc = await nats.connect(urls, user=os.environ.get("INTERLOCK_NATS_USER", service),
                            password=os.environ["INTERLOCK_NATS_PASSWORD"],
                            inbox_prefix=f"_INBOX_{service}".encode(), connect_timeout=3,
                            allow_reconnect=False)
    try:
        filters = getattr(S, "CONSUMER_FILTERS", {})
        durable = service
        if service == "executor":  # its role's consumer (deploy/k8s runs read and write roles)
            role = os.environ.get("INTERLOCK_EXECUTOR_ROLE", "all")
            # A spoke's executor (issue 21) binds its cluster's durable, through its spoke.
            cluster = os.environ.get("INTERLOCK_CLUSTER") or None
            durable = S.executor_durable(role, cluster)
            if cluster is not None:
                await nc.jetstream().consumer_info(S.EVENTS_STREAM, durable, timeout=3)
                return 0
        if durable in filters:
            stream, _ = filters[durable]
            await nc.jetstream().consumer_info(stream, durable, timeout=3)
        else:
            await nc.flush(timeout=3)
        return 0
    finally:
        await nc.close()


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else ""
    try:
        return gateway() if service == "gateway" else asyncio.run(consumer(service))
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        sys.stderr.write(f"unhealthy: {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
