"""The amortised exposure window: the ratio and its interval equal a direct computation, a group-blind
ranking stream raises nothing, a steady shortfall is reported once the group has enough responses."""
import math

import numpy as np
import pytest

from audit.exposure_window import ExposureWindowMonitor, ratio_interval
from audit.policy import ExposureWindowPolicy, parse_policy
from recsys.errors import ConfigError


def _disc(k):
    return [1 / math.log2(1 + r) for r in range(1, k + 1)]


def test_ratio_and_interval_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    o, e = rng.uniform(0, 2, size=50), rng.uniform(0.5, 1.5, size=50)
    r, se, lo, hi = ratio_interval(o.tolist(), e.tolist(), 1.96)
    assert r == pytest.approx(o.sum() / e.sum())
    want = math.sqrt(np.sum((o - r * e) ** 2) / (50 * 49)) / e.mean()
    assert se == pytest.approx(want) and lo == pytest.approx(r - 1.96 * want) and hi == pytest.approx(r + 1.96 * want)


def test_interval_covers_the_true_ratio_at_about_its_level():
    """Simulated windows of 200 responses with a known ratio: the 95 % interval covers it ~95 % of the time."""
    rng = np.random.default_rng(1)
    cover = 0
    for _ in range(400):
        e = rng.uniform(1, 3, size=200)
        o = 0.7 * e * rng.gamma(4.0, 0.25, size=200)     # mean ratio 0.7, noisy per response
        _, _, lo, hi = ratio_interval(o.tolist(), e.tolist(), 1.96)
        cover += lo <= 0.7 <= hi
    assert 0.92 <= cover / 400 <= 0.98


def _stream(mon, rng, n, k, bias):
    """n responses of 100 candidates (50/50), group 1's items pushed down by `bias` (0 = group-blind)."""
    for _ in range(n):
        groups = rng.permutation([0] * 50 + [1] * 50)
        key = rng.random(100) + bias * groups
        order = np.argsort(key)[:k]
        mon.record(["a", "b"], [50, 50], groups[order].tolist())


def test_group_blind_stream_raises_nothing_and_ratio_is_near_one():
    mon = ExposureWindowMonitor(ExposureWindowPolicy(window=1000, refresh_every=10**9))
    _stream(mon, np.random.default_rng(2), 1000, 10, 0.0)
    assert mon.refresh() == ()
    st = {s.group: s for s in mon.stats()}
    assert st["b"].low <= 1.0 <= st["b"].high and st["b"].responses == 1000


def test_steady_shortfall_is_reported_once_enough_responses():
    mon = ExposureWindowMonitor(ExposureWindowPolicy(window=1000, min_requests=100, refresh_every=10**9))
    rng = np.random.default_rng(3)
    _stream(mon, rng, 60, 10, 0.35)
    assert mon.refresh() == ()          # too few responses yet, whatever the interval
    _stream(mon, rng, 200, 10, 0.35)
    found = mon.refresh()
    assert [(f.code, f.group) for f in found] == [("AMORTISED_EXPOSURE_DISPARITY", "b")]
    st = {s.group: s for s in mon.stats()}
    assert found[0].value == pytest.approx(st["b"].ratio) and st["b"].high < 0.8
    # The ratio is the summed exposure over the summed group-blind expectation.
    assert st["b"].ratio == pytest.approx(st["b"].exposure / st["b"].expected)
    assert st["b"].expected == pytest.approx(260 * sum(_disc(10)) / 2)


def test_window_forgets_old_responses():
    mon = ExposureWindowMonitor(ExposureWindowPolicy(window=200, min_requests=100, refresh_every=10**9))
    rng = np.random.default_rng(4)
    _stream(mon, rng, 300, 10, 0.35)
    assert mon.refresh()
    _stream(mon, rng, 200, 10, 0.0)     # the biased responses have all left the window
    assert mon.refresh() == ()


@pytest.mark.parametrize("table,key", [({"window": 0}, "exposure_window.window"),
                                       ({"min_requests": 50, "window": 10}, "exposure_window.min_requests"),
                                       ({"confidence": 1.0}, "exposure_window.confidence"),
                                       ({"min_ratio": 0}, "exposure_window.min_ratio"),
                                       ({"max_busy_share": 0}, "exposure_window.max_busy_share"),
                                       ({"refresh": 5}, "exposure_window.refresh"),
                                       ({"enabled": "yes"}, "exposure_window.enabled")])
def test_bad_keys_stop_startup_naming_the_key(table, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_policy({"version": "x", "exposure_window": table})


@pytest.mark.parametrize("value", [0, 0.5, 1.5, "0.05"])
def test_exposure_alpha_is_validated(value):
    with pytest.raises(ConfigError, match=r"exposure\.alpha"):
        parse_policy({"version": "x", "exposure": {"alpha": value}})


def test_defaults_are_the_documented_ones():
    from audit.policy import load_policy

    p = load_policy()
    assert p.exposure.alpha == 0.05
    w = p.exposure_window
    assert (w.enabled, w.window, w.min_requests, w.min_ratio, w.confidence) == (True, 2000, 100, 0.8, 0.95)
