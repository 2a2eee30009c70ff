"""Upstream failures say whether request bytes reached the region; requests
the router refuses itself are Rejected.

NotSent may go to the next region; Sent is retried only for an idempotent
method whose body is still held. That distinction keeps a payment from being
made twice.
"""
from __future__ import annotations


class UpstreamError(Exception):
    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # short machine word: refused, tls, dns, timeout, reset, ...
        self.detail = detail


class NotSent(UpstreamError):
    """No byte of the request left the router: safe to try another region."""


class Sent(UpstreamError):
    """The region may have seen (part of) the request and may have acted on it."""

    @property
    def timed_out(self) -> bool:
        return self.reason == "timeout"


class Rejected(Exception):
    """A request refused by the router itself (4xx/5xx it makes): the client's
    doing, never held against a region."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
