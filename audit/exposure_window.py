"""Amortised exposure: is an item group under-exposed across many responses?

Equity of attention (Biega et al., 2018) holds that provider-side fairness is
a property of many rankings, not one: a group that loses a little exposure
in every list is never significantly short in any single top-10, yet loses a
lot in sum. So, per item group, over the last `window` audited responses:

    ratio = sum of the group's position-weighted exposure (1/log2(1+rank))
            / sum of what a group-blind ranking of the same candidates gives
              in expectation (each response's total exposure x the group's
              share of its eligible candidates)

1.0 is what ignoring groups gives on average; below 1 the group got less
attention than its share of candidates. The interval is the ratio
estimator's delta-method (linearised) interval over responses, which treats
each response as one independent draw (exposure within a response is not
independent across groups, so responses, not items, are the unit). A group
is reported (AMORTISED_EXPOSURE_DISPARITY on the responses that follow, and
as a Prometheus series) when it appeared in at least `min_requests` of the
window's responses and the whole interval lies below `min_ratio`: evidence
that the shortfall is larger than the policy tolerates, not merely that it
is below 1. The p-value carried is the one-sided test of ratio >= min_ratio.

Like the user-group monitor (audit/monitor.py), none of this runs on the
request path: a response queues references to what the audit stage already
computed (group labels, eligible counts per group, the group of each
returned rank) and a background thread reduces and judges the window every
`refresh_every` responses, taking at most `max_busy_share` of the process.

With a shared audit store (PostgreSQL, several replicas) the window covers the
fleet: each refresh adds this process's reduced responses to the store's shared
window and judges the newest `window` responses of every replica, refreshing
also every FLEET_REFRESH_S seconds; how stale that can be is said in
audit/monitor.py.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

from audit.monitor import FLEET_REFRESH_S
from audit.policy import ExposureWindowPolicy
from recsys.domain import Finding


def encode_response(r: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    return {g: [o, e] for g, (o, e) in r.items()}


def decode_response(v: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    return {g: (float(o), float(e)) for g, (o, e) in v.items()}


@dataclass(frozen=True)
class WindowStat:
    """One group's amortised exposure over the window."""

    group: str
    responses: int          # responses of the window in which the group had eligible candidates
    exposure: float         # summed position-weighted exposure it got
    expected: float         # summed group-blind expectation
    ratio: float
    low: float
    high: float
    p_value: float          # one-sided, H0: ratio >= min_ratio


def ratio_interval(observed: list[float], expected: list[float], z: float) -> tuple[float, float, float, float]:
    """(ratio, standard error, low, high) of sum(observed) / sum(expected) over units, by the delta method:
    var = sum((o_i - r e_i)^2) / (n (n - 1) mean(e)^2). Cochran's ratio estimator; no library ships it for
    plain lists (statsmodels' would be a new dependency for one formula)."""
    n = len(observed)
    so, se = math.fsum(observed), math.fsum(expected)
    if n == 0 or se <= 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    r = so / se
    if n < 2:
        return r, float("inf"), float("-inf"), float("inf")
    mean_e = se / n
    resid = math.fsum((o - r * e) ** 2 for o, e in zip(observed, expected))
    stderr = math.sqrt(resid / (n * (n - 1))) / mean_e
    return r, stderr, r - z * stderr, r + z * stderr


