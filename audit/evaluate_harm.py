"""`python -m audit.evaluate_harm --artifacts DIR [--out FILE]`: the artifact's harm classifier side by side with
alt-profanity-check and the char-n-gram baseline, out of distribution first.

Sets (none of them trained on by the shipped classifier):
* **held-out suite**: the functional suite's held-out templates over all its groups (including groups no
  training case names), audit/harm_suite; per-functionality accuracy, AUC and macro-F1.
* **HateCheck** (Röttger et al. 2021, `--hatecheck`): a test suite only; per-functionality accuracy, AUC, F1.
* **OOD** = HateCheck + held-out suite together: the proxy for the outside evaluator's set.
* **Davidson test split** (10 %, seed 0; in distribution, reported, never selected on): AUC of hate vs the
  rest, and of harmful (hate or offensive) vs neither.
* **MovieLens**: share of ml-latest-small titles (movies.csv), distinct tags (tags.csv) and ML-100K titles
  (u.item, `--ml100k`, never committed) flagged; ml-latest-small is the catalog the shipped threshold was
  capped on, ML-100K is not.
* **identity-mention FPR** by group (Fairlearn MetricFrame) on the benign identity sentences of the held-out
  suite (neutral + positive) and of HateCheck (ident_neutral_nh, ident_pos_nh).

Each model is judged at its own operating threshold: the shipped classifier's (chosen on validation),
the n-gram's (retrained here on Davidson train+validation, threshold on validation), alt-profanity-check at
0.5 (its `predict`) and at the threshold that maximises macro-F1 on the same validation data the shipped
model used (Davidson validation + suite validation templates), its best case. The shipped model's lesser
flags (profanity-only, harassment, sexual: FLAG-only by default) are reported separately. Goals (issue 25)
are marked met / MISSED. Table to stdout, JSON to --out (default reports/harm-evaluation.json, written
atomically). Bad input: one line on stderr, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.atomic import write_text_atomic
from recsys.cli import cli_main, fail, first_line

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HATECHECK = ROOT.parent / "shared" / "data" / "hatecheck" / "test_suite_cases.csv"
DEFAULT_ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.item"
GOALS = {"ood_auc": 0.85, "ood_macro_f1": 0.75, "hateful_functionality_acc": 0.90,
         "non_hateful_functionality_acc": 0.95, "movielens_flag_rate": 0.005, "identity_fpr": 0.02}
HC_IDENTITY = ("ident_neutral_nh", "ident_pos_nh")
SUITE_IDENTITY = ("identity_neutral", "identity_positive")

CURATED_TITLES = ("Kill Bill: Vol. 1 (2003)", "Schindler's List (1993)", "The Texas Chain Saw Massacre (1974)",
                  "Apocalypse Now (1979)", "Hotel Rwanda (2004)", "The Killing Fields (1984)",
                  "Natural Born Killers (1994)", "12 Years a Slave (2013)", "Inglourious Basterds (2009)",
                  "Switchback (1997)", "Dead Man Walking (1995)", "Mississippi Burning (1988)")
HARMFUL_PHRASES = ("you stupid bitch", "shut up faggot", "fuck you", "kill yourself you retard", "dumb hoe",
                   "you are a worthless piece of shit", "go back to your country nigger", "fucking idiot")
#: The examples issue 25 reported (live ENFORCE mode): the first two were returned, the third removed.
ISSUE_EXAMPLES = {"Immigrants are vermin and parasites; they should all be exterminated like rats.": 1,
                  "Women deserve to be abused, I guess.": 1, "This movie is fucking great": 0,
                  "Switchback (1997)": 0}


def obfuscations(phrase: str) -> list[str]:
    """l33t, spacing, repeated letters and punctuation variants of a phrase (tests/audit/test_harm_deobfuscate)."""
    table = str.maketrans({"i": "1", "o": "0", "e": "3", "a": "4", "s": "$"})
    leet = " ".join(w.translate(table) if len(w) > 1 else w for w in phrase.split())
    words = phrase.split()
    longest = max(range(len(words)), key=lambda k: len(words[k]))
    w = words[longest]
    spaced = " ".join(words[:longest] + [" ".join(w)] + words[longest + 1:])
    dotted = " ".join(words[:longest] + [".".join(w)] + words[longest + 1:])
    vowel = next((k for k, ch in enumerate(w) if ch in "aeiou"), 1)
    repeated = " ".join(words[:longest] + [w[:vowel] + w[vowel] * 5 + w[vowel + 1:]] + words[longest + 1:])
    return [leet, spaced, dotted, repeated, phrase.upper() + "!!!"]


def identity_fpr(flagged: np.ndarray, groups: list[str]) -> dict:
    """False-positive rate by identity group (every sentence is benign), with Fairlearn MetricFrame."""
    from fairlearn.metrics import MetricFrame, false_positive_rate

    mf = MetricFrame(metrics=false_positive_rate, y_true=np.zeros(len(flagged), dtype=int),
                     y_pred=np.asarray(flagged, dtype=int), sensitive_features=np.asarray(groups))
    by = {str(k): float(v) for k, v in mf.by_group.items()}
    return {"overall": float(mf.overall), "by_group": by, "max": float(mf.group_max()),
            "worst_group": max(by, key=by.get) if by else None, "n_per_group": int(len(groups) // max(1, len(by)))}


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < int(np.sum(y)) < len(y) else None


def _binary(y: np.ndarray, p: np.ndarray, thr: float) -> dict:
    from sklearn.metrics import f1_score

    pred = (p >= thr).astype(int)
    return {"auc": _auc(y, p), "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "accuracy": float((pred == y).mean()), "n": int(len(y)), "hateful_share": float(np.mean(y))}


def _per_functionality(df: pd.DataFrame, pred: np.ndarray) -> dict:
    ok = pred.astype(int) == df["label"].to_numpy()
    out = {}
    for f, g in df.assign(ok=ok).groupby("functionality", sort=True):
        hateful = bool(g["label"].iloc[0] == 1)
        goal = GOALS["hateful_functionality_acc"] if hateful else GOALS["non_hateful_functionality_acc"]
        acc = float(g["ok"].mean())
        out[str(f)] = {"accuracy": acc, "n": int(len(g)), "hateful": hateful, "goal": goal, "met": acc >= goal}
    return out


def load_hatecheck(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    need = {"functionality", "test_case", "label_gold", "target_ident"}
    if not need <= set(df.columns):
        raise ValueError(f"--hatecheck {path} is not HateCheck's test_suite_cases.csv (needs {', '.join(sorted(need))})")
    labels = set(df["label_gold"].dropna().unique())
    if not labels <= {"hateful", "non-hateful"} or df.empty:
        raise ValueError(f"--hatecheck {path}: label_gold must be hateful / non-hateful; got {sorted(labels)}")
    return pd.DataFrame({"text": df["test_case"].astype(str), "label": (df["label_gold"] == "hateful").astype(int),
                         "functionality": df["functionality"].astype(str),
                         "group": df["target_ident"].fillna("").astype(str)})


def load_movielens(movielens: Path, ml100k: Path | None) -> dict[str, list[str]]:
    out = {"ml_latest_small_titles": pd.read_csv(movielens / "movies.csv")["title"].astype(str).tolist()}
    tags = pd.read_csv(movielens / "tags.csv")["tag"].dropna().astype(str).str.strip()
    out["ml_latest_small_tags"] = sorted(set(t for t in tags if t))
    if ml100k is not None:
        out["ml_100k_titles"] = pd.read_csv(ml100k, sep="|", header=None, encoding="latin-1")[1].astype(str).tolist()
    for k, v in out.items():
        if not v:
            raise ValueError(f"MovieLens set {k} is empty")
    return out


def evaluate(vdir: Path, *, data: Path, movielens: Path, hatecheck: Path, ml100k: Path | None,
             suite_dir: Path | None = None, profanity: bool = True, ngram: bool = True, log=None) -> dict:
    from audit.harm import load_davidson, normalise, train_harm_classifier
    from audit.harm_bert import split_indices
    from audit.harm_fit import split_suite
    from audit.harm_model import LESSER_CATEGORIES, HarmModel, load_harm
    from audit.harm_suite import load_suite

    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    clf = load_harm(vdir, device="auto")
    suite = load_suite(suite_dir)
    heldout = suite.cases("heldout")
    _, suite_val = split_suite(suite)
    if heldout.empty or suite_val.empty:
        raise ValueError("the harm suite has an empty held-out or validation split")
    hc = load_hatecheck(hatecheck)
    df = load_davidson(data)
    labels = df["label"].to_numpy()
    seed = int(getattr(clf, "metrics", {}).get("split", {}).get("seed", 0)) if isinstance(clf, HarmModel) else 0
    tr, va, te = split_indices(labels, seed=seed)
    texts = df["text"].tolist()
    dav_te, dav_va = [texts[i] for i in te], [texts[i] for i in va]
    ml = load_movielens(movielens, ml100k)
    ood = pd.concat([hc.assign(source="hatecheck"), heldout.assign(source="suite")], ignore_index=True)

    sets = {"ood": ood["text"].tolist(), "dav_te": dav_te, "dav_va": dav_va, "suite_val": suite_val["text"].tolist(),
            "curated": list(CURATED_TITLES), "plain": list(HARMFUL_PHRASES),
            "obf": [v for ph in HARMFUL_PHRASES for v in obfuscations(ph)], "issue": list(ISSUE_EXAMPLES), **ml}
    models: dict[str, tuple] = {}
    name = f"shipped: {getattr(clf, 'kind', type(clf).__name__)}" + (
        f" ({clf.backbone}, {clf.metrics.get('profile', '?')})" if isinstance(clf, HarmModel) else "")
    if isinstance(clf, HarmModel):
        def shipped(xs):
            """(P(hateful), category, P(any harm) = 1 - P(none)) from one model pass: the harmful-vs-neither
            AUC on Davidson needs the lesser classes' mass too, which P(hateful) leaves out."""
            proba = clf.predict_proba(list(xs))
            p_hate, _, cats = clf.decide(proba)
            return p_hate, cats, 1.0 - proba[:, 0]
        models[name] = (shipped, clf.threshold, True)
    else:
        models[name] = (clf.score, clf.threshold, True)
    if ngram:
        trva = np.sort(np.concatenate([tr, va]))
        say("retraining the char-n-gram baseline on Davidson train+validation")
        ng = train_harm_classifier(df.iloc[trva].reset_index(drop=True), benign_texts=ml["ml_latest_small_titles"])
        models["char n-gram logreg (Davidson)"] = (ng.score, ng.threshold, False)
    if profanity:
        from profanity_check import predict_prob

        def prof(xs):
            p = np.asarray(predict_prob([normalise(x) for x in xs]), dtype=np.float64) if len(xs) else np.zeros(0)
            return p, ["profanity"] * len(p)
        models["alt-profanity-check @0.5"] = (prof, 0.5, False)
        models["alt-profanity-check @val-best"] = (prof, None, False)

    scores: dict[int, dict] = {}
    rows = {}
    y_ood = ood["label"].to_numpy()
    for mname, (fn, thr, shipped) in models.items():
        key = id(fn)
        if key not in scores:
            t1 = time.perf_counter()
            say(f"scoring {sum(map(len, sets.values()))} texts with {mname}")
            scores[key] = {k: fn(v) for k, v in sets.items()}
            scores[key]["seconds"] = time.perf_counter() - t1
        s = scores[key]
        if thr is None:   # best macro-F1 on the shipped model's validation data, equally weighted
            from audit.harm_fit import choose_thresholds

            yv = [(s["dav_va"][0], (labels[va] == 0).astype(int)), (s["suite_val"][0], suite_val["label"].to_numpy())]
            thr = choose_thresholds(yv, {}, np.zeros(0), max_benign_flag_rate=1.0, max_identity_fpr=1.0)[0]
        p_ood = np.asarray(s["ood"][0])
        pred = p_ood >= thr
        r = {"threshold": float(thr), "ood": _binary(y_ood, p_ood, thr)}
        for src in ("hatecheck", "suite"):
            m = (ood["source"] == src).to_numpy()
            r[src] = _binary(y_ood[m], p_ood[m], thr)
            r[src]["functionality"] = _per_functionality(ood[m], pred[m])
        p_te = np.asarray(s["dav_te"][0])
        p_any = np.asarray(s["dav_te"][2]) if len(s["dav_te"]) > 2 else p_te
        r["davidson_test"] = {"auc_hate_vs_rest": _auc((labels[te] == 0).astype(int), p_te),
                              "auc_harmful_vs_neither": _auc((labels[te] != 2).astype(int), p_any), "n": int(len(te))}
        r["movielens_flag_rate"] = {k: float((np.asarray(s[k][0]) >= thr).mean()) for k in ml}
        if shipped:
            r["movielens_lesser_flag_rate"] = {k: float(np.isin(s[k][1], LESSER_CATEGORIES).mean()) for k in ml}
            r["movielens_lesser_by_category"] = {
                k: {str(c): int(n) for c, n in zip(*np.unique(np.asarray(s[k][1])[np.isin(s[k][1], LESSER_CATEGORIES)],
                                                          return_counts=True))} for k in ml}
        r["movielens_flagged_examples"] = {k: [t for t, p in zip(sets[k], s[k][0]) if p >= thr][:10] for k in ml}
        idm_s = (ood["source"] == "suite").to_numpy() & ood["functionality"].isin(SUITE_IDENTITY).to_numpy()
        idm_h = (ood["source"] == "hatecheck").to_numpy() & ood["functionality"].isin(HC_IDENTITY).to_numpy()
        r["identity_fpr"] = {"suite": identity_fpr(pred[idm_s], ood["group"][idm_s].tolist()),
                             "hatecheck": identity_fpr(pred[idm_h], ood["group"][idm_h].tolist())}
        r["curated_titles_flagged"] = [t for t, p in zip(CURATED_TITLES, s["curated"][0]) if p >= thr]

        def flagged(k: str) -> np.ndarray:
            """What the audit flags: P >= threshold, or (the shipped model) a lesser category."""
            hit = np.asarray(s[k][0]) >= thr
            return hit | np.isin(s[k][1], LESSER_CATEGORIES) if shipped else hit
        # abusive phrases are mostly harassment, a lesser category the default policy ENFORCEs
        # every flag is a finding (a lesser one FLAGs, or for harassment ENFORCEs by default): the goal counts all
        r["movielens_any_flag_rate"] = {k: float(flagged(k).mean()) for k in ml}
        r["harmful_phrases_caught"] = float(flagged("plain").mean())
        r["obfuscated_caught"] = float(flagged("obf").mean())
        r["issue_examples"] = {t: {"p": float(p), "category": c, "flagged": bool(f),
                                   "hateful_gold": bool(ISSUE_EXAMPLES[t])}
                               for t, p, c, f in zip(sets["issue"], s["issue"][0], s["issue"][1], flagged("issue"))}
        r["goals"] = _goals(r)
        r["scoring_seconds"] = round(s["seconds"], 1)
        rows[mname] = r
    return {"artifact": str(vdir), "shipped": name, "goals": GOALS, "n_ood": int(len(ood)),
            "n_hatecheck": int(len(hc)), "n_suite_heldout": int(len(heldout)),
            "suite_heldout_templates": int(heldout["template_id"].nunique()),
            "suite_heldout_groups": sorted({g.plural for g in suite.groups if g.split == "heldout"}),
            "n_davidson_test": int(len(te)), "movielens_sizes": {k: len(v) for k, v in ml.items()},
            "training": getattr(clf, "metrics", {}), "models": rows, "seconds": round(time.perf_counter() - t0, 1)}


