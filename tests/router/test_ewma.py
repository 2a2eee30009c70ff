import math

import pytest

from router.ewma import PeakEwma


def test_first_sample_is_taken_as_is():
    e = PeakEwma()
    assert e.value is None
    assert e.update(0.1, 5.0) == 0.1


def test_bad_decay():
    with pytest.raises(ValueError):
        PeakEwma(0.0)


def test_peak_ewma_takes_a_confirmed_rise_at_once():
    e = PeakEwma(decay=10.0)
    for i in range(20):
        e.update(0.010, i * 0.1)
    e.update(0.200, 2.0)  # one stray slow sample moves it only a little
    assert e.value < 0.012
    e.update(0.200, 2.1)  # confirmed: believed at once
    assert e.value == 0.2


def test_peak_ewma_decays_by_time():
    e = PeakEwma(decay=10.0)
    e.update(0.2, 0.0)
    e.update(0.1, 10.0)  # 10 s later: the old value keeps e^-1 of its weight
    assert e.value == pytest.approx(0.1 + 0.1 * math.exp(-1))
    e.update(0.04, 100.0)  # a rarely sampled region follows its latest sample
    assert e.value == pytest.approx(0.04, abs=1e-4)


def test_peak_ewma_averages_small_rises_so_jitter_does_not_bias_it_up():
    import random

    rnd = random.Random(3)
    e = PeakEwma(decay=10.0)
    for i in range(2000):  # a busy region: 20 ms +-30 %, 100 samples a second
        e.update(0.020 * (1 + rnd.uniform(-0.3, 0.3)), i * 0.01)
    assert e.value == pytest.approx(0.020, rel=0.05)
