"""Value-based redaction on the leak corpus (tests/leaks.py): every kind of credential masked in
text and in objects, the look-alikes left as they were."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import msgspec
import pytest

from schemas.approval import FieldChange
from schemas.execution import CommandRefused, PreviewRecorded, ToolResult, ToolVerified
from services.executor.diff import diff
from services.executor.redact import REDACTED, redact
from services.executor.results import clean
from services.runtime.credentials import (
    contains_credential,
    is_secret_name,
    redact_text,
    redact_value,
)
from tests import leaks as L


def test_the_corpus_has_at_least_thirty_kinds() -> None:
    assert len({leak.kind for leak in L.LEAKS}) >= 30


@pytest.mark.parametrize("leak", L.LEAKS, ids=lambda leak: leak.kind)
def test_each_leak_is_masked_in_text(leak: L.Leak) -> None:
    out = redact_text(leak.text)
    assert leak.secret not in out
    assert REDACTED in out
    assert redact_text(out) == out  # idempotent: a second pass finds nothing more
    assert contains_credential(leak.text)


@pytest.mark.parametrize("leak", L.LEAKS, ids=lambda leak: leak.kind)
def test_each_leak_is_masked_in_json_and_yaml_text(leak: L.Leak) -> None:
    """The same line as a JSON string value (describe's and -o json's text)."""
    out = redact_text(json.dumps({"message": leak.text}))
    assert leak.secret not in out
    assert json.dumps(leak.secret)[1:-1] not in out


@pytest.mark.parametrize("line", [
    L.IMAGE, L.DIGEST, L.GIT_SHA, L.REQUEST_ID, L.PLAIN_URL, L.PLAIN_DB_URL, L.JDBC_URL,
    L.TIMESTAMP, L.CA_CERT, L.CA_B64, "token_ttl=30s", "TOKEN_TTL_SECONDS=3600",
    "password_min_length=12", "AUTH_MODE=oauth2", "server.port=8080", "DB_PASSWORD=",
    '"password": ""', "password: ${DB_PASSWORD}", "ssh://git@github.com/example/repo.git",
    "listen: 0.0.0.0:8080", "password reset email sent to user 4711",
    '10.244.0.1 - - "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.37"',
    "Bearer authentication is required", "basic auth is disabled for this realm",
    '"secretKeyRef": {"name": "billing-db", "key": "password"}',
    '"tokenExpirationSeconds": 3600', '"automountServiceAccountToken": false',
    '"key": "app", "operator": "In"', '"prompt_tokens": 1532, "completion_tokens": 311',
    "the disk-pressure taint keeps the task-runner-7f9c4d8b6-x2x9k pod off node-2",
    "resourceVersion=48213 uid=9f1c2b7e-4e0a-4a53-8d3b-2f6c7e9a1b00",
    "Authorization header missing", "Successfully assigned shop/web-7d4b9c8f5-abcde to node-1",
])
def test_look_alikes_stay_intact(line: str) -> None:
    assert redact_text(line) == line
    assert not contains_credential(line)


@pytest.mark.parametrize(("name", "secret"), [
    ("DB_PASS", True), ("DB_PASSWORD", True), ("spring.datasource.password", True),
    ("AccountKey", True), ("API_KEY", True), ("apiKey", True), ("STRIPE_SECRET", True),
    ("TWILIO_AUTH_TOKEN", True), ("client_secret", True), ("_authToken", True),
    ("SECRET_KEY_BASE", True), ("auth", True), ("basic_auth", True), ("sendgrid.api-key", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True), ("JWT_SIGNING_KEY", True), ("passphrase", True),
    ("TOKEN_TTL", False), ("token_ttl_seconds", False), ("password_min_length", False),
    ("secretKeyRef", False), ("secretName", False), ("TOKEN_PATH", False),
    ("DB_PASSWORD_FILE", False), ("tokenExpirationSeconds", False), ("AUTH_MODE", False),
    ("key", False), ("public_key", False), ("sort_key", False), ("KEYCLOAK_URL", False),
    ("PASSWORD_RESET_URL", False), ("passport_country", False), ("bypass_cache", False),
    ("monkey", False), ("keyspace", False), ("tokenizer", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_named_values() -> None:
    assert redact_value("DB_PASS", "Tr0ub4dor&3") == REDACTED
    assert redact_value("DB_PASS", "") == ""
    assert redact_value("DB_PASS", "${DB_PASS}") == "${DB_PASS}"
    # a URL name: the whole userinfo, user-only too (a Sentry DSN's key)
    assert redact_value("SENTRY_DSN", f"https://{L.SENTRY_KEY[:8]}@o1.ingest.sentry.io/2") == \
        f"https://{REDACTED}@o1.ingest.sentry.io/2"
    assert redact_value("ORDERS_URL", L.PLAIN_URL) == L.PLAIN_URL
    assert redact_value("NOTES", "hunter2") == "hunter2"  # no name, no shape: not attempted


def test_yaml_block_scalar_under_a_secret_key() -> None:
    text = "db:\n  password: |\n    line-one-S3cr3t\n    line-two\n  host: db\n"
    out = redact_text(text)
    assert "S3cr3t" not in out
    assert "line-two" not in out
    assert "host: db" in out


# -- objects --------------------------------------------------------------------------------------


def _all_text(obj: object) -> str:
    return json.dumps(obj)


def test_configmap_values_and_embedded_files() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "billing-config"},
          "data": L.configmap_data(),
          "binaryData": {"keystore.p12": base64.b64encode(b"\x30\x82binary").decode(),
                         "app.env": base64.b64encode(f"K={L.STRIPE_LIVE}".encode()).decode(),
                         "logo.txt": base64.b64encode(b"hello").decode()}}
    out = redact(cm)
    assert L.found_in(_all_text(out)) == []
    assert out["data"]["ca.crt"] == L.CA_CERT
    assert out["data"]["ca-bundle.b64"] == L.CA_B64
    assert out["data"]["image"] == L.IMAGE
    assert out["data"]["git_sha"] == L.GIT_SHA
    assert "token_ttl=30s" in out["data"]["application.properties"]
    assert "spring.datasource.password=<redacted>" in out["data"]["application.properties"]
    assert "DB_PASSWORD=\n" in out["data"][".env"]
    assert out["binaryData"]["keystore.p12"] == REDACTED
    assert out["binaryData"]["app.env"] == REDACTED
    assert out["binaryData"]["logo.txt"] == cm["binaryData"]["logo.txt"]  # type: ignore[index]


def test_env_by_name_and_value_value_from_stays() -> None:
    template = {"spec": {"containers": [{"name": "api", "image": L.IMAGE, "args": L.ARGS_V2,
                                         "env": L.env_v1() + L.env_v2()}]}}
    out = redact(template)  # a rollout history template: no kind of its own
    assert L.found_in(_all_text(out)) == []
    env = {e["name"]: e for e in out["spec"]["containers"][0]["env"]}
    assert env["DB_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "billing-db",
                                                                 "key": "password"}}
    assert "value" not in env["DB_PASSWORD"]
    assert env["DB_PASS"]["value"] == REDACTED
    assert env["TOKEN_TTL_SECONDS"]["value"] == "3600"
    assert env["ORDERS_API_URL"]["value"] == L.PLAIN_URL
    assert env["GIT_SHA"]["value"] == L.GIT_SHA
    assert env["DATABASE_URL"]["value"].startswith("postgres://billing:<redacted>@billing-db")
    assert out["spec"]["containers"][0]["args"] == ["--listen=:8080", "--db-password=<redacted>",
                                                    "--slack-token", REDACTED]
    assert out["spec"]["containers"][0]["image"] == L.IMAGE


def test_fields_named_for_a_secret() -> None:
    cr = {"apiVersion": "db.example.com/v1", "kind": "Database",
          "spec": {"password": "hunter2-but-longer", "passwordSecretRef": {"name": "db"},
                   "tls": {"secretName": "db-tls", "key": "tls.key"}, "keyId": "k-1"}}
    spec = redact(cr)["spec"]
    assert spec["password"] == REDACTED
    assert spec["passwordSecretRef"] == {"name": "db"}
    assert spec["tls"] == {"secretName": "db-tls", "key": "tls.key"}
    assert spec["keyId"] == "k-1"


def test_secret_values_even_in_list_items_without_kind() -> None:
    item = {"metadata": {"name": "db"}, "data": {"app.conf": "aHVudGVyMg=="}, "type": "Opaque"}
    assert redact(item, "Secret")["data"] == {"app.conf": REDACTED}
    assert redact(item)["data"] == item["data"]  # the kind is what says it is a Secret


def test_annotations() -> None:
    meta = {"name": "x", "annotations": {
        "kubernetes.io/change-cause": L.CHANGE_CAUSE,
        "example.com/api-token": "opaque-value-1234",
        "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Secret"}',
        "example.com/git-commit": L.GIT_SHA}}
    out = redact({"kind": "Deployment", "metadata": meta})["metadata"]["annotations"]
    assert out["kubernetes.io/change-cause"].endswith("WEBHOOK_SIGNING_SECRET=<redacted>")
    assert out["example.com/api-token"] == REDACTED
    assert out["kubectl.kubernetes.io/last-applied-configuration"] == REDACTED
    assert out["example.com/git-commit"] == L.GIT_SHA


def test_pod_status_and_events_are_scrubbed_by_shape() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p", "uid": L.REQUEST_ID},
           "status": {"containerStatuses": [{"lastState": {"terminated": {
               "message": f"panic: dial {L.LEAKS[30].text.split('=', 1)[1]}"}}}]}}
    assert L.found_in(_all_text(redact(pod))) == []
    assert redact(pod)["metadata"]["uid"] == L.REQUEST_ID


# -- diffs and the executor's events --------------------------------------------------------------


def test_diff_masks_by_name_and_by_value() -> None:
    before = {"kind": "ConfigMap", "data": {"DB_PASS": "old-pass-1", "stripe": "x",
                                            "ttl": "30s"}}
    after = {"kind": "ConfigMap", "data": {"DB_PASS": "new-pass-2", "stripe": L.STRIPE_LIVE,
                                           "ttl": "60s"}}
    changes = {c.path: c for c in diff(before, after)}
    assert changes["data.DB_PASS"] == FieldChange(path="data.DB_PASS", before=REDACTED,
                                                  after=REDACTED)
    assert changes["data.stripe"].after == REDACTED
    assert (changes["data.ttl"].before, changes["data.ttl"].after) == ("30s", "60s")


def test_every_event_the_executor_appends_is_cleaned() -> None:
    leak = L.LEAKS[0].text
    base = {"session_id": "s-1", "call_id": "c-1", "actor": "executor"}
    result = clean(ToolResult(tool="get", status="ok", output=leak, data={"x": [leak]},
                              **base))  # type: ignore[arg-type]
    change = FieldChange(path="data.k", before=leak, after=leak)
    preview = clean(PreviewRecorded(ok=True, diff=(change,), gathered=(leak,), error=leak,
                                    **base))  # type: ignore[arg-type]
    verified = clean(ToolVerified(tool="get", outcome="verified", check=leak, detail=leak,
                                  observed={"v": leak}, **base))  # type: ignore[arg-type]
    refused = clean(CommandRefused(reason=leak, subject="x", **base))  # type: ignore[arg-type]
    for event in (result, preview, verified, refused):
        assert L.found_in(msgspec.json.encode(event)) == []
    assert result.session_id == "s-1"
    assert preview.ok


def test_cost_is_small_for_ordinary_leaves() -> None:
    """Not a benchmark (bench/redact.py measures): ordinary strings come back as the same
    object, so a large clean read allocates nothing new for them."""
    for s in ("Running", "nginx:1.27", L.IMAGE, L.REQUEST_ID, "2026-12-07T02:00:00Z",
              datetime.now(UTC).isoformat()):
        assert redact_text(s) is s
