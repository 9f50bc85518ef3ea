"""The audit stage: runs inside the request path, before the response exists.

Order: harm and audience checks on every candidate (ENFORCE removes what the
policy forbids; the harm model's judgements come from the harm stage just
before, audit/harm_stage.py, so its inference is not on this stage's time
budget) -> top-k of what remains -> exposure disparity between item
groups (ENFORCE: fair re-ranking within the policy's utility bound, then the
findings describe the list actually returned) -> the rolling user-group
monitor's current findings -> verdict -> audit log record -> the request is
added to the monitor's window. Any exception inside, or running past the
policy's time budget, is re-raised as AuditFailure carrying the policy's
failure status: the failure mode is "closed", so an unaudited ranking never
leaves.
"""
from __future__ import annotations

import itertools
import os
import re
import time

import numpy as np

from audit.exposure_significance import ExposureTester
from audit.exposure_window import ExposureWindowMonitor, decode_response, encode_response
from audit.fairness import GroupExposure, exposure_by_group_reference, exposure_selected, group_codes
from audit.harm import normalise
from audit.harm_stage import HarmScorer
from audit.log import AuditRecord, CandidateCodes
from audit.monitor import UserGroupMonitor, decode_observation, encode_observation
from audit.policy import Policy, answer_identity
from audit.rerank import fair_rerank
from audit.sink import AuditSink
from recsys.artifacts import Artifacts
from recsys.domain import AuditMode, AuditResult, Finding, IdCandidates, RemovedItem, Verdict
from recsys.errors import AuditFailure
from recsys.pipeline import StageBase, StageResources


