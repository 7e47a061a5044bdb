"""Secret values in proposed writes (services/runtime/sealing/): what is sealed where, that a
reference resolves only to the value it was approved with, and that nothing the executor records
repeats the value. Pure: the store is a dict."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from schemas import kubectl
from schemas import subjects as S
from schemas.approval import FieldChange
from schemas.execution import PreviewRecorded, ToolVerified
from services.planner import direct
from services.runtime import identity
from services.runtime.sealing import blobs
from services.runtime.sealing.blobs import Ref, SealError
from services.runtime.sealing.opener import Opener, Unsealed
from services.runtime.sealing.sealer import Sealer

SID = "s_1234"


class Store:
    """The SEALED stream as the tests need it: one blob per subject, for good."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, subject: str, blob: bytes) -> None:
        assert subject not in self.blobs, "a subject holds one blob for good"
        self.blobs[subject] = blob

    async def get(self, subject: str) -> bytes | None:
        return self.blobs.get(subject)


@pytest.fixture
def key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture
def store() -> Store:
    return Store()


def sealer(key: X25519PrivateKey, store: Store, name: str = "planner") -> Sealer:
    return Sealer(name, key.public_key(), store.put)


def opener(key: X25519PrivateKey, store: Store) -> Opener:
    return Opener(key, store.get)


# -- references and fingerprints ---------------------------------------------------------------


def test_a_reference_carries_a_keyed_fingerprint_not_a_hash_of_the_value(
    key: X25519PrivateKey
) -> None:
    ref, blob = blobs.seal("hunter2", key.public_key(), "gateway", SID)
    again, _ = blobs.seal("hunter2", key.public_key(), "gateway", SID)
    assert Ref.parse(ref.text) == ref
    # A fresh key per value: the same password never shows the same fingerprint twice, so the
    # log cannot be searched or brute-forced for it.
    assert ref.fingerprint != again.fingerprint
    import hashlib
    assert hashlib.sha256(b"hunter2").hexdigest() not in ref.text
    assert b"hunter2" not in blob
    assert blobs.open_blob(ref, blob, key, SID) == "hunter2"
    assert "fingerprint " + ref.fingerprint[:12] in ref.shown


def test_a_blob_opens_only_for_its_reference_its_session_and_the_executors_key(
    key: X25519PrivateKey
) -> None:
    ref, blob = blobs.seal("s3cret-Pw!", key.public_key(), "planner", SID)
    with pytest.raises(SealError, match="does not open"):
        blobs.open_blob(ref, blob, key, "s_other")  # copied into another session
    with pytest.raises(SealError, match="does not open"):
        blobs.open_blob(Ref("gateway", ref.blob_id, ref.fingerprint), blob, key, SID)
    with pytest.raises(SealError, match="does not open"):
        blobs.open_blob(ref, blob, X25519PrivateKey.generate(), SID)
    with pytest.raises(SealError, match="does not open"):
        blobs.open_blob(ref, blob[:-1] + bytes([blob[-1] ^ 1]), key, SID)


def test_a_swapped_blob_under_the_same_reference_is_refused(key: X25519PrivateKey) -> None:
    """Whoever could put another blob where an approved reference points (its own sealer, say)
    must also match the approved keyed fingerprint: the executor refuses anything else."""
    ref, _ = blobs.seal("approved-Pw!", key.public_key(), "planner", SID)
    other, swapped = blobs.seal("attacker-Pw!", key.public_key(), "planner", SID)
    # The attacker seals its own value under the approved blob id (same info binding)...
    forged_ref = Ref(ref.sealer, ref.blob_id, other.fingerprint)
    from cryptography.hazmat.primitives import hpke

    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    plain = json.dumps({"v": 1, "value": "attacker-Pw!",
                        "key": base64.b64encode(b"k" * 32).decode()}).encode()
    blob = suite.encrypt(plain, key.public_key(),
                         info=blobs._info(ref.sealer, SID, ref.blob_id))
    with pytest.raises(SealError, match="approved fingerprint"):
        blobs.open_blob(ref, blob, key, SID)
    assert forged_ref != ref
    assert swapped


# -- the keyring publishes the executor's sealing key --------------------------------------------


