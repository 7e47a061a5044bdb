"""Direct mode: kubectl-style commands parsed into catalogue calls, with no model involved.

It refuses anything it cannot parse exactly (pipes, shell, unknown verbs or flags, several
objects at once); it never guesses. Every call it returns converts to its tool's argument type,
and goes through the very same gate as a model's proposal.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import yaml

from schemas import catalogue
from schemas.kubectl import MANIFEST_HEAD, is_command
from services.runtime.sealing.blobs import REF, show_refs

_PLURALS = {
    "pod": ("po", "pods"), "deployment": ("deploy", "deployments"),
    "replicaset": ("rs", "replicasets"), "statefulset": ("sts", "statefulsets"),
    "daemonset": ("ds", "daemonsets"), "job": ("jobs",), "cronjob": ("cj", "cronjobs"),
    "service": ("svc", "services"), "endpoints": ("ep",), "configmap": ("cm", "configmaps"),
    "secret": ("secrets",), "serviceaccount": ("sa", "serviceaccounts"),
    "persistentvolumeclaim": ("pvc", "persistentvolumeclaims"),
    "persistentvolume": ("pv", "persistentvolumes"),
    "horizontalpodautoscaler": ("hpa", "horizontalpodautoscalers"),
    "poddisruptionbudget": ("pdb", "poddisruptionbudgets"),
    "namespace": ("ns", "namespaces"), "node": ("no", "nodes"), "event": ("ev", "events"),
    "role": ("roles",), "rolebinding": ("rolebindings",), "clusterrole": ("clusterroles",),
    "clusterrolebinding": ("clusterrolebindings",),
}
KINDS: dict[str, str] = {a: k for k, alts in _PLURALS.items() for a in (k, *alts)}
_GROUPS = {"apps", "batch", "autoscaling", "policy", "rbac.authorization.k8s.io", "v1", ""}
_SHELL = set("|;&><`$()\n\\")


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    reason: str


MAX_LINES = 20  # commands in one message


def split_commands(text: str) -> list[str]:
    """A message as the commands it holds: one kubectl command per line, blank lines ignored.
    `apply -f -` with its manifest on the following lines is one command, as is anything that is
    not a kubectl command on every line (parse then refuses it as one, never guessing)."""
    t = text.strip()
    lines = [line.strip() for line in t.split("\n") if line.strip()]
    if len(lines) < 2 or MANIFEST_HEAD.match(lines[0]) or not all(map(is_command, lines)) \
            or len(lines) > MAX_LINES:
        return [t]
    return lines


def parse(text: str) -> Call | Refusal:
    out = _parse(text)
    if isinstance(out, Refusal):
        return out
    tool = catalogue.lookup(out.tool)
    assert tool is not None, out.tool
    try:
        tool.parse_args(out.args)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        return Refusal(f"invalid arguments for {out.tool}: {exc}")
    return out


# -- words and flags ---------------------------------------------------------------------------

_VALUE = {
    "-n": "namespace", "--namespace": "namespace", "--context": "context",
    "-l": "selector", "--selector": "selector", "--replicas": "replicas",
    "-c": "container", "--container": "container", "--tail": "tail",
    "--to-revision": "to_revision", "--revision": "revision", "--limits": "limits",
    "--requests": "requests", "--grace-period": "grace_period", "--cascade": "cascade",
    "--timeout": "timeout", "-o": "output", "--output": "output", "-f": "filename",
    "--filename": "filename", "--patch": "patch", "--type": "patch_type", "--for": "for",
    "--types": "types", "--dry-run": "dry_run", "--subresource": "subresource",
    "--max-log-requests": "max_log_requests",
}
_BOOL = {
    "-A": "all_namespaces", "--all-namespaces": "all_namespaces", "--previous": "previous",
    "--overwrite": "overwrite", "--ignore-daemonsets": "ignore_daemonsets",
    "--delete-emptydir-data": "delete_emptydir_data", "--containers": "containers",
    "--watch": "watch", "-w": "watch", "--all": "all", "--force": "force", "--prefix": "prefix",
}
# Flags that may be given several times (`--from-literal=a=1 --from-literal=b=2`); their values
# are joined with a newline, which no single-line command can contain (see _SHELL).
_MULTI = {"--from-literal": "from_literal", "--from-file": "from_file",
          "--from-env-file": "from_env_file"}
_COMMON = {"namespace", "context"}
_OUTPUTS = ("json", "yaml", "wide", "name")


def _split(words: list[str], short_p: str = "") -> tuple[list[str], dict[str, str]]:
    """Positional words and flags. `short_p` says what `-p` means for this verb."""
    pos: list[str] = []
    flags: dict[str, str] = {}
    values = dict(_VALUE, **({"-p": short_p} if short_p == "patch" else {}))
    bools = dict(_BOOL, **({"-p": short_p} if short_p == "previous" else {}))
    i = 0
    while i < len(words):
        w = words[i]
        if w == "--":
            raise ValueError("`--` (a command for a container) is not supported")
        if w.startswith("-") and w != "-":
            name, eq, value = w.partition("=")
            if name in bools:
                if eq and value not in ("true", "false"):
                    raise ValueError(f"flag {name} takes true or false, not {value!r}")
                key, value = bools[name], value or "true"
            elif name in values or name in _MULTI:
                if not eq:
                    i += 1
                    if i >= len(words):
                        raise ValueError(f"flag {name} needs a value")
                    value = words[i]
                key = values.get(name) or _MULTI[name]
                if key in _MULTI.values():
                    flags[key] = f"{flags[key]}\n{value}" if key in flags else value
                    i += 1
                    continue
            else:
                raise ValueError(f"unsupported flag {name!r}")
            if key in flags:
                raise ValueError(f"flag {name} given twice")
            flags[key] = value
        else:
            pos.append(w)
        i += 1
    return pos, flags


def _allow(flags: dict[str, str], verb: str, *allowed: str) -> Refusal | None:
    if "dry_run" in flags:
        return Refusal("--dry-run is not needed: every write is previewed with a server-side dry "
                       "run and held for approval")
    extra = sorted(set(flags) - _COMMON - set(allowed))
    if "output" in extra:
        # kubectl would print something else; never answer in a format that was not asked for.
        return Refusal(f"{verb} does not support -o; only get prints json, yaml, wide or name")
    if extra:
        names = {v: k for k, v in {**_VALUE, **_BOOL, **_MULTI}.items() if k.startswith("--")}
        return Refusal(f"{verb} does not support {', '.join(names.get(e, e) for e in extra)}")
    return None


def _true(flags: dict[str, str], key: str) -> bool:
    return flags.get(key) == "true"


def _common(flags: dict[str, str], namespaced: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "namespace" in flags and namespaced:
        out["namespace"] = flags["namespace"]
    if "context" in flags:
        out["cluster"] = flags["context"]
    return out


def _kind(word: str) -> str | Refusal:
    k, _, group = word.lower().partition(".")
    kind = KINDS.get(k)
    if kind is None or group not in _GROUPS:
        return Refusal(f"unsupported resource kind {word!r}")
    return kind


def _kind_name(rest: list[str], need_name: bool = True) -> tuple[str, str | None] | Refusal:
    """`kind/name` or `kind name`: exactly one object (or, if allowed, a kind alone)."""
    if not rest:
        return Refusal("missing resource kind")
    first = rest[0]
    if "/" in first:
        k, _, name = first.partition("/")
        if len(rest) > 1:
            return Refusal("only one object at a time")
        if not name:
            return Refusal(f"missing object name in {first!r}")
        kind = _kind(k)
        return kind if isinstance(kind, Refusal) else (kind, name)
    kind = _kind(first)
    if isinstance(kind, Refusal):
        return kind
    if len(rest) > 2:
        return Refusal("only one object at a time")
    if len(rest) == 2:
        return kind, rest[1]
    if need_name:
        return Refusal("missing object name, e.g. deploy/web")
    return kind, None


def _int(flags: dict[str, str], key: str, flag: str) -> int | Refusal:
    try:
        return int(flags[key])
    except ValueError:
        return Refusal(f"{flag} must be a whole number, not {flags[key]!r}")


def _seconds(value: str, flag: str) -> int | Refusal:
    m = re.fullmatch(r"(\d+)(s|m|h)?", value)
    if not m:
        return Refusal(f"{flag} must be a duration like 90s or 5m, not {value!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _selector(flags: dict[str, str]) -> str | Refusal:
    """The -l selector, checked as kubectl's server would parse it (never sent half-understood)."""
    sel = flags["selector"]
    if not sel.strip():
        return Refusal("-l needs a selector, e.g. -l app=web")
    try:
        catalogue.parse_selector(sel)
    except ValueError as exc:
        return Refusal(f"invalid selector {sel!r}: {exc}")
    return sel


