import pytest

from router.config import LimitsConfig
from router.retry import IDEMPOTENT, RetryBudget, retry_decision


@pytest.mark.parametrize(
    "method, sent, body_held, status, timed_out, decision",
    [
        # never reached the region: always the next one, even POST without a held body
        ("POST", False, False, None, False, "next"),
        ("PATCH", False, False, None, True, "next"),
        ("GET", False, True, None, False, "next"),
        # idempotent, sent, body held, gateway-ish failure: retry
        ("GET", True, True, 502, False, "retry"),
        ("HEAD", True, True, 503, False, "retry"),
        ("OPTIONS", True, True, 504, False, "retry"),
        ("PUT", True, True, 503, False, "retry"),
        ("DELETE", True, True, None, True, "retry"),
        ("TRACE", True, True, 502, False, "retry"),
        # a sent POST/PATCH is never repeated
        ("POST", True, True, 502, False, "stop"),
        ("POST", True, True, None, True, "stop"),
        ("PATCH", True, True, 503, False, "stop"),
        # body no longer held
        ("PUT", True, False, 503, False, "stop"),
        # other statuses are the region's answer
        ("GET", True, True, 500, False, "stop"),
        ("GET", True, True, 429, False, "stop"),
        ("GET", True, True, 200, False, "stop"),
        ("GET", True, True, None, False, "stop"),
        # methods are case-sensitive; unknown methods are not idempotent
        ("get", True, True, 502, False, "stop"),
        ("PROPFIND", True, True, 502, False, "stop"),
    ],
)
def test_retry_decision(method, sent, body_held, status, timed_out, decision):
    assert retry_decision(method, sent, body_held, status, timed_out) == decision


def test_idempotent_set():
    assert IDEMPOTENT == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    assert "POST" not in IDEMPOTENT and "PATCH" not in IDEMPOTENT


def test_budget_floor_of_min_retries():
    b = RetryBudget(0.2, 3)
    b.request_started()
    assert [b.try_acquire_retry() for _ in range(4)] == [True, True, True, False]
    b.retry_finished()
    assert b.try_acquire_retry() is True
    assert b.active_retries == 3


def test_budget_scales_with_active_requests():
    b = RetryBudget(0.2, 3)
    for _ in range(50):
        b.request_started()
    assert sum(b.try_acquire_retry() for _ in range(20)) == 10  # 20 % of 50
    for _ in range(50):
        b.request_finished()
    assert b.active_requests == 0
    assert b.try_acquire_retry() is False  # 10 retries still active > max(3, 0)
    for _ in range(8):
        b.retry_finished()
    assert b.try_acquire_retry() is True  # 2 active < 3


def test_counters_never_go_negative_and_from_limits():
    b = RetryBudget.from_limits(LimitsConfig(retry_budget_ratio=0.5, retry_budget_min=1))
    assert (b.ratio, b.min_retries) == (0.5, 1)
    b.request_finished()
    b.retry_finished()
    assert (b.active_requests, b.active_retries) == (0, 0)
