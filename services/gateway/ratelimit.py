"""Rate limits: a token bucket per authenticated principal, and per client address for what
does not authenticate (failed authentication, and the public page and spec).

Buckets are keyed by who a request proves to be, never by the token it presents: keyed by the
presented token, fresh junk tokens were never throttled, and 10,001 of them evicted a throttled
token's bucket. Principals are few (the tokens file), so their buckets are never evicted; junk
only ever fills the per-address limiter, which is separate."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# An IPv6 client controls its whole /64: one bucket for it, or it has 2^64 fresh buckets.
IPV6_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    """`rate` requests per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Takes one token for `key`; returns 0 if allowed, else seconds until one is free."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:  # forget the least recently seen
            self._buckets.popitem(last=False)
        return wait


def parse_proxies(text: str) -> tuple[Network, ...]:
    """INTERLOCK_TRUSTED_PROXIES: comma-separated addresses or networks (CIDR). Raises
    ValueError on anything else."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in text.split(",") if part.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
             proxies: Iterable[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(peer: str | None, headers: Mapping[str, str],
                   proxies: tuple[Network, ...] = ()) -> str:
    """The address a request is limited by. The TCP peer, unless the peer is a trusted proxy:
    then the nearest X-Forwarded-For entry that is not one (a client can prepend anything to
    that header, so only what trusted proxies appended counts). Without trusted proxies the
    header is ignored: anyone could send it. IPv6 is keyed by its /64."""
    ip = _ip(peer or "")
    if ip is None:
        return f"peer:{peer or '?'}"
    if proxies and _trusted(ip, proxies):
        hops = [h for h in headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        for hop in reversed(hops):
            hop_ip = _ip(hop)
            if hop_ip is None:
                break  # garbage from the client's side of the chain: the last proxy's view
            ip = hop_ip
            if not _trusted(hop_ip, proxies):
                break
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass
class Limits:
    """The gateway's limiters. `principals`: per authenticated principal, whichever of its
    tokens it uses. `anonymous`: per address, for the public page and spec fetched without a
    token. `failures`: per address, for requests whose authentication fails (no token, an
    unknown one) — a flood of junk tokens is throttled here and touches no principal's bucket."""

    principals: RateLimiter
    anonymous: RateLimiter
    failures: RateLimiter
    trusted_proxies: tuple[Network, ...] = field(default=())

    @classmethod
    def default(cls, principals: RateLimiter | None = None,
                failures: RateLimiter | None = None,
                trusted_proxies: tuple[Network, ...] = ()) -> Limits:
        principals = principals or RateLimiter(rate=20.0, burst=200)
        return cls(principals=principals,
                   anonymous=RateLimiter(principals.rate, int(principals.burst)),
                   failures=failures or RateLimiter(rate=1.0, burst=20),
                   trusted_proxies=trusted_proxies)
