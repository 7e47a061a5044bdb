"""The three PATCH flavours: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
Kubernetes strategic merge patch. Strategic merge needs each list's merge key; upstream reads
them from Go struct tags, here they come from the field name, which is unambiguous for the kinds
the sandbox serves."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.state.errors import ApiError, bad_request

# field name -> merge key for lists merged by key (patchStrategy=merge in the Go types).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "secrets": "name",
}
# Lists of scalars merged as sets rather than replaced.
SET_LISTS = frozenset({"finalizers"})


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        # Container ports merge on containerPort, Service ports on port.
        has_container_port = any(isinstance(i, dict) and "containerPort" in i for i in items)
        return "containerPort" if has_container_port else "port"
    return MERGE_KEYS.get(field)


# ---- RFC 7386 -----------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- RFC 6902 -----------------------------------------------------------------------------
def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    tokens = [_unescape(t) for t in path[1:].split("/")]
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, list):
            try:
                cur = cur[int(tok)]
            except (ValueError, IndexError) as exc:
                raise _unprocessable(f"path {path!r} not found") from exc
        elif isinstance(cur, dict) and tok in cur:
            cur = cur[tok]
        else:
            raise _unprocessable(f"doc is missing path: {path!r}")
    return cur, tokens[-1]


def _unprocessable(message: str) -> ApiError:
    return ApiError(
        422, "Invalid", f"the server rejected our request due to an error in our request: {message}"
    )


def _get(doc: Any, path: str) -> Any:
    if path == "":
        return doc
    parent, tok = _parent(doc, path)
    try:
        return parent[int(tok)] if isinstance(parent, list) else parent[tok]
    except (KeyError, IndexError, ValueError) as exc:
        raise _unprocessable(f"doc is missing path: {path!r}") from exc


def _remove(doc: Any, path: str) -> Any:
    parent, tok = _parent(doc, path)
    try:
        return parent.pop(int(tok) if isinstance(parent, list) else tok)
    except (KeyError, IndexError, ValueError) as exc:
        raise _unprocessable(f"doc is missing path: {path!r}") from exc


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, tok = _parent(doc, path)
    if isinstance(parent, list):
        if tok == "-":
            parent.append(value)
        else:
            idx = int(tok)
            if idx > len(parent):
                raise _unprocessable(f"index out of range in {path!r}")
            parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[tok] = value
    else:
        raise _unprocessable(f"cannot add at {path!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            if path == "":
                doc = copy.deepcopy(op.get("value"))
            else:
                parent, tok = _parent(doc, path)
                parent[int(tok) if isinstance(parent, list) else tok] = copy.deepcopy(
                    op.get("value")
                )
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _unprocessable(f"testing value {path} failed")
        else:
            raise bad_request(f"unknown json patch op {kind!r}")
    return doc


# ---- strategic merge patch ----------------------------------------------------------------
def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(original)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue  # ordering and retain hints do not change the merged content here
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    original = original if isinstance(original, list) else []
    if field in SET_LISTS:
        out = list(original)
        out.extend(v for v in patch if v not in out)
        return out
    key = _merge_key(field, original + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        # Lists without a merge key are replaced whole, with directive items dropped.
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if i.get("$patch") != "replace"]
    out = [copy.deepcopy(i) for i in original]
    for item in patch:
        if key not in item:
            continue
        idx = next(
            (n for n, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge({}, item, field))
        else:
            out[idx] = strategic_merge(out[idx], item, field)
    return out