def test_the_keyring_publishes_the_executors_sealing_key(tmp_path: Path) -> None:
    ring = identity.provision_keys(tmp_path, S.SERVICES)
    executor = identity.load_signer(tmp_path / "executor.key", "executor")
    derived = identity.sealing_key(executor.key)
    assert set(ring.sealing) == {"executor"}
    raw = lambda k: k.public_bytes_raw()  # noqa: E731
    assert raw(ring.sealing["executor"]) == raw(derived.public_key())
    # Kept through a reload and a re-provisioning; old keyrings without it still load.
    again = identity.load_keyring(tmp_path / identity.KEYRING_FILE)
    assert raw(again.sealing["executor"]) == raw(derived.public_key())
    identity.provision_keys(tmp_path, S.SERVICES)
    doc = json.loads((tmp_path / identity.KEYRING_FILE).read_text())
    assert list(doc["sealing"]) == ["executor"]
    del doc["sealing"]
    assert identity.Keyring.from_json(doc).sealing == {}
    # The signing key and the sealing key are different keys.
    assert raw(derived.public_key()) != raw(executor.key.public_key())


# -- what is sealed, by the planner (args) -------------------------------------------------------


async def test_set_env_seals_credentials_by_name_and_by_shape_only(
    key: X25519PrivateKey, store: Store
) -> None:
    args = {"name": "web", "env": {"DB_PASSWORD": "pw-123456", "LOG_LEVEL": "debug",
                                    "DATABASE_URL": "postgres://app:pw-url-1@db:5432/app",
                                    "STRIPE_KEY": "sk_live_abcdefgh", "DB_PASS": "p4ss-w0rd",
                                    "API_TOKEN": "t0ken-value", "REGION": "eu-west-1"}}
    out, refs = await sealer(key, store).args(SID, "set_env", args)
    assert out["env"]["LOG_LEVEL"] == "debug"
    assert out["env"]["REGION"] == "eu-west-1"
    sealed = {k for k, v in out["env"].items() if Ref.parse(v)}
    assert sealed == {"DB_PASSWORD", "DATABASE_URL", "STRIPE_KEY", "DB_PASS", "API_TOKEN"}
    assert set(refs) == {args["env"][k] for k in sealed}
    assert args["env"]["DB_PASSWORD"] == "pw-123456"  # the caller's args are not changed
    assert len(store.blobs) == 5
    assert all(s.startswith("sealed.planner.s_1234.") for s in store.blobs)
    # The executor gets every value back exactly.
    unsealed = await opener(key, store).args(SID, "set_env", out)
    assert unsealed.args == args


