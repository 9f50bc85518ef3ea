"""The bias report in a real headless Chromium at 1280 px: the page never scrolls sideways, every table sits
inside the viewport (scrolling inside its own box if it must), and the gated tables, status column included,
are fully visible. Screenshots go to $ETHICREC_TEST_OUTPUT (default: test-output/) for a human to look at.

Chromium is Debian's `chromium` package (`make test` installs it when missing); Playwright drives it through
`executable_path`, never a downloaded browser build. Without it the test skips with the reason, except under
CI (the CI variable set), where a missing browser is a failure."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audit.test_report import _log_records

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
OUT = Path(os.environ.get("ETHICREC_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))


def _browser():
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "the playwright package is not installed (pip install -e '.[dev]')"
    if why is None and not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing (apt-get install -y chromium; `make test` does it)"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)
    return sync_playwright


def _wide_report(tmp_path) -> Path:
    """A log with long group names, three strata and user attributes: the widest tables the report makes."""
    from audit.log import AuditLog, AuditRecord

    long_a = "catalog-head-items-from-the-very-popular-part-of-the-catalog"
    long_b = "long-tail-items-nobody-has-heard-of-yet-but-should-see"
    log = AuditLog(tmp_path / "w.db", salt=b"s")
    k = 0
    for top_k, b_slots in ((5, 1), (10, 3), (20, 10)):
        for i in range(40):
            ranks = {}
            for r in range(top_k):
                ranks[(long_b if r % 3 == 2 and sum(g == long_b for g, _ in ranks) < b_slots else long_a, r)] = r + 1
            cands = []
            na = nb = 0
            for (g, _), r in ranks.items():
                idx = na if g == long_a else nb
                cands.append({"item_id": f"{g[:4]}{idx}", "group": g, "rank": r, "removed": ""})
                na, nb = na + (g == long_a), nb + (g == long_b)
            cands += [{"item_id": f"{long_a[:4]}x{j}", "group": long_a, "rank": 0, "removed": ""} for j in range(20 - na)]
            cands += [{"item_id": f"{long_b[:4]}x{j}", "group": long_b, "rank": 0, "removed": ""} for j in range(20 - nb)]
            log.append(AuditRecord(f"id{k}", 1000.0 + k, f"r{k}", "m", "p", "h", "FLAG_ONLY", "FLAGGED", top_k,
                                   [c["item_id"] for c in cands if c["rank"]], [], cands, [],
                                   {"gender": "F" if i % 2 else "M",
                                    "age_band": ["18-24", "25-34", "35-44 and a very long band label"][i % 3]}))
            k += 1
    log.close()
    out = tmp_path / "rep"
    res = subprocess.run([sys.executable, "-m", "audit.report", "--log", str(tmp_path / "w.db"), "--out", str(out),
                          "--n-boot", "50", "--no-gate"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out


def test_report_fits_1280px_in_chromium(tmp_path):
    sync_playwright = _browser()
    out = _wide_report(tmp_path)
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((out / "report.html").as_uri())
            page.screenshot(path=str(OUT / "report-1280.png"), full_page=True)
            page.screenshot(path=str(OUT / "report-1280-top.png"))
            page_width = page.evaluate("document.documentElement.scrollWidth")
            boxes = page.evaluate("""() => [...document.querySelectorAll('table')].map(t => {
                const box = t.closest('.tbl'); const r = (box || t).getBoundingClientRect();
                return {boxed: !!box, right: r.right, left: r.left,
                        fits: box ? box.scrollWidth <= box.clientWidth + 1 : true,
                        title: (box && box.previousElementSibling && box.previousElementSibling.previousElementSibling)
                               ? box.previousElementSibling.previousElementSibling.textContent : ''};
            })""")
            status = page.evaluate("""() => [...document.querySelectorAll('h3')]
                .filter(h => h.textContent.startsWith('item_group'))
                .map(h => { const t = h.nextElementSibling.nextElementSibling.querySelector('table');
                            const cells = [...t.querySelectorAll('tr td:last-child')];
                            return cells.map(c => c.getBoundingClientRect().right); })""")
        finally:
            browser.close()
    assert page_width <= 1280, f"the page scrolls sideways: {page_width}px wide at a 1280px viewport"
    assert boxes and all(b["boxed"] for b in boxes), "a table is not inside its own scroll box"
    assert all(b["left"] >= 0 and b["right"] <= 1280 for b in boxes), boxes
    gated = [b for b in boxes if b["title"].startswith("item_group")]
    assert len(gated) == 3 and all(b["fits"] for b in gated), gated     # no scrolling needed for the gated tables
    assert len(status) == 3 and all(0 < x <= 1280 for cells in status for x in cells)
    assert (OUT / "report-1280.png").stat().st_size > 10_000
    rep = json.loads((out / "report.json").read_text())
    assert [t["stratum"]["top_k"] for t in rep["log"]["item_groups"]] == [5, 10, 20]
