"""Rolling user-group monitor: what each group of users has been receiving lately.

One observation per audited request (the user's policy-listed audit
attributes, the mean interest score of the returned items, the long-tail
share of the returned items, whether anything was removed for harm or
audience). Over a bounded window, Fairlearn's MetricFrame computes each
metric by group, for each attribute and each intersection. A group is
flagged only when (a) its value over the best group's is below the
policy's ratio, (b) both groups have enough requests, and (c) their
confidence intervals do not overlap - Wilson intervals for proportions,
a percentile bootstrap for the mean score - so noise in small windows does
not raise alarms.

MetricFrame costs tens of milliseconds, so it never runs on the request
path: requests append to the window (microseconds) and read the findings of
the last refresh; a background thread refreshes every `refresh_every`
requests, but pauses after each refresh so that it takes at most
`max_busy_share` of the process's time.

Fleet-wide window: when the audit store is shared (PostgreSQL, several
replicas), the window is not this process's: at each refresh the thread adds
this process's new observations to the store's shared window
(audit/store/postgres.py, `audit_windows`) and reads back the newest `window`
observations of every replica, so a finding reflects the fleet's traffic. It
then also refreshes every FLEET_REFRESH_S seconds whatever its own traffic.
Staleness: a replica's observations reach the shared window at its next
refresh (after `refresh_every` of its requests or FLEET_REFRESH_S, whichever
comes first, and no sooner than its busy-share pause allows), and the others
see them at their next refresh; so a finding can lag the fleet's traffic by
about two refresh periods (seconds under steady load; bench/README.md has a
measured figure). If the store cannot be reached the previous findings stay and
the observations are kept (up to one window) for the next refresh.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from audit.policy import MonitorPolicy
from recsys.domain import Finding

#: With a fleet-wide window: refresh at least this often (seconds), so a replica's findings follow the fleet
#: even while it serves few requests itself.
FLEET_REFRESH_S = 5.0

# Metric name -> (observation column, kind). Proportions get Wilson intervals over
# their pooled counts; means get a bootstrap over requests.
METRICS = {
    "interest_mean": "mean",
    "long_tail_share": "proportion",
    "harm_removal_rate": "proportion",
}
# For a removal rate "worse" is higher; the others are utilities where lower is worse.
HIGHER_IS_WORSE = {"harm_removal_rate"}


# Not frozen: two are built per audited request (the stage's, and the monitor's copy with only the
# monitored attributes), and a frozen dataclass's __init__ costs several times a plain one's.
@dataclass(slots=True)
class Observation:
    attributes: dict[str, str]
    interest_mean: float    # mean interest of returned items (nan when none returned)
    long_tail: int          # returned items in the catalog's long tail
    returned: int
    removed_harm: bool      # anything removed for harm or audience


def wilson(successes: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval (not in numpy/scipy-free deps; six lines beat a statsmodels dependency)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(centre - half), float(centre + half)


def _mean(y_true, y_pred, *, values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def _ratio_of_sums(y_true, y_pred, *, num, den) -> float:
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d > 0 else float("nan")


def _count(y_true, y_pred) -> float:
    return float(len(y_true))


@dataclass(frozen=True)
class GroupStat:
    """One group's value for one metric, with its interval and sample size (requests)."""

    table: str
    group: str
    metric: str
    value: float
    low: float
    high: float
    n: int


def encode_observation(o: Observation) -> list:
    """An observation as the shared window stores it (JSON; NaN as null)."""
    mean = o.interest_mean
    return [o.attributes, None if mean != mean else mean, o.long_tail, o.returned, o.removed_harm]


def decode_observation(v: list) -> Observation:
    return Observation(v[0], float("nan") if v[1] is None else float(v[1]), int(v[2]), int(v[3]), bool(v[4]))