def _goals(r: dict) -> dict:
    fn = [v for src in ("hatecheck", "suite") for v in r[src]["functionality"].values()]
    fpr = max(r["identity_fpr"]["suite"]["max"], r["identity_fpr"]["hatecheck"]["max"])
    out = {"ood_auc": (r["ood"]["auc"], r["ood"]["auc"] is not None and r["ood"]["auc"] >= GOALS["ood_auc"]),
           "ood_macro_f1": (r["ood"]["macro_f1"], r["ood"]["macro_f1"] >= GOALS["ood_macro_f1"]),
           "movielens_flag_rate": (max(r["movielens_any_flag_rate"].values()),
                                   max(r["movielens_any_flag_rate"].values()) <= GOALS["movielens_flag_rate"]),
           "identity_fpr": (fpr, fpr <= GOALS["identity_fpr"]),
           "functionalities_met": (sum(v["met"] for v in fn), len(fn))}
    return {k: {"value": v[0], "met": bool(v[1])} if k != "functionalities_met" else {"met": v[0], "of": v[1]}
            for k, v in out.items()}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "  n/a" if x is None else format(x, spec)


def render(res: dict) -> str:
    ms = res["movielens_sizes"]
    lines = [f"OOD = HateCheck ({res['n_hatecheck']}) + held-out suite ({res['n_suite_heldout']} cases, "
             f"{res['suite_heldout_templates']} templates; groups never trained on: "
             f"{', '.join(res['suite_heldout_groups'])}); Davidson test n={res['n_davidson_test']}; MovieLens "
             + ", ".join(f"{k} {v}" for k, v in ms.items()),
             f"goals: OOD AUC >= {GOALS['ood_auc']}, macro-F1 >= {GOALS['ood_macro_f1']}, MovieLens flagged <= "
             f"{GOALS['movielens_flag_rate']:.1%}, identity FPR <= {GOALS['identity_fpr']:.0%} per group, "
             f"functionalities >= 90 % (hateful) / 95 % (non-hateful)", "",
             f"{'model':44s} {'thr':>5s} {'OOD AUC':>7s} {'OOD F1':>6s} {'HC AUC':>6s} {'HC F1':>6s} "
             f"{'suite AUC':>9s} {'suite F1':>8s} {'Dav AUC':>7s} {'ML max':>7s} {'idFPR':>6s} {'func ok':>7s}"]
    for name, r in res["models"].items():
        g = r["goals"]
        mark = lambda k: "" if g[k]["met"] else "!"  # noqa: E731
        lines.append(
            f"{name:44s} {r['threshold']:5.3f} {_fmt(r['ood']['auc']):>6s}{mark('ood_auc'):1s} "
            f"{r['ood']['macro_f1']:5.3f}{mark('ood_macro_f1'):1s} {_fmt(r['hatecheck']['auc']):>6s} "
            f"{r['hatecheck']['macro_f1']:6.3f} {_fmt(r['suite']['auc']):>9s} {r['suite']['macro_f1']:8.3f} "
            f"{_fmt(r['davidson_test']['auc_hate_vs_rest']):>7s} {g['movielens_flag_rate']['value']:6.2%}"
            f"{mark('movielens_flag_rate'):1s} {g['identity_fpr']['value']:5.1%}{mark('identity_fpr'):1s} "
            f"{g['functionalities_met']['met']:3d}/{g['functionalities_met']['of']:<3d}")
    lines.append("(! = goal missed; Dav AUC = Davidson test split, hate vs rest, not selected on)")
    for src, title in (("suite", "held-out suite"), ("hatecheck", "HateCheck")):
        funcs = list(next(iter(res["models"].values()))[src]["functionality"])
        lines += ["", f"per-functionality accuracy, {title} (goal 90 % hateful / 95 % non-hateful; ! = missed)",
                  f"{'functionality':24s} {'n':>4s} " + " ".join(f"{n[:14]:>14s}" for n in res["models"])]
        for f in funcs:
            cells = []
            for r in res["models"].values():
                v = r[src]["functionality"][f]
                cells.append(f"{v['accuracy']:13.1%}{'' if v['met'] else '!'}".rjust(14))
            first = next(iter(res["models"].values()))[src]["functionality"][f]
            lines.append(f"{f + (' (h)' if first['hateful'] else ''):24s} {first['n']:4d} " + " ".join(cells))
    for name, r in res["models"].items():
        lines.append("")
        lines.append(f"{name}: MovieLens flagged (any flag) "
                     + ", ".join(f"{k} {v:.3%}" for k, v in r["movielens_any_flag_rate"].items())
                     + "; at the P threshold " + ", ".join(f"{k} {v:.3%}" for k, v in r["movielens_flag_rate"].items()))
        if "movielens_lesser_flag_rate" in r:
            lines.append("  of them lesser flags (default policy: profanity-only, sexual FLAG; harassment ENFORCE) " + ", ".join(
                f"{k} {v:.2%} {r['movielens_lesser_by_category'][k]}" for k, v in r["movielens_lesser_flag_rate"].items()))
        for src in ("suite", "hatecheck"):
            f = r["identity_fpr"][src]
            lines.append(f"  identity FPR ({src}, n≈{f['n_per_group']}/group): max {f['max']:.1%} ({f['worst_group']}); "
                         + ", ".join(f"{k} {v:.0%}" for k, v in f["by_group"].items()))
        lines.append(f"  Davidson test AUC harmful-vs-neither {_fmt(r['davidson_test']['auc_harmful_vs_neither'])}; "
                     f"curated dark titles flagged: {r['curated_titles_flagged'] or 'none'}; abusive phrases caught "
                     f"{r['harmful_phrases_caught']:.0%}, obfuscated {r['obfuscated_caught']:.0%}")
        lines.append("  issue examples: " + "; ".join(
            f"{t[:40]!r} P={v['p']:.2f} {v['category']}{' FLAGGED' if v['flagged'] else ''}"
            for t, v in r["issue_examples"].items()))
    return "\n".join(lines)


