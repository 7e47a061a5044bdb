from __future__ import annotations

import pytest

from sandbox.apiserver.protowire import self_subject_access_review, unwrap

# What kubectl 1.37 sends for `kubectl auth can-i delete pods/log -n shop`.
CAN_I = (
    b"k8s\x00\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12?\n"
    b'\x10\n\x00\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00\x12!\n\x1f\n\x04shop\x12\x06'
    b'delete\x1a\x00"\x00*\x04pods2\x00:\x03log\x1a\x08\x08\x00\x12\x00\x1a\x00 \x00'
    b'\x1a\x00"\x00'
)


def test_self_subject_access_review() -> None:
    api_version, kind, raw = unwrap(CAN_I)
    assert (api_version, kind) == ("authorization.k8s.io/v1", "SelfSubjectAccessReview")
    review = self_subject_access_review(raw)
    assert review["spec"]["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "delete",
        "group": "",
        "version": "",
        "resource": "pods",
        "subresource": "",
        "name": "log",
    }


def test_not_protobuf() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes protobuf body"):
        unwrap(b'{"kind": "x"}')