def _selected(pos: list[str], flags: dict[str, str], verb: str) -> dict[str, Any] | Refusal:
    """A write by selector (`delete pods -l app=web -n shop`): one kind, no name, one namespace.
    The args it shares with every such write: kind, selector, namespace, cluster."""
    if "all_namespaces" in flags:
        return Refusal(f"{verb} -l with -A (several namespaces at once) is not supported: give "
                       "one namespace with -n, and each namespace is its own card")
    if "all" in flags:
        return Refusal(f"{verb} --all is not supported; use -l with a selector, or name objects")
    sel = _selector(flags)
    if isinstance(sel, Refusal):
        return sel
    if not pos:
        return Refusal(f"{verb} -l needs a kind, e.g. {verb} pods -l app=web")
    if len(pos) > 1 or "/" in pos[0]:
        return Refusal(f"a name cannot be combined with -l: {verb} takes a kind and -l, or a "
                       "named object")
    if "," in pos[0]:
        return Refusal(f"{verb} -l takes one kind at a time")
    kind = _kind(pos[0])
    if isinstance(kind, Refusal):
        return kind
    if kind in catalogue.CLUSTER_SCOPED:
        return Refusal(f"{verb} -l acts in one namespace; {kind} objects are cluster-scoped: "
                       "name each one")
    return {"kind": kind, "selector": sel, **_common(flags)}


