"""The batch CLI leaves nothing behind for bad input (no output, no audit log, no key file) and reports
progress as plain lines with rows, rows/s and ETA when stderr is not a terminal."""
import io
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from recsys.batch.progress import LineProgress, progress

LINE = re.compile(r"^scoring: [\d,]+/[\d,]+ rows \(\d+\.\d %\), [\d,]+ rows/s, ETA (\d+:\d\d:\d\d|\?)$")


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("ETHICREC_AUDIT_KEY", "ETHICREC_AUDIT_KEY_FILE")}
    return {**env, "HF_HUB_OFFLINE": "1", "ETHICREC_TORCH_THREADS": "1", "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            **extra}


def _cli(artifact_root, tmp_path, src, *extra):
    return subprocess.run([sys.executable, "-m", "recsys.batch", "--input", str(src), "--output",
                           str(tmp_path / "out"), "--artifacts", str(artifact_root), "--audit-log",
                           str(tmp_path / "var" / "batch-audit.db"), *extra],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))


@pytest.mark.parametrize("case", ["missing_column", "unknown_item"])
def test_bad_input_creates_no_audit_log_and_no_key(artifact_root, known_items, tmp_path, case):
    frame = {"missing_column": pd.DataFrame({"user_id": ["1"], "item": ["2"]}),
             "unknown_item": pd.DataFrame({"user_id": ["1"] * 3, "item_id": [*known_items[:2], "no-such-item"]})}[case]
    frame.to_parquet(tmp_path / "in.parquet")
    res = _cli(artifact_root, tmp_path, tmp_path / "in.parquet")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "var").exists()          # no audit db, no journal
    assert not (tmp_path / "cfg").exists()          # no default key file either


def test_progress_lines_when_stderr_is_not_a_terminal(artifact_root, artifacts, known_items, tmp_path):
    users = list(artifacts.users)[:6]
    pd.DataFrame([{"user_id": u, "item_id": i} for u in users for i in known_items[:10]]).to_parquet(
        tmp_path / "in.parquet")
    res = _cli(artifact_root, tmp_path, tmp_path / "in.parquet", "--chunk-users", "1", "--progress-every", "0.000001")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    scoring = [line for line in lines if line.startswith("scoring: ")]
    assert any(LINE.match(line) for line in scoring), lines
    assert re.match(r"^scoring: 60/60 rows \(100\.0 %\) in \d+:\d\d:\d\d, [\d,]+ rows/s$", scoring[-1]), scoring
    assert any(line.startswith("checking input: ") for line in lines)
    assert "\r" not in res.stderr                   # no bar redraws in a log
    # --no-progress: silent.
    (tmp_path / "out2").mkdir()
    quiet = subprocess.run([sys.executable, "-m", "recsys.batch", "--input", str(tmp_path / "in.parquet"), "--output",
                            str(tmp_path / "out2" / "o"), "--artifacts", str(artifact_root), "--audit-log",
                            str(tmp_path / "var" / "b.db"), "--no-progress"], capture_output=True, text=True,
                           timeout=300, env=_env(tmp_path))
    assert quiet.returncode == 0 and not [x for x in quiet.stderr.splitlines() if "rows/s" in x]


def test_line_progress_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    p = LineProgress(1000, "scoring", interval=5.0, stream=out, clock=lambda: now[0])
    now[0] = 2.0
    p.update(100)                 # before the interval: no line
    assert out.getvalue() == ""
    now[0] = 5.0
    p.update(150)                 # 250 rows in 5 s: 50 rows/s, 750 left: 15 s
    assert out.getvalue().splitlines() == ["scoring: 250/1,000 rows (25.0 %), 50 rows/s, ETA 0:00:15"]
    now[0] = 20.0
    p.update(750)
    p.close()
    assert out.getvalue().splitlines()[-1] == "scoring: 1,000/1,000 rows (100.0 %) in 0:00:20, 50 rows/s"


def test_progress_picks_a_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress(10, "x", enabled=True, stream=io.StringIO()), LineProgress)
    assert type(progress(10, "x", enabled=True, stream=Tty())).__name__ == "tqdm"
    assert not isinstance(progress(10, "x", enabled=False, stream=Tty()), LineProgress)
