"""Label-selector forms of the tools, with kubectl's meaning.

`logs -l app=web` is a read: the matched pods' logs, each line prefixed with its source as
kubectl's `--prefix` does, at most `max_log_requests` pods (kubectl's --max-log-requests, 5).

A write by selector (`delete pods -l app=web`, `label`, `annotate`, `scale`, `rollout restart`)
is one plan over the exact objects the selector matches when it is planned: one single-object
plan per match, built by the very planner of the named form. Its `effect` is their refs (the
gate binds their digest into the grant, and kube_write.execute refuses a set that differs,
naming what was added and removed), and its resourceVersion a digest of every ref with the
object's uid and what the write depends on (`state`), which the grant binds too. At execution
the selector is listed again; if the set or any object in it changed since the preview, nothing
is done — `send` checks the digest itself as well, so this holds even without the effect
binding. Otherwise each object is written by name with its resourceVersion as a precondition,
so an object that joins the selector after the preview is never touched.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from schemas import catalogue as C
from schemas.approval import BlastRadius, FieldChange
from services.executor import evidence
from services.executor import kube_read as R
from services.executor import kube_write as W
from services.executor.kube import KINDS, Kube, KubeError, Outcome, path
from services.executor.redact import redact_text

Obj = dict[str, Any]
# An approver must be able to read every object a write acts on; past this, narrow the selector.
MAX_SELECTED = 50
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

WriteArgs = (C.DeleteArgs | C.LabelArgs | C.AnnotateArgs | C.ScaleArgs | C.RolloutRestartArgs)


def _noun(kind: str, n: int) -> str:
    return kind if n == 1 else kind + ("es" if kind.endswith("s") else "s")


def _names(items: list[str], n: int = 8) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def matching(k: Kube, ctx: str, kind: str, namespace: str, selector: str) -> list[Obj]:
    """The objects of `kind` in `namespace` the selector matches now, by name."""
    C.parse_selector(selector)  # never send the server a selector we did not understand
    items = k.list(ctx, kind, namespace, label_selector=selector)
    return sorted(items, key=lambda o: str(o["metadata"]["name"]))


# -- logs -l -----------------------------------------------------------------------------------


def _container(pod: Obj, wanted: str | None) -> str:
    """The container to read, as kubectl picks it: the one asked for, else the pod's
    default-container annotation, else its first container."""
    if wanted:
        return wanted
    default = (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER)
    containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    if isinstance(default, str) and default in containers:
        return default
    return str(containers[0]) if containers else ""


def logs(k: Kube, a: C.LogsArgs) -> Outcome:
    if not a.selector:
        return R.logs(k, a)
    pods = matching(k, a.cluster, "pod", a.namespace, a.selector)
    if not pods:
        return Outcome(text=f"No resources found in {a.namespace} namespace.",
                       data={"selector": a.selector, "pods": []})
    read, skipped = pods[:a.max_log_requests], pods[a.max_log_requests:]
    lines: list[str] = []
    summary: list[Obj] = []
    for pod in read:
        name = pod["metadata"]["name"]
        container = _container(pod, a.container)
        prefix = f"[pod/{name}/{container}]"
        try:
            text = k.request(a.cluster, "GET", path("pod", a.namespace, name, "log"), raw=True,
                             query={"container": container or None,
                                    "tailLines": a.tail_lines,
                                    "previous": "true" if a.previous else None})
        except KubeError as exc:
            # One pod's failure (no such container, not started) does not hide the others.
            lines.append(f"{prefix} error: {exc.reason}: {exc.message}")
            summary.append({"pod": name, "container": container, "error": exc.reason})
            continue
        body = redact_text(str(text or "")).rstrip("\n")
        lines += [f"{prefix} {line}" for line in body.split("\n")] if body else []
        summary.append({"pod": name, "container": container, "lines": body.count("\n") + 1
                        if body else 0})
    if skipped:
        lines.append(f"… {len(skipped)} more pods match {a.selector!r} and were not read "
                     f"(at most {a.max_log_requests}, as kubectl's --max-log-requests): "
                     + _names([p["metadata"]["name"] for p in skipped]))
    return Outcome(text="\n".join(lines) or "(no log lines)",
                   data={"selector": a.selector, "pods": summary,
                         "not_read": [p["metadata"]["name"] for p in skipped]})


def gather(k: Kube, a: C.Args, now: datetime | None = None) -> evidence.Gathered:
    """The facts Interlock gathers for each object a selector matches (restarts, usage, an
    autoscaler, references), as for the named form, each line naming its object."""
    out = evidence.Gathered()
    try:
        found = matching(k, a.cluster, getattr(a, "kind", "pod"), getattr(a, "namespace", ""),
                         getattr(a, "selector", ""))
    except (KubeError, ValueError):
        return out
    autoscalers: list[str] = []
    for obj in found[:MAX_SELECTED]:
        name = obj["metadata"]["name"]
        one = msgspec.structs.replace(a, name=name, selector="")
        got = evidence.gather(k, one, now)
        for line in got.lines:
            out.add(line if name in line else f"{getattr(a, 'kind', '')}/{name}: {line}")
        if got.autoscaler:
            autoscalers.append(got.autoscaler)
    out.autoscaler = "; ".join(autoscalers)[:2000]
    return out


READERS: dict[type[C.Args], Callable[[Kube, Any], Outcome]] = {**R.READERS, C.LogsArgs: logs}


# -- writes by selector ------------------------------------------------------------------------


def digest(pairs: list[tuple[str, str]]) -> str:
    """What the grant binds for a selector write: every matched ref with its `state`."""
    body = "\n".join(f"{ref}@{st}" for ref, st in sorted(pairs))
    return "selected:sha256:" + hashlib.sha256(body.encode()).hexdigest()


@dataclass
class SelectorPlan(W.Plan):
    """A write to each object a selector matched; the hooks kube_write calls for it."""

    selector: str = ""
    subs: list[tuple[C.Args, W.Plan]] = field(default_factory=list)
    digest: str = ""

    @property
    def rv(self) -> str:  # the whole set's version, bound by the grant
        return self.digest

    @property
    def ref(self) -> str:
        n = len(self.subs)
        return f"{n} {_noun(self.kind, n)} matching {self.selector}"

    def _afters(self, after: Obj | None) -> list[Obj | None]:
        items = (after or {}).get("items")
        return list(items) if isinstance(items, list) else [None] * len(self.subs)

    def changes_of(self, after: Obj | None) -> tuple[FieldChange, ...]:
        """Every object's own changes, each path led by the object it belongs to."""
        out: tuple[FieldChange, ...] = ()
        for (_, sub), one in zip(self.subs, self._afters(after), strict=True):
            for c in W._changes(sub, one):
                out += (c if c.path == sub.ref else msgspec.structs.replace(
                    c, path=f"{sub.ref} {c.path}"),)
        return out

    def radius_of(self, k: Kube, ctx: str, after: Obj | None) -> BlastRadius:
        """The set's blast radius: each object's own, listed, and their union."""
        lines: list[str] = []
        pods: list[str] = []
        namespaces: set[str] = set()
        production = False
        before_total: int | None = 0
        after_total: int | None = 0
        for (_, sub), one in zip(self.subs, self._afters(after), strict=True):
            r = W.blast_radius(k, ctx, sub, one)
            if sub.deleting and sub.kind == "pod":
                lines.append(f"{sub.ref}: {_pod_fate(sub.before or {})}")
            else:
                lines.append(r.summary if r.summary.startswith(sub.ref) else
                             f"{sub.ref}: {r.summary}")
            pods += [p for p in r.pods_affected if p not in pods]
            namespaces |= set(r.affected_namespaces)
            production = production or r.production_like
            if r.replicas_before is None or before_total is None:
                before_total = None
            else:
                before_total += r.replicas_before
            if r.replicas_after is None or after_total is None:
                after_total = None
            else:
                after_total += r.replicas_after
        verb = {"deleted": "deletes", "labeled": "labels", "annotated": "annotates",
                "scaled": "scales", "restarted": "restarts"}.get(self.verb, self.verb)
        n = len(self.subs)
        names = ", ".join(sub.name for _, sub in self.subs)
        summary = f"{verb} {n} {_noun(self.kind, n)} in {self.namespace}: {names}"
        return BlastRadius(
            replicas_before=before_total, replicas_after=after_total,
            pods_affected=tuple(pods), production_like=production, summary=summary[:2000],
            affected_namespaces=tuple(sorted(namespaces)),
            selected=tuple(line[:2000] for line in lines))

    def conflict_of(self, previewed: str, now: str) -> KubeError:
        return changed(self, previewed)

    def verify_of(self, k: Kube, after: Obj | None, timeout_s: float) -> W.Verification:
        """Each object checked as its named form would be, within one shared deadline."""
        deadline = time.monotonic() + timeout_s
        worst: W.Verification | None = None
        details: list[str] = []
        for (sub_args, sub), one in zip(self.subs, self._afters(after), strict=True):
            left = max(0.0, deadline - time.monotonic())
            if sub.deleting:
                v = _gone(k, sub_args.cluster, sub, left)
            else:
                v = W.verify(k, sub_args, sub, one, left)
            details.append(f"{sub.ref}: {v.outcome} ({v.detail})")
            if v.outcome not in ("verified", "skipped") and worst is None:
                worst = v
        detail = "\n".join(details)[:60_000]
        check = f"each of the {len(self.subs)} {_noun(self.kind, len(self.subs))} matched"
        if worst is None:
            return W.Verification("verified", check, detail)
        return W.Verification(worst.outcome, check, detail, worst.observed)


