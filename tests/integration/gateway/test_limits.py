"""Limits keyed by who a request proves to be (issue 16), over real HTTP against a real gateway:
rate limits per authenticated principal whichever token it uses, a per-address limit on failed
authentication that a junk-token flood cannot get around or use to evict a principal's bucket,
and a per-principal cap on concurrent SSE streams."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest

from schemas.session import UserMessage
from services.gateway.auth import Principal
from services.gateway.ratelimit import client_address, parse_proxies
from tests.integration.gateway.conftest import GatewayFactory, token_of

NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


async def status_of(http: aiohttp.ClientSession, url: str, tok: str,
                    headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {tok}", **(headers or {})}) as r:
        return r.status, await r.json()


async def test_a_junk_token_flood_is_throttled_and_evicts_no_principal(
        gateway_factory: GatewayFactory) -> None:
    # Room for 10 principal buckets only: were junk tokens keyed like principals, the flood
    # would evict the throttled viewer's bucket (10,001 did, with the default 10,000).
    gw = await gateway_factory(rate=0.01, burst=3, failure_rate=0.01, failure_burst=5,
                               principal_keys=10)
    url = f"{gw.url}/v1/tools"
    viewer = token_of("viewer")
    assert [(await status_of(gw.http, url, viewer))[0] for _ in range(4)] == [200] * 3 + [429]

    junk = [await status_of(gw.http, url, secrets.token_urlsafe(24)) for _ in range(200)]
    assert [s for s, _ in junk] == [401] * 5 + [429] * 195  # fresh tokens do not help
    assert junk[-1][1]["error"]["code"] == "rate_limited"
    assert "failed authentication" in junk[-1][1]["error"]["message"]
    # Nor does a made-up X-Forwarded-For: no proxy is trusted, so the peer address counts.
    spoofed = await status_of(gw.http, url, "junk-token-0123456789",
                              {"X-Forwarded-For": "203.0.113.9"})
    assert spoofed[0] == 429

    # The viewer is still throttled (its bucket was not evicted), and other principals are not
    # touched by the flood from the same address.
    status, body = await status_of(gw.http, url, viewer)
    assert status == 429
    assert "vera" in body["error"]["message"]
    assert (await status_of(gw.http, url, token_of("operator")))[0] == 200


async def test_a_principal_is_limited_whichever_token_it_uses(
        gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(rate=0.01, burst=3)
    second = "second-token-of-vera-0123456789"
    gw.api.tokens.add(second, Principal("vera", frozenset({"viewer"})))
    url = f"{gw.url}/v1/me"
    got = [(await status_of(gw.http, url, tok))[0]
           for tok in (token_of("viewer"), second, token_of("viewer"), second)]
    assert got == [200, 200, 200, 429]
    assert (await status_of(gw.http, url, token_of("viewer")))[0] == 429
    assert (await status_of(gw.http, url, token_of("approver")))[0] == 200


async def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(
        gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(failure_rate=0.01, failure_burst=2,
                               trusted_proxies=parse_proxies("127.0.0.1/32"))
    url = f"{gw.url}/v1/tools"

    async def from_(client: str) -> int:
        return (await status_of(gw.http, url, "junk-token-0123456789",
                                {"X-Forwarded-For": f"198.51.100.1, {client}"}))[0]

    assert [await from_("203.0.113.9") for _ in range(3)] == [401, 401, 429]
    assert await from_("203.0.113.10") == 401  # another client behind the same proxy


def test_the_address_a_request_is_limited_by() -> None:
    proxies = parse_proxies("10.0.0.0/8, ::1")
    xff = {"X-Forwarded-For": "1.2.3.4, 203.0.113.9, 10.1.1.1"}
    assert client_address("192.0.2.7", xff) == "192.0.2.7"  # no trusted proxy: the peer
    assert client_address("192.0.2.7", xff, proxies) == "192.0.2.7"  # the peer is no proxy
    # The nearest hop that is not a trusted proxy; what the client wrote before it is ignored.
    assert client_address("10.0.0.5", xff, proxies) == "203.0.113.9"
    assert client_address("10.0.0.5", {"X-Forwarded-For": "bogus"}, proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", {}, proxies) == "10.0.0.5"
    # An IPv6 client controls its /64: one bucket for all of it.
    assert client_address("2001:db8:1:2:aaaa::1", {}) == \
        client_address("2001:db8:1:2:bbbb::2", {}) == "2001:db8:1:2::/64"
    assert client_address("::ffff:192.0.2.7", {}) == "192.0.2.7"
    with pytest.raises(ValueError, match="does not appear"):
        parse_proxies("proxy.example")


async def test_the_sse_cap_per_principal(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(heartbeat_s=0.05, sse_per_principal=2)
    sid = await gw.client("operator").new_session()
    await gw.bus.append(UserMessage(session_id=sid, text="hello", actor="otto"))
    url = f"{gw.url}/v1/sessions/{sid}/events"

    def open_stream(tok: str) -> Any:
        return gw.http.get(url, headers={"Authorization": f"Bearer {tok}"}, timeout=NO_TIMEOUT)

    viewer = token_of("viewer")
    first = await open_stream(viewer).__aenter__()
    second = await open_stream(viewer).__aenter__()
    try:
        assert (first.status, second.status) == (200, 200)
        await first.content.readline()  # both streams are being served
        await second.content.readline()
        status, body = await status_of(gw.http, url, viewer)
        assert status == 429
        assert body["error"]["code"] == "too_many_streams"
        message = body["error"]["message"]
        assert "vera already has 2 event streams open" in message
        assert "INTERLOCK_SSE_STREAMS_PER_PRINCIPAL=2" in message
        # A cap per principal, not for everyone.
        async with open_stream(token_of("operator")) as other:
            assert other.status == 200

        # A closed stream frees its slot: the gateway notices on its next write, a heartbeat.
        # Heartbeats are awaited on the stream still open, then the slot is asked for again.
        first.close()
        for _ in range(50):
            while await asyncio.wait_for(second.content.readline(), 10) != b": ping\n":
                pass
            async with open_stream(viewer) as again:
                if again.status == 200:
                    break
                assert again.status == 429
        else:
            raise AssertionError("the closed stream's slot was never freed")
    finally:
        first.close()
        second.close()


def test_the_limit_settings_from_the_environment() -> None:
    from services.gateway.settings import GatewaySettings
    from services.runtime.errors import ConfigError

    base = {"INTERLOCK_ADMIN_TOKEN": "a" * 32, "INTERLOCK_NATS_PASSWORD": "x",
            "INTERLOCK_KEYRING_FILE": "/k/ring", "INTERLOCK_SIGNING_KEY_FILE": "/k/gw.key"}
    s = GatewaySettings.from_env(base)
    assert (s.auth_failure_rate_per_s, s.auth_failure_burst, s.sse_streams_per_principal,
            s.trusted_proxies) == (1.0, 20, 32, ())
    s = GatewaySettings.from_env({**base, "INTERLOCK_AUTH_FAILURE_RATE": "0.5",
                                  "INTERLOCK_AUTH_FAILURE_BURST": "5",
                                  "INTERLOCK_SSE_STREAMS_PER_PRINCIPAL": "4",
                                  "INTERLOCK_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16"})
    assert (s.auth_failure_rate_per_s, s.auth_failure_burst, s.sse_streams_per_principal) == \
        (0.5, 5, 4)
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.1/32", "192.168.0.0/16"]
    for bad in ({"INTERLOCK_SSE_STREAMS_PER_PRINCIPAL": "0"},
                {"INTERLOCK_AUTH_FAILURE_RATE": "0"},
                {"INTERLOCK_AUTH_FAILURE_BURST": "many"},
                {"INTERLOCK_TRUSTED_PROXIES": "proxy.example"}):
        with pytest.raises(ConfigError):
            GatewaySettings.from_env({**base, **bad})
