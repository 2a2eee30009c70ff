import pytest

from router.ewma import Ewma


def test_first_sample_is_taken_as_is_then_smoothed():
    e = Ewma(0.5)
    assert e.value is None
    assert e.update(100.0) == 100.0
    assert e.update(200.0) == 150.0
    assert e.update(150.0) == 150.0
    assert e.value == 150.0


def test_half_life_in_samples():
    e = Ewma(half_life=3)
    e.update(0.0)
    for _ in range(3):
        e.update(100.0)
    assert e.value == pytest.approx(50.0)  # the old value's weight halved in 3 samples


def test_alpha_one_tracks_the_last_sample():
    e = Ewma(1.0)
    for v in (5.0, 9.0, 1.0):
        e.update(v)
    assert e.value == 1.0


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 0.0}, {"alpha": 1.5}, {"half_life": 0},
                                    {"alpha": 0.5, "half_life": 2}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Ewma(**kwargs)


def test_peak_ewma_takes_a_confirmed_rise_at_once():
    from router.ewma import PeakEwma

    e = PeakEwma(decay=10.0)
    for i in range(20):
        e.update(0.010, i * 0.1)
    e.update(0.200, 2.0)  # one stray slow sample moves it only a little
    assert e.value < 0.012
    e.update(0.200, 2.1)  # confirmed: believed at once
    assert e.value == 0.2


def test_peak_ewma_decays_by_time():
    import math

    from router.ewma import PeakEwma

    e = PeakEwma(decay=10.0)
    e.update(0.2, 0.0)
    e.update(0.1, 10.0)  # 10 s later: the old value keeps e^-1 of its weight
    assert e.value == pytest.approx(0.1 + 0.1 * math.exp(-1))
    e.update(0.04, 100.0)  # a rarely sampled region follows its latest sample
    assert e.value == pytest.approx(0.04, abs=1e-4)
