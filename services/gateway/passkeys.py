"""Registering a passkey in the Command Center (issue 18).

A signed-in approver asks for a challenge (`POST /v1/passkeys/challenge`), their browser creates
a passkey answering it, and `POST /v1/passkeys` checks the registration with the `webauthn`
library and records it as `approver.registered`. That is all the gateway can do: a registered
passkey signs nothing until an admin enrols it (`interlock keys enroll --request ID`, which shows
its fingerprint to check with the person). A compromised gateway could register a passkey of
its own for anyone — which is why enrolment is an admin's signed act the gate checks.

The relying party is the host the page was loaded from (without its port) and the origin is the
request's `Origin`, which must name the same host as `Host`: a passkey is bound to where it was
made, and the gate checks every assertion against the origin recorded here.

Nonces are stateless: a random value the challenge is derived from, bound to the principal
(services/runtime/approvers.registration_challenge). Replaying a registration records nothing
new (the event is once per principal and key).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import secrets
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from schemas.approvers import REGISTRY_SESSION, PasskeyRegistered
from services.gateway.errors import HttpError
from services.gateway.requests import body_of
from services.runtime import approvers

if TYPE_CHECKING:
    from services.gateway.routes import Api

RP_NAME = "Interlock"
# COSE algorithms a passkey may use, in the order the page prefers them: EdDSA, ES256.
ALGORITHMS = (-8, -7)
NONCE_PATTERN = "^[A-Za-z0-9_-]{16,64}$"
# The registration is kept verbatim in the event (anyone can re-check it), so it must fit one.
MAX_REGISTRATION = 2_000


class NewPasskey(msgspec.Struct, forbid_unknown_fields=True):
    """A passkey the browser created for the challenge of `nonce`: its PublicKeyCredential as
    JSON (base64url fields: id, rawId, type, response.clientDataJSON and
    response.attestationObject)."""

    nonce: Annotated[str, msgspec.Meta(pattern=NONCE_PATTERN)]
    registration: dict[str, Any]
    label: Annotated[str, msgspec.Meta(max_length=100)] = ""


def user_id(principal: str) -> bytes:
    """The WebAuthn user handle of a principal: stable, so an authenticator keeps one passkey
    per person and site, and opaque (the spec asks for no personal data in it)."""
    return hashlib.sha256(f"interlock-user\n{principal}".encode()).digest()


def relying_party(request: web.Request) -> tuple[str, str]:
    """(rp_id, origin) of the page making this request: its Origin, which must be this host."""
    origin = request.headers.get("Origin", "")
    if not origin or origin == "null":
        raise HttpError(400, "origin_required",
                        "a passkey is registered from the Command Center in a browser: the "
                        "request carries no Origin")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise HttpError(400, "bad_origin", f"not an origin: {origin[:200]!r}")
    if parts.netloc.lower() != request.host.lower():
        raise HttpError(400, "origin_mismatch",
                        f"the page's origin {origin[:200]} is not this host "
                        f"({request.host[:200]}): open the Command Center at this address")
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, f"{parts.scheme}://{parts.netloc}"
    port = f":{parts.port}" if parts.port else ""
    raise HttpError(400, "host_name_required",
                    f"a passkey belongs to a host name, and browsers refuse an IP address "
                    f"({host}): open the Command Center at {parts.scheme}://localhost{port}/ "
                    "(or its DNS name) to register one")


async def challenge(api: Api, request: web.Request) -> web.Response:
    """The options for navigator.credentials.create(): rp, user, the challenge and its nonce."""
    from webauthn import generate_registration_options
    from webauthn.helpers import options_to_json_dict
    from webauthn.helpers.cose import COSEAlgorithmIdentifier
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    who = api.principal(request, "approver")
    rp_id, origin = relying_party(request)
    nonce = secrets.token_urlsafe(24)
    options = generate_registration_options(
        rp_id=rp_id, rp_name=RP_NAME, user_name=who.name, user_id=user_id(who.name),
        user_display_name=who.name, challenge=approvers.registration_challenge(who.name, nonce),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED),
        supported_pub_key_algs=[COSEAlgorithmIdentifier(a) for a in ALGORITHMS])
    body = options_to_json_dict(options)
    return web.json_response({"nonce": nonce, "origin": origin, **body},
                             headers={"Cache-Control": "no-store"})


def _registration_text(reg: dict[str, Any]) -> str:
    """The parts of the browser's PublicKeyCredential a verifier needs, as compact JSON."""
    response = reg.get("response")
    if not isinstance(response, dict):
        raise HttpError(400, "bad_registration", "the registration has no response object")
    keep = {k: reg[k] for k in ("id", "rawId", "type", "authenticatorAttachment")
            if isinstance(reg.get(k), str)}
    keep["response"] = {k: response[k] for k in ("clientDataJSON", "attestationObject")
                        if isinstance(response.get(k), str)}
    text = json.dumps(keep, separators=(",", ":"))
    if len(text) > MAX_REGISTRATION:
        raise HttpError(400, "bad_registration",
                        f"the registration is {len(text)} characters, over {MAX_REGISTRATION}: "
                        "register the passkey without attestation")
    return text


