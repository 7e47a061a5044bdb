"""Registering a passkey over HTTP against a real gateway and nats-server. The passkey is a
software one (an EC P-256 key from `cryptography`, its registration CBOR-encoded with `cbor2`
as an authenticator would with attestation "none"); the browser test registers a real one."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from schemas import subjects as S
from schemas.approvers import REGISTRY_SESSION, PasskeyRegistered
from services.gateway.passkeys import user_id
from services.runtime import approvers
from tests.integration.gateway.conftest import Gateway, token_of


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def software_registration(challenge: bytes, rp_id: str, origin: str) -> dict[str, Any]:
    """What navigator.credentials.create() answers, from a software authenticator."""
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"),
                        -3: nums.y.to_bytes(32, "big")})
    cred_id = secrets.token_bytes(32)
    auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([0x45]) + bytes(4)
                 + bytes(16) + len(cred_id).to_bytes(2, "big") + cred_id + cose)
    client_data = json.dumps({"type": "webauthn.create", "challenge": b64url(challenge),
                              "origin": origin, "crossOrigin": False}).encode()
    return {"id": b64url(cred_id), "rawId": b64url(cred_id), "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data),
                         "attestationObject": b64url(cbor2.dumps(
                             {"fmt": "none", "attStmt": {}, "authData": auth_data})),
                         "transports": ["internal"]},
            "clientExtensionResults": {}, "authenticatorAttachment": "platform"}


def page(gateway: Gateway, host: str = "localhost") -> dict[str, str]:
    """The headers a Command Center page at http://<host>:<port> sends."""
    port = gateway.url.rsplit(":", 1)[1]
    return {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}"}


async def post(gateway: Gateway, path: str, body: Any = None, role: str = "approver",
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with gateway.http.post(
            gateway.url + path, json=body,
            headers={"Authorization": f"Bearer {token_of(role)}", **(headers or {})}) as r:
        return r.status, await r.json()


async def registered(gateway: Gateway) -> list[PasskeyRegistered]:
    return [s.event async for s in gateway.bus.read(
        S.tag_filter("gateway", "approver.registered", REGISTRY_SESSION))
        if isinstance(s.event, PasskeyRegistered)]


async def test_the_challenge_is_the_principals_and_the_pages(gateway: Gateway) -> None:
    status, body = await post(gateway, "/v1/passkeys/challenge", headers=page(gateway))
    assert status == 200, body
    assert unb64url(body["challenge"]) == approvers.registration_challenge("alice",
                                                                           body["nonce"])
    assert body["rp"] == {"id": "localhost", "name": "Interlock"}
    assert body["user"]["name"] == "alice"
    assert unb64url(body["user"]["id"]) == user_id("alice")
    assert [p["alg"] for p in body["pubKeyCredParams"]] == [-8, -7]
    assert body["origin"] == page(gateway)["Origin"]
    status, again = await post(gateway, "/v1/passkeys/challenge", headers=page(gateway))
    assert again["nonce"] != body["nonce"]


async def test_a_registration_is_recorded_once_for_an_admin_to_enrol(gateway: Gateway) -> None:
    _, ch = await post(gateway, "/v1/passkeys/challenge", headers=page(gateway))
    origin = page(gateway)["Origin"]
    reg = software_registration(unb64url(ch["challenge"]), "localhost", origin)
    status, body = await post(gateway, "/v1/passkeys",
                              {"nonce": ch["nonce"], "registration": reg, "label": "laptop"},
                              headers=page(gateway))
    assert status == 201, body
    assert body["enrol"] == f"interlock keys enroll --request {body['request_id']}"
    [ev] = await registered(gateway)
    assert ev.key() == body["request_id"]
    assert (ev.principal, ev.actor, ev.nonce) == ("alice", "alice", ch["nonce"])
    key = ev.credential
    assert (key.kind, key.rp_id, key.origin, key.label) == ("passkey", "localhost", origin,
                                                           "laptop")
    assert key.key_id == body["key_id"] == approvers.fingerprint_of(
        "passkey", base64.b64decode(key.public_key))
    assert unb64url(key.credential_id) == unb64url(reg["id"])
    # What the event keeps is enough for anyone to check the registration again.
    again = approvers.verify_registration("alice", ev.nonce, ev.registration, "localhost",
                                          origin, "laptop")
    assert again == key
    # Sent twice, it is still one registration.
    status, twice = await post(gateway, "/v1/passkeys",
                               {"nonce": ch["nonce"], "registration": reg, "label": "laptop"},
                               headers=page(gateway))
    assert status == 201
    assert twice["request_id"] == body["request_id"]
    assert len(await registered(gateway)) == 1


async def test_a_registration_that_does_not_answer_the_challenge_is_refused(
        gateway: Gateway) -> None:
    _, ch = await post(gateway, "/v1/passkeys/challenge", headers=page(gateway))
    origin = page(gateway)["Origin"]
    challenge = unb64url(ch["challenge"])
    cases = {
        # another nonce than the one the challenge came from
        "nonce": ({"nonce": "x" * 32,
                   "registration": software_registration(challenge, "localhost", origin)}),
        # made on another site
        "origin": {"nonce": ch["nonce"], "registration": software_registration(
            challenge, "localhost", "http://evil.example")},
        "rp": {"nonce": ch["nonce"], "registration": software_registration(
            challenge, "evil.example", origin)},
        # alice's challenge presented by another approver (the admin)
        "principal": {"nonce": ch["nonce"], "registration": software_registration(
            challenge, "localhost", origin)},
        "garbage": {"nonce": ch["nonce"], "registration": {"id": "x", "response": {}}},
        "no response": {"nonce": ch["nonce"], "registration": {"id": "x"}},
    }
    for name, body in cases.items():
        role = "admin" if name == "principal" else "approver"
        status, answer = await post(gateway, "/v1/passkeys", body, role=role,
                                    headers=page(gateway))
        assert status == 400, (name, answer)
        assert answer["error"]["code"] == "bad_registration", (name, answer)
        assert "does not verify" in answer["error"]["message"] or name in (
            "garbage", "no response"), (name, answer)
    assert await registered(gateway) == []


async def test_only_an_approver_on_its_own_page_may_ask(gateway: Gateway) -> None:
    hdrs = page(gateway)
    for role in ("viewer", "operator"):
        status, body = await post(gateway, "/v1/passkeys/challenge", role=role, headers=hdrs)
        assert status == 403, (role, body)
    status, body = await post(gateway, "/v1/passkeys/challenge")
    assert (status, body["error"]["code"]) == (400, "origin_required"), body
    status, body = await post(gateway, "/v1/passkeys/challenge",
                              headers={**hdrs, "Origin": "http://evil.example"})
    assert (status, body["error"]["code"]) == (400, "origin_mismatch"), body
    status, body = await post(gateway, "/v1/passkeys/challenge",
                              headers=page(gateway, "127.0.0.1"))
    assert (status, body["error"]["code"]) == (400, "host_name_required"), body
    assert "http://localhost:" in body["error"]["message"]
    status, body = await post(gateway, "/v1/passkeys", {"nonce": "short", "registration": {}},
                              headers=hdrs)
    assert (status, body["error"]["code"]) == (400, "invalid_body"), body


async def test_the_spec_documents_the_routes(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/openapi.json") as r:
        spec = await r.json()
    assert {"/v1/passkeys/challenge", "/v1/passkeys"} <= set(spec["paths"])
