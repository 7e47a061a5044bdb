"""A fake Slack for the tests, on loopback: the Web API calls Interlock makes and the
`response_url` posts it sends are recorded and answered as Slack answers them; and the
interaction requests Slack would send (block_actions, view_submission) are built and signed
exactly as Slack documents (https://api.slack.com/authentication/verifying-requests-from-slack):
a form-encoded body `payload=<JSON>`, `X-Slack-Request-Timestamp` and `X-Slack-Signature` =
`v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>` with the app's signing secret.

The signature is computed here with hashlib/hmac on purpose: the code under test checks it with
slack_sdk's SignatureVerifier, so the two are independent.

    async with FakeSlack() as slack:
        env = {"INTERLOCK_SLACK_API_URL": slack.api_url,
               "INTERLOCK_SLACK_RESPONSE_URL_PREFIX": slack.response_prefix, ...}
        payload = block_actions(action_id="interlock.approve", value=..., team="T1", user="U1",
                                response_url=slack.response_url("r1"))
        body = form_body(payload)
        headers = signed_headers(SECRET, body)
        ...
        await slack.wait_for(lambda: slack.responses_to("r1"))
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from launcher.nats import free_port

T = TypeVar("T")

SLACK_CONTENT_TYPE = "application/x-www-form-urlencoded"


# -- signing, as Slack documents it --------------------------------------------------------------

def sign(secret: str, body: bytes | str, ts: int | str) -> str:
    """`v0=` + hex HMAC-SHA256 of `v0:<ts>:<body>` keyed with the signing secret."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + str(ts).encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    """The headers of Slack's request: its timestamp (now unless given) and signature."""
    stamp = int(time.time()) if ts is None else ts
    return {"Content-Type": SLACK_CONTENT_TYPE,
            "X-Slack-Request-Timestamp": str(stamp),
            "X-Slack-Signature": sign(secret, body, stamp)}


def form_body(payload: dict[str, Any]) -> bytes:
    """The body Slack POSTs to the request URL: `payload=<url-encoded JSON>`."""
    return urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))}
                                  ).encode()


def payload_of(body: bytes) -> dict[str, Any]:
    """The JSON payload of a form-encoded interaction body (what a reader of it parses)."""
    form = urllib.parse.parse_qs(body.decode(), strict_parsing=True)
    doc: dict[str, Any] = json.loads(form["payload"][0])
    return doc


# -- interaction payloads, as Slack sends them ---------------------------------------------------

_counter = itertools.count(1)


def _ts() -> str:
    return f"{time.time():.6f}"


def _trigger() -> str:
    n = next(_counter)
    return f"{int(time.time())}.{1000 + n}.{hashlib.sha1(str(n).encode()).hexdigest()[:32]}"


def _people(team: str, user: str, username: str, domain: str) -> dict[str, Any]:
    return {
        "team": {"id": team, "domain": domain},
        "user": {"id": user, "username": username, "name": username, "team_id": team},
    }


