"""The bias report from the audit log: numbers equal an independent computation;
planted bias fails (exit 3) naming group and metric; small groups are insufficient evidence."""
import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np

from audit.log import AuditLog, AuditRecord


def _write_log(path, n_requests, pick_b_every, attrs=lambda k: {}):
    """Each request: 10 'a' and 10 'b' candidates; top-5 returned.

    Group b gets one of the 5 slots every `pick_b_every` requests, else none.
    """
    log = AuditLog(path, salt=b"s")
    for k in range(n_requests):
        b_slots = 1 if k % pick_b_every == 0 else 0
        cands = []
        rank = 1
        for i in range(10):
            r = rank if i < 5 - b_slots else 0
            rank += r > 0
            cands.append({"item_id": f"a{i}", "group": "a", "rank": r, "removed": ""})
        for i in range(10):
            r = 5 if (i == 0 and b_slots) else 0
            cands.append({"item_id": f"b{i}", "group": "b", "rank": r, "removed": ""})
        cands.append({"item_id": "bad", "group": "b", "rank": 0, "removed": "HARMFUL_TEXT"})
        log.append(AuditRecord(f"id{k}", 1000.0 + k, f"r{k}", "m", "p", "h", "ENFORCE", "ENFORCED", 5,
                               [c["item_id"] for c in cands if c["rank"]], [{"item_id": "bad", "reason": "HARMFUL_TEXT"}],
                               cands, [{"code": "HARMFUL_TEXT", "metric": "harm_probability", "value": 0.99,
                                        "threshold": 0.9, "group": "bad", "message": "m"}], attrs(k)))
    log.close()


def _report(tmp_path, log, *extra):
    out = tmp_path / "rep"
    res = subprocess.run([sys.executable, "-m", "audit.report", "--log", str(log), "--out", str(out),
                          "--n-boot", "20", *extra], capture_output=True, text=True, timeout=300)
    return res, out


def test_numbers_equal_an_independent_computation(tmp_path):
    _write_log(tmp_path / "a.db", 40, 2, attrs=lambda k: {"gender": "F" if k % 4 == 0 else "M"})
    res, out = _report(tmp_path, tmp_path / "a.db", "--no-gate")
    assert res.returncode == 0, res.stderr
    rep = json.loads((out / "report.json").read_text())["log"]
    assert [t["stratum"] for t in rep["item_groups"]] == [{"top_k": 5}]
    groups = {g["group"]: g for g in rep["item_groups"][0]["groups"]}
    # a is selected 5 or 4 times of 10 per request; b once every other request
    sel_a, sel_b = (20 * 5 + 20 * 4) / 400, 20 / 400
    assert np.isclose(groups["a"]["selection_rate"], sel_a) and np.isclose(groups["b"]["selection_rate"], sel_b)
    disc = 1 / np.log2(np.arange(2, 7))
    exp_b, exp_total = 20 * disc[4], 40 * disc[:5].sum()
    assert np.isclose(groups["b"]["exposure_share"], exp_b / exp_total)
    # Default reference: the best-off group (a), so the disadvantaged b is judged against it.
    assert groups["b"]["selection_rate_reference"] == "a"
    assert np.isclose(groups["b"]["selection_rate_ratio_to_reference"], sel_b / sel_a)
    lo, hi = groups["b"]["selection_rate_ci"]
    assert lo <= sel_b <= hi
    rlo, rhi = groups["b"]["selection_rate_ratio_ci"]
    assert rlo <= sel_b / sel_a <= rhi
    assert rep["harm"]["flags"] == 40 and rep["harm"]["removals_by_reason"] == {"HARMFUL_TEXT": 40}
    assert rep["records"] == 40
    # user groups from the logged audit attributes: F requests are k % 4 == 0, which all give b a slot
    gender = {g["group"]: g for g in rep["user_groups"][0]["groups"]}
    assert gender["F"]["n"] == 10 and gender["M"]["n"] == 30
    assert np.isclose(gender["F"]["harm_removals"], 1.0)
    # popularity bias: Gini over the 20 candidate items' exposure
    per_item = np.zeros(20)
    per_item[:4] = 40 * disc[:4]
    per_item[4] = 20 * disc[4]
    per_item[10] = 20 * disc[4]
    x = np.sort(per_item)
    gini = 2 * np.dot(np.arange(1, 21), x) / (20 * x.sum()) - 21 / 20
    assert np.isclose(rep["popularity_bias"]["gini_of_exposure"], gini)
    assert rep["popularity_bias"]["distinct_items_returned"] == 6


