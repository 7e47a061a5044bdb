"""Prometheus text exposition of the gateway's figures, without a client library: requests by
route and status, SSE clients, approval decisions and their latency, how full the log is."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Seconds from approval.requested to the decision: humans take seconds to hours.
LATENCY_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400)
# How full the log may get before the gateway says so in its log; each level is said once. The
# first is the early alert: at 80% an operator has most of the log's lifetime so far to act.
LOG_ALERT_LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95, 1.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


@dataclass
class Metrics:
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    rate_limited: int = 0
    sse_clients: int = 0
    sse_connections: int = 0
    sse_events_sent: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    approval_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    log_bytes: int | None = None  # None: not read yet
    log_max_bytes: int = 0
    log_alerted: float = 0.0  # the highest alert level already said

    def log_usage(self, used: int, limit: int) -> list[float]:
        """Records the log's size and limit; returns the alert levels newly crossed."""
        self.log_bytes, self.log_max_bytes = used, limit
        ratio = self.log_fill_ratio()
        if ratio is None:
            return []
        crossed = [lv for lv in LOG_ALERT_LEVELS if self.log_alerted < lv <= ratio]
        if crossed:
            self.log_alerted = crossed[-1]
        elif ratio < LOG_ALERT_LEVELS[0]:
            self.log_alerted = 0.0  # the limit was raised: say it again when it fills up
        return crossed[-1:]

    def log_fill_ratio(self) -> float | None:
        if self.log_bytes is None or self.log_max_bytes <= 0:
            return None
        return self.log_bytes / self.log_max_bytes

    def request(self, route: str, method: str, status: int) -> None:
        self.requests[(route, method, status)] += 1

    def decided(self, decision: str, latency_s: float) -> None:
        self.decisions[decision] += 1
        self.approval_latency.observe(max(latency_s, 0.0))

    def render(self) -> str:
        out: list[str] = [
            "# HELP interlock_http_requests_total HTTP requests by route, method and status.",
            "# TYPE interlock_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(f'interlock_http_requests_total{{route="{_label(route)}",'
                       f'method="{method}",status="{status}"}} {n}')
        out += [
            "# HELP interlock_http_rate_limited_total Requests refused with 429.",
            "# TYPE interlock_http_rate_limited_total counter",
            f"interlock_http_rate_limited_total {self.rate_limited}",
            "# HELP interlock_sse_clients Open Server-Sent Events streams.",
            "# TYPE interlock_sse_clients gauge",
            f"interlock_sse_clients {self.sse_clients}",
            "# HELP interlock_sse_connections_total SSE streams opened.",
            "# TYPE interlock_sse_connections_total counter",
            f"interlock_sse_connections_total {self.sse_connections}",
            "# HELP interlock_sse_events_sent_total Events written to SSE streams.",
            "# TYPE interlock_sse_events_sent_total counter",
            f"interlock_sse_events_sent_total {self.sse_events_sent}",
            "# HELP interlock_approval_decisions_total Decisions recorded by this gateway.",
            "# TYPE interlock_approval_decisions_total counter",
        ]
        for decision in ("approve", "deny"):
            out.append(f'interlock_approval_decisions_total{{decision="{decision}"}} '
                       f"{self.decisions[decision]}")
        if self.log_bytes is not None:
            out += [
                "# HELP interlock_log_bytes Bytes stored in the event log (stream EVENTS).",
                "# TYPE interlock_log_bytes gauge",
                f'interlock_log_bytes{{stream="EVENTS"}} {self.log_bytes}',
                "# HELP interlock_log_max_bytes The event log's size limit; at it, writes stop.",
                "# TYPE interlock_log_max_bytes gauge",
                f'interlock_log_max_bytes{{stream="EVENTS"}} {self.log_max_bytes}',
            ]
            ratio = self.log_fill_ratio()
            if ratio is not None:
                out += [
                    "# HELP interlock_log_fill_ratio Stored bytes / the limit (1: writes stop).",
                    "# TYPE interlock_log_fill_ratio gauge",
                    f'interlock_log_fill_ratio{{stream="EVENTS"}} {ratio:.6f}',
                ]
        h = self.approval_latency
        out += [
            "# HELP interlock_approval_latency_seconds From approval.requested to the decision.",
            "# TYPE interlock_approval_latency_seconds histogram",
        ]
        for bound, count in zip(h.buckets, h.counts, strict=True):
            out.append(f'interlock_approval_latency_seconds_bucket{{le="{bound:g}"}} {count}')
        out += [
            f'interlock_approval_latency_seconds_bucket{{le="+Inf"}} {h.n}',
            f"interlock_approval_latency_seconds_sum {h.total:.3f}",
            f"interlock_approval_latency_seconds_count {h.n}",
        ]
        return "\n".join(out) + "\n"
