"""The approval card's one-line summary, computed by the gate from the calls as they will run.
Pure."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.approval import ApprovalCall

# -- the card's one-line summary -------------------------------------------------------------

_VERBS = {"delete": "delete", "scale": "scale", "rollout_restart": "restart",
          "rollout_undo": "roll back", "set_image": "set the image of",
          "set_resources": "set the resources of", "set_env": "set the environment of",
          "patch": "patch", "apply": "apply", "create": "create", "cordon": "cordon",
          "uncordon": "uncordon", "drain": "drain", "label": "label", "annotate": "annotate"}
# How a person says a kind, singular and plural (the seed's "3 PVCs, 5 services, 12 pods").
_NOUNS = {"persistentvolumeclaim": ("PVC", "PVCs"), "persistentvolume": ("PV", "PVs"),
          "horizontalpodautoscaler": ("HPA", "HPAs"),
          "poddisruptionbudget": ("PDB", "PDBs"), "configmap": ("ConfigMap", "ConfigMaps"),
          "serviceaccount": ("service account", "service accounts"),
          "replicaset": ("ReplicaSet", "ReplicaSets"),
          "statefulset": ("StatefulSet", "StatefulSets"),
          "daemonset": ("DaemonSet", "DaemonSets"), "cronjob": ("CronJob", "CronJobs"),
          "rolebinding": ("RoleBinding", "RoleBindings"),
          "clusterrole": ("ClusterRole", "ClusterRoles"),
          "clusterrolebinding": ("ClusterRoleBinding", "ClusterRoleBindings")}


def _noun(kind: str, count: int) -> str:
    one, many = _NOUNS.get(kind, (kind, kind + ("es" if kind.endswith("s") else "s")))
    return one if count == 1 else many


def title_of(calls: Sequence[ApprovalCall]) -> str:
    """What a request does, in one line a person reads first: "Delete 3 PVCs, 5 services, 12
    pods in staging"; a single call names its object: "Scale deployment web in shop" (and its
    cluster when the call names one: "… in shop on cluster b"). Derived
    from the calls exactly as they will run, never from the model's words."""
    groups: dict[str, dict[str, list[str]]] = {}
    namespaces: list[str] = []
    for c in calls:
        kind = c.target.kind or "object"
        # A write by label selector acts on each object its dry run matched (its effect).
        names = _selected_names(c) if c.args.get("selector") else [c.target.name]
        groups.setdefault(c.tool, {}).setdefault(kind, []).extend(names)
        if c.target.namespace and c.target.namespace not in namespaces:
            namespaces.append(c.target.namespace)
    parts = []
    for tool, kinds in groups.items():
        nouns = []
        for kind, names in kinds.items():
            if not names:  # a selector's whose dry run enumerated nothing: not counted
                nouns.append(_noun(kind, 2))
            elif len(names) == 1 and names[0]:
                nouns.append(f"{_noun(kind, 1)} {names[0]}")
            else:
                nouns.append(f"{len(names)} {_noun(kind, len(names))}")
        parts.append(f"{_VERBS.get(tool, tool.replace('_', ' '))} {', '.join(nouns)}")
    text = "; ".join(parts)
    if len(calls) == 1 and calls[0].args.get("selector"):
        text += f" matching {calls[0].args['selector']}"
    if len(namespaces) == 1:
        text += f" in {namespaces[0]}"
    elif namespaces:
        text += f" in {', '.join(namespaces[:-1])} and {namespaces[-1]}"
    # The cluster the gate routed it to, plainly (issue 21); one approval is one cluster.
    clusters = list(dict.fromkeys(c.target.cluster for c in calls if c.target.cluster))
    if len(clusters) == 1:
        text += f" on cluster {clusters[0]}"
    elif clusters:
        text += f" on clusters {', '.join(clusters[:-1])} and {clusters[-1]}"
    if len(calls) == 1 and calls[0].args.get("selector") and calls[0].effect:
        # The exact set in the heading: "Delete 3 pods matching app=x in staging: a, b, c".
        text += ": " + ", ".join(_selected_names(calls[0]))
    return (text[:1].upper() + text[1:])[:2000]


def _selected_names(c: ApprovalCall) -> list[str]:
    """The names a selector write acts on, from the effect its dry run enumerated (none when
    the dry run failed)."""
    return [ref.rpartition("/")[2] for ref in c.effect]