def test_planted_bias_fails_naming_group_and_metric(tmp_path):
    _write_log(tmp_path / "a.db", 40, 4)
    res, out = _report(tmp_path, tmp_path / "a.db", "--reference", "item_group=a")
    assert res.returncode == 3
    rep = json.loads((out / "report.json").read_text())
    assert not rep["passed"]
    assert {"group": "b", "metric": "selection_rate_ratio_to_reference"} in \
        [{k: v[k] for k in ("group", "metric")} for v in rep["violations"]]
    assert "FAIL" in res.stdout and "b selection_rate_ratio_to_reference" in res.stdout
    assert "FAIL" in (out / "summary.md").read_text()


def test_fair_log_passes(tmp_path):
    log = AuditLog(tmp_path / "f.db", salt=b"s")
    for k in range(40):
        cands = [{"item_id": f"{g}{i}", "group": g, "rank": (i + 1) * 2 - (g == "a") if i < 2 else 0, "removed": ""}
                 for g in ("a", "b") for i in range(10)]
        if k % 2:  # alternate who gets the top slot
            for c in cands:
                if c["rank"]:
                    c["rank"] = {1: 2, 2: 1, 3: 4, 4: 3}[c["rank"]]
        log.append(AuditRecord(f"f{k}", float(k), "r", "m", "p", "h", "ENFORCE", "PASS", 4, [], [], cands, []))
    log.close()
    res, out = _report(tmp_path, tmp_path / "f.db")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((out / "report.json").read_text())["passed"]


def test_small_groups_are_insufficient_evidence_with_their_n(tmp_path):
    _write_log(tmp_path / "a.db", 1, 1)
    res, out = _report(tmp_path, tmp_path / "a.db")
    groups = json.loads((out / "report.json").read_text())["log"]["item_groups"][0]["groups"]
    assert {(g["group"], g["n"], g["status"]) for g in groups} == {("a", 10.0, "insufficient evidence"),
                                                                  ("b", 10.0, "insufficient evidence")}
    assert res.returncode == 0


def test_time_range_and_trend_windows(tmp_path):
    _write_log(tmp_path / "a.db", 40, 2)
    res, out = _report(tmp_path, tmp_path / "a.db", "--since", "1010", "--until", "1030", "--windows", "4",
                       "--no-gate")
    rep = json.loads((out / "report.json").read_text())["log"]
    assert rep["records"] == 20
    assert [w["records"] for w in rep["trend"]] == [5, 5, 5, 5]
    assert sum(w["harm_removals"] for w in rep["trend"]) == 20


def test_html_parses_and_embeds_its_images(tmp_path):
    _write_log(tmp_path / "a.db", 10, 2, attrs=lambda k: {"age_band": "18-24"})
    res, out = _report(tmp_path, tmp_path / "a.db", "--no-gate")
    assert res.returncode == 0

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.srcs = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    p = Images()
    p.feed((out / "report.html").read_text())
    # item groups, one user-group table, trend
    assert len(p.srcs) == 3 and all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in p.srcs)


