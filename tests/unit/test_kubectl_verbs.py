"""One list of kubectl verbs (schemas/kubectl.py) for the two parties that read a person's
message: direct mode, which runs it, and the gateway's sealer, which seals the secret values of
whatever direct mode would run before the message is recorded. Pure: the store is a dict."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from schemas import kubectl
from services.planner import direct
from services.runtime.sealing.sealer import Sealer

SID = "s_1234"


class Store:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, subject: str, blob: bytes) -> None:
        assert subject not in self.blobs, "a subject holds one blob for good"
        self.blobs[subject] = blob


def sealer() -> Sealer:
    return Sealer("gateway", X25519PrivateKey.generate().public_key(), Store().put)


def test_direct_mode_parses_exactly_the_verbs_schemas_kubectl_names() -> None:
    # The sealer recognises a message as commands by schemas/kubectl.VERBS: a verb direct mode
    # parses that the list lacks would run with its secret values recorded as typed.
    assert set(direct._VERBS) == kubectl.VERBS


# One command direct mode runs for each verb it takes (schemas/kubectl.VERBS); `apply` reads its
# manifest from the lines that follow, so it stands alone (tests/unit/test_sealing.py seals one).
RUNS = {
    "get": "get pods -n shop", "describe": "describe pod web-1 -n shop",
    "logs": "logs web-1 -n shop", "events": "events -n shop", "top": "top pods -n shop",
    "scale": "scale deploy/web --replicas=2 -n shop",
    "rollout": "rollout status deploy/web -n shop",
    "set": "set image deploy/web web=nginx:1.25 -n shop", "delete": "delete pod web-1 -n shop",
    "cordon": "cordon node-1", "uncordon": "uncordon node-1",
    "drain": "drain node-1 --ignore-daemonsets", "label": "label pod web-1 tier=web -n shop",
    "annotate": "annotate pod web-1 note=x -n shop",
    "patch": """patch deploy web -n shop -p '{"spec":{"replicas":2}}'""",
    "create": "create configmap app-config --from-literal=color=blue -n shop",
    "cluster-info": "cluster-info", "auth": "auth can-i get pods -n shop",
}


def test_every_verb_direct_mode_takes_has_a_command_here() -> None:
    assert {*RUNS, "apply"} == kubectl.VERBS
    for verb, command in RUNS.items():
        assert isinstance(direct.parse(kubectl.implied(command)), direct.Call), verb


@pytest.mark.parametrize("verb", sorted(RUNS))
async def test_a_secret_beside_any_command_direct_mode_runs_is_sealed(verb: str) -> None:
    """The sealer and direct mode read a message's lines with one list of verbs: a line direct
    mode runs that the sealer did not take for a command would leave the message as typed."""
    secret = f"Div-Tok-{verb}"
    with_secret = f"set env deploy/web API_TOKEN={secret} -n shop"
    ran = 0
    for lines in ((RUNS[verb], with_secret), (with_secret, RUNS[verb])):
        for word in ("", "kubectl "):
            text = "\n".join(word + line for line in lines)
            commands = direct.split_commands(kubectl.implied(text))
            if not all(isinstance(direct.parse(c), direct.Call) for c in commands):
                continue  # direct mode refuses the message whole: nothing of it runs
            ran += 1
            out = await sealer().text(SID, text)
            assert secret not in out, text
    assert ran, "direct mode runs none of the messages: the test proves nothing"
