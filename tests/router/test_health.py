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


@pytest.mark.parametrize(
    "probe, fast, down",
    [
        ({}, 30.0, 30.0),  # the seed's cadence: both default to interval
        ({"interval": "200ms"}, 0.2, 0.2),  # never longer than interval
        ({"interval": "10s", "fast_interval": "1s"}, 1.0, 10.0),
        ({"interval": "10s", "fast_interval": "1s", "down_interval": "3s"}, 1.0, 3.0),
    ],
)
def test_cadence_defaults_to_interval(probe, fast, down):
    from router.config import parse_config

    cfg = parse_config({"default_region": "a", "probe": probe,
                        "regions": [{"id": "a", "api": "http://x", "health": "http://x/h"}]}).probe
    assert (cfg.fast_interval, cfg.down_interval) == (fast, down)
    assert ProbeConfig(interval=1.0, fast_interval=5.0).fast_interval == 1.0  # clamped in code too


@pytest.mark.parametrize(
    "probe, down, seconds",
    [
        # seed cadence: detection fall x interval, recovery rise x fast_interval
        (ProbeConfig(), True, 3 * 30.0),
        (ProbeConfig(), False, 2 * 30.0),
        (ProbeConfig(interval=0.2), False, 2 * 0.2),
        (ProbeConfig(interval=0.2), True, 3 * 0.2),
        # tuned: the first probe after the change comes at the steady cadence,
        # the others at fast_interval
        (ProbeConfig(interval=5.0, fast_interval=1.0), True, 5.0 + 2 * 1.0),
        (ProbeConfig(interval=5.0, fast_interval=1.0, down_interval=2.0), False, 2.0 + 1.0),
    ],
)
def test_detection_and_recovery_times(probe, down, seconds):
    """From the change (just after a probe) to the verdict, without jitter."""
    h = HealthState(probe.fall, probe.rise)
    for _ in range(5):
        h.record(down)  # settled in the old state
    elapsed = h.next_delay(probe, 0.5)
    while not h.record(not down):
        elapsed += h.next_delay(probe, 0.5)
    assert elapsed == pytest.approx(seconds)


def flapper(limit=4, window=300.0, hold=120.0):
    return HealthState(fall=1, rise=1, flap_limit=limit, flap_window=window, flap_hold=hold)


def test_flapping_region_is_held_down_after_the_limit():
    h = flapper()
    h.record(T, 0.0)  # first verdict: not a change
    t = 0.0
    for ok in (F, T, F, T, F):  # five changes within 5 minutes
        t += 10.0
        assert h.record(ok, t)
    t += 10.0
    assert not h.record(T, t)  # the recovery is held
    assert h.healthy is False and h.held(t) and h.held_flaps == 5
    assert h.held_until == t + 120.0
    assert not h.record(T, t + 119.0)
    assert h.record(T, t + 120.0) and h.healthy  # served: back at the first good probe after
    # ... with a clean record: only this recovery counts towards the next hold
    assert h.flaps(t + 120.0) == 1


def test_four_changes_are_not_flapping_and_old_changes_age_out():
    h = flapper()
    h.record(T, 0.0)
    for i, ok in enumerate((F, T, F)):
        h.record(ok, 10.0 * (i + 1))
    assert h.record(T, 40.0)  # 4th change: not more than the limit
    h2 = flapper()
    h2.record(T, 0.0)
    for i, ok in enumerate((F, T, F, T, F)):
        h2.record(ok, 10.0 * (i + 1))
    assert h2.record(T, 400.0)  # the five changes are older than the window


def test_hold_waits_for_a_passing_probe_and_limit_zero_is_off():
    h = flapper(hold=60.0)
    h.record(T, 0.0)
    for i, ok in enumerate((F, T, F, T, F)):
        h.record(ok, float(i + 1))
    assert not h.record(T, 10.0)
    assert not h.record(F, 80.0)  # hold over, but the region is down again
    assert h.record(T, 81.0)
    off = flapper(limit=0)
    off.record(T, 0.0)
    assert all(off.record(ok, float(i + 1)) for i, ok in enumerate((F, T) * 10))