async def register(api: Api, request: web.Request) -> web.Response:
    """Checks a registration and records it for an admin to enrol."""
    from webauthn.helpers.exceptions import WebAuthnException


    who = api.principal(request, "approver")
    rp_id, origin = relying_party(request)
    body = await body_of(request, NewPasskey, required=True)
    text = _registration_text(body.registration)
    try:
        key = approvers.verify_registration(who.name, body.nonce, text, rp_id, origin,
                                            body.label.strip())
    except approvers.Rejected as exc:
        raise HttpError(400, "bad_registration", str(exc)) from exc
    except WebAuthnException as exc:
        raise HttpError(400, "bad_registration",
                        f"the passkey registration does not verify: {exc}") from exc
    ev = PasskeyRegistered(session_id=REGISTRY_SESSION, principal=who.name, credential=key,
                           registration=text, nonce=body.nonce, actor=who.name)
    await api.bus.append_once(ev)  # None: this very passkey was registered before
    request_id = ev.key()
    return web.json_response({
        "request_id": request_id, "principal": who.name, "key_id": key.key_id,
        "label": key.label, "rp_id": rp_id,
        "enrol": f"interlock keys enroll --request {request_id}",
    }, status=201)


# -- the OpenAPI paths ---------------------------------------------------------------------------

def _spec_paths() -> dict[str, Any]:
    def err(text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}

    errors = {"400": err("no Origin, an origin that is not this host, an IP address as host, "
                         "a malformed body, or a registration that does not verify"),
              "401": err("missing or unknown token"),
              "403": err("the principal lacks the approver role"),
              "413": err("body too large"),
              "429": err("rate limited")}
    obj = {"type": "object"}
    created = {"type": "object", "required": ["request_id", "key_id", "enrol"], "properties": {
        "request_id": {"type": "string"}, "principal": {"type": "string"},
        "key_id": {"type": "string"}, "label": {"type": "string"},
        "rp_id": {"type": "string"}, "enrol": {"type": "string"}}}
    new = msgspec.json.schema(NewPasskey)
    tags = ["approvers"]
    return {
        "/v1/passkeys/challenge": {"post": {
            "summary": "Options to register a passkey (navigator.credentials.create)",
            "description": "Needs the `approver` role; the request's Origin must be its Host.",
            "tags": tags,
            "responses": {"200": {"description": "nonce, challenge, rp, user, algorithms",
                                  "content": {"application/json": {"schema": obj}}}, **errors},
        }},
        "/v1/passkeys": {"post": {
            "summary": "Register a passkey (recorded for an admin to enrol)",
            "description": "Needs the `approver` role; the request's Origin must be its Host.",
            "tags": tags,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": new}}},
            "responses": {"201": {"description": "registered; an admin enrols it with `enrol`",
                                  "content": {"application/json": {"schema": created}}},
                          **errors},
        }},
    }


def install(app: web.Application, api: Api, spec: dict[str, Any] | None = None) -> None:
    """Adds the passkey routes (and, given the OpenAPI document, their paths)."""
    app.router.add_post("/v1/passkeys/challenge", functools.partial(challenge, api))
    app.router.add_post("/v1/passkeys", functools.partial(register, api))
    if spec is not None:
        spec.setdefault("paths", {}).update(_spec_paths())
