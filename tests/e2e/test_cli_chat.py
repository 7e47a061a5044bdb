"""`interlock chat` in a pseudo-terminal, through an approval, against the whole stack; and the
other client commands (approvals, deny, watch, audit) as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes import client, config

from launcher.nats import free_port
from launcher.stack import APPROVERS, Stack, StackConfig

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
INTERLOCK = str(Path(sys.prefix, "bin", "interlock"))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cli_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(StackConfig(data_dir=tmp_path_factory.mktemp("cli"), http_port=free_port(),
                          admin_token="c" * 32))
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


def _env(stack: Stack, who: str) -> dict[str, str]:
    """A person's shell: their token and, if they may approve, the signing key `interlock up`
    made for them (issue 18); nobody's own config dir (no key of the machine's user leaks in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("INTERLOCK_KEY", "XDG_CONFIG_HOME")}
    env.update({"INTERLOCK_URL": stack.url, "INTERLOCK_TOKEN": str(stack.tokens[who]["token"]),
                "TERM": "dumb", "XDG_CONFIG_HOME": str(stack.data / "no-config")})
    if who in APPROVERS:
        env["INTERLOCK_KEY"] = str(stack.person_key(who))
    return env


def _replicas(stack: Stack) -> int:
    assert stack.kubeconfig is not None
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(stack.kubeconfig)))
    return int(apps.read_namespaced_deployment("web", "shop").spec.replicas)


