"""The model-comparison section: `python -m recsys.evaluate`'s JSON, read back.

The evaluation already ran every model on the same split and split each
model's quality by user group with Fairlearn's MetricFrame; this section
only validates and reshapes it, so the bias report can show whether the
deployed blend serves user groups more or less evenly than the baselines.
It is informational (not gated): the gated user-group checks are the
offline and log sections, which run the serving pipeline itself.
"""
from __future__ import annotations

import json
from pathlib import Path

METRICS = ("ndcg@10", "recall@10", "mrr")


def load_evaluation(path: Path) -> dict:
    """Parse and check an evaluation JSON; ValueError with a one-line reason when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"evaluation file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not an evaluation JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or "dataset" not in data:
        raise ValueError(f"{path} is not a recsys.evaluate JSON (needs 'dataset' and 'models')")
    return data


def evaluation_section(data: dict, source: str) -> dict:
    models = {name: {m: float(v[m]) for m in METRICS + ("coverage@10",) if m in v} for name, v in data["models"].items()}
    by_group: dict[str, dict] = {}
    for model, attrs in (data.get("by_group") or {}).items():
        for attr, groups in attrs.items():
            table = by_group.setdefault(attr, {"groups": [], "rows": {}})
            row = {}
            for g, vals in groups.items():
                if g.startswith("_"):
                    continue
                if g not in table["groups"]:
                    table["groups"].append(g)
                row[g] = {m: float(vals[m]) for m in METRICS if m in vals} | {"n": int(vals.get("n", 0))}
            row["_ratio_min_over_max"] = {m: float(groups["_ratio_min_over_max"][m])
                                          for m in METRICS if m in groups.get("_ratio_min_over_max", {})}
            table["rows"][model] = row
    return {"source": source, "dataset": data["dataset"], "artifact_version": data.get("artifact_version", ""),
            "test_users": int(data.get("test_users", 0)), "models": models, "by_group": by_group}