class AuditStage(StageBase):
    name = "audit"
    inputs = ("request_id", "item_ids", "cand_idx", "texts", "groups", "order", "scores", "interest", "harm")
    outputs = ("final", "removed", "audit")

    def __init__(self, artifacts: Artifacts, policy: Policy, log: AuditSink, *,
                 exposure_metrics: str = "fast") -> None:
        if exposure_metrics not in ("fast", "fairlearn"):
            raise ValueError(f"exposure_metrics must be 'fast' or 'fairlearn'; got {exposure_metrics!r}")
        # "fairlearn" computes each request's group metrics with MetricFrame (the reference; ~100x slower,
        # bench/audit_overhead.py).
        self.policy = policy
        self.log = log
        self.model_version = artifacts.version
        self.harm_threshold = policy.harm.threshold if policy.harm.threshold is not None else artifacts.harm.threshold
        self.harm = HarmScorer(artifacts, threshold=self.harm_threshold, policy=policy.harm)
        self._p_name = getattr(artifacts.harm, "score_name", "P(harmful)")
        self._log_attrs = frozenset(policy.log.audit_attributes)
        self._block = [(re.compile(r"(?<!\w)" + re.escape(t.term) + r"(?!\w)"), t) for t in policy.harm.blocklist]
        # Long-tail flag per catalog row, False appended so that row -1 (an unknown item) reads False.
        self._long_tail = np.append(artifacts.catalog.stats.group == "long_tail", False)
        self._budget_s = policy.time_budget_ms / 1000.0
        # With a store shared by several replicas (PostgreSQL) both windows cover the fleet (audit/monitor.py).
        shared = getattr(log, "window_source", None)
        self.monitor = (UserGroupMonitor(policy.monitor, shared=shared and shared(
            "monitor", policy.monitor.window, encode_observation, decode_observation))
            if policy.monitor.enabled else None)
        self.exposure_window = (ExposureWindowMonitor(policy.exposure_window, shared=shared and shared(
            "exposure_window", policy.exposure_window.window, encode_response, decode_response))
            if policy.exposure_window.enabled and policy.exposure.enabled else None)
        self._tester = ExposureTester(policy.exposure.alpha)
        # Catalog groups coded once, so a request of catalog items is coded by one lookup.
        labels, codes = group_codes(artifacts.catalog.stats.group)
        self._cat_label_list, self._cat_codes = labels.tolist(), codes
        self._reference = exposure_metrics == "fairlearn"
        # audit_id: a random per-stage prefix and a counter, unique without an os.urandom call (a GIL release
        # point) per request.
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count()
        self._insufficient: dict[tuple, Finding] = {}
        self._findings: dict[tuple, Finding] = {}
        self._records: dict[int, tuple[Finding, dict]] = {}

    def __call__(self, ctx) -> None:
        try:
            self._audit(ctx)
        except _OverBudget as exc:
            raise AuditFailure(f"audit exceeded its time budget ({exc}); response withheld",
                               self.policy.failure_status) from None
        except Exception as exc:
            # Fail closed: the caller gets an error, never the unaudited list.
            raise AuditFailure(f"audit failed ({type(exc).__name__}); response withheld",
                               self.policy.failure_status) from exc

    def _check_budget(self, t0: float, step: str) -> None:
        elapsed = time.perf_counter() - t0
        if elapsed > self._budget_s:
            raise _OverBudget(f"{elapsed * 1000:.1f} ms > {self.policy.time_budget_ms:g} ms after {step}")

    def identity(self) -> dict:
        return answer_identity(self.policy)

    def resources(self) -> StageResources:
        """The harm scorer's cache, the rolling monitors the policy turns on, and the sink it writes to."""
        monitors = {name: mon for name, mon in (("user_groups", self.monitor),
                                                ("exposure_window", self.exposure_window)) if mon is not None}
        return StageResources(caches={"harm_scores": self.harm.cache}, monitors=monitors, sinks=(self.log,))

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
        if self.exposure_window is not None:
            self.exposure_window.close()

    def _audit(self, ctx) -> None:
        t0 = time.perf_counter()
        req = ctx.request
        pol = self.policy
        enforce = req.audit_mode is AuditMode.ENFORCE
        findings: list[Finding] = []
        removed: list[RemovedItem] = []
        drop: dict[int, str] = {}   # position -> reason of each removed candidate

        harm_details: dict[int, dict] = {}   # finding index -> category and span, for the audit record
        if pol.harm.enabled:
            # The harm stage's judgements (audit/harm_stage.py): the model ran there, not on this budget.
            for i, p, category, span in ctx.harm:
                iid = ctx.item_ids[i]
                because = f"; driven by: {', '.join(repr(w) for w in span)}" if span else ""
                msg = f"item text classified {category} ({self._p_name}={p:.3f}){because}"
                harm_details[len(findings)] = {"category": category, "span": list(span)}
                findings.append(Finding("HARMFUL_TEXT", "harm_probability", p, self.harm_threshold, iid, msg))
                if enforce and pol.harm.action_for(category) == "ENFORCE":
                    drop[i] = "HARMFUL_TEXT"
                    removed.append(RemovedItem(iid, "HARMFUL_TEXT", msg))
            if self._block:
                for i in range(len(ctx.item_ids)):
                    if i in drop:
                        continue
                    text = normalise(self.harm.text(i, ctx.cand_idx, ctx.texts))
                    for rx, term in self._block:
                        if rx.search(text):
                            iid = ctx.item_ids[i]
                            msg = f"item text contains a blocklisted {term.category} term"
                            findings.append(Finding("BLOCKLISTED_TERM", "blocklist_match", 1.0, 1.0, iid, msg))
                            if enforce and pol.harm.action_for(term.category) == "ENFORCE":
                                drop[i] = "BLOCKLISTED_TERM"
                                removed.append(RemovedItem(iid, "BLOCKLISTED_TERM", msg))
                            break
            self._check_budget(t0, "harm")

        # Candidates given as ids alone carry no attributes, so no audience rule can match one of them.
        if pol.audience.enabled and pol.audience.rules and type(req.candidates) is not IdCandidates:
            attrs = req.user.audit_attributes
            for rule in pol.audience.rules:
                if attrs.get(rule.user_attribute) not in rule.user_values:
                    continue
                for i, cand in enumerate(req.candidates):
                    value = cand.attributes.get(rule.item_attribute)
                    if value in rule.item_values and i not in drop:
                        msg = (f"{rule.item_attribute}={value} is not allowed for "
                               f"{rule.user_attribute}={attrs.get(rule.user_attribute)}")
                        findings.append(Finding("AUDIENCE_RESTRICTED", rule.item_attribute, 1.0, 1.0,
                                                cand.item_id, msg))
                        if enforce and pol.audience.action == "ENFORCE":
                            drop[i] = "AUDIENCE_RESTRICTED"
                            removed.append(RemovedItem(cand.item_id, "AUDIENCE_RESTRICTED", msg))

        order = ctx.order.tolist()
        eligible = [p for p in order if p not in drop] if drop else order
        final = eligible[: req.top_k]
        # The returned positions as an index array, for the lookups below: a slice of the ranker's order
        # when nothing was removed (no list -> array conversion per lookup).
        final_at = ctx.order[: req.top_k] if not drop else np.array(final, dtype=np.intp)
        names, coded = self._group_coding(ctx)
        changed = False     # the returned list differs from the model's top-k of the eligible candidates
        window_entry = None
        if pol.exposure.enabled and eligible:
            exp_findings, judged, window_entry = self._exposure(ctx, names, coded, eligible, final, final_at,
                                                                bool(drop))
            if (enforce and pol.exposure.action == "ENFORCE"
                    and any(f.code == "EXPOSURE_DISPARITY" for f in exp_findings)):
                new_final, rerank_findings = self._rerank(ctx, eligible, judged)
                findings.extend(rerank_findings)
                if new_final != final:
                    changed = True
                    final = new_final
                    final_at = np.array(final, dtype=np.intp)
                    exp_findings, _, window_entry = self._exposure(ctx, names, coded, eligible, final, final_at,
                                                                   bool(drop))
            findings.extend(exp_findings)
        self._check_budget(t0, "exposure")

        if self.monitor is not None:
            findings.extend(self.monitor.findings())
        if self.exposure_window is not None:
            findings.extend(self.exposure_window.findings())

        # ENFORCED only when the audit changed what the caller gets: a candidate removed, or the top-k
        # re-ordered / replaced. A re-ranking that was skipped or changed nothing is FLAGGED with its reason.
        verdict = Verdict.ENFORCED if removed or changed else (Verdict.FLAGGED if findings else Verdict.PASS)
        t_log = time.perf_counter()
        audit_id = f"{self._id_prefix}{next(self._id_counter):016x}"
        self.log.append(AuditRecord(
            audit_id=audit_id, ts=time.time(), request_id=ctx.request_id, model_version=self.model_version,
            policy_version=pol.version, user_hash=self.log.hash_user(req.user.user_id),
            # `_value_`: the member's value as stored; the `.value` property is a Python-level descriptor call.
            audit_mode=req.audit_mode._value_, verdict=verdict._value_, top_k=req.top_k,
            returned_ids=list(map(ctx.item_ids.__getitem__, final)),
            removed=[{"item_id": r.item_id, "reason": r.reason} for r in removed] if removed else [],
            # What the stage already holds (ids, group codes, returned positions, reasons by position); the log
            # stores it as its per-candidate columns (audit/log.py CandidateCodes).
            candidates=CandidateCodes(ctx.item_ids, names, coded, final, drop),
            # Harm findings add their category and span to the shared record (a new dict: the cached one of a
            # long-lived finding is never changed).
            findings=[{**self._finding_record(f), **harm_details[n]} if n in harm_details
                      else self._finding_record(f) for n, f in enumerate(findings)],
            user_attributes={k: v for k, v in req.user.audit_attributes.items() if k in self._log_attrs},
        ))
        ctx.timings["audit.log_write"] = time.perf_counter() - t_log
        ctx.final, ctx.removed = final, removed
        ctx.audit = AuditResult(audit_id, verdict, tuple(findings), pol.version)
        if window_entry is not None and self.exposure_window is not None:
            self.exposure_window.record(*window_entry)
        if self.monitor is not None and req.user.audit_attributes:
            # References only: the monitor's thread makes the observation (mean interest and long-tail count
            # of the returned items) when it next reads its window.
            self.monitor.record_returned(req.user.audit_attributes, ctx.interest, final_at, ctx.cand_idx,
                                         self._long_tail, bool(removed))

    def _rerank(self, ctx, eligible: list[int], judged: set[str]) -> tuple[list[int], list[Finding]]:
        """Fair re-ranking of the top-k (ENFORCE), called only when a significant disparity was found: the
        best list meeting both ratio thresholds for the groups the tests can judge, within the NDCG bound;
        else the best improvement within it; else the list as ranked, with the reason."""
        pol = self.policy.exposure
        k = ctx.request.top_k
        res = fair_rerank(ctx.scores[eligible], ctx.groups[eligible], k,
                          min_selection_rate_ratio=pol.min_selection_rate_ratio,
                          min_exposure_ratio=pol.min_exposure_ratio, max_ndcg_loss=pol.max_ndcg_loss,
                          judged=judged)
        if not res.changed:
            if res.satisfied:   # the ratios already meet the thresholds (significant only in the p-value sense)
                return eligible[:k], []
            return eligible[:k], [Finding(
                "EXPOSURE_RERANK_SKIPPED", "ndcg_loss", 0.0, pol.max_ndcg_loss, "",
                f"no re-ranking within the NDCG loss bound {pol.max_ndcg_loss:g} improves exposure "
                f"({_summary(res.before, judged)}); list left as ranked"
                + ("" if res.exhaustive else " (search stopped at its node budget)"))]
        loss = 1.0 - res.ndcg
        state = ("meets the exposure thresholds" if res.satisfied else
                 f"improves exposure to {res.phi_after:.0%} of the thresholds (from {res.phi_before:.0%}) but "
                 "no list within the bound meets them")
        how = {"exact": "best list, exhaustive search" if res.exhaustive else
               "best list found before the search's node budget ran out",
               "greedy": "constrained greedy (top_k above the exact search's limit)"}[res.method]
        return [eligible[i] for i in res.top], [Finding(
            "EXPOSURE_RERANKED", "ndcg_loss", float(loss), pol.max_ndcg_loss, "",
            f"re-ranked for fair exposure ({how}): {_summary(res.before, judged)} -> {_summary(res.after, judged)}; "
            f"{state}; NDCG loss {loss:.3f} (bound {pol.max_ndcg_loss:g})")]

    def _group_coding(self, ctx) -> tuple[list[str], np.ndarray]:
        """Each candidate's group as an index into the distinct labels (sorted), for the exposure check and
        the audit record: a request of catalog items in their catalog groups is coded by one lookup."""
        if ctx.groups_from_catalog:
            return self._cat_label_list, self._cat_codes[ctx.cand_idx]
        lab, coded = group_codes(ctx.groups)
        return lab.tolist(), coded

    def _exposure(self, ctx, names: list[str], coded: np.ndarray, eligible: list[int], final: list[int],
                  final_at: np.ndarray, dropped: bool) -> tuple[list[Finding], set[str], tuple]:
        """Findings on the exposure of item groups among the eligible candidates (`names`/`coded`: each
        candidate's group as an index into the labels; `final` is their returned subset, best first,
        `final_at` the same as an array; `dropped`: some candidates were removed, so eligible is not all).
        Also returns the labels of the groups the tests can judge (for re-ranking) and what the amortised
        exposure window records (labels, eligible count per code, returned codes in rank order)."""
        pol = self.policy.exposure
        out: list[Finding] = []
        if self._reference:
            # Rank of each eligible candidate in the returned list (1-based), 0 when not returned.
            ranks = [0] * len(eligible)
            where = {p: j for j, p in enumerate(eligible)}
            for r, p in enumerate(final, start=1):
                ranks[where[p]] = r
            st = exposure_by_group_reference(ctx.groups[eligible], np.asarray(ranks, dtype=np.float64))
            names = [str(g) for g in st.groups]
            sizes = st.n.tolist()
            present = list(range(len(names)))
            rate, exp_share, exposure_ratio = st.selection_rate.tolist(), st.exposure_share.tolist(), \
                st.exposure_ratio.tolist()
            index = {g: j for j, g in enumerate(names)}
            ret_codes = [index[str(ctx.groups[p])] for p in final]
            counts = sizes
        else:
            # Group sizes by one bincount and the returned items' groups by one lookup: no Python pass over
            # every candidate (the per-group arithmetic is `exposure_selected`, plain Python over ~10 items).
            counts = np.bincount(coded[eligible] if dropped else coded, minlength=len(names)).tolist()
            ret_codes = coded[final_at].tolist()
            present, sizes, rate, exp_share, _, exposure_ratio = exposure_selected(counts, ret_codes)
        k = len(final)
        n_eligible = len(eligible)
        if len(present) < 2:    # one group: nothing to compare it with, no disparity can exist
            return out, set(), (names, counts, ret_codes)
        tests = self._tester.test(n_eligible, k, present, sizes, rate, exp_share, ret_codes, pol.min_group_size)
        alpha = self._tester.alpha
        judged: set[str] = set()
        adj_count, adj_exposure = tests.adj_count, tests.adj_exposure
        for j, testable in enumerate(tests.testable):
            g = names[present[j]]
            if not testable:
                out.append(self._insufficient_finding(g, sizes[j], n_eligible, k, tests.min_p[j]))
                continue
            judged.add(g)
            pc, pe = adj_count[j], adj_exposure[j]
            if pc is not None and pc <= alpha:
                hi = max(range(len(rate)), key=rate.__getitem__)   # the best-off group (first on ties)
                ratio = rate[j] / rate[hi] if rate[hi] > 0 else 1.0
                if ratio < pol.min_selection_rate_ratio:
                    out.append(self._disparity("selection_rate_ratio", g, ratio, pc, names[present[hi]],
                                               round(rate[j] * sizes[j]), sizes[j], n_eligible, k))
            if pe is not None and pe <= alpha:
                er = exposure_ratio[j]
                if er < pol.min_exposure_ratio:
                    out.append(self._disparity("exposure_ratio", g, er, pe, "", 0, sizes[j], n_eligible,
                                               k))
        return out, judged, (names, counts, ret_codes)

    def _finding_record(self, f: Finding) -> dict:
        """The finding as the audit log stores it, kept per finding object: most findings are long-lived
        (the cached exposure findings, the monitors' current findings), and building the dict is ~1.5 us.
        Keyed by id with the finding held in the value, so an id is never reused while its entry lives."""
        hit = self._records.get(id(f))
        if hit is not None and hit[0] is f:
            return hit[1]
        rec = _finding_record(f)
        if len(self._records) >= 8192:
            self._records = {}
        self._records[id(f)] = (f, rec)
        return rec

    def _disparity(self, metric: str, g: str, value: float, p: float, best: str, x: int, size: int, n: int,
                   k: int) -> Finding:
        """An EXPOSURE_DISPARITY finding; the same numbers always make the same (immutable) finding, so it is
        formatted once and kept in a small bounded table (request shapes and outcomes repeat in real traffic,
        and formatting the message is most of a finding's cost)."""
        key = (metric, g, value, p, best, x, size, n, k)
        f = self._findings.get(key)
        if f is None:
            pol = self.policy.exposure
            alpha = self._tester.alpha
            if metric == "selection_rate_ratio":
                f = Finding("EXPOSURE_DISPARITY", metric, value, pol.min_selection_rate_ratio, g,
                            f"group {g!r} is selected into the top {k} at {value:.2f}x the rate of group {best!r} "
                            f"({x} of its {size} candidates; a group-blind ranking returns {k * size / n:.1f} on "
                            f"average; p = {p:.2g} after Holm, alpha {alpha:g})", p, alpha)
            else:
                f = Finding("EXPOSURE_DISPARITY", metric, value, pol.min_exposure_ratio, g,
                            f"group {g!r} gets {value:.2f}x the position-weighted exposure its share of candidates "
                            f"would give (a group-blind ranking gives 1.00x on average; p = {p:.2g} after Holm, "
                            f"alpha {alpha:g})", p, alpha)
            if len(self._findings) >= 4096:
                self._findings = {}
            self._findings[key] = f
        return f

    def _insufficient_finding(self, g: str, size: int, n: int, k: int, min_p: float) -> Finding:
        """The same (group, sizes, k) always gives the same finding (immutable): made once, kept in a small
        table that is emptied when it grows past its bound (request groups are client text)."""
        key = (g, size, n, k)
        f = self._insufficient.get(key)
        if f is None:
            if len(self._insufficient) >= 4096:
                self._insufficient = {}
            min_size = self.policy.exposure.min_group_size
            if size < min_size:
                f = Finding("INSUFFICIENT_EVIDENCE", "group_size", float(size), float(min_size), g,
                            f"group {g!r} has {size} candidates; at least {min_size} are needed to judge its "
                            "exposure")
            else:
                alpha = self._tester.alpha
                f = Finding("INSUFFICIENT_EVIDENCE", "min_attainable_p_value", min_p, alpha, g,
                            f"group {g!r} has {size} of {n} candidates: even its most extreme outcome in a top {k} "
                            f"(as few of its items as possible, at the lowest ranks) has p = {min_p:.2g} under a "
                            f"group-blind ranking, above alpha {alpha:g}; this request cannot show a disparity",
                            min_p, alpha)
            self._insufficient[key] = f
        return f


def _finding_record(f: Finding) -> dict:
    """A finding as the audit log stores it; statistical findings keep their p-value and level."""
    rec = {"code": f.code, "metric": f.metric, "value": f.value, "threshold": f.threshold, "group": f.group,
           "message": f.message}
    if f.p_value is not None:
        rec["p_value"], rec["alpha"] = f.p_value, f.alpha
    return rec


class _OverBudget(Exception):
    pass


def _summary(st: GroupExposure, judged: set[str]) -> str:
    mask = np.array([str(g) in judged for g in st.groups], dtype=bool)
    rates = st.selection_rate
    best = float(rates.max()) if len(rates) else 0.0
    sel = float(rates[mask].min() / best) if mask.any() and best > 0 else 1.0
    exp = float(np.min(st.exposure_ratio[mask])) if mask.any() else 1.0
    return f"selection-rate ratio {sel:.2f}, min exposure ratio {exp:.2f}"

