"""Retry policy: which failures may go to the next region, and a retry budget.

A request that never reached a region can always try the next one. One that did
is sent again only if repeating it is harmless (idempotent method) and its body
is still held; a POST/PATCH that reached a region is never repeated, so a
payment cannot be made twice.
"""
from __future__ import annotations

from .config import LimitsConfig

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})

NEXT = "next"  # not sent: try the next candidate (no retry budget needed)
RETRY = "retry"  # sent, but safe to send again: next candidate, within the budget
STOP = "stop"  # answer the client with what we have


def retry_decision(method: str, sent: bool, body_held: bool, status: int | None,
                   timed_out: bool) -> str:
    """What to do after one attempt failed.

    sent: any request byte may have reached the region. status: the region's
    response status, or None if no response head arrived. timed_out: the region
    went silent past the read timeout. The caller reports a connection that broke
    after sending as status 502 (what the router would answer) and must not ask
    once response bytes were relayed to the client. Methods are case-sensitive
    (RFC 9110), so "get" is not GET.
    """
    if not sent:
        return NEXT
    if method in IDEMPOTENT and body_held and (timed_out or status in RETRY_STATUSES):
        return RETRY
    return STOP


class RetryBudget:
    """Envoy-style: concurrent retries <= max(min_retries, ratio * active requests).

    Bounds the extra load retries add when a region fails (no retry storms).
    """

    __slots__ = ("ratio", "min_retries", "active_requests", "active_retries")

    def __init__(self, ratio: float, min_retries: int):
        self.ratio = ratio
        self.min_retries = min_retries
        self.active_requests = 0
        self.active_retries = 0

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> RetryBudget:
        return cls(limits.retry_budget_ratio, limits.retry_budget_min)

    def request_started(self) -> None:
        self.active_requests += 1

    def request_finished(self) -> None:
        self.active_requests = max(0, self.active_requests - 1)

    def try_acquire_retry(self) -> bool:
        """Take a retry slot; pair a True with retry_finished()."""
        if self.active_retries < max(self.min_retries, self.ratio * self.active_requests):
            self.active_retries += 1
            return True
        return False

    def retry_finished(self) -> None:
        self.active_retries = max(0, self.active_retries - 1)
