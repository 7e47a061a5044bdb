"""The `interlock` command."""

# `up` and `sandbox` start processes on this machine and `audit --verify` checks an exported file
# offline, so they live here; every other command is a client of a gateway (clients/commands.py),
# handed over as it was parsed. (The docstring above is the command's --help text.)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from clients import commands, login, safe_text, slack_setup
from launcher import contexts, verify
from launcher.stack import APPROVERS, Stack, StackConfig
from services.gate import policy as gate_policy
from services.planner.settings import ModelSettings
from services.runtime.errors import ConfigError


def _out(text: str = "") -> None:
    # Errors quote a cluster's or a service's words (a sandbox that did not start, a kubeconfig).
    try:
        sys.stdout.write(safe_text.block(text) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # `interlock up | tee log` and Ctrl-C: the reader is gone first. Saying "stopping…" to
        # nobody must not keep the launcher from stopping NATS and the sandbox.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115


def _in_use(port: int) -> str:
    """Why the gateway's port cannot be ours ("" if it can): something listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return "something is listening there"
    return ""


def up_config(args: argparse.Namespace, environ: Mapping[str, str]) -> StackConfig:
    """What `interlock up ARGS` runs, given the caller's environment. Contexts named (--context,
    --all-contexts, else INTERLOCK_KUBE_CONTEXTS) are checked against the kubeconfig here,
    before anything starts: each is a cluster with a local spoke of its own."""
    named = contexts.from_caller(args.context or (), environ)
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    chosen = None
    if named or args.all_contexts:
        chosen = contexts.choose(kubeconfig or contexts.default_kubeconfig(environ), named,
                                 args.all_contexts)
        if args.nats_cluster > 1:
            raise ConfigError("--nats-cluster with clusters: local spokes join a single "
                              "nats-server (leave out --nats-cluster)")
    return StackConfig(
        data_dir=Path(args.data),
        http_port=args.port,
        nats_port=args.nats_port,
        kubeconfig=chosen.kubeconfig if chosen else kubeconfig,
        clusters=chosen.names if chosen else (),
        local_spokes=chosen is not None,
        admin_token=environ.get("INTERLOCK_ADMIN_TOKEN", ""),
        scenarios=tuple(args.scenario or ()),
        replicas=args.replicas,
        nats_cluster=args.nats_cluster,
    )


async def _up(args: argparse.Namespace) -> int:
    try:
        cfg = up_config(args, os.environ)
    except ConfigError as exc:
        _out(f"interlock up failed: {exc}")
        return 1
    stack = Stack(cfg)
    try:
        # Read as the gate and the planner will, so a bad policy or model setting fails here.
        setup = describe_setup(stack)
    except ConfigError as exc:
        _out(f"interlock up failed: {exc}")
        return 1
    if busy := _in_use(cfg.http_port):
        # Else the health check may be answered by whatever holds the port (an Interlock left
        # running), and "up" printed with tokens that nothing accepts.
        _out(f"interlock up failed: port {cfg.http_port} is in use ({busy}); stop what holds "
             "it or choose another with --port")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal must stop the services, not leave them running orphaned
    # (they run in sessions of their own, so only this process hears it).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
    except (ConfigError, OSError, TimeoutError) as exc:
        _out(f"interlock up failed: {exc}")
        await stack.stop()
        return 1
    _out(f"Interlock is up: {stack.url}")
    # At a host name, not 127.0.0.1: a browser makes passkeys only for a name (WebAuthn).
    _out(f"  Command Center  {stack.url.replace('127.0.0.1', 'localhost')}/")
    for line in mcp_lines(stack.url, str(stack.tokens.get("operator", {}).get("token", ""))):
        _out(line)
    if stack.cluster is not None:
        _out(f"  NATS            {stack.nats_url} ({cfg.nats_cluster}-node JetStream cluster, "
             f"data in {stack.data})")
    else:
        _out(f"  NATS            nats://127.0.0.1:{cfg.nats_port} (data in {stack.data})")
    if cfg.replicas > 1:
        _out(f"  Instances       {cfg.replicas} of each service; gateways at "
             + " ".join(stack.gateway_urls))
    if cfg.clusters:
        for line in cluster_lines(stack):
            _out(line)
    else:
        cluster = stack.sandbox_url and f"sandbox cluster at {stack.sandbox_url}"
        _out(f"  Kubernetes      {cluster or stack.kubeconfig}  (kubeconfig {stack.kubeconfig})")
    _out("  Tokens (Authorization: Bearer …):")
    _out(f"    admin     {cfg.admin_token}")
    for name, t in stack.tokens.items():
        _out(f"    {name:<9} {t['token']}")
    _out("  Signing keys (a decision counts only when its approver signs it: INTERLOCK_KEY):")
    for name in APPROVERS:
        _out(f"    {name:<9} {stack.person_key(name)}")
    _out(f"    admin key (enrols others' keys: INTERLOCK_ADMIN_KEY) {stack.person_key('admin')}")
    for line in setup:
        _out(line)
    _out(f"  Logs            {stack.data / 'logs'}")
    _out("Press Ctrl-C to stop.")
    watch = asyncio.create_task(_watch_children(stack, stop))
    await stop.wait()
    watch.cancel()
    _out("stopping…")
    await stack.stop()
    _out("stopped.")
    return 0


def mcp_lines(url: str, operator_token: str) -> list[str]:
    """Where an MCP client (Claude Code, Cursor, …) reaches Interlock: the gateway's /mcp over
    Streamable HTTP, or `interlock mcp` over stdio, both with an operator's token (an MCP client
    proposes; it never approves)."""
    token = operator_token or "<an operator's token>"
    # localhost, like the Command Center: the links to approval cards in MCP results are made
    # from the address the client used, and a browser keeps passkeys for a host name only.
    url = url.replace("127.0.0.1", "localhost")
    return [
        f"  MCP             {url}/mcp  (Streamable HTTP; Authorization: Bearer {token})",
        f"    stdio         INTERLOCK_URL={url} INTERLOCK_TOKEN={token} interlock mcp",
    ]


def cluster_lines(stack: Stack) -> list[str]:
    """The clusters served (issue 21), the default first, and how each is reached."""
    names = [f"{c} (default)" if i == 0 else c for i, c in enumerate(stack.cfg.clusters)]
    return [
        f"  Clusters        {', '.join(names)}  (contexts of {stack.kubeconfig})",
        f"    spokes        one per cluster: a leaf nats-server joined to the hub's leaf port "
        f"{stack.leaf_url} and an executor allowed that context alone",
        "    status        interlock clusters  (a call to another context is refused)",
    ]


def _names(items: tuple[str, ...]) -> str:
    return ", ".join(items) or "none"


def describe_setup(stack: Stack) -> list[str]:
    """What a new operator must know before the first write: who plans (direct mode or which
    model — never its key), the policy the gate enforces, and how a protected write is approved."""
    env = {k: stack.setting(k) for k in ("INTERLOCK_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                                         "INTERLOCK_POLICY_FILE")}
    model = ModelSettings.from_env(env)
    if model is None:
        mode = ("direct: kubectl-style commands only (set INTERLOCK_MODEL or OPENAI_API_KEY to "
                "chat with a model)")
    else:
        mode = f"model {model.model} at {model.base_url or 'the OpenAI API'}"
    path = env["INTERLOCK_POLICY_FILE"]
    policy = gate_policy.load(Path(path) if path else None)
    two = policy.two_approvers
    two_text = "; ".join(part for part in (
        two.tools and f"tools {_names(two.tools)}",
        two.namespaces and f"namespaces {_names(two.namespaces)}",
        two.clusters and f"clusters {_names(two.clusters)}") if part) or "none"
    tokens = stack.data / "tokens.json"
    source = f"from {path}" if path else "the default (INTERLOCK_POLICY_FILE tightens it)"
    lines = [
        f"  Mode            {mode}",
        f"  Policy          {source}",
        f"    protected namespaces  {_names(policy.protected_namespaces)} (whoever asked, or "
        "changed the args, may not approve)",
        f"    two approvers         {two_text}",
        f"    forbidden tools       {_names(policy.forbid_tools)}",
        f"    key-signed only       {_names(policy.key_signed_namespaces)} (a passkey or "
        "`interlock approve`; a Slack click does not count there)",
    ]
    if policy.protected_clusters:
        lines.append(f"    protected clusters    {_names(policy.protected_clusters)} (every write "
                     "there: as in a protected namespace, and key-signed only)")
    if policy.protected_namespaces:
        lines.append(
            f"  Approving       a write in {policy.protected_namespaces[0]} needs someone other "
            "than its requester: the operator asks, the approver (or admin) approves")
    lines.append(
        f"                  another approver: add {{\"principal\": \"NAME\", \"roles\": "
        f"[\"operator\", \"approver\"], \"token\": \"16+ random characters\"}} to the tokens "
        f"in {tokens}, then restart")
    lines.extend(_signin_lines(stack))
    lines.append(slack_line(stack))
    return lines


def _signin_lines(stack: Stack) -> list[str]:
    """Sign-in with an OpenID Provider (INTERLOCK_OIDC_*, the gateway's): read as the gateway
    will, so a bad role map fails here; what to register at the provider."""
    # Imported here: joserfc costs every other command a third of a second at start.
    from services.gateway.oidc import OidcSettings

    names = ("ISSUER", "CLIENT_ID", "CLIENT_SECRET", "CLI_CLIENT_ID", "ROLES", "SCOPES",
             "REDIRECT_URI", "JWKS_REFRESH_MIN", "CLOCK_SKEW")
    oidc = OidcSettings.from_env({f"INTERLOCK_OIDC_{n}": stack.setting(f"INTERLOCK_OIDC_{n}")
                                  for n in names})
    if oidc is None:
        return []
    home = stack.url.replace("127.0.0.1", "localhost")
    return [f"  Sign-in         {oidc.issuer} (Command Center client {oidc.client_id or '-'}, "
            f"CLI client {oidc.cli_client_id}; {len(oidc.roles.rules)} role rules)",
            f"    redirect URI  {oidc.redirect_uri or home + '/v1/auth/callback'} (register it "
            "at the provider); people act as oidc:<sub>"]


def slack_line(stack: Stack) -> str:
    """Whether approvals go to Slack (README, "Approve from Slack"); never the token or the
    secret. A bot token without a channel stops `up` before anything starts."""
    if not stack.setting("INTERLOCK_SLACK_BOT_TOKEN"):
        return ("  Slack           off (to approve from Slack: interlock slack manifest --url "
                "https://…)")
    channel = stack.setting("INTERLOCK_SLACK_CHANNEL")
    if not channel:
        raise ConfigError("INTERLOCK_SLACK_BOT_TOKEN is set: set INTERLOCK_SLACK_CHANNEL too "
                          "(the channel's ID, C…)")
    base = (stack.setting("INTERLOCK_PUBLIC_URL") or stack.url).rstrip("/")
    clicks = (f"clicks at {base}/v1/slack/interactions"
              if stack.setting("INTERLOCK_SLACK_SIGNING_SECRET")
              else "no INTERLOCK_SLACK_SIGNING_SECRET: the gate refuses every click")
    return f"  Slack           approvals posted to {channel}; {clicks}"


async def _watch_children(stack: Stack, stop: asyncio.Event) -> None:
    """A service that dies is restarted: its durable consumer resumes where it left off."""
    while not stop.is_set():
        await asyncio.sleep(1.0)
        for name, proc in list(stack.procs.items()):
            if proc.poll() is not None and not stop.is_set():
                _out(f"{name} exited with {proc.returncode}; restarting")
                stack.start_service(name)
        for cluster, spoke in stack.spokes.items():
            if spoke.leaf is not None and not spoke.leaf.running and not stop.is_set():
                _out(f"the nats-server of cluster {cluster}'s spoke exited; restarting")
                try:
                    await spoke.restart_leaf()
                except ConfigError as exc:  # tried again at the next look
                    _out(f"  not restarted: {exc}")
            for role in spoke.roles:
                if not spoke.executor_running(role) and not stop.is_set():
                    _out(f"the executor of cluster {cluster} exited; restarting")
                    spoke.start_executor(role)


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError("must be between 1 and 16")
    return value


def _cluster_size(text: str) -> int:
    value = int(text)
    if value != 1 and (value < 3 or value % 2 == 0 or value > 7):
        raise argparse.ArgumentTypeError("1, or an odd number of nodes from 3 to 7")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on this machine")
    up.add_argument("--port", type=int, default=8080, help="gateway HTTP port (default 8080)")
    up.add_argument("--data", default=".interlock", help="NATS storage, keys and tokens")
    up.add_argument("--nats-port", type=int, default=0, help="NATS port (default: a free one)")
    up.add_argument("--kubeconfig", help="use this cluster instead of the sandbox")
    up.add_argument("--context", action="append", metavar="NAME",
                    help="serve this context of the kubeconfig as a cluster, with a local spoke "
                         "(repeatable; the first is the default cluster; default: "
                         "$INTERLOCK_KUBE_CONTEXTS, else the current context alone as before)")
    up.add_argument("--all-contexts", action="store_true",
                    help="serve every context of the kubeconfig")
    up.add_argument("--scenario", action="append", help="sandbox scenario (default: all)")
    up.add_argument("--replicas", type=_positive, default=1,
                    help="instances of each service (default 1); extra gateways get their own "
                         "ports")
    up.add_argument("--nats-cluster", type=_cluster_size, default=1, metavar="N",
                    help="run N nats-server nodes as a JetStream cluster (3 or 5; streams get N "
                         "replicas); default 1")
    sb = sub.add_parser("sandbox", help="run the sandbox cluster alone", add_help=False)
    sb.add_argument("rest", nargs=argparse.REMAINDER)
    commands.add_parsers(sub, verify.add_options)
    login.add_parsers(sub)
    slack_setup.add_slack_parser(sub)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:
        # The sandbox parses its own flags (--port, --kubeconfig, …): argparse's REMAINDER drops
        # options that come first, so they are handed over untouched.
        from sandbox.cli import main as sandbox_main

        return int(sandbox_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "audit" and args.verify:
        return verify.run(args)
    if args.command in commands.COMMANDS:
        return commands.run(args)
    if args.command in login.COMMANDS:
        return login.run(args)
    if args.command == "mcp":  # stdout is the MCP wire: nothing else may be written there
        from clients import mcp_bridge

        return mcp_bridge.run(args.url, args.token, args.session, args.title)
    if args.command == "slack":
        return slack_setup.run(args)
    if args.command == "up":
        return asyncio.run(_up(args))
    if args.command == "sandbox":
        from sandbox.cli import main as sandbox_main

        return int(sandbox_main(args.rest) or 0)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
