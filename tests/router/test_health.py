import pytest

from router.config import ProbeConfig
from router.health import HealthState

T, F = True, False


@pytest.mark.parametrize(
    "results, verdicts, changes",
    [
        # first success: healthy at once
        ([T], [T], [T]),
        # failures from unknown need `fall` of them
        ([F, F, F], [None, None, F], [F, F, T]),
        ([F, F, T], [None, None, T], [F, F, T]),
        # healthy -> unhealthy after 3 consecutive failures; a success resets the count
        ([T, F, F, T, F, F, F], [T, T, T, T, T, T, F], [T, F, F, F, F, F, T]),
        # unhealthy -> healthy after 2 consecutive successes; a failure resets the count
        ([F, F, F, T, F, T, T, T], [None, None, F, F, F, F, T, T], [F, F, T, F, F, F, T, F]),
    ],
)
def test_rise_and_fall(results, verdicts, changes):
    h = HealthState(fall=3, rise=2)
    got_verdicts, got_changes = [], []
    for ok in results:
        got_changes.append(h.record(ok))
        got_verdicts.append(h.healthy)
    assert got_verdicts == verdicts
    assert got_changes == changes


def test_rise_and_fall_of_one():
    h = HealthState(fall=1, rise=1)
    assert [h.record(ok) for ok in (F, T, F, F, T)] == [T, T, T, F, T]


PROBE = ProbeConfig(interval=30.0, fast_interval=2.0, down_interval=5.0, jitter=0.1)


@pytest.mark.parametrize(
    "results, delay",
    [
        ([], 2.0),  # unknown: fast
        ([F], 2.0),
        ([T], 30.0),  # stable up
        ([T, F], 2.0),  # going down
        ([T, F, T], 30.0),
        ([F, F, F], 5.0),  # down
        ([F, F, F, T], 2.0),  # coming up
        ([F, F, F, T, T], 30.0),
    ],
)
def test_next_delay_cadence(results, delay):
    h = HealthState(fall=3, rise=2)
    for ok in results:
        h.record(ok)
    assert h.next_delay(PROBE, 0.5) == pytest.approx(delay)


@pytest.mark.parametrize("rnd, delay", [(0.0, 27.0), (0.25, 28.5), (0.5, 30.0), (0.999, 32.994)])
def test_jitter(rnd, delay):
    h = HealthState(fall=3, rise=2)
    h.record(True)
    assert h.next_delay(PROBE, rnd) == pytest.approx(delay)
