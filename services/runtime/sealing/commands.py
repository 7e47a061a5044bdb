"""A person's message of kubectl commands, with the secret values it carries sealed as the
commands direct mode runs them (services/planner/direct.py parses the message the log stores)."""

from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING

import yaml

from schemas.kubectl import MANIFEST_HEAD, implied, is_command
from services.runtime.credentials import contains_credential
from services.runtime.sealing.blobs import Ref, Unsealable
from services.runtime.sealing.slots import USERINFO, copy, is_secret

if TYPE_CHECKING:
    from services.runtime.sealing.sealer import Sealer


async def seal_text(sealer: Sealer, session_id: str, text: str) -> str:
    """A person's message with the secret values of its kubectl commands sealed (direct
    mode parses the message the log stores). Anything that is not a command is returned
    as it is."""
    # Read as direct mode reads it (schemas/kubectl.py): whatever it would run is sealed.
    t = implied(text.strip())
    if not is_command(t):
        return text
    lines = [line for line in t.split("\n") if line.strip()]
    if len(lines) > 1 and MANIFEST_HEAD.match(lines[0].strip()):
        out_text = await _manifest_text(sealer, session_id, t)
    elif len(lines) > 1 and not all(is_command(line.strip()) for line in lines):
        return text  # the planner refuses such a message whole, so nothing is proposed
    else:
        out_text = "\n".join([await _line(sealer, session_id, line.strip()) for line in lines])
    if out_text == t or out_text == "\n".join(line.strip() for line in lines):
        return text
    # Recorded as the person wrote it, the word kubectl left out again: whether a model or
    # direct mode reads the message must not depend on whether it held a secret.
    return out_text if t.startswith(("kubectl", "/kubectl")) == text.strip().startswith(
        ("kubectl", "/kubectl")) else _unimplied(out_text)

async def _line(sealer: Sealer, session_id: str, line: str) -> str:
    try:
        words = shlex.split(line)
    except ValueError:
        return line
    # Flags may come anywhere (`kubectl -n shop create secret …`): the words that are not
    # flags, flag values included — enough to tell the verb and the kind, and sealing a
    # value too many only hides it from the card.
    # Sealed for the executor of the cluster the command runs on (its --context, as direct
    # mode reads it; none: the session's or the deployment's default).
    named = _context(words)
    plain = [w.lower() for w in words[1:] if not w.startswith("-")]
    verb = next((w for w in plain if w in ("create", "set", "patch")), "")
    after = plain[plain.index(verb) + 1:] if verb else []
    kind = _kind_word(after)
    changed = False
    if verb == "create" and kind in ("secret", "configmap"):
        i = 0
        while i < len(words):
            w, pair, at = words[i], None, i
            if w.startswith("--from-literal="):
                pair = w.removeprefix("--from-literal=")
            elif w == "--from-literal" and i + 1 < len(words):
                pair, at = words[i + 1], i + 1
            if pair is not None:
                k, eq, v = pair.partition("=")
                if eq and v and Ref.parse(v) is None and (kind == "secret"
                                                          or is_secret(k, v)):
                    ref = await sealer.value(session_id, v, named)
                    words[at] = ("--from-literal=" if at == i else "") + f"{k}={ref.text}"
                    changed = True
            i = at + 1
    elif verb == "set" and "env" in after:
        for i, w in enumerate(words):
            # NAME=VALUE, and kubectl's --env=NAME=VALUE / -e NAME=VALUE (which direct
            # mode refuses — after the message is recorded).
            flag = "--env=" if w.startswith("--env=") else ""
            k, eq, v = w.removeprefix(flag).partition("=")
            if i > 0 and (flag or not w.startswith("-")) and eq and v \
                    and Ref.parse(v) is None and is_secret(k, v):
                words[i] = f"{flag}{k}={(await sealer.value(session_id, v, named)).text}"
                changed = True
    elif verb == "patch":
        changed = await _patch_words(sealer, session_id, words, kind, named)
    return shlex.join(words) if changed else line


