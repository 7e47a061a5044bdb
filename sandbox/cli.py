"""`python -m sandbox` / `interlock sandbox`: run the sandbox in the foreground until SIGINT or
SIGTERM, after writing a kubeconfig and printing one readiness line for parent processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sandbox.kubeconfig import write_kubeconfig
from sandbox.scenarios.loader import ScenarioError, available
from sandbox.server import Sandbox

READY_PREFIX = "sandbox ready at "


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="interlock sandbox", description="Run a practice Kubernetes cluster."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path.home() / ".kube" / "interlock-sandbox.yaml",
        help="where to write a kubeconfig for kubectl and the executor",
    )
    p.add_argument(
        "--context",
        default="sandbox",
        metavar="NAME",
        help="the kubeconfig context (and cluster) name: two sandboxes as two clusters need "
             "two names (default: sandbox)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        dest="scenarios",
        metavar="NAME",
        help=f"repeatable; all by default ({', '.join(available())})",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies pod start/readiness delays and progress deadlines",
    )
    return p.parse_args(argv)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler])


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    sandbox = Sandbox(args.scenarios, time_scale=args.time_scale)
    url = await sandbox.start(args.host, args.port)
    try:
        write_kubeconfig(args.kubeconfig, url, context=args.context)
        print(f"{READY_PREFIX}{url}", flush=True)  # noqa: T201 - the readiness protocol
        print(f"kubeconfig written to {args.kubeconfig}", file=sys.stderr, flush=True)  # noqa: T201
        await stop.wait()
    finally:
        await sandbox.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        for name in args.scenarios or []:
            if name not in available():
                raise ScenarioError(
                    f"unknown scenario {name!r}; available: {', '.join(available())}"
                )
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2

    _configure_logging()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    try:
        asyncio.run(_main())
    except OSError as exc:
        # A port in use or a kubeconfig path that cannot be written: a sentence, not a traceback.
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
