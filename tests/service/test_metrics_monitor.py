"""The user-group monitor's disparities are exported as Prometheus series."""
from prometheus_client import generate_latest

from audit.monitor import Observation, UserGroupMonitor
from audit.policy import MonitorPolicy
from service.metrics import Metrics


def test_active_disparity_and_group_values_are_scraped():
    mon = UserGroupMonitor(MonitorPolicy(attributes=("gender",), intersections=(), min_samples=30,
                                         refresh_every=10_000))
    for i in range(100):
        mon.observe(Observation({"gender": "F"}, 0.5, 1, 10, False))
        mon.observe(Observation({"gender": "M"}, 0.5, 5, 10, False))
    mon.refresh()
    m = Metrics()
    m.watch_monitor(lambda: mon)
    text = generate_latest(m.registry).decode()
    assert 'ethicrec_user_group_disparity{group="gender=F",metric="long_tail_share_ratio"} 0.2' in text
    assert 'ethicrec_user_group_metric{group="gender=M",metric="long_tail_share",table="gender"} 0.5' in text
    assert "ethicrec_user_group_monitor_refreshes_total 1.0" in text


def test_no_monitor_exports_empty_families():
    m = Metrics()
    m.watch_monitor(lambda: None)
    assert "ethicrec_user_group_disparity" in generate_latest(m.registry).decode()