# -- the command -------------------------------------------------------------------------------


def _outside_quotes(text: str) -> str:
    """The command with its quoted text left out, except what a shell would still expand inside
    double quotes ($, `, \\): `-l 'env in (a,b)'` is a selector, `"$(id)"` still shell syntax."""
    out, quote = [], ""
    for ch in text:
        if quote == "'":
            quote = "" if ch == "'" else quote
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch in "$`\\":
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        else:
            out.append(ch)
    return "".join(out)


def _parse(text: str) -> Call | Refusal:
    t = text.strip()
    head = t.split("\n", 1)[0]
    if "\n" in t and MANIFEST_HEAD.match(head.strip()):
        return _manifest_command(t)
    if t.startswith("/"):
        t = t[1:]
    if "\n" in t or any(ch in _SHELL for ch in _outside_quotes(t)):
        return Refusal("shell syntax (pipes, redirects, substitutions, several commands) is not "
                       "supported; send one kubectl command")
    try:
        words = shlex.split(t)
    except ValueError as exc:
        return Refusal(f"cannot parse the command: {exc}")
    if not words or words[0] != "kubectl":
        return Refusal("not a kubectl command")
    # Global flags may come before the verb: `kubectl -n shop get pods`.
    i = 1
    while i < len(words) and words[i].startswith("-"):
        i += 1 if "=" in words[i] or words[i] not in ("-n", "--namespace", "--context") else 2
    if i >= len(words):
        return Refusal("missing verb")
    verb = words[i]
    rest = words[1:i] + words[i + 1:]
    handler = _VERBS.get(verb)
    if handler is None:
        why = _NEVER.get(verb)
        if why:
            return Refusal(f"{verb} is not supported: {why}")
        return Refusal(f"unsupported verb {verb!r}")
    short_p = {"logs": "previous", "patch": "patch"}.get(verb, "")
    try:
        pos, flags = _split(rest, short_p)
    except ValueError as exc:
        return Refusal(str(exc))
    return handler(pos, flags)


_NEVER = {
    "exec": "running commands in containers is outside what Interlock may do",
    "attach": "attaching to containers is outside what Interlock may do",
    "port-forward": "port forwarding is outside what Interlock may do",
    "proxy": "proxying the API server is outside what Interlock may do",
    "cp": "copying files from or to containers is outside what Interlock may do",
    "edit": "interactive editing cannot be approved; use set, patch or apply -f - instead",
    "replace": "use apply -f - with the whole manifest instead",
    "run": "use apply -f - with a manifest instead",
    "expose": "use apply -f - with a Service manifest instead",
    "autoscale": "use apply -f - with a HorizontalPodAutoscaler manifest instead",
    "debug": "ephemeral debug containers are outside what Interlock may do",
    "config": "the kubeconfig is not changed from a chat",
    "certificate": "certificate approval is outside what Interlock may do",
    "taint": "taints are not in the tool catalogue",
    "wait": "use rollout status with --timeout instead",
    "diff": "every write is previewed with its exact diff before approval anyway",
}


