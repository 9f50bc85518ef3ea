"""The rolling user-group monitor: MetricFrame values, intervals deciding "enough", bounded window."""
import numpy as np
import pytest

from audit.monitor import Observation, UserGroupMonitor, wilson
from audit.policy import MonitorPolicy


def _pol(**kw):
    base = dict(window=1000, attributes=("gender", "age_band"), intersections=(("gender", "age_band"),),
                min_samples=30, min_ratio=0.8, confidence=0.95, refresh_every=10_000, n_boot=200)
    return MonitorPolicy(**(base | kw))


def _feed(mon, gender, n, long_tail, returned=10, interest=0.5, removed_every=0, age="25-34"):
    for i in range(n):
        mon.observe(Observation({"gender": gender, "age_band": age}, interest, long_tail, returned,
                                bool(removed_every) and i % removed_every == 0))


def test_clear_long_tail_disparity_is_found_with_intersection():
    mon = UserGroupMonitor(_pol())
    _feed(mon, "F", 100, long_tail=1)
    _feed(mon, "M", 100, long_tail=5)
    found = mon.refresh()
    lt = [f for f in found if f.metric == "long_tail_share_ratio"]
    assert {f.group for f in lt} == {"gender=F", "gender=F & age_band=25-34"}
    assert all(f.code == "USER_GROUP_DISPARITY" and f.value == pytest.approx(0.2) for f in lt)


def test_small_samples_raise_nothing():
    mon = UserGroupMonitor(_pol())
    _feed(mon, "F", 20, long_tail=1)
    _feed(mon, "M", 20, long_tail=5)
    assert mon.refresh() == ()


def test_ratio_below_threshold_but_overlapping_intervals_raises_nothing():
    # 10/30 vs 15/30 long-tail items: ratio 0.67 < 0.8, but the 95 % Wilson intervals
    # ([0.19, 0.51] and [0.33, 0.67]) overlap, so this is not yet evidence.
    mon = UserGroupMonitor(_pol())
    for i in range(30):
        mon.observe(Observation({"gender": "F"}, 0.5, int(i < 10), 1, False))
        mon.observe(Observation({"gender": "M"}, 0.5, int(i < 15), 1, False))
    mon.refresh()
    stats = {s.group: s for s in mon.stats() if s.metric == "long_tail_share"}
    assert stats["gender=F"].value / stats["gender=M"].value < 0.8
    assert stats["gender=F"].high > stats["gender=M"].low
    assert not [f for f in mon.findings() if f.metric == "long_tail_share_ratio"]
    # Ten times the evidence at the same rates is enough.
    for i in range(270):
        mon.observe(Observation({"gender": "F"}, 0.5, int(i % 3 == 0), 1, False))
        mon.observe(Observation({"gender": "M"}, 0.5, int(i % 2 == 0), 1, False))
    assert [f.group for f in mon.refresh() if f.metric == "long_tail_share_ratio"] == ["gender=F"]


def test_removal_rate_higher_is_worse():
    mon = UserGroupMonitor(_pol())
    _feed(mon, "F", 200, long_tail=3, removed_every=2)
    _feed(mon, "M", 200, long_tail=3)
    found = [f for f in mon.refresh() if f.metric == "harm_removal_rate_ratio"]
    assert [f.group for f in found if "&" not in f.group] == ["gender=F"]


def test_values_match_a_direct_computation():
    mon = UserGroupMonitor(_pol(intersections=()))
    rng = np.random.default_rng(0)
    obs = [Observation({"gender": rng.choice(["F", "M", "X"])}, float(rng.random()), int(rng.integers(0, 6)), 5,
                       bool(rng.random() < 0.1)) for _ in range(300)]
    for o in obs:
        mon.observe(o)
    mon.refresh()
    for s in mon.stats():
        g = s.group.split("=")[1]
        mine = [o for o in obs if o.attributes["gender"] == g]
        expect = {"interest_mean": np.mean([o.interest_mean for o in mine]),
                  "long_tail_share": sum(o.long_tail for o in mine) / sum(o.returned for o in mine),
                  "harm_removal_rate": np.mean([o.removed_harm for o in mine])}[s.metric]
        assert s.value == pytest.approx(expect, abs=1e-12)
        assert s.low <= s.value <= s.high and s.n == len(mine)


