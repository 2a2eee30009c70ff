"""The supervisor's crash-loop rule on a fake clock, and how exits are told."""
from __future__ import annotations

import os
import signal

from router.workers import CrashLoop, exit_description


def test_more_than_five_deaths_in_sixty_seconds_is_a_crash_loop():
    c = CrashLoop()
    assert [c.record(t) for t in (0, 1, 2, 3, 4)] == [False] * 5
    assert c.record(59.0) is True


def test_deaths_spread_out_are_not():
    c = CrashLoop(limit=5, window=60.0)
    assert not any(c.record(t * 13.0) for t in range(50))  # one every 13 s: at most 5 in any minute


def test_exit_description():
    assert exit_description(signal.SIGKILL) == "killed by SIGKILL"  # a raw wait status of a signal
    assert exit_description(3 << 8) == "exit 3"
    assert exit_description(0) == "exit 0"
    assert os.waitstatus_to_exitcode(3 << 8) == 3
