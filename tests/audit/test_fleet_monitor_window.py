"""One monitor for the fleet: with a PostgreSQL store, each replica's user-group monitor and amortised
exposure window read a window that holds every replica's traffic, so a disparity that no replica sees in its
own share of the traffic is found by all of them."""
import numpy as np

from audit.exposure_window import ExposureWindowMonitor, decode_response, encode_response
from audit.log import AuditLog
from audit.monitor import Observation, UserGroupMonitor, decode_observation, encode_observation
from audit.policy import ExposureWindowPolicy, MonitorPolicy


def _logs(url, tmp_path, n=2):
    return [AuditLog(url, salt=b"s", journal_dir=tmp_path / f"j{i}", writer=f"replica-{i}/1", shared_windows=True)
            for i in range(n)]


def test_user_group_monitor_sees_the_fleet(pg_url, tmp_path):
    pol = MonitorPolicy(window=1000, attributes=("gender",), intersections=(), min_samples=60, refresh_every=10**9)
    logs = _logs(pg_url, tmp_path)
    mons = [UserGroupMonitor(pol, shared=log.window_source("monitor", pol.window, encode_observation,
                                                            decode_observation)) for log in logs]
    # Each replica serves 40 F and 40 M users: below min_samples (60) on its own, 80 each across the fleet.
    for mon in mons:
        for i in range(40):
            mon.observe(Observation({"gender": "F"}, 0.5, 1, 10, False))
            mon.observe(Observation({"gender": "M"}, 0.5, 5, 10, False))
    alone = UserGroupMonitor(pol)
    for i in range(40):
        alone.observe(Observation({"gender": "F"}, 0.5, 1, 10, False))
        alone.observe(Observation({"gender": "M"}, 0.5, 5, 10, False))
    assert alone.refresh() == ()                    # one replica's share: not enough evidence
    mons[0].refresh()                               # replica 0 adds its share first, sees only it
    found = mons[1].refresh()                       # replica 1 sees both shares
    assert {(f.code, f.group) for f in found} == {("USER_GROUP_DISPARITY", "gender=F")}
    assert "of the fleet" in found[0].message
    assert {(f.code, f.group) for f in mons[0].refresh()} == {("USER_GROUP_DISPARITY", "gender=F")}
    assert {s.n for s in mons[0].stats()} == {80}
    for mon in mons:
        mon.close()
    for log in logs:
        log.close()


def test_exposure_window_sees_the_fleet(pg_url, tmp_path):
    pol = ExposureWindowPolicy(window=2000, min_requests=150, refresh_every=10**9)
    logs = _logs(pg_url, tmp_path, 3)
    mons = [ExposureWindowMonitor(pol, shared=log.window_source("exposure_window", pol.window, encode_response,
                                                                 decode_response)) for log in logs]
    rng = np.random.default_rng(0)
    for mon in mons:                                # 100 biased responses per replica, 300 in the fleet
        for _ in range(100):
            groups = rng.permutation([0] * 50 + [1] * 50)
            order = np.argsort(rng.random(100) + 0.35 * groups)[:10]
            mon.record(["a", "b"], [50, 50], groups[order].tolist())
    for mon in mons:
        mon.refresh()
    found = mons[0].refresh()
    assert [(f.code, f.group) for f in found] == [("AMORTISED_EXPOSURE_DISPARITY", "b")]
    assert {s.group: s.responses for s in mons[0].stats()} == {"a": 300, "b": 300}
    for mon in mons:
        mon.close()
    for log in logs:
        log.close()


def test_a_sqlite_log_keeps_the_window_in_the_process(tmp_path):
    log = AuditLog(tmp_path / "a.db", salt=b"s", shared_windows=True)
    assert log.window_source("monitor", 10, encode_observation, decode_observation) is None
    log.close()