def block_actions(*, action_id: str, value: str = "", team: str = "T0INTERLOCK",
                  user: str = "U0APPROVER", username: str = "approver",
                  domain: str = "interlock-test", response_url: str = "",
                  channel: str = "C0APPROVALS", message_ts: str = "",
                  block_id: str = "interlock.actions", url: str = "",
                  message: dict[str, Any] | None = None,
                  api_app_id: str = "A0INTERLOCK", trigger_id: str = "") -> dict[str, Any]:
    """A `block_actions` payload: a person clicked a button of a message the app posted."""
    msg_ts = message_ts or _ts()
    action: dict[str, Any] = {
        "action_id": action_id, "block_id": block_id,
        "text": {"type": "plain_text", "text": action_id.rsplit(".", 1)[-1].title(),
                 "emoji": True},
        "type": "button", "action_ts": _ts(),
    }
    if value:
        action["value"] = value
    if url:
        action["url"] = url
    return {
        "type": "block_actions",
        **_people(team, user, username, domain),
        "api_app_id": api_app_id,
        "token": "legacy-verification-token-never-used",
        "container": {"type": "message", "message_ts": msg_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": trigger_id or _trigger(),
        "channel": {"id": channel, "name": "approvals"},
        "message": message or {"type": "message", "subtype": "bot_message",
                               "text": "Interlock approval", "ts": msg_ts,
                               "bot_id": "B0INTERLOCK", "blocks": []},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def view_submission(*, private_metadata: str, reason: str | None,
                    callback_id: str = "interlock.deny", team: str = "T0INTERLOCK",
                    user: str = "U0APPROVER", username: str = "approver",
                    domain: str = "interlock-test", api_app_id: str = "A0INTERLOCK",
                    view_id: str = "V0DENY") -> dict[str, Any]:
    """A `view_submission` payload: a person submitted the modal the app opened (the reason
    in block `reason`, action `reason`; `None` leaves the input out, as Slack does for an
    optional input left empty)."""
    values: dict[str, Any] = {"reason": {"reason": {"type": "plain_text_input",
                                                    "value": reason}}}
    return {
        "type": "view_submission",
        **_people(team, user, username, domain),
        "api_app_id": api_app_id,
        "token": "legacy-verification-token-never-used",
        "trigger_id": _trigger(),
        "view": {
            "id": view_id, "team_id": team, "type": "modal", "app_id": api_app_id,
            "callback_id": callback_id, "private_metadata": private_metadata,
            "title": {"type": "plain_text", "text": "Deny"},
            "blocks": [],
            "state": {"values": values},
            "hash": hashlib.sha1(private_metadata.encode()).hexdigest()[:16],
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def action_value(approval: dict[str, Any]) -> str:
    """The approve/deny button's value for an approval (as the API serves it): the JSON text
    the notifier puts on the buttons."""
    return json.dumps({"approval_id": approval["approval_id"],
                       "call_hashes": [c["call_hash"] for c in approval["calls"]],
                       "expires_at": approval["expires_at"]})


# -- the fake server -----------------------------------------------------------------------------

@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str  # "chat.postMessage"
    body: dict[str, Any]
    token: str  # the bearer token it presented


@dataclass
class Posted:
    """One POST to a response_url."""

    id: str
    body: dict[str, Any]


@dataclass
class FakeSlack:
    """Slack's Web API (`/api/<method>`) and response URLs (`/response/<id>`) on loopback."""

    token: str = ""  # when set, a call with another bearer token gets invalid_auth
    calls: list[Call] = field(default_factory=list)
    responses: list[Posted] = field(default_factory=list)
    # Any other request that reached the fake (a reply sent where it must not go): path, body.
    stray: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """INTERLOCK_SLACK_API_URL (slack_sdk's base_url: ends with a slash)."""
        return f"{self.url}/api/"

    @property
    def response_prefix(self) -> str:
        """INTERLOCK_SLACK_RESPONSE_URL_PREFIX for response URLs of this fake."""
        return f"{self.url}/response/"

    def response_url(self, rid: str) -> str:
        return f"{self.response_prefix}{rid}"

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def responses_to(self, rid: str) -> list[Posted]:
        return [p for p in self.responses if p.id == rid]

    async def wait_for(self, pred: Callable[[], T], timeout: float = 10.0) -> T:
        """Until `pred()` is truthy (returned), or AssertionError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = pred()
            if got:
                return got
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("the fake Slack never received what was expected; got "
                                     f"calls={[c.method for c in self.calls]} "
                                     f"responses={[p.id for p in self.responses]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response)
        app.router.add_route("*", "/{tail:.*}", self._stray)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers --------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        """JSON or form-encoded, as slack_sdk sends either (form fields that hold JSON, such
        as `blocks` or `view`, are decoded)."""
        raw = await request.read()
        if request.content_type == "application/json":
            doc = json.loads(raw or b"{}")
            return doc if isinstance(doc, dict) else {"_": doc}
        out: dict[str, Any] = {}
        for k, v in urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True):
            try:
                out[k] = json.loads(v) if v[:1] in "[{" else v
            except ValueError:
                out[k] = v
        return out

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(body.get("token", ""))
        self.calls.append(Call(method, body, token))
        self._changed.set()
        if self.token and token != self.token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        channel = str(body.get("channel", "C0APPROVALS"))
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            return web.json_response({"ok": True, "channel": channel, "ts": ts,
                                      "message": {"type": "message", "ts": ts,
                                                  "text": body.get("text", ""),
                                                  "blocks": body.get("blocks", [])}})
        if method == "chat.update":
            return web.json_response({"ok": True, "channel": channel, "ts": body.get("ts"),
                                      "text": body.get("text", ""),
                                      "message": {"text": body.get("text", ""),
                                                  "blocks": body.get("blocks", [])}})
        if method == "chat.postEphemeral":
            return web.json_response({"ok": True,
                                      "message_ts": f"{int(time.time())}.{next(self._ts):06d}"})
        if method == "views.open":
            view = body.get("view", {})
            if not body.get("trigger_id"):
                return web.json_response({"ok": False, "error": "invalid_trigger_id"})
            return web.json_response({"ok": True, "view": {
                **(view if isinstance(view, dict) else {}), "id": f"V{next(self._ts):08d}"}})
        return web.json_response({"ok": False, "error": "unknown_method"})

    def outside_url(self, rid: str) -> str:
        """A URL of this fake outside the response prefix (what a forged payload could name)."""
        return f"{self.url}/elsewhere/{rid}"

    async def _stray(self, request: web.Request) -> web.Response:
        self.stray.append((request.path, await request.read()))
        self._changed.set()
        return web.Response(status=404)

    async def _response(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.responses.append(Posted(request.match_info["rid"], body))
        self._changed.set()
        return web.Response(text="ok")  # what Slack's response_url answers