class Terminal:
    """A process on a pseudo-terminal; `expect` awaits output, never sleeps."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.buffer = ""
        self.seen = ""
        self._data: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self._data.put_nowait("\x00EOF")
            return
        self._data.put_nowait(data.decode(errors="replace").replace("\r\n", "\n"))

    async def expect(self, pattern: str, within: float = 45.0) -> re.Match[str]:
        rx = re.compile(pattern)

        async def wait() -> re.Match[str]:
            while True:
                m = rx.search(self.buffer)
                if m:
                    self.buffer = self.buffer[m.end():]
                    return m
                chunk = await self._data.get()
                if chunk == "\x00EOF":
                    raise AssertionError(f"EOF before {pattern!r}:\n{self.seen[-3000:]}")
                self.buffer += chunk
                self.seen += chunk

        try:
            return await asyncio.wait_for(wait(), within)
        except TimeoutError as exc:
            raise AssertionError(f"no {pattern!r} in:\n{self.seen[-3000:]}") from exc

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    async def exit_code(self, within: float = 20.0) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), within)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


def _fingerprint(key: Path) -> str:
    out = subprocess.run([INTERLOCK, "keys", "init", "--key", str(key), "--json"],
                         capture_output=True, text=True, check=True)
    return str(json.loads(out.stdout)["key_id"])


async def _run(stack: Stack, who: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK, *args, env=_env(stack, who), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode()


async def test_chat_through_an_approval_in_a_terminal(cli_stack: Stack) -> None:
    assert _replicas(cli_stack) == 3
    term = Terminal([INTERLOCK, "chat", "--title", "pty"], _env(cli_stack, "approver"))
    try:
        await term.expect(r"Session (s_\w+) as approver \(approver\)")
        await term.expect(r"> ")
        term.send("kubectl scale deploy/web --replicas=2 -n shop")
        await term.expect(r"approver: kubectl scale deploy/web --replicas=2 -n shop")
        card = await term.expect(r"APPROVAL (a_\w+)(?s:.*?)Approve\? \[y\]es / \[n\]o / \[s\]kip: ")
        text = card.group(0)
        assert "what:    scale deployment/web in shop" in text
        assert "change:  spec.replicas: 3 → 2" in text
        assert "blast:" in text
        assert "expires: in " in text
        assert _replicas(cli_stack) == 3  # held until the answer
        term.send("y")
        signed = (await term.expect(rf"recorded: approve {card.group(1)} \(1 of 1\); "
                                    r"signed with (SHA256:\S+)")).group(1)
        assert signed == _fingerprint(cli_stack.person_key("approver"))
        # The grant's event may be printed before or after the CLI's own "recorded" line.
        if "✓ granted by approver" not in term.seen:
            await term.expect(r"✓ granted by approver")
        await term.expect(r"✓ result \(ok\)")
        await term.expect(r"— done")
        assert _replicas(cli_stack) == 2
        term.send("/quit")
        assert await term.exit_code() == 0
    finally:
        term.close()


async def test_operator_chat_waits_and_approver_denies_from_the_cli(cli_stack: Stack) -> None:
    before = _replicas(cli_stack)
    term = Terminal([INTERLOCK, "chat"], _env(cli_stack, "operator"))
    try:
        sid = (await term.expect(r"Session (s_\w+) as operator\.")).group(1)
        await term.expect(r"> ")
        term.send(f"kubectl scale deploy/web --replicas={before + 5} -n shop")
        await term.expect(r"⏸ waiting for approval (a_\w+)")
        await term.expect(r"an approver must decide; you may not")

        code, out = await _run(cli_stack, "approver", "approvals", "--json")
        assert code == 0, out
        [pending] = [a for a in json.loads(out)["approvals"] if a["session_id"] == sid]
        code, out = await _run(cli_stack, "approver", "approvals")
        assert f"APPROVAL {pending['approval_id']}" in out
        assert f"spec.replicas: {before} → {before + 5}" in out

        # The operator has no key: nothing is sent, and they are told how to get one; with a
        # key (the approver's, say) the gateway still refuses a principal without the role.
        code, out = await _run(cli_stack, "operator", "deny", pending["approval_id"],
                               "--reason", "x")
        assert (code, "no signing key" in out, "interlock keys init" in out) == (1, True, True)
        code, out = await _run(cli_stack, "operator", "deny", pending["approval_id"],
                               "--reason", "x", "--key",
                               str(cli_stack.person_key("approver")))
        assert (code, "403" in out) == (1, True), out
        code, out = await _run(cli_stack, "approver", "deny", pending["approval_id"],
                               "--reason", "not now")
        assert (code, f"denied {pending['approval_id']}" in out) == (0, True), out
        await term.expect(r"✗ denied by approver: not now")
        term.send("/quit")
        assert await term.exit_code() == 0
    finally:
        term.close()
    assert _replicas(cli_stack) == before

    code, out = await _run(cli_stack, "viewer", "watch", sid, "--until", "approval.denied",
                           "--json")
    assert code == 0, out
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types[0] == "session.started"
    assert types[-1] == "approval.denied"
    assert "approval.decided" in types

    code, out = await _run(cli_stack, "viewer", "audit", sid)
    assert code == 0, out
    assert f"Session {sid}" in out
    assert "denied" in out
    assert "not now" in out  # the approver's reason is part of the record

    code, out = await _run(cli_stack, "viewer", "chat")
    assert code == 2
    assert "may not chat" in out


async def test_day_one_kubectl_forms_in_a_terminal(cli_stack: Stack) -> None:
    """Issue 15: the forms a new operator types, through the whole stack to the sandbox and
    back, as `interlock chat` prints them."""
    term = Terminal([INTERLOCK, "chat", "--title", "forms"], _env(cli_stack, "operator"))
    try:
        await term.expect(r"Session (s_\w+) as operator\.")
        await term.expect(r"> ")
        term.send("kubectl get deploy,svc -n shop")
        await term.expect(r"✓ result \(ok\)\n(?s:.*?)deployment\.apps/web(?s:.*?)service/web")
        await term.expect(r"— done")
        term.send("kubectl get pods -n shop -l app=web -o name")
        names = await term.expect(r"✓ result \(ok\)\n((?:\s+pod/web-\S+\n)+)")
        assert names.group(1).split()  # as many as web runs now (an earlier test scales it)
        await term.expect(r"— done")
        term.send("kubectl logs deploy/web -n shop --tail=2")
        await term.expect(r"✓ result \(ok\)\n\s+Found \d+ pods, using pod/web-")
        await term.expect(r"— done")
        term.send("kubectl get deploy -A -o name")
        proposed = await term.expect(r"→ list (.*?) \{")
        assert proposed.group(1) == "deployment in all namespaces", term.seen[-2500:]
        assert "in default" not in term.seen
        await term.expect(r"deployment\.apps/payment-service")
        await term.expect(r"— done")
        term.send("kubectl get pods -n shop -o jsonpath={.items}")
        await term.expect(r"✗ refused: -o jsonpath=\{\.items\} is not supported")
        await term.expect(r"— done")
        term.send("kubectl create secret generic db-pass --from-literal=password=hunter2 -n shop")
        said = await term.expect(r"operator: (kubectl create secret generic db-pass .*)\n")
        assert "hunter2" not in said.group(1)
        # Sealed by the gateway (issue 16): shown as the card's diff shows it.
        assert "password=<sealed value, fingerprint " in said.group(1)
        approval = (await term.expect(r"⏸ waiting for approval (a_\w+)")).group(1)
        code, card = await _run(cli_stack, "approver", "approvals")
        assert code == 0, card
        assert f"APPROVAL {approval}" in card
        code, out = await _run(cli_stack, "approver", "approve", approval)
        assert code == 0, out
        await term.expect(r"✓ result \(ok\)")
        await term.expect(r"— done")
        term.send("/quit")
        assert await term.exit_code() == 0
        # Neither the value nor its base64 is echoed: card, result, the planner's answer.
        shown = term.seen[term.seen.index("operator: kubectl create secret"):] + card
        assert "hunter2" not in shown
        assert "aHVudGVyMg" not in shown, shown
    finally:
        term.close()