class ExposureWindowMonitor:
    """`shared`: a window every replica writing to the same store adds to (AuditLog.window_source); None
    keeps the window in this process."""

    def __init__(self, policy: ExposureWindowPolicy, *, shared=None) -> None:
        self.policy = policy
        self._shared = shared
        self._unsent: deque[dict[str, tuple[float, float]]] = deque(maxlen=policy.window)
        self._inbox: deque[tuple] = deque(maxlen=policy.window)
        # Reduced responses, oldest first: {group: (exposure, expected)} per response.
        self._window: deque[dict[str, tuple[float, float]]] = deque(maxlen=policy.window)
        self._lock = threading.Lock()
        self._since_refresh = 0
        self._findings: tuple[Finding, ...] = ()
        self._stats: tuple[WindowStat, ...] = ()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._z = NormalDist().inv_cdf(0.5 + policy.confidence / 2)
        self._discounts: list[float] = []
        self.refreshes = 0
        self.busy_seconds = 0.0
        self.last_error: str | None = None

    # -- request path -----------------------------------------------------------------
    def record(self, labels: list[str], sizes: list[int], returned_codes: list[int]) -> None:
        """One audited response: the group labels, eligible candidates per group code, and the group code of
        each returned item in rank order. References only (nothing here is changed afterwards)."""
        with self._lock:
            self._inbox.append((labels, sizes, returned_codes))
            self._since_refresh += 1
            due = self._since_refresh >= self.policy.refresh_every
            if due:
                self._since_refresh = 0
        if due:
            self._ensure_thread()
            self._wake.set()
        elif self._shared is not None and self._thread is None:
            self._ensure_thread()

    def findings(self) -> tuple[Finding, ...]:
        return self._findings

    def stats(self) -> tuple[WindowStat, ...]:
        return self._stats

    # -- reduction and judgement ---------------------------------------------------------
    def _disc(self, k: int) -> list[float]:
        if len(self._discounts) < k:
            self._discounts = [1.0 / math.log2(1.0 + r) for r in range(1, max(k, 64) + 1)]
        return self._discounts

    def _reduce(self, labels: list[str], sizes: list[int], returned: list[int]) -> dict[str, tuple[float, float]]:
        d = self._disc(len(returned))
        got = [0.0] * len(sizes)
        for c, x in zip(returned, d):
            got[c] += x
        total = math.fsum(d[: len(returned)])
        n = sum(sizes)
        return {labels[c]: (got[c], total * m / n) for c, m in enumerate(sizes) if m}

    def refresh(self) -> tuple[Finding, ...]:
        """Reduce what was queued into the window and judge it (synchronously)."""
        with self._lock:
            entries = list(self._inbox)
            self._inbox.clear()
        reduced = [self._reduce(*e) for e in entries]
        if self._shared is not None:
            self._unsent.extend(reduced)
            window = self._shared.exchange(list(self._unsent))
            self._unsent.clear()
            with self._lock:
                self._window = deque(window, maxlen=self.policy.window)
        else:
            with self._lock:
                self._window.extend(reduced)
                window = list(self._window)
        pol = self.policy
        per_group: dict[str, tuple[list[float], list[float]]] = {}
        for resp in window:
            for g, (o, e) in resp.items():
                obs, exp = per_group.setdefault(g, ([], []))
                obs.append(o)
                exp.append(e)
        stats: list[WindowStat] = []
        findings: list[Finding] = []
        for g in sorted(per_group):
            obs, exp = per_group[g]
            r, se, lo, hi = ratio_interval(obs, exp, self._z)
            if se > 0 and math.isfinite(se):
                p = NormalDist().cdf((r - pol.min_ratio) / se)
            else:
                p = 0.0 if r < pol.min_ratio else 1.0
            st = WindowStat(g, len(obs), math.fsum(obs), math.fsum(exp), r, lo, hi, p)
            stats.append(st)
            if len(obs) >= pol.min_requests and hi < pol.min_ratio:
                findings.append(Finding(
                    "AMORTISED_EXPOSURE_DISPARITY", "amortised_exposure_ratio", r, pol.min_ratio, g,
                    f"over the last {len(window)} responses{' of the fleet' if self._shared is not None else ''}, group {g!r} (in {len(obs)} of them) got {r:.2f}x the "
                    f"position-weighted exposure a group-blind ranking of the same candidates gives; "
                    f"{int(round(pol.confidence * 100))}% interval [{lo:.2f}, {hi:.2f}] lies below "
                    f"{pol.min_ratio:g}", p_value=p, alpha=(1 - pol.confidence) / 2))
        self._stats = tuple(stats)
        self._findings = tuple(findings)
        self.refreshes += 1
        return self._findings

    # -- background ----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="exposure-window", daemon=True)
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
            spent = time.perf_counter() - t0
            self.busy_seconds += spent
            # As the user-group monitor: pause so that refreshes take at most max_busy_share of the time.
            if self._stop.wait(spent * (1.0 - share) / share):
                return

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
