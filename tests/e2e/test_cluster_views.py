"""Issue 21, what a person reads, with the whole stack as processes: a session's cluster
(`interlock chat --cluster`), the card's Where naming the cluster (the gateway's JSON, the CLI's
card), the audit text, and the audit filtered by cluster (`/v1/audit?cluster=`,
`interlock audit --cluster`).

Legacy mode (INTERLOCK_CLUSTERS unset, one executor on the sandbox's kubeconfig, whose context is
named `sandbox`): the call names its cluster with `--context sandbox`, so this runs whether or
not the gate resolves a session's default cluster yet."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest

from launcher.stack import Stack
from tests.e2e.conftest import CLI_WAIT_S, ROOT, approve_and_result, people, run_cli, token

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def _env(stack: Stack, who: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INTERLOCK_KEY", "XDG_CONFIG_HOME")}
    env.update({"INTERLOCK_URL": stack.url, "INTERLOCK_TOKEN": token(stack, who),
                "TERM": "dumb", "XDG_CONFIG_HOME": str(stack.data / "no-config")})
    return env


async def _chat(stack: Stack, *args: str) -> tuple[int, str, str]:
    """`interlock chat ARGS` with nothing typed (end of input at once)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launcher.cli", "chat", *args, env=_env(stack, "operator"),
        cwd=str(ROOT), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), CLI_WAIT_S)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_the_card_and_the_audit_name_the_cluster(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    operator, approver = people(stack, http)
    # A session on a cluster, from the CLI; the gateway records and lists it.
    code, out, err = await _chat(stack, "--cluster", "sandbox", "--title", "on sandbox")
    assert code == 0, err
    head = out.splitlines()[0]
    assert head.startswith("Session s_")
    assert " on cluster sandbox as operator" in head
    sid = head.split()[1]
    status, view = await operator.call("GET", f"/v1/sessions/{sid}")
    assert status == 200
    assert view["cluster"] == "sandbox"
    code, out, err = await run_cli(_env(stack, "viewer"), "sessions")
    assert code == 0, err
    assert f"{sid}" in out
    assert "[sandbox] on sandbox" in out
    # A name that cannot be a cluster: refused by the gateway, said by the CLI.
    code, out, err = await _chat(stack, "--cluster", "no such/ cluster")
    assert code == 1
    assert "is not a cluster name" in err

    # A write on that cluster: the card says where, plainly, in every view of it.
    await operator.say(sid, "kubectl scale deploy/web --replicas=4 -n shop --context sandbox")
    seen = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    aid = seen[-1].data["approval_id"]
    assert seen[-1].data["title"] == "Scale deployment web in shop on cluster sandbox"
    status, listed = await operator.call("GET", "/v1/approvals")
    card = next(a for a in listed["approvals"] if a["approval_id"] == aid)
    assert card["where"] == ["scale deployment/web in shop on cluster sandbox"]
    assert card["clusters"] == ["sandbox"]
    code, out, err = await run_cli(_env(stack, "viewer"), "approvals")
    assert code == 0, err
    assert "  where:   namespace shop on cluster sandbox" in out
    await approve_and_result(operator, approver, sid, seen[-1].data, seen[-1].id or 0)

    # The audit names the cluster, and filters by it.
    status, text = await operator.call("GET", f"/v1/sessions/{sid}/audit?format=text")
    assert status == 200
    assert "scale deployment/web in shop on cluster sandbox: spec.replicas" in text
    status, found = await operator.call("GET", "/v1/audit?cluster=sandbox")
    assert status == 200
    assert [(w["approval_id"], w["cluster"], w["result"]) for w in found["writes"]] == [
        (aid, "sandbox", "ok")]
    status, none = await operator.call("GET", "/v1/audit?cluster=prod-eu")
    assert status == 200
    assert none["writes"] == []
    code, out, err = await run_cli(_env(stack, "viewer"), "audit", "--cluster", "sandbox")
    assert code == 0, err
    assert "scale            deployment/web in shop on cluster sandbox" in out
    assert "1 write(s); every session's log is intact" in out
    code, out, err = await run_cli(_env(stack, "viewer"), "audit", "--cluster", "prod-eu")
    assert code == 0, err
    assert "0 write(s)" in out
    code, out, err = await run_cli(_env(stack, "viewer"), "audit", "--cluster", "a b")
    assert code == 1
    assert "cluster: a cluster name is 1 to 253 characters" in err