def _pod_fate(pod: Obj) -> str:
    refs = pod.get("metadata", {}).get("ownerReferences") or []
    owner = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        # A finished pod is a record: no controller runs it again, and nothing running stops.
        return f"deleted; it has finished ({phase}), so nothing running stops"
    if owner is None:
        return "deleted; it has no controller and will not come back"
    if owner.get("kind") == "Job":
        return (f"deleted; owned by Job/{owner.get('name')}, which starts a new pod unless it "
                "has completed")
    return (f"deleted; owned by {owner.get('kind')}/{owner.get('name')}, which will replace it")


def _gone(k: Kube, ctx: str, sub: W.Plan, timeout_s: float) -> W.Verification:
    """Deleted: absent, or replaced by a new object of the same name (a StatefulSet's pod)."""
    uid = ((sub.before or {}).get("metadata") or {}).get("uid")
    deadline = time.monotonic() + timeout_s
    while True:
        current = k.read_or_none(ctx, sub.kind, sub.namespace, sub.name)
        if current is None or current["metadata"].get("uid") != uid:
            return W.Verification("verified", f"{sub.ref} is gone", "deleted")
        if time.monotonic() >= deadline:
            return W.Verification("timed_out", f"{sub.ref} is gone",
                                  f"still exists after {timeout_s:g}s")
        time.sleep(0.25)


