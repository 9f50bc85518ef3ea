"""The bias report: numbers equal an independent computation; planted bias fails the gate."""
import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np

from audit.log import AuditLog, AuditRecord


def _write_log(path, n_requests, pick_b_every):
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
                                        "threshold": 0.9, "group": "bad", "message": "m"}]))
    log.close()


def _report(tmp_path, log, *extra):
    out = tmp_path / "rep"
    res = subprocess.run([sys.executable, "-m", "audit.report", "--log", str(log), "--out", str(out), *extra],
                         capture_output=True, text=True, timeout=120)
    return res, out


def test_numbers_equal_an_independent_computation(tmp_path):
    _write_log(tmp_path / "a.db", 40, 2)
    res, out = _report(tmp_path, tmp_path / "a.db")
    assert res.returncode == 0, res.stderr
    rep = json.loads((out / "report.json").read_text())
    groups = {g["group"]: g for g in rep["item_group_exposure"]["groups"]}
    # independent: a is selected 5 or 4 times of 10 per request, b 1 of 10 every other request
    sel_a = (20 * 5 + 20 * 4) / 400
    sel_b = 20 / 400
    assert groups["a"]["selection_rate"] == sel_a and groups["b"]["selection_rate"] == sel_b
    disc = 1 / np.log2(np.arange(2, 7))
    exp_b = 20 * disc[4]
    exp_total = 20 * disc[:5].sum() + 20 * disc[:5].sum()
    assert np.isclose(groups["b"]["exposure_share"], exp_b / exp_total)
    assert np.isclose(groups["b"]["selection_rate_ratio_to_reference"], sel_b / sel_a)
    assert rep["harm"] == {"flags": 40, "removals_by_reason": {"HARMFUL_TEXT": 40}}
    assert rep["records"] == 40


def test_planted_bias_fails_the_gate_naming_group_and_metric(tmp_path):
    _write_log(tmp_path / "a.db", 40, 4)
    res, out = _report(tmp_path, tmp_path / "a.db", "--gate", "--reference-group", "a")
    assert res.returncode == 3
    rep = json.loads((out / "report.json").read_text())
    assert not rep["passed"]
    assert {"group": "b", "metric": "selection_rate_ratio_to_reference"} in \
        [{k: v[k] for k in ("group", "metric")} for v in rep["violations"]]
    assert "FAIL" in res.stdout


def test_fair_log_passes_the_gate(tmp_path):
    log = AuditLog(tmp_path / "f.db", salt=b"s")
    for k in range(40):
        cands = [{"item_id": f"{g}{i}", "group": g, "rank": (i + 1) * 2 - (g == "a") if i < 2 else 0, "removed": ""}
                 for g in ("a", "b") for i in range(10)]
        if k % 2:  # alternate who gets the top slot
            for c in cands:
                if c["rank"]:
                    c["rank"] = {1: 2, 2: 1, 3: 4, 4: 3}[c["rank"]]
        log.append(AuditRecord(f"f{k}", float(k), "r", "m", "p", "h", "ENFORCE", "PASS", 4,
                               [], [], cands, []))
    log.close()
    res, out = _report(tmp_path, tmp_path / "f.db", "--gate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((out / "report.json").read_text())["passed"]


def test_small_groups_are_insufficient_evidence(tmp_path):
    _write_log(tmp_path / "a.db", 2, 1)
    res, out = _report(tmp_path, tmp_path / "a.db", "--gate")
    rep = json.loads((out / "report.json").read_text())
    assert {g["status"] for g in rep["item_group_exposure"]["groups"]} == {"insufficient evidence"}
    assert res.returncode == 0


def test_html_parses_and_embeds_its_images(tmp_path):
    _write_log(tmp_path / "a.db", 10, 2)
    res, out = _report(tmp_path, tmp_path / "a.db")
    assert res.returncode == 0

    class Images(HTMLParser):
        srcs: list = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    p = Images()
    p.feed((out / "report.html").read_text())
    assert len(p.srcs) == 2 and all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in p.srcs)


def test_missing_log_and_empty_range_are_one_line_errors(tmp_path):
    res, out = _report(tmp_path, tmp_path / "none.db")
    assert res.returncode == 2 and "not found" in res.stderr and "Traceback" not in res.stderr
    _write_log(tmp_path / "a.db", 3, 1)
    res, out = _report(tmp_path, tmp_path / "a.db", "--since", "2100-01-01")
    assert res.returncode == 2 and "no audit records" in res.stderr
    assert not (out / "report.json").exists()