def _context(words: list[str]) -> str | None:
    """The cluster a kubectl command names (`--context X` / `--context=X`; the last one, as
    direct mode reads flags), or None."""
    named = None
    for i, w in enumerate(words):
        if w == "--context" and i + 1 < len(words):
            named = words[i + 1]
        elif w.startswith("--context="):
            named = w.removeprefix("--context=")
    return named or None

async def _patch_words(sealer: Sealer, session_id: str, words: list[str], kind: str,
                       named: str | None) -> bool:
    for i, w in enumerate(words):
        at, body = None, None
        if w in ("-p", "--patch") and i + 1 < len(words):
            at, body = i + 1, words[i + 1]
        elif w.startswith("--patch="):
            at, body = i, w.removeprefix("--patch=")
        if at is None or body is None:
            continue
        try:
            doc = json.loads(body)
        except ValueError:
            return False
        sealed, plain = await sealer.args(session_id, "patch", {"kind": kind, "body": doc},
                                          named)
        if plain:
            text = json.dumps(sealed["body"], separators=(",", ":"))
            words[at] = text if at != i else f"--patch={text}"
            return True
    return False

async def _manifest_text(sealer: Sealer, session_id: str, text: str) -> str:
    head, _, body = text.partition("\n")
    m = MANIFEST_HEAD.match(head.strip())
    assert m is not None
    # Whatever follows, the command line itself may carry a literal (the planner reads
    # `create secret … --from-literal` followed by lines as one command, and refuses it).
    sealed_head = await _line(sealer, session_id, head.strip())
    if sealed_head != head.strip():
        return sealed_head + "\n" + (await seal_text(sealer, session_id, body) if body.strip()
                                     else body)
    marker = m.group(4)
    lines = body.rstrip().split("\n")
    tail = ""
    if marker and lines and lines[-1].strip() == marker:
        lines, tail = lines[:-1], "\n" + lines[-1].strip()
    try:
        docs = [d for d in yaml.safe_load_all("\n".join(lines)) if d is not None]
    except yaml.YAMLError:
        docs = []
    if len(docs) != 1 or not isinstance(docs[0], dict):
        if _may_hold_secret(body):
            raise Unsealable("the manifest could not be read as one YAML object, and it may "
                             "hold a secret: it was not recorded; correct it and send it "
                             "again")
        return text
    try:
        manifest = copy(docs[0])
    except TypeError as exc:  # dates and such: the planner refuses it too
        if _may_hold_secret(body):
            raise Unsealable("the manifest holds values that are not JSON (quote dates and "
                             "times), and it may hold a secret: it was not recorded") from exc
        return text
    try:
        named = _context(shlex.split(head.strip()))
    except ValueError:
        named = None
    sealed, plain = await sealer.args(session_id, m.group(1), {"manifest": manifest}, named)
    if not plain:
        return text
    # JSON is YAML: the planner reads it as it would have read the original.
    return f"{head}\n{json.dumps(sealed['manifest'], indent=2)}{tail}"


def _kind_word(words: list[str]) -> str:
    """"secret" or "configmap" if the words after a verb name one (`secret`, `cm/x`, …)."""
    for w in words:
        base = w.split("/")[0]
        if base in ("secret", "secrets"):
            return "secret"
        if base in ("configmap", "configmaps", "cm"):
            return "configmap"
    return ""


def _unimplied(text: str) -> str:
    return "\n".join(line.removeprefix("kubectl ") for line in text.split("\n"))


def _may_hold_secret(text: str) -> bool:
    return bool(re.search(r"(?im)^\s*kind:\s*['\"]?Secret\b", text)) or contains_credential(
        text) or bool(USERINFO.search(text)) or bool(
        re.search(r"(?im)^\s*-?\s*name:\s*['\"]?\w*(pass|pwd|token|secret|key)", text))