def changed(plan: SelectorPlan, previewed: str) -> KubeError:
    """412 (a precondition failed), not 409: kube_write answers a 409 by re-reading one object
    by name, and this plan names several."""
    now = ", ".join(sub.name for _, sub in plan.subs) or "nothing"
    why = ("it was never previewed (the dry run failed)" if not previewed else
           "objects joined or left the selector, or one was replaced or changed in what this "
           "write depends on")
    return KubeError("Conflict", f"the {plan.kind} objects matching {plan.selector} in "
                     f"{plan.namespace} changed since the preview ({why}); it now matches "
                     f"{len(plan.subs)}: {now}. Nothing was {plan.verb} — review the new set "
                     "and propose the call again", 412)


_VERBS = {C.DeleteArgs: "deleted", C.LabelArgs: "labeled", C.AnnotateArgs: "annotated",
          C.ScaleArgs: "scaled", C.RolloutRestartArgs: "restarted"}


def state(a: C.Args, sub: W.Plan) -> str:
    """What a write by selector binds of one matched object, besides its ref: the object's
    identity (uid: one deleted and made again under the same name is another object) and what
    the write depends on — its generation (spec), and the labels, annotations or replica count
    it changes. Not the resourceVersion: a pod's status moves (scheduled, started, ready)
    without anything a human approved changing, and that must not void the approval. The
    resourceVersion read at execution still rides along as each write's precondition."""
    before = sub.before or {}
    meta = before.get("metadata") or {}
    parts: dict[str, Any] = {"uid": meta.get("uid"), "generation": meta.get("generation")}
    if isinstance(a, C.LabelArgs):
        parts["labels"] = meta.get("labels") or {}
    if isinstance(a, C.AnnotateArgs):
        parts["annotations"] = meta.get("annotations") or {}
    if isinstance(a, C.ScaleArgs):
        parts["replicas"] = (before.get("spec") or {}).get("replicas")
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def plan(k: Kube, a: WriteArgs) -> SelectorPlan:
    """The plan of a write by selector: the matched objects, each planned as if named."""
    if a.kind not in KINDS or not KINDS[a.kind].namespaced:
        raise KubeError("Invalid", f"a write by selector acts in one namespace; {a.kind} is "
                        "cluster-scoped: name it", 422)
    listed = matching(k, a.cluster, a.kind, a.namespace, a.selector)
    # Objects already being deleted are not in the set: they leave it on their own, which
    # would void the approval, and a write to them changes nothing that lasts.
    found = [o for o in listed if not o["metadata"].get("deletionTimestamp")]
    if not found:
        # Never an approval of nothing: a card with an empty set would approve whatever
        # matches later.
        going = f" ({len(listed)} being deleted already)" if listed else ""
        raise KubeError("NotFound", f"no objects matched: no {a.kind} in {a.namespace} matches "
                        f"{a.selector}{going}; nothing to do", 404)
    if len(found) > MAX_SELECTED:
        raise KubeError("Invalid", f"{len(found)} {_noun(a.kind, len(found))} in {a.namespace} "
                        f"match {a.selector}: at most {MAX_SELECTED} by one selector, so that "
                        "the card lists each; narrow the selector", 422)
    subs: list[tuple[C.Args, W.Plan]] = []
    for obj in found:
        one = msgspec.structs.replace(a, name=obj["metadata"]["name"], selector="")
        try:
            subs.append((one, W.plan_for(k, one)))
        except KubeError as exc:
            if exc.status != 404:  # gone since the list: not part of the set
                raise
    if not subs:
        raise KubeError("NotFound", f"no objects matched: the {a.kind} objects matching "
                        f"{a.selector} in {a.namespace} were deleted as they were listed", 404)
    selected = SelectorPlan(a.kind, a.namespace, "", None, lambda dry, rv: None,
                            deleting=isinstance(a, C.DeleteArgs), verb=_VERBS[type(a)],
                            selector=a.selector, subs=subs)
    refs = [W.effect_ref(sub.namespace, sub.kind, sub.name) for _, sub in subs]
    states = [state(a, sub) for _, sub in subs]
    selected.effect = tuple(sorted(refs))
    selected.digest = digest(list(zip(refs, states, strict=True)))

    def send_one(i: int, dry_run: bool) -> Obj | None:
        """One object's write with its current resourceVersion as the precondition. A
        conflict (it moved between our read and the write) is read again and retried only
        while what the approval bound of it is unchanged."""
        for attempt in range(3):
            sub_args, sub = subs[i]
            try:
                return sub.send(dry_run, sub.rv)
            except KubeError as exc:
                if exc.status != 409 or attempt == 2:
                    raise
                fresh = W.plan_for(k, sub_args)
                if state(a, fresh) != states[i]:
                    raise KubeError("Conflict", f"it changed since the preview ({exc.message})",
                                    409) from exc
                subs[i] = (sub_args, fresh)
        raise AssertionError("unreachable")

    def send(dry_run: bool, rv: str) -> Obj:
        if rv != selected.digest:
            # The set the human approved is not the set matched now (or none was previewed):
            # act on nothing.
            raise changed(selected, rv)
        afters: list[Obj | None] = []
        done: list[str] = []
        for i in range(len(subs)):
            sub = subs[i][1]
            try:
                afters.append(send_one(i, dry_run))
            except KubeError as exc:
                if exc.status == 404 and sub.deleting and not dry_run:
                    afters.append(None)  # deleted by someone else meanwhile: as approved
                    done.append(f"{sub.ref} (already gone)")
                    continue
                if dry_run:
                    raise KubeError(exc.reason, f"{sub.ref}: {exc.message}", exc.status) from exc
                rest = [s.ref for _, s in subs[i + 1:]]
                # 412 for a failed precondition, as changed() says why.
                raise KubeError(exc.reason, f"{sub.ref}: {exc.message}. Done before it: "
                                f"{', '.join(done) or 'nothing'}; not attempted: "
                                f"{', '.join(rest) or 'nothing'}",
                                412 if exc.status == 409 else exc.status,
                                uncertain=exc.uncertain) from exc
            done.append(sub.ref)
        return {"items": afters}

    selected.send = send
    return selected