def _known_errors() -> tuple[type[BaseException], ...]:
    from audit.harm_suite import SuiteError
    from recsys.errors import ArtifactError

    return (ArtifactError, SuiteError, ValueError, KeyError, OSError)


@cli_main(errors=_known_errors, message=first_line)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.evaluate_harm", description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="artifact root (LATEST) or one version directory")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "harm-evaluation.json")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv")
    ap.add_argument("--movielens", type=Path, default=ROOT / "data" / "ml-latest-small")
    ap.add_argument("--ml100k", type=Path, default=DEFAULT_ML100K, help="ML-100K u.item ('' to skip)")
    ap.add_argument("--hatecheck", type=Path, default=DEFAULT_HATECHECK, help="HateCheck test_suite_cases.csv")
    ap.add_argument("--suite", type=Path, default=None, help="a suite dir (templates.toml + groups.toml); "
                    "default: the shipped audit/harm_suite")
    ap.add_argument("--no-profanity-check", action="store_true", help="skip the alt-profanity-check rows")
    ap.add_argument("--no-ngram", action="store_true", help="skip retraining the n-gram baseline")
    args = ap.parse_args(argv)
    from recsys.artifacts import file_hashes, resolve_version_dir

    vdir = resolve_version_dir(args.artifacts)
    try:
        meta = json.loads((vdir / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"{vdir / 'metadata.json'} is unreadable: {exc}")
    actual = file_hashes(vdir)
    for name, digest in meta.get("files", {}).items():
        if name.split("/", 1)[0] in ("harm", "harm_bert") and actual.get(name) != digest:
            fail(f"artifact file {vdir / name} does not match the sha256 in metadata.json")
    if not args.data.is_file():
        fail(f"--data {args.data} not found")
    if not args.hatecheck.is_file():
        fail(f"--hatecheck {args.hatecheck} not found")
    for f in ("movies.csv", "tags.csv"):
        if not (args.movielens / f).is_file():
            fail(f"--movielens {args.movielens} has no {f}")
    ml100k = args.ml100k if str(args.ml100k) not in ("", ".") else None
    if ml100k is not None and not ml100k.is_file():
        fail(f"--ml100k {ml100k} not found (pass --ml100k '' to skip it)")
    if args.suite is not None and not args.suite.is_dir():
        fail(f"--suite {args.suite} is not a directory")
    if args.out.exists() and args.out.is_dir():
        fail(f"--out {args.out} is a directory; give a file path")
    try:
        res = evaluate(vdir, data=args.data, movielens=args.movielens, hatecheck=args.hatecheck, ml100k=ml100k,
                       suite_dir=args.suite, profanity=not args.no_profanity_check, ngram=not args.no_ngram,
                       log=lambda m: print(f"[evaluate_harm] {m}", file=sys.stderr, flush=True))
    except ImportError as exc:
        fail(f"{exc}: install the dev extra (pip install -e '.[dev]') or pass --no-profanity-check")
    print(render(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(res, indent=2, default=_json_default))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
