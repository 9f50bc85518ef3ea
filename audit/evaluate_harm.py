"""`python -m audit.evaluate_harm --artifacts DIR [--out FILE]`: the artifact's fine-tuned BERT harm
classifier vs alt-profanity-check vs the repo's char-n-gram baseline, on the held-out Davidson test split.

* Split: re-derived from the seed stored in harm_bert/harm_bert.json (`split_indices`) and checked
  against the stored test row indices and the data file's sha256 (a mismatch is an input error).
* AUC: binary, harmful (hate or offensive) vs neither, on P(harmful) (BERT: P(hate)+P(offensive)
  after temperature scaling; n-gram: 1-P(neither); alt-profanity-check: `predict_prob`).
* Macro-F1: mean of the F1 of "harmful" and of "neither" at each model's own operating threshold —
  BERT and n-gram: their stored/tuned thresholds (chosen on validation under the catalog false-positive
  cap); alt-profanity-check: 0.5, the threshold of its `predict()`; a second row gives it the threshold
  maximising F1 on the same validation split (no cap), its best case.
* n-gram baseline: `audit.harm.train_harm_classifier` retrained here on the train+validation rows
  (the artifact's own harm/ was trained on a random 80 % of Davidson that overlaps this test split).
* Catalog false positives: share of MovieLens titles (movies.csv) and distinct tag strings (tags.csv)
  flagged at each model's threshold; a curated list of dark-sounding innocent titles; obfuscated
  harmful phrases (catch rate); benign identity-group sentences (Fairlearn MetricFrame
  false_positive_rate by group, `EVAL_TEMPLATES`, disjoint from the training augmentation).

All inputs get `audit.harm.normalise` (tweet artefacts removed, lower case); BERT also de-obfuscates.
Table to stdout, everything as JSON to --out (default reports/harm-evaluation.json). Bad input: one
line on stderr, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CURATED_TITLES = ("Kill Bill: Vol. 1 (2003)", "Kill Bill: Vol. 2 (2004)", "Schindler's List (1993)",
                  "The Texas Chain Saw Massacre (1974)", "Apocalypse Now (1979)", "Hotel Rwanda (2004)",
                  "The Killing Fields (1984)", "Die Hard (1988)", "Natural Born Killers (1994)",
                  "Reservoir Dogs (1992)", "12 Years a Slave (2013)", "Django Unchained (2012)",
                  "Inglourious Basterds (2009)", "Full Metal Jacket (1987)", "The Silence of the Lambs (1991)",
                  "American Psycho (2000)", "Hostel (2005)", "Saw (2004)", "Pulp Fiction (1994)",
                  "Dead Man Walking (1995)", "Requiem for a Dream (2000)", "Mississippi Burning (1988)",
                  "Malcolm X (1992)", "Do the Right Thing (1989)", "Boys Don't Cry (1999)",
                  "Brokeback Mountain (2005)", "Philadelphia (1993)", "The Pianist (2002)",
                  "Kill the Messenger (2014)", "Blood Diamond (2006)")
# "Inglourious Basterds": its misspelling of a profanity is the film's real title; it is in the
# curated list, so a model that flags it fails the list (we do not whitelist it).
HARMFUL_PHRASES = ("you stupid bitch", "shut up faggot", "fuck you", "kill yourself you retard", "dumb hoe",
                   "you are a worthless piece of shit", "go back to your country nigger", "fucking idiot")


def obfuscations(phrase: str) -> list[str]:
    """l33t, spacing, repeated letters and punctuation variants of a phrase."""
    # "a" -> "4", not "@": a word starting with "@" reads as a tweet @mention and is removed by normalise
    # (one-letter words stay: a lone "4" is a number, not an obfuscated "a")
    table = str.maketrans({"i": "1", "o": "0", "e": "3", "a": "4", "s": "$"})
    leet = " ".join(w.translate(table) if len(w) > 1 else w for w in phrase.split())
    words = phrase.split()
    longest = max(range(len(words)), key=lambda k: len(words[k]))
    w = words[longest]
    spaced = " ".join(words[:longest] + [" ".join(w)] + words[longest + 1:])
    dotted = " ".join(words[:longest] + [".".join(w)] + words[longest + 1:])
    vowel = next((k for k, ch in enumerate(w) if ch in "aeiou"), 1)
    repeated = " ".join(words[:longest] + [w[:vowel] + w[vowel] * 5 + w[vowel + 1:]] + words[longest + 1:])
    shout = phrase.upper() + "!!!"
    return [leet, spaced, dotted, repeated, shout]


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import f1_score, roc_auc_score

    pred = (p >= threshold).astype(int)
    return {"auc": float(roc_auc_score(y, p)), "macro_f1": float(f1_score(y, pred, average="macro")),
            "f1_harmful": float(f1_score(y, pred)), "threshold": float(threshold)}


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    grid = np.round(np.linspace(0.05, 0.99, 95), 4)
    return float(grid[int(np.argmax([f1_score(y, (p >= t).astype(int)) for t in grid]))])


def identity_fpr(flagged: np.ndarray, groups: list[str]) -> dict:
    """False-positive rate by identity group (all probe sentences are benign) with Fairlearn MetricFrame."""
    from fairlearn.metrics import MetricFrame, false_positive_rate

    y_true = np.zeros(len(flagged), dtype=int)
    mf = MetricFrame(metrics=false_positive_rate, y_true=y_true, y_pred=flagged.astype(int),
                     sensitive_features=np.asarray(groups))
    by = {str(k): float(v) for k, v in mf.by_group.items()}
    return {"overall": float(mf.overall), "by_group": by, "max": float(mf.group_max()),
            "difference": float(mf.difference()), "n_per_group": int(len(groups) // max(1, len(set(groups))))}


def evaluate(vdir: Path, *, data: Path, movielens: Path, profanity: bool = True, ngram: bool = True) -> dict:
    import pandas as pd

    from audit.harm import load_davidson, normalise, train_harm_classifier
    from audit.harm_bert import EVAL_TEMPLATES, BertHarmClassifier, identity_texts, split_indices
    from audit.train_harm import file_sha256

    clf = BertHarmClassifier.load(vdir / "harm_bert", device="auto")
    split = clf.split
    df = load_davidson(data)
    if split.get("data_sha256") and split["data_sha256"] != file_sha256(data):
        raise ValueError(f"--data {data} is not the file the classifier was trained on (sha256 differs)")
    labels = df["label"].to_numpy()
    tr, va, te = split_indices(labels, seed=int(split.get("seed", 0)), test_frac=float(split.get("test_frac", 0.1)),
                               val_frac=float(split.get("val_frac", 0.1)))
    if "test_indices" in split and list(te) != list(split["test_indices"]):
        raise ValueError("the re-derived test split differs from the one stored in harm_bert.json")
    texts = df["text"].tolist()
    y_te = (labels[te] != 2).astype(int)
    y_va = (labels[va] != 2).astype(int)
    te_texts = [texts[i] for i in te]
    va_texts = [texts[i] for i in va]
    movies = pd.read_csv(movielens / "movies.csv")["title"].astype(str).tolist()
    tags = sorted(set(t for t in pd.read_csv(movielens / "tags.csv")["tag"].dropna().astype(str).str.strip() if t))
    id_texts, id_groups = identity_texts(EVAL_TEMPLATES)
    obf_plain = list(HARMFUL_PHRASES)
    obf = [v for ph in HARMFUL_PHRASES for v in obfuscations(ph)]

    scorers: dict[str, tuple] = {}
    t0 = time.perf_counter()
    scorers["bert (fine-tuned MiniLM)"] = (lambda xs: clf.score(list(xs))[0], clf.threshold)
    if ngram:
        trva = np.sort(np.concatenate([tr, va]))
        ng = train_harm_classifier(df.iloc[trva].reset_index(drop=True), benign_texts=movies, seed=0)
        scorers["char n-gram logreg"] = (lambda xs: ng.score(list(xs))[0], ng.threshold)
    if profanity:
        from profanity_check import predict_prob

        def prof(xs):
            return np.asarray(predict_prob([normalise(x) for x in xs]), dtype=np.float64) if len(xs) else np.zeros(0)
        scorers["alt-profanity-check @0.5"] = (prof, 0.5)
        scorers["alt-profanity-check @val-best"] = (prof, _best_f1_threshold(y_va, prof(va_texts)))
    rows = {}
    cache: dict[int, dict] = {}
    for name, (fn, thr) in scorers.items():
        key = id(fn)
        if key not in cache:
            t1 = time.perf_counter()
            cache[key] = {"test": fn(te_texts), "movies": fn(movies), "tags": fn(tags), "curated": fn(CURATED_TITLES),
                          "identity": fn(id_texts), "plain": fn(obf_plain), "obf": fn(obf),
                          "seconds": time.perf_counter() - t1}
        s = cache[key]
        r = _metrics(y_te, s["test"], thr)
        r.update({
            "movielens_title_flag_rate": float((s["movies"] >= thr).mean()),
            "movielens_tag_flag_rate": float((s["tags"] >= thr).mean()),
            "curated_flagged": [t for t, v in zip(CURATED_TITLES, s["curated"]) if v >= thr],
            "harmful_plain_caught": float((s["plain"] >= thr).mean()),
            "harmful_obfuscated_caught": float((s["obf"] >= thr).mean()),
            "obfuscated_missed": [t for t, v in zip(obf, s["obf"]) if v < thr],
            "identity_fpr": identity_fpr(s["identity"] >= thr, id_groups),
            "scoring_seconds": round(s["seconds"], 1)})
        rows[name] = r
    return {"artifact": str(vdir), "n_test": int(len(te)), "test_harmful_share": float(y_te.mean()),
            "n_movielens_titles": len(movies), "n_movielens_tags": len(tags), "split": {
                k: v for k, v in split.items() if k != "test_indices"},
            "bert_training": clf.metrics, "models": rows, "seconds": round(time.perf_counter() - t0, 1)}


def render(res: dict) -> str:
    lines = [f"held-out Davidson test split: n={res['n_test']} ({res['test_harmful_share']:.1%} harmful); "
             f"MovieLens: {res['n_movielens_titles']} titles, {res['n_movielens_tags']} distinct tags",
             f"{'model':32s} {'AUC':>6s} {'macroF1':>7s} {'thr':>6s} {'titles FP':>9s} {'tags FP':>8s} "
             f"{'curated':>7s} {'obf caught':>10s} {'id FPR max':>10s}"]
    for name, r in res["models"].items():
        lines.append(f"{name:32s} {r['auc']:6.4f} {r['macro_f1']:7.4f} {r['threshold']:6.3f} "
                     f"{r['movielens_title_flag_rate']:9.3%} {r['movielens_tag_flag_rate']:8.3%} "
                     f"{len(r['curated_flagged']):3d} flag {r['harmful_obfuscated_caught']:10.0%} "
                     f"{r['identity_fpr']['max']:10.0%}")
    for name, r in res["models"].items():
        by = r["identity_fpr"]["by_group"]
        lines.append(f"identity FPR {name}: " + ", ".join(f"{g} {v:.0%}" for g, v in by.items()))
        if r["curated_flagged"]:
            lines.append(f"curated titles flagged by {name}: {'; '.join(r['curated_flagged'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.evaluate_harm", description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="artifact root (LATEST) or one version directory")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "harm-evaluation.json")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "hate-speech-davidson" / "labeled_data.csv")
    ap.add_argument("--movielens", type=Path, default=ROOT / "data" / "ml-latest-small")
    ap.add_argument("--no-profanity-check", action="store_true", help="skip the alt-profanity-check rows")
    ap.add_argument("--no-ngram", action="store_true", help="skip retraining the n-gram baseline")
    args = ap.parse_args(argv)
    from recsys.artifacts import file_hashes, resolve_version_dir
    from recsys.errors import ArtifactError

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        vdir = resolve_version_dir(args.artifacts)
    except ArtifactError as exc:
        return fail(str(exc))
    if not (vdir / "harm_bert" / "harm_bert.json").is_file():
        return fail(f"artifact {vdir} has no harm_bert/ (train one with python -m audit.train_harm --out ...)")
    try:
        meta = json.loads((vdir / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return fail(f"{vdir / 'metadata.json'} is unreadable: {exc}")
    actual = file_hashes(vdir)
    for name, digest in meta.get("files", {}).items():
        if name.startswith("harm_bert/") and actual.get(name) != digest:
            return fail(f"artifact file {vdir / name} does not match the sha256 in metadata.json")
    if not args.data.is_file():
        return fail(f"--data {args.data} not found")
    for f in ("movies.csv", "tags.csv"):
        if not (args.movielens / f).is_file():
            return fail(f"--movielens {args.movielens} has no {f}")
    if args.out.exists() and args.out.is_dir():
        return fail(f"--out {args.out} is a directory; give a file path")
    try:
        res = evaluate(vdir, data=args.data, movielens=args.movielens, profanity=not args.no_profanity_check,
                       ngram=not args.no_ngram)
    except ImportError as exc:
        return fail(f"{exc}: install the dev extra (pip install -e '.[dev]') or pass --no-profanity-check")
    except (ValueError, KeyError) as exc:
        return fail(str(exc))
    print(render(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