async def test_every_value_of_a_secret_manifest_and_env_in_any_manifest_is_sealed(
    key: X25519PrivateKey, store: Store
) -> None:
    b64 = base64.b64encode(b"data-Pw-1").decode()
    secret = {"manifest": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                           "data": {"password": b64}, "stringData": {"token": "string-Pw-2"}}}
    out, refs = await sealer(key, store).args(SID, "apply", secret)
    assert set(refs) == {b64, "string-Pw-2"}
    assert Ref.parse(out["manifest"]["data"]["password"])
    assert Ref.parse(out["manifest"]["stringData"]["token"])
    assert (await opener(key, store).args(SID, "apply", out)).args == secret

    deploy = {"manifest": {"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web"},
                           "spec": {"template": {"spec": {"containers": [{
                               "name": "app", "image": "web:1.2.3",
                               "env": [{"name": "DB_PASSWORD", "value": "env-Pw-3"},
                                       {"name": "MODE", "value": "fast"},
                                       {"name": "X", "valueFrom": {"secretKeyRef": {}}}]}]}}}}}
    out, refs = await sealer(key, store).args(SID, "create", deploy)
    assert list(refs) == ["env-Pw-3"]
    env = out["manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert Ref.parse(env[0]["value"])
    assert env[1]["value"] == "fast"
    assert out["manifest"]["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1.2.3"

    cm = {"kind": "configmap", "name": "cfg",
          "body": {"data": {"spring.datasource.password": "cm-Pw-4", "TTL": "15m"}}}
    out, refs = await sealer(key, store).args(SID, "patch", cm)
    assert list(refs) == ["cm-Pw-4"]
    assert out["body"]["data"]["TTL"] == "15m"


async def test_an_already_sealed_value_is_not_sealed_again(
    key: X25519PrivateKey, store: Store
) -> None:
    """The gateway sealed a --from-literal; direct mode base64-encodes it into `data` like
    kubectl: the planner moves the reference to stringData (the API server folds it into data,
    exactly what kubectl would have stored) instead of sealing the base64 of a reference."""
    gw = sealer(key, store, "gateway")
    text = await gw.text(SID, "kubectl create secret generic db -n staging "
                              "--from-literal=password=lit-Pw-5 --from-literal user=app")
    assert "lit-Pw-5" not in text
    call = direct.parse(text)
    assert isinstance(call, direct.Call), call
    out, refs = await sealer(key, store).args(SID, call.tool, call.args)
    assert refs == {}
    assert "data" not in out["manifest"]
    assert set(out["manifest"]["stringData"]) == {"password", "user"}
    unsealed = await opener(key, store).args(SID, call.tool, out)
    assert unsealed.args["manifest"]["stringData"] == {"password": "lit-Pw-5", "user": "app"}


# -- what is sealed, by the gateway (a person's message) ---------------------------------------


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ("kubectl create secret generic db --from-literal=password=Lit-Pw-6 -n staging",
     "Lit-Pw-6", "-n staging"),
    ("kubectl create secret generic db --from-literal 'password=Lit Pw 7'", "Lit Pw 7", "db"),
    ("kubectl set env deploy/web DB_PASSWORD=Env-Pw-8 LOG_LEVEL=debug -n shop", "Env-Pw-8",
     "LOG_LEVEL=debug"),
    ("kubectl set env deploy/web DATABASE_URL=postgres://u:Url-Pw-9@db/app", "Url-Pw-9", "web"),
    ("kubectl create configmap cfg --from-literal=REDIS_URL=redis://:Cm-Pw-10@r:6379 "
     "--from-literal=TTL=15m", "Cm-Pw-10", "TTL=15m"),
    ("kubectl patch secret db -p '{\"stringData\":{\"password\":\"Patch-Pw-11\"}}'",
     "Patch-Pw-11", "patch secret db"),
    ("kubectl get pods -n shop\nkubectl set env deploy/web API_TOKEN=Tok-Pw-12",
     "Tok-Pw-12", "kubectl get pods -n shop"),
    ("kubectl -n staging create secret generic db --from-literal=user=Flag-Pw-25",
     "Flag-Pw-25", "-n staging create secret"),
    ("kubectl set -n shop env deploy/web SECRET_KEY=Flag-Pw-26", "Flag-Pw-26", "-n shop"),
])
async def test_a_persons_command_is_recorded_with_its_secrets_sealed(
    key: X25519PrivateKey, store: Store, text: str, secret: str, kept: str
) -> None:
    out = await sealer(key, store, "gateway").text(SID, text)
    assert secret not in out
    assert kept in out
    assert blobs.REF.search(out)
    # Direct mode parses what is recorded, and the executor gets the value back.
    for line in out.split("\n"):
        call = direct.parse(line)
        assert isinstance(call, direct.Call), (line, call)
        if call.tool == "get" or call.tool == "list":
            continue
        args, refs = await sealer(key, store).args(SID, call.tool, call.args)
        assert refs == {}
        assert secret in json.dumps((await opener(key, store).args(SID, call.tool, args)).args)


async def test_an_inline_manifest_is_recorded_with_its_secrets_sealed(
    key: X25519PrivateKey, store: Store
) -> None:
    b64 = base64.b64encode(b"Man-Pw-13").decode()
    text = ("kubectl apply -f - <<EOF\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n"
            f"data:\n  password: {b64}\nstringData:\n  token: Man-Pw-14\nEOF")
    out = await sealer(key, store, "gateway").text(SID, text)
    assert b64 not in out
    assert "Man-Pw-14" not in out
    assert out.startswith("kubectl apply -f - <<EOF\n")
    assert out.endswith("\nEOF")
    call = direct.parse(out)
    assert isinstance(call, direct.Call), call
    unsealed = await opener(key, store).args(SID, call.tool, call.args)
    assert unsealed.args["manifest"]["data"] == {"password": b64}
    assert unsealed.args["manifest"]["stringData"] == {"token": "Man-Pw-14"}


async def test_kubectls_env_flag_is_sealed_although_direct_mode_refuses_it(
    key: X25519PrivateKey, store: Store
) -> None:
    out = await sealer(key, store, "gateway").text(
        SID, "kubectl set env deploy/web --env=DB_PASSWORD=Env-Flag-Pw-27")
    assert "Env-Flag-Pw-27" not in out
    assert "--env=DB_PASSWORD=sealed:gateway:" in out