def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path):
    res, out = _report(tmp_path, tmp_path / "none.db")
    assert res.returncode == 2 and "not found" in res.stderr and "Traceback" not in res.stderr
    _write_log(tmp_path / "a.db", 3, 1)
    res, out = _report(tmp_path, tmp_path / "a.db", "--since", "2100-01-01")
    assert res.returncode == 2 and "no audit records" in res.stderr
    res, out = _report(tmp_path, tmp_path / "a.db", "--reference", "item_group=zzz")
    assert res.returncode == 2 and "reference group 'zzz'" in res.stderr
    assert not (out / "report.json").exists()
    res = subprocess.run([sys.executable, "-m", "audit.report", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "give --log" in res.stderr


def _log_records(path, plan):
    """plan: list of (top_k, n_a, n_b, returned groups in rank order) per request."""
    log = AuditLog(path, salt=b"s")
    for k, (top_k, n_a, n_b, returned) in enumerate(plan):
        cands, it = [], {"a": iter(range(n_a)), "b": iter(range(n_b))}
        ranks = {}
        for r, g in enumerate(returned, start=1):
            ranks[(g, next(it[g]))] = r
        cands = [{"item_id": f"{g}{i}", "group": g, "rank": ranks.get((g, i), 0), "removed": ""}
                 for g, n in (("a", n_a), ("b", n_b)) for i in range(n)]
        log.append(AuditRecord(f"id{k}", 1000.0 + k, f"r{k}", "m", "p", "h", "FLAG_ONLY", "PASS", top_k,
                               [c["item_id"] for c in cands if c["rank"]], [], cands, []))
    log.close()


def test_strata_by_top_k_are_gated_apart(tmp_path):
    """At top_k 5 of 10+10 b gets 1 slot, at top_k 20 (everything) both get all: pooled, b would look far
    better than it fares where there is a choice."""
    plan = [(5, 10, 10, ["a", "a", "a", "a", "b"])] * 40 + [(20, 10, 10, ["a", "b"] * 10)] * 40
    _log_records(tmp_path / "s.db", plan)
    res, out = _report(tmp_path, tmp_path / "s.db", "--n-boot", "200")
    rep = json.loads((out / "report.json").read_text())
    tables = {t["stratum"]["top_k"]: {g["group"]: g for g in t["groups"]} for t in rep["log"]["item_groups"]}
    assert set(tables) == {5, 20}
    assert np.isclose(tables[5]["b"]["selection_rate_ratio_to_reference"], 0.25)
    assert tables[20]["b"]["selection_rate_ratio_to_reference"] == 1.0 and tables[20]["b"]["status"] == "pass"
    assert tables[5]["b"]["status"] == "fail" and res.returncode == 3
    assert all(v["stratum"] == {"top_k": 5} for v in rep["violations"])
    assert "per top_k stratum" in (out / "report.html").read_text()


def test_a_group_doing_better_or_with_overlapping_intervals_does_not_fail(tmp_path):
    """n = 32 requests; b is slightly behind with wide intervals (inconclusive, not fail); a named reference
    that is worse off makes the better-off group's ratio > 1.25 in its point estimate, still not a failure
    unless its whole interval is above the band."""
    rng = np.random.default_rng(0)
    plan = []
    for _ in range(32):
        n_b_top = int(rng.binomial(4, 0.42))
        plan.append((4, 6, 6, rng.permutation(["a"] * (4 - n_b_top) + ["b"] * n_b_top).tolist()))
    _log_records(tmp_path / "o.db", plan)
    res, out = _report(tmp_path, tmp_path / "o.db", "--n-boot", "300", "--reference", "item_group=b")
    rep = json.loads((out / "report.json").read_text())
    g = {x["group"]: x for x in rep["log"]["item_groups"][0]["groups"]}
    lo, hi = g["a"]["selection_rate_ratio_ci"]
    assert g["a"]["selection_rate_ratio_to_reference"] > 1.0 and lo < 1.25   # better off; the interval overlaps
    assert g["a"]["status"] != "fail" and res.returncode == 0, res.stdout


def test_trend_labels_are_distinct_and_only_failing_cells_are_coloured(tmp_path):
    plan = [(5, 10, 10, ["a", "a", "a", "a", "b"])] * 40
    _log_records(tmp_path / "t.db", plan)   # 40 requests within 40 seconds: one minute
    res, out = _report(tmp_path, tmp_path / "t.db", "--windows", "5", "--n-boot", "100")
    rep = json.loads((out / "report.json").read_text())
    labels = [w["label"] for w in rep["log"]["trend"]]
    assert len(labels) == 5 and len(set(labels)) == 5
    html = (out / "report.html").read_text()
    # b fails on both gated ratios: exactly those two cells and its status cell are marked, nothing else.
    table = html[html.index("<h3>item_group"):]
    table = table[: table.index("</table>")]
    assert table.count("class=fail") == 3
