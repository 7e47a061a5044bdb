"""Just enough protobuf to read the few typed requests kubectl sends only as protobuf and that
the sandbox answers (SelfSubjectAccessReview for `kubectl auth can-i`). Bodies are
`k8s\\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}; field numbers come from
k8s.io/api's generated.proto."""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"
Fields = dict[int, list[Any]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Fields:
    """Wire-level decode: field number -> values (ints, or bytes for length-delimited)."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _str(f: Fields, n: int) -> str:
    return f[n][0].decode() if n in f else ""


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw object bytes) of a Kubernetes protobuf envelope."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf body")
    unknown = fields(body[len(MAGIC) :])
    type_meta = fields(unknown.get(1, [b""])[0])
    return _str(type_meta, 1), _str(type_meta, 2), unknown.get(2, [b""])[0]


def self_subject_access_review(raw: bytes) -> dict[str, Any]:
    spec = fields(fields(raw).get(2, [b""])[0])
    out: dict[str, Any] = {}
    if 1 in spec:
        attrs = fields(spec[1][0])
        names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
        out["resourceAttributes"] = {
            k: _str(attrs, i) for i, k in enumerate(names, 1) if i in attrs
        }
    if 2 in spec:
        attrs = fields(spec[2][0])
        out["nonResourceAttributes"] = {"path": _str(attrs, 1), "verb": _str(attrs, 2)}
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": out,
    }
