"""Rendering only: a self-contained HTML page (plots embedded as PNG data URIs),
a Markdown summary and console text. Nothing here computes a metric."""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from audit.report.groups import INSUFFICIENT

esc = html.escape


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def table_plot(table: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = table["metrics"]
    groups = table["groups"]
    labels = [g["group"] if len(g["group"]) <= 24 else g["group"][:23] + "…" for g in groups]
    ncols = min(2, len(metrics))
    nrows = -(-len(metrics) // ncols)
    width = max(3.2, 0.3 * len(labels) + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, metrics):
        vals = np.array([g[m] for g in groups])
        colors = ["#bbbbbb" if g["status"] == INSUFFICIENT else ("#c44e52" if g["status"] == "fail" else "#4878a8")
                  for g in groups]
        cis = [g.get(f"{m}_ci") for g in groups]
        err = None
        if all(c is not None for c in cis):
            err = np.array([[max(0.0, v - c[0]) for v, c in zip(vals, cis)], [max(0.0, c[1] - v) for v, c in zip(vals, cis)]])
        ax.bar(range(len(labels)), vals, yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=60 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                      fontsize=8)
        ax.set_title(m, fontsize=10)
    fig.suptitle(f"{table['name']} (reference: {table['reference']})", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def trend_plot(trend: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    groups = sorted({g for w in trend for g in w["selection_vs_group_blind"]})
    x = range(len(trend))
    for g in groups:
        ax.plot(x, [w["selection_vs_group_blind"].get(g, np.nan) for w in trend], marker="o", label=g)
    ax.axhline(1.0, color="#888888", lw=0.8, ls="--")
    ax.set_xticks(list(x), [w["label"] for w in trend], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("selection / group-blind")
    ax.set_title("Selection by item group relative to a group-blind ranking (1 = as if groups were ignored)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "∞" if v == float("inf") else f"{v:.4g}"
    return esc(str(v))


def _ci(ci) -> str:
    return "" if ci is None else f" <span class=ci>[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>"


def table_title(table: dict) -> str:
    st = table.get("stratum") or {}
    return table["name"] + "".join(f", {k} = {v}" for k, v in st.items())


def table_html(table: dict) -> str:
    """One by-group table inside its own scrolling box (so the page never overflows at any width); only the
    cells that fail the gate are coloured."""
    metrics = table["metrics"]
    extra = [c for c in ("exposure_share", "candidate_share", "exposure_ratio") if c in table["groups"][0]]
    head = "".join(f"<th>{esc(m)} <span class=ci>[95% CI]</span></th><th>ratio to ref. <span class=ci>[95% CI]"
                   f"</span>{' (gated)' if m in table['gated'] else ''}</th>" for m in metrics)
    head += "".join(f"<th>{esc(c)}</th>" for c in extra)
    rows = []
    for g in table["groups"]:
        cells = []
        for m in metrics:
            state = g.get("cells", {}).get(m)
            ref = g.get(f"{m}_reference", table["reference"])
            ratio = "ref." if g["group"] == ref else _fmt(g[f"{m}_ratio_to_reference"]) + _ci(g.get(f"{m}_ratio_ci"))
            cells.append(f"<td>{_fmt(g[m])}{_ci(g[f'{m}_ci'])}</td>"
                         f"<td{' class=fail' if state == 'fail' else ''}>{ratio}</td>")
        cells += [f"<td>{_fmt(g[c])}</td>" for c in extra]
        status = g["status"]
        rows.append(f"<tr><td>{esc(g['group'])}</td><td>{int(g['n'])}</td>{''.join(cells)}"
                    f"<td{' class=fail' if status == 'fail' else ''}>{esc(status)}</td></tr>")
    gated = ", ".join(table["gated"]) or "none (informational)"
    refs = table.get("references", {})
    ref_text = (f"named: {esc(table['reference'])}" if table.get("reference_rule") == "named" else
                "the best-off group of each metric (" + ", ".join(f"{esc(m)}: {esc(r)}" for m, r in refs.items())
                + ")")
    return (f"<h3>{esc(table_title(table))}</h3><p>Gated metrics: {esc(gated)}. Reference: {ref_text}. n counts "
            f"{esc(table['weight'] if table['weight'] != 'rows' else 'rows')}; intervals: "
            f"{esc(table.get('interval', 'none'))}.</p>"
            f"<div class=tbl><table><tr><th>group</th><th>n</th>{head}<th>status</th></tr>{''.join(rows)}</table>"
            f"</div><img alt='{esc(table_title(table))} by group' src='data:image/png;base64,{table_plot(table)}'>")


def _kv(d: dict) -> str:
    return ("<div class=tbl><table>" + "".join(f"<tr><td>{esc(str(k))}</td><td>{_fmt(v)}</td></tr>"
                                               for k, v in d.items()) + "</table></div>")


def render_html(report: dict) -> str:
    status = "PASS" if report["passed"] else "FAIL"
    parts = [f"<h1>ethicrec bias report — <span class='{status.lower()}'>{status}</span></h1>",
             f"<p>Generated {esc(report['generated_at'])} under policy {esc(report['policy_version'])}. "
             f"Pass band for ratios to the reference group: {report['band'][0]}–{report['band'][1]}. A group "
             "<b>fails</b> only when the whole 95 % interval of a gated ratio lies outside the band; an interval "
             "that straddles a band edge is <i>inconclusive</i> (not failed). The reference is the best-off group of "
             "each metric unless one is named (--reference). Groups with n below "
             f"{report['min_group_size']} are <i>insufficient evidence</i>. Values: Fairlearn MetricFrame; intervals: "
             f"bootstrap resampling whole requests (log) or users (offline), {report['n_boot']} resamples. "
             "Item-group tables are reported and gated <b>per top_k stratum</b> (requests with different top_k are "
             "never pooled); the trend normalises by the group-blind expectation instead.</p>"]
    if report["violations"]:
        parts.append("<h2>Violations</h2><ul>" + "".join(
            f"<li>{esc(v['section'])} / {esc(v['table'])}"
            f"{''.join(f', {k} = {x}' for k, x in (v.get('stratum') or {}).items())}: group <b>{esc(v['group'])}</b> "
            f"{esc(v['metric'])} = <span class=fail>{_fmt(v['value'])}</span>, 95 % interval "
            f"[{_fmt(v['interval'][0])}, {_fmt(v['interval'][1])}] (reference {esc(v['reference'])}, band "
            f"{v['band'][0]}–{v['band'][1]})</li>"
            for v in report["violations"]) + "</ul>")
    if "offline" in report:
        o = report["offline"]
        parts.append(f"<h2>Offline evaluation: {esc(o['dataset'])}, model {esc(o['artifact_version'])}</h2>"
                     f"<p>{o['users']} users ranked through the serving pipeline (audit included).</p>"
                     + _kv(o["overall"]) + "<h3>Popularity bias</h3>" + _kv(o["popularity_bias"]))
        parts += [table_html(t) for t in o["user_groups"] + o["item_groups"]]
    if "log" in report:
        lg = report["log"]
        parts.append(f"<h2>Audit log: {lg['records']} requests, {esc(lg['time_range']['from'])} to "
                     f"{esc(lg['time_range']['to'])}</h2><p>Models {esc(', '.join(lg['model_versions']))}; policies "
                     f"{esc(', '.join(lg['policy_versions']))}.</p>" + _kv(lg["verdicts"]))
        if any(lg.get("sources", {}).get("replicas", {})):
            parts.append("<h3>Records by replica (writer name)</h3>" + _kv(lg["sources"]["replicas"]))
        parts += [table_html(t) for t in lg["item_groups"]]
        parts += [table_html(t) for t in lg["user_groups"]]
        parts.append("<h3>Popularity bias</h3>" + _kv(lg["popularity_bias"]))
        parts.append("<h3>Harm</h3>" + _kv({"flags": lg["harm"]["flags"],
                                             "removals per request": lg["harm"]["removals_per_request"],
                                             **lg["harm"]["removals_by_reason"]}))
        parts.append("<h3>Findings by code</h3>" + _kv(lg["findings_by_code"]))
        if lg["trend"]:
            rows = "".join(f"<tr><td>{esc(w['label'])}</td><td>{w['records']}</td>"
                           f"<td>{_fmt(w['selection_ratio_min_over_max'])}</td><td>{w['harm_removals']}</td></tr>"
                           for w in lg["trend"])
            parts.append("<h3>Trend</h3><div class=tbl><table><tr><th>window (UTC)</th><th>requests</th><th>selection "
                         "vs group-blind, min/max over groups</th><th>harm removals</th></tr>"
                         f"{rows}</table></div>"
                         f"<img alt='trend' src='data:image/png;base64,{trend_plot(lg['trend'])}'>")
    for ev in report.get("model_comparison", []):
        parts.append(f"<h2>Model comparison: {esc(ev['dataset'])}, model {esc(ev['artifact_version'])}, "
                     f"{ev['test_users']} test users</h2><p>From {esc(ev['source'])} (python -m recsys.evaluate; "
                     "informational, not gated).</p>")
        cols = sorted({m for v in ev["models"].values() for m in v})
        rows = "".join(f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{_fmt(v.get(m))}</td>" for m in cols) + "</tr>"
                       for name, v in ev["models"].items())
        parts.append("<div class=tbl><table><tr><th>model</th>" + "".join(f"<th>{esc(m)}</th>" for m in cols)
                     + f"</tr>{rows}</table></div>")
        for attr, t in ev["by_group"].items():
            head = "".join(f"<th>{esc(g)}</th>" for g in t["groups"])
            body = "".join(
                f"<tr><td>{esc(model)}</td>" + "".join(f"<td>{_fmt(r.get(g, {}).get('ndcg@10'))}</td>" for g in t["groups"])
                + f"<td>{_fmt(r['_ratio_min_over_max'].get('ndcg@10'))}</td></tr>" for model, r in t["rows"].items())
            parts.append(f"<h3>NDCG@10 by {esc(attr)}</h3><div class=tbl><table><tr><th>model</th>{head}"
                         f"<th>min/max</th></tr>{body}</table></div>")
    # Tables scroll inside their own box (.tbl) rather than widening the page; long group names wrap.
    style = ("*{box-sizing:border-box}body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;"
             "color:#222}p,li,h1,h2,h3{overflow-wrap:anywhere}.tbl{max-width:100%;overflow-x:auto;margin:.8em 0}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right;"
             "font-size:.9em;vertical-align:top}th{font-weight:600;overflow-wrap:anywhere;min-width:5em}"
             "td:first-child,th:first-child{text-align:left;max-width:16em;overflow-wrap:anywhere}"
             "td:last-child{white-space:nowrap}.ci{color:#666;font-size:.85em;white-space:nowrap}"
             ".fail{background:#fde2e2;color:#a00;font-weight:bold}h1 .fail,h1 .pass{background:none}"
             ".pass{color:#2a7a2a}img{max-width:100%;height:auto}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ethicrec bias report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def render_markdown(report: dict) -> str:
    lines = [f"# ethicrec bias report: {'PASS' if report['passed'] else 'FAIL'}", "",
             f"Policy {report['policy_version']}, band {report['band'][0]}–{report['band'][1]}, "
             f"min group size {report['min_group_size']}; fail = the whole 95 % interval of a gated ratio outside the "
             "band; reference = best-off group unless named; item groups per top_k stratum.", ""]
    for section in ("offline", "log"):
        if section not in report:
            continue
        s = report[section]
        if section == "offline":
            lines.append(f"## Offline ({s['dataset']}, {s['users']} users): NDCG@10 {s['overall']['ndcg@10']:.4f}, "
                         f"Recall@10 {s['overall']['recall@10']:.4f}")
        else:
            lines.append(f"## Audit log ({s['records']} requests, {s['time_range']['from']} – {s['time_range']['to']})")
            replicas = {k: v for k, v in s.get("sources", {}).get("replicas", {}).items() if k}
            if replicas:
                lines.append(f"Replicas: {len(replicas)} (" + ", ".join(f"{k} {v}" for k, v in replicas.items()) + ")")
        pb = s["popularity_bias"]
        lines.append(f"Popularity bias: Gini of exposure {pb['gini_of_exposure']:.3f}, coverage "
                     f"{pb['catalog_coverage']:.3f}, long-tail share {pb['long_tail_share_of_slots']:.3f}")
        tables = ([s["item_groups"]] if isinstance(s["item_groups"], dict) else s["item_groups"]) + s["user_groups"]
        for t in tables:
            if not t["gated"]:
                continue
            lines.append(f"- {table_title(t)} (reference {t['reference']}): " + ", ".join(
                f"{g['group']} {g['status']}" + ("" if g["status"] != "fail" else " ✗") for g in t["groups"]))
        lines.append("")
    for ev in report.get("model_comparison", []):
        lines.append(f"## Model comparison ({ev['dataset']}, {ev['test_users']} test users; not gated)")
        lines += [f"- {name}: NDCG@10 {v.get('ndcg@10', float('nan')):.4f}" for name, v in ev["models"].items()]
        for attr, t in ev["by_group"].items():
            lines.append(f"- NDCG@10 min/max over {attr}: " + ", ".join(
                f"{model} {r['_ratio_min_over_max'].get('ndcg@10', float('nan')):.2f}" for model, r in t["rows"].items()))
        lines.append("")
    if report["violations"]:
        lines.append("## Violations")
        lines += [f"- {v['section']}/{v['table']}"
                  + "".join(f", {k} = {x}" for k, x in (v.get("stratum") or {}).items())
                  + f": {v['group']} {v['metric']} = {v['value']:.3f}, 95 % interval [{v['interval'][0]:.3f}, "
                  f"{v['interval'][1]:.3f}] (band {v['band'][0]}–{v['band'][1]}, reference {v['reference']})"
                  for v in report["violations"]]
    return "\n".join(lines) + "\n"