class UserGroupMonitor:
    """`shared`: a window every replica writing to the same store adds to (WindowSource, from
    AuditLog.window_source); None keeps the window in this process."""

    def __init__(self, policy: MonitorPolicy, *, seed: int = 0, shared=None) -> None:
        self.policy = policy
        self._shared = shared
        self._unsent: deque[Observation] = deque(maxlen=policy.window)   # not yet in the shared window
        self._window: deque[Observation] = deque(maxlen=policy.window)
        # What requests recorded since the window was last read (guarded by _lock): Observations' fields, or
        # the references `record_returned` queues; bounded like the window, whose oldest entries they replace.
        self._inbox: deque[tuple] = deque(maxlen=policy.window)
        self._lock = threading.Lock()
        self._since_refresh = 0
        self._findings: tuple[Finding, ...] = ()
        self._stats: tuple[GroupStat, ...] = ()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = np.random.default_rng(seed)
        self._z = NormalDist().inv_cdf(0.5 + policy.confidence / 2)
        self.refreshes = 0
        self.busy_seconds = 0.0        # spent in background refreshes
        self.last_error: str | None = None
        keys = set(policy.attributes) | {a for combo in policy.intersections for a in combo}
        self._keys = frozenset(keys)

    # -- request path -----------------------------------------------------------------
    def observe(self, obs: Observation) -> None:
        """Record one request; cheap. Requests without any monitored attribute are skipped."""
        self.record(obs.attributes, obs.interest_mean, obs.long_tail, obs.returned, obs.removed_harm)

    def record(self, attributes: dict[str, str], interest_mean: float, long_tail: int, returned: int,
               removed_harm: bool) -> None:
        """`observe` from the values."""
        if not self._keys.isdisjoint(attributes):
            self._queue((attributes, interest_mean, long_tail, returned, removed_harm))

    def record_returned(self, attributes: dict[str, str], interest: np.ndarray, returned_at: np.ndarray,
                        cand_idx: np.ndarray, long_tail: np.ndarray, removed_harm: bool) -> None:
        """`record` for the audit stage, with the reduction left to the thread that reads the window: the
        request queues references to arrays nothing changes any more (each candidate's interest score, the
        returned positions in rank order, the candidates' catalog rows, the catalog's long-tail flag per row
        with False last for row -1), and the Observation is made from them at the next refresh. Why: the
        fancy indexing, the mean and the count cost ~9 us of a ~90 us audit on the request path."""
        if not self._keys.isdisjoint(attributes):
            self._queue((attributes, interest, returned_at, cand_idx, long_tail, removed_harm))

    def _queue(self, entry: tuple) -> None:
        with self._lock:
            self._inbox.append(entry)
            self._since_refresh += 1
            due = self._since_refresh >= self.policy.refresh_every
            if due:
                self._since_refresh = 0
        if due:
            self._ensure_thread()
            self._wake.set()
        elif self._shared is not None and self._thread is None:
            self._ensure_thread()   # the fleet's window is worth reading before this process's own 100 requests

    def _drain(self) -> list[Observation]:
        """Move what was recorded into the window (in order) and return the window."""
        with self._lock:
            entries = list(self._inbox)
            self._inbox.clear()
        keys = self._keys
        made = []
        for entry in entries:
            if len(entry) == 5:
                attributes, interest_mean, long_tail, returned, removed_harm = entry
            else:
                attributes, interest, at, cand_idx, flags, removed_harm = entry
                values = interest[at].tolist()     # summed in rank order, as the stage did before
                interest_mean = sum(values) / len(values) if values else float("nan")
                long_tail, returned = len(flags[cand_idx[at]].nonzero()[0]), len(values)
            made.append(Observation({k: v for k, v in attributes.items() if k in keys}, interest_mean, long_tail,
                                    returned, removed_harm))
        if self._shared is not None:
            # Ours go into the fleet's window; what comes back is the newest `window` of every replica's. On a
            # store error ours are kept for the next refresh (and the findings stay as they were).
            self._unsent.extend(made)
            window = self._shared.exchange(list(self._unsent))
            self._unsent.clear()
            with self._lock:
                self._window = deque(window, maxlen=self.policy.window)
            return window
        with self._lock:
            self._window.extend(made)
            return list(self._window)

    def findings(self) -> tuple[Finding, ...]:
        """Disparities found by the last refresh (attached to every response while they hold)."""
        return self._findings

    def stats(self) -> tuple[GroupStat, ...]:
        return self._stats

    # -- background ----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="user-group-monitor", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        share = self.policy.max_busy_share
        while not self._stop.is_set():
            self._wake.wait(FLEET_REFRESH_S if self._shared is not None else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                self.refresh()
            except Exception as exc:  # a monitor bug must not kill serving; it is reported instead
                self.last_error = f"{type(exc).__name__}: {exc}"
            # A refresh over a full window costs ~0.5 s of GIL-holding pandas work on the 2-core dev VM,
            # longer than the 100 requests that trigger it take: under load it ran back to back, competing
            # for the GIL with every request. Pausing keeps
            # its share of the process's time at most max_busy_share; requests that arrive meanwhile
            # set _wake, so the next refresh follows the pause.
            spent = time.perf_counter() - t0
            self.busy_seconds += spent
            if self._stop.wait(spent * (1.0 - share) / share):
                return

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def refresh(self) -> tuple[Finding, ...]:
        """Recompute group metrics over the window (synchronously) and swap in the new findings."""
        window = self._drain()
        stats: list[GroupStat] = []
        findings: list[Finding] = []
        if window:
            frame = pd.DataFrame({
                "interest_mean": [o.interest_mean for o in window],
                "long_tail": [o.long_tail for o in window],
                "returned": [o.returned for o in window],
                "removed": [1.0 if o.removed_harm else 0.0 for o in window],
            })
            tables = [(a,) for a in self.policy.attributes] + [tuple(c) for c in self.policy.intersections]
            for table in tables:
                cols = {a: [o.attributes.get(a) for o in window] for a in table}
                mask = np.array([all(cols[a][i] is not None for a in table) for i in range(len(window))])
                if not mask.any():
                    continue
                t_stats = self._table(table, frame[mask].reset_index(drop=True),
                                      {a: [v for v, m in zip(cols[a], mask) if m] for a in table})
                stats.extend(t_stats)
                findings.extend(self._judge(t_stats, len(window)))
        self._stats = tuple(stats)
        self._findings = tuple(findings)
        self.refreshes += 1
        return self._findings

    def _table(self, table: tuple[str, ...], frame: pd.DataFrame, cols: dict[str, list[str]]) -> list[GroupStat]:
        name = "×".join(table)
        labels = pd.Series([" & ".join(f"{a}={cols[a][i]}" for a in table) for i in range(len(frame))],
                           name=name)
        mf = MetricFrame(
            metrics={"interest_mean": _mean, "long_tail_share": _ratio_of_sums,
                     "harm_removal_rate": _ratio_of_sums, "n": _count},
            y_true=np.zeros(len(frame)), y_pred=np.zeros(len(frame)), sensitive_features=labels,
            sample_params={"interest_mean": {"values": frame["interest_mean"].to_numpy()},
                           "long_tail_share": {"num": frame["long_tail"].to_numpy(),
                                               "den": frame["returned"].to_numpy()},
                           "harm_removal_rate": {"num": frame["removed"].to_numpy(),
                                                 "den": np.ones(len(frame))}})
        out: list[GroupStat] = []
        codes = labels.to_numpy()
        for group, row in mf.by_group.iterrows():
            sel = codes == group
            n = int(row["n"])
            # interest: percentile bootstrap of the group mean over its requests
            vals = frame["interest_mean"].to_numpy()[sel]
            vals = vals[~np.isnan(vals)]
            if len(vals):
                boots = vals[self._rng.integers(0, len(vals), size=(self.policy.n_boot, len(vals)))].mean(axis=1)
                a = (1 - self.policy.confidence) / 2
                lo, hi = np.quantile(boots, [a, 1 - a])
            else:
                lo = hi = float("nan")
            out.append(GroupStat(name, str(group), "interest_mean", float(row["interest_mean"]), float(lo),
                                 float(hi), n))
            lt, ret = frame["long_tail"].to_numpy()[sel].sum(), frame["returned"].to_numpy()[sel].sum()
            out.append(GroupStat(name, str(group), "long_tail_share", float(row["long_tail_share"]),
                                 *wilson(float(lt), float(ret), self._z), n))
            rem = frame["removed"].to_numpy()[sel].sum()
            out.append(GroupStat(name, str(group), "harm_removal_rate", float(row["harm_removal_rate"]),
                                 *wilson(float(rem), float(n), self._z), n))
        return out

    def _judge(self, stats: Iterable[GroupStat], window: int) -> list[Finding]:
        pol = self.policy
        out: list[Finding] = []
        by_metric: dict[str, list[GroupStat]] = {}
        for s in stats:
            if s.n >= pol.min_samples and not np.isnan(s.value):
                by_metric.setdefault(s.metric, []).append(s)
        for metric, rows in by_metric.items():
            if len(rows) < 2:
                continue
            worse_high = metric in HIGHER_IS_WORSE
            best = min(rows, key=lambda s: s.value) if worse_high else max(rows, key=lambda s: s.value)
            for s in rows:
                if s is best:
                    continue
                # ratio < 1 means this group is worse off than the best group
                if worse_high:
                    ratio = best.value / s.value if s.value > 0 else 1.0
                    separated = s.low > best.high
                else:
                    ratio = s.value / best.value if best.value > 0 else 1.0
                    separated = s.high < best.low
                if ratio < pol.min_ratio and separated:
                    out.append(Finding(
                        "USER_GROUP_DISPARITY", f"{metric}_ratio", float(ratio), pol.min_ratio, s.group,
                        f"over the last {window} requests{' of the fleet' if self._shared is not None else ''}, users with {s.group} get {metric} {s.value:.3f} "
                        f"vs {best.value:.3f} for {best.group} ({ratio:.2f}x; {int(pol.confidence * 100)}% "
                        f"intervals [{s.low:.3f}, {s.high:.3f}] and [{best.low:.3f}, {best.high:.3f}] "
                        f"do not overlap; n={s.n} and {best.n})"))
        return out
