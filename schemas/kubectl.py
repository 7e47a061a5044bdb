"""The kubectl command lines a person may type to direct mode: which verbs exist, and how a
message is recognised as commands, with or without the word kubectl.

Two parties read the same message and must agree on what it is: the planner's direct mode
(services/planner/direct.py), which parses and runs it, and the gateway's sealer
(services/runtime/sealing/commands.py), which seals the secret values of whatever direct mode
would run before the message is recorded. A line one of them takes for a command and the other
does not is a secret recorded in the clear, so this knowledge lives here, once, for both.
"""

from __future__ import annotations

import re

# The verbs direct mode takes, each parsed by services/planner/direct.py's table of the same
# names (a unit test holds the two equal). Everything else is refused there.
VERBS: frozenset[str] = frozenset({
    "get", "describe", "logs", "events", "top", "scale", "rollout", "set", "delete", "cordon",
    "uncordon", "drain", "label", "annotate", "patch", "apply", "create", "cluster-info", "auth",
})

# `kubectl apply|create …` whose manifest follows on the next lines, optionally as a here
# document: (1) the verb, (2) the flags, (4) the here document's end marker.
MANIFEST_HEAD = re.compile(r"^/?kubectl\s+(apply|create)\s+(.*?)\s*(<<-?\s*['\"]?(\w+)['\"]?)?$")


def is_command(text: str) -> bool:
    t = text.strip()
    return t.startswith(("kubectl ", "/kubectl ", "kubectl\n", "/kubectl\n")) or \
        t in ("kubectl", "/kubectl")


def implied(text: str) -> str:
    """A message of kubectl commands typed without the word kubectl (`get pods -n shop`), as
    those commands; anything else as it is. Only without a model: with one, such a sentence is
    the model's to read. The gateway seals the values of such lines as it seals a command's
    (services/runtime/sealing/), so nothing typed this way is recorded in the clear."""
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    if not lines or lines[0].split(None, 1)[0] not in VERBS or is_command(lines[0]):
        return text
    if len(lines) > 1 and MANIFEST_HEAD.match("kubectl " + lines[0]):
        return "kubectl " + text.strip()  # the manifest follows on its own lines
    return "\n".join(line if is_command(line) or line.split(None, 1)[0] not in VERBS
                     else "kubectl " + line for line in lines)