def test_window_is_bounded_and_old_requests_age_out():
    mon = UserGroupMonitor(_pol(window=200))
    _feed(mon, "F", 100, long_tail=1)
    _feed(mon, "M", 100, long_tail=5)
    assert mon.refresh()
    _feed(mon, "F", 100, long_tail=5)
    _feed(mon, "M", 100, long_tail=5)
    assert mon.refresh() == ()


def test_requests_without_monitored_attributes_are_ignored():
    mon = UserGroupMonitor(_pol())
    mon.observe(Observation({"religion": "x"}, 0.5, 1, 10, False))
    mon.refresh()
    assert mon.stats() == ()


def test_background_refresh_runs_every_n_requests():
    mon = UserGroupMonitor(_pol(refresh_every=50))
    _feed(mon, "F", 100, long_tail=1)
    _feed(mon, "M", 100, long_tail=5)
    for _ in range(100):
        if mon.findings():
            break
        import time
        time.sleep(0.05)
    mon.close()
    assert mon.refreshes >= 1 and mon.findings()


def test_wilson_interval_known_value():
    lo, hi = wilson(5, 10, 1.959963984540054)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


def test_background_refresh_keeps_to_its_busy_share(monkeypatch):
    """Under a steady stream of requests the refresh thread pauses between refreshes, so it holds the GIL
    for at most max_busy_share of the time (a slow refresh is simulated)."""
    import time

    mon = UserGroupMonitor(_pol(refresh_every=1, max_busy_share=0.25))

    def slow_refresh():
        time.sleep(0.05)
        mon.refreshes += 1
        return ()

    monkeypatch.setattr(mon, "refresh", slow_refresh)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        _feed(mon, "F", 1, long_tail=1)
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    mon.close()
    # Unthrottled it would refresh ~20 times (0.05 s each, back to back); at 25 % about 5.
    assert 2 <= mon.refreshes <= 7
    assert mon.busy_seconds <= 0.25 * elapsed + 0.06


def test_max_busy_share_is_validated():
    from audit.policy import ConfigError, _monitor

    for bad in (0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="monitor.max_busy_share"):
            _monitor({"max_busy_share": bad})


def test_record_returned_makes_the_observation_record_would():
    """The audit stage queues references (interest per candidate, returned positions, catalog rows, long-tail
    flags); the monitor reduces them when it reads its window, to the same values `record` takes, in the
    order requests recorded them, unmonitored attributes dropped."""
    rng = np.random.default_rng(0)
    flags = np.append(rng.random(50) < 0.3, False)           # catalog long-tail flags, False for row -1
    direct, deferred = UserGroupMonitor(_pol(window=60)), UserGroupMonitor(_pol(window=60))
    for i in range(80):                                       # more than the window: the oldest age out
        interest = rng.random(20)
        cand = rng.integers(-1, 50, size=20)
        at = rng.permutation(20)[: int(rng.integers(0, 6))]
        attrs = {"gender": "FM"[i % 2], "age_band": "25-34", "not_monitored": "x"}
        vals = interest[at].tolist()
        mean = sum(vals) / len(vals) if vals else float("nan")
        direct.record(attrs, mean, len(flags[cand[at]].nonzero()[0]), len(at), i % 7 == 0)
        deferred.record_returned(attrs, interest, at, cand, flags, i % 7 == 0)
    assert deferred.refresh() == direct.refresh()
    a, b = direct._drain(), deferred._drain()
    assert len(a) == len(b) == 60 and "not_monitored" not in b[0].attributes
    assert [(o.attributes, o.long_tail, o.returned, o.removed_harm) for o in a] == \
        [(o.attributes, o.long_tail, o.returned, o.removed_harm) for o in b]
    np.testing.assert_array_equal([o.interest_mean for o in a], [o.interest_mean for o in b])
    assert deferred.stats() == direct.stats()