def _get(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if r := _allow(flags, "get", "selector", "all_namespaces", "output"):
        return r
    output = flags.get("output", "")
    if output and output not in _OUTPUTS:
        return Refusal(f"-o {output} is not supported; get prints json, yaml, wide or name")
    # `get deploy,svc`: several kinds, listed in one read (as kubectl, no name with several).
    if pos and "," in pos[0] and "/" not in pos[0]:
        kinds: list[str] = []
        for word in pos[0].split(","):
            k = _kind(word)
            if isinstance(k, Refusal):
                return k
            if k not in kinds:
                kinds.append(k)
        if len(pos) > 1:
            return Refusal("a name cannot be combined with several kinds; use kind/name")
        if len(kinds) > 9:
            return Refusal("get takes at most 9 kinds at once")
        pos = [kinds[0]]
        more = kinds[1:]
    else:
        more = []
    kn = _kind_name(pos, need_name=False)
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    args = {"kind": kind, **_common(flags, kind not in catalogue.CLUSTER_SCOPED)}
    if output:
        args["output"] = output
    if name:
        if "selector" in flags or "all_namespaces" in flags:
            return Refusal("a name cannot be combined with -l or -A")
        return Call("get", {**args, "name": name})
    if more:
        args["more_kinds"] = more
    if "selector" in flags:
        sel = _selector(flags)
        if isinstance(sel, Refusal):
            return sel
        args["label_selector"] = sel
    if _true(flags, "all_namespaces"):
        args["all_namespaces"] = True
    return Call("list", args)


def _describe(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if r := _allow(flags, "describe"):
        return r
    kn = _kind_name(pos)
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    return Call("describe", {"kind": kind, "name": name,
                             **_common(flags, kind not in catalogue.CLUSTER_SCOPED)})


_LOG_KINDS = ("pod", "deployment", "statefulset", "daemonset", "replicaset", "job")


def _logs_selected(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    """`logs -l app=web`: the matched pods' logs, each line prefixed with its pod and container
    (kubectl's --prefix, always on: several pods' lines must say whose they are); as kubectl,
    the last 10 lines of each unless --tail says otherwise, at most --max-log-requests pods."""
    if r := _allow(flags, "logs -l", "selector", "container", "tail", "previous",
                   "max_log_requests", "prefix"):
        return r
    if pos:
        return Refusal("logs takes a pod (or workload) name or -l, not both")
    if flags.get("prefix") == "false":
        return Refusal("logs -l always prefixes each line with its pod and container")
    sel = _selector(flags)
    if isinstance(sel, Refusal):
        return sel
    args: dict[str, Any] = {"selector": sel, "tail_lines": 10, **_common(flags)}
    if "container" in flags:
        args["container"] = flags["container"]
    for key, flag, field in (("tail", "--tail", "tail_lines"),
                             ("max_log_requests", "--max-log-requests", "max_log_requests")):
        if key in flags:
            n = _int(flags, key, flag)
            if isinstance(n, Refusal):
                return n
            args[field] = n
    if _true(flags, "previous"):
        args["previous"] = True
    return Call("logs", args)


def _logs(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if "selector" in flags:
        return _logs_selected(pos, flags)
    if r := _allow(flags, "logs", "container", "tail", "previous"):
        return r
    if len(pos) != 1:
        return Refusal("logs takes exactly one pod or workload, e.g. logs web-7d4b9 -n shop or "
                       "logs deploy/web -n shop")
    target = pos[0]
    kind = "pod"
    if "/" in target:
        k, _, target = target.partition("/")
        found = _kind(k)
        if isinstance(found, Refusal):
            return found
        if found not in _LOG_KINDS:
            return Refusal(f"logs reads a pod or a workload ({', '.join(_LOG_KINDS)}), not a "
                           f"{found}")
        if not target:
            return Refusal(f"missing object name in {pos[0]!r}")
        kind = found
    args: dict[str, Any] = {"name": target, **_common(flags)}
    if kind != "pod":
        args["kind"] = kind
    if "container" in flags:
        args["container"] = flags["container"]
    if "tail" in flags:
        n = _int(flags, "tail", "--tail")
        if isinstance(n, Refusal):
            return n
        args["tail_lines"] = n
    if _true(flags, "previous"):
        args["previous"] = True
    return Call("logs", args)


def _events(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if r := _allow(flags, "events", "all_namespaces", "for", "types"):
        return r
    if pos:
        return Refusal("events takes no arguments; use --for kind/name")
    args: dict[str, Any] = _common(flags)
    if _true(flags, "all_namespaces"):
        args["all_namespaces"] = True
    if "for" in flags:
        kn = _kind_name([flags["for"]])
        if isinstance(kn, Refusal):
            return kn
        args["kind"], args["name"] = kn
    if "types" in flags:
        if flags["types"] != "Warning":
            return Refusal("--types supports only Warning")
        args["warnings_only"] = True
    return Call("events", args)


def _top(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if not pos or pos[0] not in ("pod", "pods", "po", "node", "nodes", "no") or len(pos) > 1:
        return Refusal("top takes pods or nodes (one object by name is not supported)")
    if pos[0].startswith("no"):
        if r := _allow(flags, "top nodes", "selector"):
            return r
        args: dict[str, Any] = _common(flags, namespaced=False)
        if "selector" in flags:
            sel = _selector(flags)
            if isinstance(sel, Refusal):
                return sel
            args["label_selector"] = sel
        return Call("top_nodes", args)
    if r := _allow(flags, "top pods", "selector", "all_namespaces", "containers"):
        return r
    args = _common(flags)
    if "selector" in flags:
        sel = _selector(flags)
        if isinstance(sel, Refusal):
            return sel
        args["label_selector"] = sel
    if _true(flags, "all_namespaces"):
        args["all_namespaces"] = True
    if _true(flags, "containers"):
        args["containers"] = True
    return Call("top_pods", args)


def _scale(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if "selector" not in flags and ("all_namespaces" in flags or "all" in flags):
        return Refusal("scale takes one named object, or a kind and -l")
    if r := _allow(flags, "scale", "replicas", "selector", "all_namespaces", "all"):
        return r
    if "selector" in flags:
        target = _selected(pos, flags, "scale")
        if isinstance(target, Refusal):
            return target
    else:
        kn = _kind_name(pos)
        if isinstance(kn, Refusal):
            return kn
        target = {"kind": kn[0], "name": kn[1], **_common(flags)}
    if "replicas" not in flags:
        return Refusal("scale needs --replicas=N")
    n = _int(flags, "replicas", "--replicas")
    if isinstance(n, Refusal):
        return n
    return Call("scale", {**target, "replicas": n})


def _rollout(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if not pos:
        return Refusal("rollout needs a subcommand: restart, undo, status or history")
    sub, rest = pos[0], pos[1:]
    allowed = {"restart": ("selector", "all_namespaces", "all"), "undo": ("to_revision",),
               "status": ("timeout", "watch"), "history": ("revision",)}
    if sub not in allowed:
        return Refusal(f"unsupported rollout subcommand {sub!r} (pause and resume are not "
                       "supported)")
    if r := _allow(flags, f"rollout {sub}", *allowed[sub]):
        return r
    if sub == "restart" and "selector" in flags:
        target = _selected(rest, flags, "rollout restart")
        return target if isinstance(target, Refusal) else Call("rollout_restart", target)
    if "all_namespaces" in flags or "all" in flags:
        return Refusal("rollout restart takes one named object, or a kind and -l")
    kn = _kind_name(rest)
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    args: dict[str, Any] = {"kind": kind, "name": name, **_common(flags)}
    if sub == "undo" and "to_revision" in flags:
        n = _int(flags, "to_revision", "--to-revision")
        if isinstance(n, Refusal):
            return n
        args["to_revision"] = n
    if sub == "history" and "revision" in flags:
        n = _int(flags, "revision", "--revision")
        if isinstance(n, Refusal):
            return n
        args["revision"] = n
    if sub == "status" and "timeout" in flags:
        s = _seconds(flags["timeout"], "--timeout")
        if isinstance(s, Refusal):
            return s
        args["wait_seconds"] = s
    tool = {"restart": "rollout_restart", "undo": "rollout_undo", "status": "rollout_status",
            "history": "rollout_history"}[sub]
    return Call(tool, args)


def _quantities(text: str, flag: str) -> dict[str, str] | Refusal:
    out: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or key not in ("cpu", "memory") or key in out or not value:
            return Refusal(f"{flag} takes cpu=…,memory=…, not {text!r}")
        out[key] = value
    return out


def _set(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if not pos or pos[0] not in ("image", "resources", "env"):
        return Refusal("set needs image, resources or env")
    sub, rest = pos[0], pos[1:]
    if not rest:
        return Refusal(f"set {sub} needs an object, e.g. deploy/web")
    kn = _kind_name(rest[:1])
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    args: dict[str, Any] = {"kind": kind, "name": name, **_common(flags)}
    pairs = rest[1:]
    if sub == "image":
        if r := _allow(flags, "set image"):
            return r
        if len(pairs) != 1 or "=" not in pairs[0]:
            return Refusal("set image takes exactly one CONTAINER=IMAGE (one container at a time)")
        args["container"], _, args["image"] = pairs[0].partition("=")
        return Call("set_image", args)
    if sub == "resources":
        if r := _allow(flags, "set resources", "container", "limits", "requests"):
            return r
        if pairs:
            return Refusal("set resources takes one object and --limits/--requests")
        if "container" in flags:
            args["container"] = flags["container"]
        for key in ("limits", "requests"):
            if key in flags:
                q = _quantities(flags[key], f"--{key}")
                if isinstance(q, Refusal):
                    return q
                args[key] = q
        if "limits" not in args and "requests" not in args:
            return Refusal("set resources needs --limits and/or --requests")
        return Call("set_resources", args)
    if r := _allow(flags, "set env", "container"):
        return r
    if "container" in flags:
        args["container"] = flags["container"]
    env: dict[str, str] = {}
    remove: list[str] = []
    for p in pairs:
        if "=" in p:
            k, _, v = p.partition("=")
            env[k] = v
        elif p.endswith("-"):
            remove.append(p[:-1])
        else:
            return Refusal(f"set env takes NAME=value or NAME-, not {p!r}")
    if not env and not remove:
        return Refusal("set env needs NAME=value or NAME- (to remove)")
    if env:
        args["env"] = env
    if remove:
        args["remove"] = remove
    return Call("set_env", args)


def _delete(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if "selector" not in flags and ("all" in flags or "all_namespaces" in flags):
        return Refusal("delete takes one named object, or a kind and -l (no --all, or -A)")
    if "force" in flags:
        return Refusal("--force is not supported: deletions are graceful and approved")
    if "filename" in flags:
        return Refusal("delete -f is not supported; name the object")
    if r := _allow(flags, "delete", "grace_period", "cascade", "selector", "all_namespaces",
                   "all"):
        return r
    args: dict[str, Any]
    if "selector" in flags:
        target = _selected(pos, flags, "delete")
        if isinstance(target, Refusal):
            return target
        args = target
    else:
        kn = _kind_name(pos)
        if isinstance(kn, Refusal):
            return kn
        kind, name = kn
        args = {"kind": kind, "name": name,
                **_common(flags, kind not in catalogue.CLUSTER_SCOPED)}
    if "grace_period" in flags:
        n = _int(flags, "grace_period", "--grace-period")
        if isinstance(n, Refusal):
            return n
        args["grace_period_seconds"] = n
    if "cascade" in flags:
        if flags["cascade"] not in ("background", "foreground", "orphan"):
            return Refusal("--cascade takes background, foreground or orphan")
        args["propagation"] = flags["cascade"]
    return Call("delete", args)


def _node(tool: str, *allowed: str) -> Callable[[list[str], dict[str, str]], Call | Refusal]:
    def parse_node(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
        if "namespace" in flags:
            return Refusal(f"{tool} acts on a node, which has no namespace")
        if r := _allow(flags, tool, *allowed):
            return r
        if len(pos) != 1:
            return Refusal(f"{tool} takes exactly one node")
        name = pos[0].removeprefix("node/").removeprefix("nodes/")
        args: dict[str, Any] = {"name": name, **_common(flags, namespaced=False)}
        for key in ("ignore_daemonsets", "delete_emptydir_data"):
            if key in flags:
                args[key] = _true(flags, key)
        if "grace_period" in flags:
            n = _int(flags, "grace_period", "--grace-period")
            if isinstance(n, Refusal):
                return n
            args["grace_period_seconds"] = n
        if "timeout" in flags:
            s = _seconds(flags["timeout"], "--timeout")
            if isinstance(s, Refusal):
                return s
            args["timeout_seconds"] = s
        return Call(tool, args)

    return parse_node


def _meta(tool: str, field: str) -> Callable[[list[str], dict[str, str]], Call | Refusal]:
    def parse_meta(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
        if "selector" not in flags and ("all" in flags or "all_namespaces" in flags):
            return Refusal(f"{tool} takes one named object, or a kind and -l (no --all, or -A)")
        if r := _allow(flags, tool, "overwrite", "selector", "all_namespaces", "all"):
            return r
        objs = [p for p in pos if "=" not in p and not p.endswith("-")]
        pairs = [p for p in pos if p not in objs]
        target: dict[str, Any]
        if "selector" in flags:
            selected = _selected(objs, flags, tool)
            if isinstance(selected, Refusal):
                return selected
            target = selected
        else:
            kn = _kind_name(objs)
            if isinstance(kn, Refusal):
                return kn
            target = {"kind": kn[0], "name": kn[1],
                      **_common(flags, kn[0] not in catalogue.CLUSTER_SCOPED)}
        values: dict[str, str | None] = {}
        for p in pairs:
            if "=" in p:
                k, _, v = p.partition("=")
                values[k] = v
            else:
                values[p[:-1]] = None
        if not values:
            return Refusal(f"{tool} needs KEY=value or KEY- (to remove)")
        args: dict[str, Any] = {**target, field: values}
        if _true(flags, "overwrite"):
            args["overwrite"] = True
        return Call(tool, args)

    return parse_meta


def _patch(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if r := _allow(flags, "patch", "patch", "patch_type"):
        return r
    kn = _kind_name(pos)
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    if "patch" not in flags:
        return Refusal("patch needs -p '<JSON>'")
    ptype = flags.get("patch_type", "strategic")
    if ptype not in ("strategic", "merge"):
        return Refusal("--type supports strategic and merge (json patches are not supported)")
    try:
        body = json.loads(flags["patch"])
    except ValueError:
        return Refusal("the patch must be JSON")
    if not isinstance(body, dict):
        return Refusal("the patch must be a JSON object")
    return Call("patch", {"kind": kind, "name": name, "patch_type": ptype, "body": body,
                          **_common(flags)})


def _manifest_command(text: str) -> Call | Refusal:
    """`kubectl apply -f -` (or create), then the manifest on the following lines, optionally
    as a here-document: `kubectl apply -f - <<EOF` … `EOF`."""
    head, _, body = text.partition("\n")
    m = MANIFEST_HEAD.match(head.strip())
    assert m is not None
    verb, flagtext, marker = m.group(1), m.group(2), m.group(4)
    if any(ch in _SHELL for ch in flagtext):
        return Refusal("shell syntax is not supported")
    try:
        _, flags = _split(shlex.split(flagtext))
    except ValueError as exc:
        return Refusal(str(exc))
    if r := _allow(flags, verb, "filename"):
        return r
    if flags.get("filename") != "-":
        return Refusal(f"{verb} reads a manifest only inline: {verb} -f - and the manifest on the "
                       "next lines")
    lines = body.rstrip().split("\n")
    if marker:
        if not lines or lines[-1].strip() != marker:
            return Refusal(f"the here-document is not closed with {marker}")
        lines = lines[:-1]
    try:
        docs = [d for d in yaml.safe_load_all("\n".join(lines)) if d is not None]
    except yaml.YAMLError as exc:
        return Refusal(f"the manifest is not valid YAML: {str(exc)[:300]}")
    if len(docs) != 1:
        return Refusal(f"{verb} -f - takes exactly one object, not {len(docs)}")
    manifest = docs[0]
    if not isinstance(manifest, dict):
        return Refusal("the manifest must be a mapping")
    try:
        manifest = json.loads(json.dumps(manifest))
    except TypeError:
        return Refusal("the manifest holds values that are not JSON (quote dates and times)")
    return Call(verb, {"manifest": manifest, **_common(flags)})


def _manifest_inline(pos: list[str], flags: dict[str, str]) -> Refusal:
    if "filename" in flags and flags["filename"] != "-":
        return Refusal("apply reads no files; use apply -f - with the manifest on the next lines")
    return Refusal("apply -f - needs the manifest on the lines after the command")


_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_FROM_FILE = ("--from-file reads a file on the machine that runs kubectl; direct mode runs on the "
              "Interlock server, which cannot see your files (and reads none of its own for you): "
              "use --from-literal=KEY=VALUE, or create -f - with the manifest on the next lines")


def _create(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    """`create configmap NAME`, `create secret generic NAME` (--from-literal) and `create
    namespace NAME`, as kubectl builds them; anything else only from an inline manifest."""
    what = KINDS.get(pos[0].lower()) if pos else None
    if what not in ("configmap", "secret", "namespace") or "filename" in flags:
        if what is not None and "filename" not in flags:
            return Refusal(f"create {pos[0]} is not supported; use create -f - with a manifest "
                           "on the next lines (create configmap, secret generic and namespace "
                           "are)")
        return _manifest_inline(pos, flags)
    if what == "namespace":
        if r := _allow(flags, "create namespace"):
            return r
        if len(pos) != 2:
            return Refusal("create namespace takes exactly one name")
        return Call("create", {"manifest": {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": pos[1]}},
                               **_common(flags, namespaced=False)})
    rest = pos[1:]
    verb = f"create {what}"
    if what == "secret":
        if not rest or rest[0] != "generic":
            return Refusal("only create secret generic is supported (docker-registry and tls "
                           "read files; use create -f - with a manifest)")
        rest, verb = rest[1:], "create secret generic"
    if "from_file" in flags or "from_env_file" in flags:
        return Refusal(_FROM_FILE)
    if r := _allow(flags, verb, "from_literal", *(("patch_type",) if what == "secret" else ())):
        return r
    if len(rest) != 1:
        return Refusal(f"{verb} takes exactly one name, e.g. {verb} app-config "
                       "--from-literal=KEY=VALUE")
    data: dict[str, str] = {}
    for item in filter(None, flags.get("from_literal", "").split("\n")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            return Refusal(f"--from-literal takes KEY=VALUE, not {key or item!r}")
        if not _DATA_KEY.fullmatch(key):
            return Refusal(f"{key!r} is not a valid key (letters, digits, -, _ and .)")
        if key in data:
            return Refusal(f"cannot add key {key}: another key by that name already exists")
        data[key] = value
    meta: dict[str, Any] = {"name": rest[0]}
    manifest: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    if what == "secret":
        # As kubectl: base64 in `data`, so the value is not spelled out on the card in passing.
        manifest.update(kind="Secret", type=flags.get("patch_type", "Opaque"))
        if data:
            manifest["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    elif data:
        manifest["data"] = data
    return Call("create", {"manifest": manifest, **_common(flags)})


# --from-literal, then KEY=VALUE quoted as a whole, or KEY= and a value quoted or bare.
_LITERAL = re.compile(r"""(--from-literal(?:=|\s+))(?:(["'])([-._a-zA-Z0-9]+=)[^"']*\2|"""
                      r"""([-._a-zA-Z0-9]+=)(?:'[^']*'|"[^"]*"|\S*))""")


def shown(text: str) -> str:
    """The command as it may be repeated (a rationale, a log line): a secret's literal values
    are replaced, so an approval card or a transcript never spells them out again. A value the
    gateway sealed (services/runtime/sealing/) is a reference with a keyed fingerprint: it is
    shown as the card's diff shows it (`<sealed value, fingerprint 3b58d0ad0ba5…>`), so the
    command and the diff can be compared."""
    if re.search(r"\bcreate\s+secret\b", text):
        text = _LITERAL.sub(lambda m: m.group(0) if REF.search(m.group(0)) else
                            f"{m.group(1)}{m.group(2) or ''}{m.group(3) or m.group(4)}"
                            f"<redacted>{m.group(2) or ''}", text)
    return show_refs(text)


E = TypeVar("E", bound=msgspec.Struct)


def masked(event: E) -> E:
    """A planner event with a secret's literal values replaced wherever it repeats the command
    (a proposal's rationale, a refusal's text and reason, the answer). Applied where the
    planner appends its direct-mode events, so every path of `domain.decide` is covered."""
    changes: dict[str, str] = {}
    for field in ("text", "rationale", "reason"):
        value = getattr(event, field, None)
        if isinstance(value, str) and (safe := shown(value)) != value:
            changes[field] = safe
    return msgspec.structs.replace(event, **changes) if changes else event


def _cluster_info(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if pos:
        return Refusal("cluster-info takes no arguments (dump is not supported)")
    if r := _allow(flags, "cluster-info"):
        return r
    return Call("cluster_info", _common(flags, namespaced=False))


def _auth(pos: list[str], flags: dict[str, str]) -> Call | Refusal:
    if r := _allow(flags, "auth can-i"):
        return r
    if len(pos) not in (3, 4) or pos[0] != "can-i":
        return Refusal("auth supports only: auth can-i VERB RESOURCE [NAME]")
    verb, resource = pos[1], pos[2]
    name = pos[3] if len(pos) == 4 else None
    if "/" in resource and name is None and not resource.endswith(("/log", "/scale", "/status")):
        resource, _, name = resource.partition("/")
    group = ""
    if "." in resource:
        resource, _, group = resource.partition(".")
    args: dict[str, Any] = {"verb": verb, "resource": resource, **_common(flags)}
    if group:
        args["group"] = group
    if name:
        args["name"] = name
    return Call("can_i", args)


_VERBS: dict[str, Callable[[list[str], dict[str, str]], Call | Refusal]] = {
    "get": _get,
    "describe": _describe,
    "logs": _logs,
    "events": _events,
    "top": _top,
    "scale": _scale,
    "rollout": _rollout,
    "set": _set,
    "delete": _delete,
    "cordon": _node("cordon"),
    "uncordon": _node("uncordon"),
    "drain": _node("drain", "ignore_daemonsets", "delete_emptydir_data", "grace_period",
                   "timeout"),
    "label": _meta("label", "labels"),
    "annotate": _meta("annotate", "annotations"),
    "patch": _patch,
    "apply": _manifest_inline,
    "create": _create,
    "cluster-info": _cluster_info,
    "auth": _auth,
}