async def test_text_without_secrets_is_recorded_as_typed(
    key: X25519PrivateKey, store: Store
) -> None:
    g = sealer(key, store, "gateway")
    for text in ("why is payment-service crashing? my password is not relevant",
                 "kubectl scale deploy/web --replicas=3 -n shop",
                 "kubectl set env deploy/web LOG_LEVEL=debug",
                 "kubectl apply -f -\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                 "data:\n  TTL: 15m"):
        assert await g.text(SID, text) == text
    assert store.blobs == {}


async def test_an_unreadable_manifest_that_may_hold_a_secret_is_refused(
    key: X25519PrivateKey, store: Store
) -> None:
    for text in ("kubectl apply -f -\nkind: Secret\nstringData: {password: [unclosed",
                 "kubectl apply -f -\napiVersion: v1\nkind: Secret\nmetadata: {name: a}\n"
                 "stringData: {password: p-Pw-24, when: 2026-01-01}"):
        with pytest.raises(blobs.Unsealable):
            await sealer(key, store, "gateway").text(SID, text)
    assert store.blobs == {}


async def test_without_the_executors_key_nothing_is_sealed_or_stored(store: Store) -> None:
    with pytest.raises(blobs.SealingUnavailable):
        await Sealer("gateway", None, store.put).text(
            SID, "kubectl set env deploy/web DB_PASSWORD=x-Pw-15")
    assert store.blobs == {}


# -- the executor's side ----------------------------------------------------------------------


async def test_a_missing_or_expired_blob_fails_with_a_reason(
    key: X25519PrivateKey, store: Store
) -> None:
    out, _ = await sealer(key, store).args(SID, "set_env",
                                           {"name": "w", "env": {"DB_PASSWORD": "gone-Pw-16"}})
    store.blobs.clear()
    with pytest.raises(SealError, match="not available"):
        await opener(key, store).args(SID, "set_env", out)


async def test_a_reference_resolves_only_where_a_secret_may_sit(
    key: X25519PrivateKey, store: Store
) -> None:
    """A reference copied into, say, a label or an image stays a literal string: a sealed
    password cannot be smuggled into a field that reads as plain text."""
    out, _ = await sealer(key, store).args(SID, "set_env",
                                           {"name": "w", "env": {"DB_PASSWORD": "pos-Pw-17"}})
    ref = out["env"]["DB_PASSWORD"]
    labels = {"kind": "deployment", "name": "w", "labels": {"a": ref}}
    assert (await opener(key, store).args(SID, "label", labels)).args == labels


async def test_nothing_the_executor_records_repeats_a_sealed_value(
    key: X25519PrivateKey, store: Store
) -> None:
    args = {"name": "w", "env": {"DATABASE_URL": "postgres://u:scrub-Pw-18@db/app"}}
    out, _ = await sealer(key, store).args(SID, "set_env", args)
    unsealed = await opener(key, store).args(SID, "set_env", out)
    url = args["env"]["DATABASE_URL"]
    path = "spec.template.spec.containers[name=app].env[name=DATABASE_URL].value"
    ev = PreviewRecorded(session_id=SID, call_id="c_1", ok=True, actor="executor", diff=(
        FieldChange(path=path, before="postgres://u:old-Pw@db/app", after=url),
        FieldChange(path="spec.replicas", before=1, after=2)), error=f"echo {url} and "
        + base64.b64encode(url.encode()).decode())
    scrubbed = unsealed.scrub(ev)
    text = json.dumps(msgspec.to_builtins(scrubbed))
    assert "scrub-Pw-18" not in text
    assert "old-Pw" not in text
    assert base64.b64encode(url.encode()).decode() not in text
    ref = Ref.parse(out["env"]["DATABASE_URL"])
    assert ref is not None
    assert scrubbed.diff[0].after == ref.shown
    assert scrubbed.diff[0].before == "<redacted>"
    assert scrubbed.diff[1] == ev.diff[1]
    assert scrubbed.error == f"echo {ref.shown} and {ref.shown}"


def test_direct_modes_rationale_keeps_a_reference_and_masks_a_literal() -> None:
    ref = f"sealed:gateway:{'a' * 32}:{'b' * 64}"
    sealed_cmd = f"kubectl create secret generic db --from-literal=password={ref}"
    assert direct.shown(sealed_cmd) == ("kubectl create secret generic db --from-literal="
                                        "password=<sealed value, fingerprint bbbbbbbbbbbb…>")
    assert direct.shown(f"kubectl set env deploy/w DB_PASSWORD={ref}").endswith(
        "DB_PASSWORD=<sealed value, fingerprint bbbbbbbbbbbb…>")
    assert "Lit-Pw" not in direct.shown(
        "kubectl create secret generic db --from-literal=password=Lit-Pw-19")




async def test_a_verification_never_repeats_what_it_observed_where_a_secret_sits(
    key: X25519PrivateKey, store: Store
) -> None:
    """Another write set the variable since (its own secret): "not as approved" says that the
    value differs, never what it is — in the structured `differs` and in the detail text."""
    out, _ = await sealer(key, store).args(SID, "set_env",
                                           {"name": "w", "env": {"DB_PASSWORD": "mine-Pw-20"}})
    unsealed = await opener(key, store).args(SID, "set_env", out)
    path = "spec.template.spec.containers[name=app].env[name=DB_PASSWORD].value"
    verified = ToolVerified(
        session_id=SID, call_id="c_1", tool="set_env", outcome="not_as_approved",
        check="the approved changes hold", actor="executor",
        detail=f"not as approved: {path} is 'theirs-Pw-21', approved 'mine-Pw-20'",
        observed={"differs": [{"path": path, "approved": "mine-Pw-20",
                               "observed": "theirs-Pw-21"}]})
    text = json.dumps(msgspec.to_builtins(unsealed.scrub(verified)))
    assert "theirs-Pw-21" not in text
    assert "mine-Pw-20" not in text
    ref = Ref.parse(out["env"]["DB_PASSWORD"])
    assert ref is not None
    shown = json.dumps(msgspec.to_builtins(unsealed.scrub(verified)), ensure_ascii=False)
    assert ref.shown in shown


def test_a_diff_without_sealed_values_still_masks_credentials_where_they_sit() -> None:
    """A rollout undo brings back an old DATABASE_URL: neither side is shown."""
    path = "spec.template.spec.containers[name=app].env[name=DATABASE_URL].value"
    ev = PreviewRecorded(session_id=SID, call_id="c_1", ok=True, actor="executor", diff=(
        FieldChange(path=path, before="postgres://u:now-Pw-22@db/app",
                    after="postgres://u:old-Pw-23@db/app"),
        FieldChange(path="spec.template.spec.containers[name=app].image", before="a:1",
                    after="a:2")))
    scrubbed = Unsealed({}).scrub(ev)
    assert scrubbed.diff[0] == FieldChange(path=path, before="<redacted>", after="<redacted>")
    assert scrubbed.diff[1] == ev.diff[1]


@pytest.mark.parametrize(("text", "secret"), [
    ("create secret generic db --from-literal=password=Bare-Pw-30 -n staging", "Bare-Pw-30"),
    ("get pods -n shop\nset env deploy/web API_TOKEN=Bare-Tok-31", "Bare-Tok-31"),
    ("apply -f - <<EOF\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n"
     "stringData:\n  token: Bare-Man-32\nEOF", "Bare-Man-32"),
])
async def test_a_command_typed_without_the_word_kubectl_is_sealed_too(
    key: X25519PrivateKey, store: Store, text: str, secret: str
) -> None:
    """Direct mode runs `create secret …` as kubectl would: forgetting the word must not get the
    value recorded as typed."""
    out = await sealer(key, store, "gateway").text(SID, text)
    assert secret not in out
    assert blobs.REF.search(out)
    # As typed: with a model, the message is still the model's to read; direct mode implies
    # the word (schemas/kubectl.implied) and parses it as the command.
    assert not out.startswith("kubectl ")
    for line in direct.split_commands(kubectl.implied(out)):
        assert isinstance(direct.parse(line), direct.Call), line


async def test_sentences_that_start_like_a_verb_are_recorded_as_typed(
    key: X25519PrivateKey, store: Store
) -> None:
    g = sealer(key, store, "gateway")
    for text in ("create a plan to scale web, then tell me the risks",
                 "set the replicas of web to 3 please",
                 "get pods -n shop",
                 "apply the fix we talked about\nkind: of urgent, name: token rotation"):
        assert await g.text(SID, text) == text
    assert store.blobs == {}



# -- per-cluster sealing (issue 21) -----------------------------------------------------------

def _cluster_sealer(store: Store, keys: dict[str, X25519PrivateKey], name: str = "gateway",
                    default: str = "") -> Sealer:
    async def session_default(session_id: str) -> str:
        return default

    return Sealer(name, None, store.put, clusters=("a", "b"),
                  sealing={identity.sealing_name(c): k.public_key() for c, k in keys.items()},
                  session_default=session_default)


def test_the_keyring_publishes_a_sealing_key_per_cluster(tmp_path: Path) -> None:
    ring = identity.provision_keys(tmp_path, S.SERVICES, ("a", "b"))
    for c in ("a", "b"):
        own = identity.load_signer(tmp_path / identity.executor_key_file(c), "executor")
        published = ring.sealing[identity.sealing_name(c)]
        assert published.public_bytes_raw() == \
            identity.sealing_key(own.key).public_key().public_bytes_raw()
    assert len({ring.sealing[n].public_bytes_raw() for n in
                ("executor", identity.sealing_name("a"), identity.sealing_name("b"))}) == 3


@pytest.mark.parametrize(("text", "default", "runs_on"), [
    ("kubectl create secret generic db -n shop --from-literal=password=Hunter2-xyz "
     "--context b", "a", "b"),
    ("kubectl create secret generic db -n shop --from-literal=password=Hunter2-xyz", "b", "b"),
    ("kubectl create secret generic db -n shop --from-literal=password=Hunter2-xyz", "", "a"),
    ("kubectl set env deploy/web -n shop --context=b API_TOKEN=sk-live-abcdef123456", "", "b"),
])
async def test_a_secret_is_sealed_to_the_executor_of_the_cluster_the_call_runs_on(
        store: Store, text: str, default: str, runs_on: str) -> None:
    keys = {"a": X25519PrivateKey.generate(), "b": X25519PrivateKey.generate()}
    s = _cluster_sealer(store, keys, default=default)
    out = await s.text(SID, text)
    call = direct.parse(out)
    assert isinstance(call, direct.Call), call
    args, refs = await s.args(SID, call.tool, call.args)  # as the planner records the call
    assert refs == {}
    opened = await opener(keys[runs_on], store).args(SID, call.tool, args)
    assert "Hunter2-xyz" in json.dumps(opened.args) or "sk-live" in json.dumps(opened.args)
    other = "a" if runs_on == "b" else "b"
    with pytest.raises(SealError):  # another cluster's executor cannot open it
        await opener(keys[other], store).args(SID, call.tool, args)


async def test_a_models_call_is_sealed_to_its_clusters_executor(store: Store) -> None:
    keys = {"a": X25519PrivateKey.generate(), "b": X25519PrivateKey.generate()}
    args = {"namespace": "shop", "name": "web", "cluster": "b",
            "env": {"DB_PASSWORD": "Pw-for-b-only-9"}}
    sealed, _ = await _cluster_sealer(store, keys, "planner", default="a").args(
        SID, "set_env", args)
    assert "Pw-for-b-only-9" not in json.dumps(sealed)
    assert "Pw-for-b-only-9" in json.dumps(
        (await opener(keys["b"], store).args(SID, "set_env", sealed)).args)
    with pytest.raises(SealError):
        await opener(keys["a"], store).args(SID, "set_env", sealed)


async def test_a_cluster_without_a_key_seals_nothing(store: Store) -> None:
    keys = {"a": X25519PrivateKey.generate()}  # b's not provisioned
    with pytest.raises(blobs.SealingUnavailable, match="of cluster 'b'"):
        await _cluster_sealer(store, keys).value(SID, "Pw-nowhere-1", "b")
    assert store.blobs == {}


async def test_a_cluster_not_allowed_here_seals_nothing_and_says_why(store: Store) -> None:
    keys = {"a": X25519PrivateKey.generate(), "b": X25519PrivateKey.generate()}
    with pytest.raises(blobs.SealingUnavailable, match="not allowed here"):
        await _cluster_sealer(store, keys).text(
            SID, "kubectl create secret generic db --from-literal=password=Pw-x-12 --context c")
    assert store.blobs == {}
