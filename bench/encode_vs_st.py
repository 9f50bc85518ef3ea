"""Encoding throughput: ethicrec's `TextEncoder.encode` vs sentence-transformers, same model, same texts.

    .venv/bin/python bench/encode_vs_st.py --out bench/results/encode_vs_st.json [--train]

Both sides load the shipped all-MiniLM-L6-v2 (`recsys.encoder.base_model_path()`, offline, CPU) in
one process and encode the same texts with the same batch size and the same max length:

  items    2,000 MovieLens latest-small item texts ("Title (year). Genres: ... . Tags: ...", the
           catalog's BERT input), max_length 64 (ITEM_MAX_LENGTH)
  users    500 user-history texts (the 20 most recent titles of a user, " | "-joined, as the
           serving path builds them), max_length 128 (USER_MAX_LENGTH)
  items_per_request  the same item texts in calls of --request-size (20) texts each, as a request's
           uncached texts reach the encoder (bench (b) of issue 10: 20 uncached texts per request)

Blocks alternate between the two encoders (which one goes first flips every round) so both see
the same machine load; the ratio reported is the median over rounds of (sentence-transformers
seconds / ethicrec seconds) for the same texts. Before timing, the vectors of both are compared
(cosine of every pair must exceed 0.999), so the comparison is like for like.

Precision: ethicrec encodes in `--precision` (default auto: bf16 autocast on CPUs with native bf16,
fp32 elsewhere; recsys.device.inference_precision), sentence-transformers in fp32 (its default) or,
with `--st-bf16`, inside the same bf16 autocast, for a like-for-like precision.

--train also times `recsys.interest_training.fine_tune` on the real MiniLM: 64 history->item
pairs from before the 70 % time quantile, batch 32, a few epochs, CPU; reports steps/s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_texts(data: Path, n_items: int, n_users: int, seed: int = 0) -> tuple[list[str], list[str], object]:
    from recsys.catalog import Catalog
    from recsys.data import load_dataset
    from recsys.text import user_text

    ds = load_dataset(data)
    inter = ds.interactions
    cat = Catalog.build(ds.items, ds.tags, inter, int(inter["timestamp"].max()) + 1)
    rng = np.random.default_rng(seed)
    items = [str(cat.texts[i]) for i in rng.choice(len(cat), size=min(n_items, len(cat)), replace=False)]
    recent = (inter.sort_values(["timestamp", "item_id"], ascending=[False, True], kind="mergesort")
              .groupby("user_id", sort=True)["item_id"].apply(lambda s: list(s.head(20))))
    users = []
    for hist in recent.iloc[:n_users]:
        rows = cat.lookup(hist)
        users.append(user_text([cat.texts[r] for r in rows if r >= 0]))
    return items, users, ds


def cosine_check(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def bench_encode(enc, st, sets: dict, batch_size: int, rounds: int, st_bf16: bool = False) -> dict:
    import contextlib

    import torch

    st_context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if st_bf16 else contextlib.nullcontext
    out = {}
    for name, (texts, max_len, call_size) in sets.items():
        size = call_size or len(texts)
        calls = [texts[s:s + size] for s in range(0, len(texts), size)]

        def ours():
            return np.concatenate([enc.encode(c, max_length=max_len, batch_size=batch_size) for c in calls])

        def theirs():
            st.max_seq_length = max_len
            with st_context():
                return np.concatenate([st.encode(c, batch_size=batch_size, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False) for c in calls])

        a, b = ours(), theirs()      # warm-up, and the like-for-like check
        min_cos = cosine_check(a, b)
        if min_cos <= 0.999:
            raise SystemExit(f"{name}: vectors disagree (min cosine {min_cos:.6f}); not a fair comparison")
        t_ours, t_st = [], []
        for r in range(rounds):
            pair = [("ours", ours), ("st", theirs)]
            if r % 2:
                pair.reverse()
            for who, fn in pair:
                t0 = time.perf_counter()
                fn()
                (t_ours if who == "ours" else t_st).append(time.perf_counter() - t0)
        ratios = np.array(t_st) / np.array(t_ours)
        out[name] = {"n_texts": len(texts), "max_length": max_len, "batch_size": batch_size,
                     "texts_per_call": call_size or len(texts), "rounds": rounds,
                     "min_cosine": min_cos,
                     "ethicrec_texts_per_s_median": float(len(texts) / np.median(t_ours)),
                     "st_texts_per_s_median": float(len(texts) / np.median(t_st)),
                     "ratio_ethicrec_over_st_median": float(np.median(ratios)),
                     "ratio_per_round": [float(x) for x in ratios]}
        print(f"{name:6s} {len(texts)} texts, max_length {max_len}, batch {batch_size}, "
              f"{call_size or len(texts)} per call: ethicrec "
              f"{out[name]['ethicrec_texts_per_s_median']:.0f} texts/s, sentence-transformers "
              f"{out[name]['st_texts_per_s_median']:.0f} texts/s -> ratio {out[name]['ratio_ethicrec_over_st_median']:.2f}x"
              f" (rounds: {', '.join(f'{x:.2f}' for x in ratios)}), min cosine {min_cos:.6f}", flush=True)
    return out


def bench_train(ds, n_pairs: int, batch_size: int, epochs: int) -> dict:
    from recsys.catalog import Catalog
    from recsys.encoder import TextEncoder, base_model_path
    from recsys.interest_training import fine_tune, make_pairs
    from recsys.split import temporal_cutoffs

    inter = ds.interactions
    cut = temporal_cutoffs(inter)
    cat = Catalog.build(ds.items, ds.tags, inter, cut.t_fit)
    pairs = make_pairs(inter, cat, cut.t_fit, max_pairs=n_pairs, seed=0)
    enc = TextEncoder.load(base_model_path(), device="cpu")
    s = fine_tune(enc, pairs, cat, epochs=epochs, batch_size=batch_size, lr=5e-5, seed=0, progress=False)
    res = {"pairs": len(pairs.item_rows), "batch_size": batch_size, "steps": s["steps"], "seconds": s["seconds"],
           "steps_per_second": s["steps_per_second"], "pairs_per_second": s["steps"] * batch_size / s["seconds"]}
    print(f"train  fine_tune on {res['pairs']} pairs, batch {batch_size}: {res['steps']} steps in "
          f"{res['seconds']:.1f}s -> {res['steps_per_second']:.3f} steps/s ({res['pairs_per_second']:.1f} pairs/s)",
          flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--request-size", type=int, default=20,
                    help="also encode the item texts in calls of this many, as a request's uncached texts "
                         "reach the encoder (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="ethicrec's encoding precision (auto: bf16 on CPUs with native bf16)")
    ap.add_argument("--st-bf16", action="store_true", help="run sentence-transformers under bf16 autocast too")
    ap.add_argument("--train", action="store_true", help="also time bi-encoder fine-tuning steps")
    ap.add_argument("--train-pairs", type=int, default=64)
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from recsys.embedding_store import ITEM_MAX_LENGTH, USER_MAX_LENGTH
    from recsys.encoder import TextEncoder, base_model_path

    items, users, ds = load_texts(args.data, args.items, args.users)
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                          "loadavg_start": os.getloadavg()}}
    from recsys.device import cpu_has_native_bf16

    result["machine"]["cpu_native_bf16"] = cpu_has_native_bf16()
    if not args.skip_encode:
        from sentence_transformers import SentenceTransformer
        import sentence_transformers

        result["machine"]["sentence_transformers"] = sentence_transformers.__version__
        enc = TextEncoder.load(base_model_path(), device="cpu", precision=args.precision)
        result["precision"] = {"ethicrec": enc.precision, "sentence_transformers": "bf16" if args.st_bf16 else "fp32"}
        print(f"ethicrec in {enc.precision}, sentence-transformers in {result['precision']['sentence_transformers']}",
              flush=True)
        st = SentenceTransformer(str(base_model_path()), device="cpu", local_files_only=True)
        sets = {"items": (items, ITEM_MAX_LENGTH, 0), "users": (users, USER_MAX_LENGTH, 0)}
        if args.request_size:
            sets["items_per_request"] = (items, ITEM_MAX_LENGTH, args.request_size)
        result["encode"] = bench_encode(enc, st, sets, args.batch_size, args.rounds, st_bf16=args.st_bf16)
        del st, enc
    if args.train:
        result["train"] = bench_train(ds, args.train_pairs, 32, args.train_epochs)
    result["machine"]["loadavg_end"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
