"""GPU throughput of the interest models in bf16: bi-encoder texts/s and cross-encoder pairs/s, and the
share of the GPU's dense bf16 peak they reach.

    .venv/bin/python bench/gpu_interest.py [--artifacts artifacts] [--peak-tflops 989] \\
        [--batch-sizes 64,256,1024] --out bench/results/gpu_interest.json

Needs a CUDA GPU (exits with a message and status 2 without one). Uses the serving code paths:
`TextEncoder.encode` (unpadded BERT, inference mode, bf16 autocast: encode_precision auto on CUDA) on
MovieLens latest-small item texts (max_length 64) and user-history texts (max_length 128), and
`CrossEncoder.predict` on (user text, item text) pairs (max_length 192). Models: the artifact's
`interest/` and `cross_encoder/` when --artifacts has them, else the shipped all-MiniLM-L6-v2 (a
cross-encoder from it gets a random head: same cost).

Share of peak: achieved FLOP/s / peak, with FLOPs estimated as 2 x parameters x tokens (tokens =
real tokens, padding excluded; parameters include the embedding tables, which cost a lookup and
no multiply, so the estimate flatters a little — the non-embedding figure is reported too; the
attention's own seq^2 FLOPs are left out). Default peak: 989 TFLOP/s, the dense bf16 figure of an
H100/H200 SXM; pass --peak-tflops for another GPU (e.g. A100: 312, L4: 121).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

H100_DENSE_BF16_TFLOPS = 989.0


def _params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return total, total - emb


def _time(fn, repeats: int) -> float:
    import torch

    fn()                                   # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def _row(kind: str, n: int, tokens: int, seconds: float, params: tuple[int, int], peak: float, **extra) -> dict:
    flops = 2.0 * params[0] * tokens
    flops_ne = 2.0 * params[1] * tokens
    row = {"kind": kind, "n": n, "tokens": tokens, "seconds": seconds, "per_second": n / seconds,
           "tokens_per_second": tokens / seconds, "tflops": flops / seconds / 1e12,
           "share_of_peak": flops / seconds / (peak * 1e12),
           "share_of_peak_non_embedding": flops_ne / seconds / (peak * 1e12), **extra}
    print(f"{kind:28s} batch {extra.get('batch_size', '-'):>5}  {row['per_second']:10.0f}/s  "
          f"{row['tokens_per_second'] / 1e6:6.2f} M tok/s  {row['tflops']:7.2f} TFLOP/s  "
          f"{100 * row['share_of_peak']:5.2f} % of peak ({100 * row['share_of_peak_non_embedding']:.2f} % "
          "non-embedding)", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=None, help="artifact root or version (default: base model)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "ml-latest-small")
    ap.add_argument("--peak-tflops", type=float, default=H100_DENSE_BF16_TFLOPS,
                    help="the GPU's dense bf16 peak in TFLOP/s (default 989: H100/H200 SXM)")
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--items", type=int, default=20000, help="item texts (MovieLens texts, repeated to this count)")
    ap.add_argument("--users", type=int, default=4000, help="user-history texts (repeated to this count)")
    ap.add_argument("--pairs", type=int, default=20000, help="cross-encoder (user, item) pairs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch (torch.cuda.is_available() is False); this benchmark needs one. "
              "For CPU figures run bench/encode_vs_st.py.", file=sys.stderr)
        return 2
    from encode_vs_st import load_texts

    from recsys.embedding_store import ITEM_MAX_LENGTH, USER_MAX_LENGTH
    from recsys.encoder import TextEncoder, base_model_path
    from recsys.interest import CROSS_MAX_LENGTH, CrossEncoder

    bi_path, ce_path = base_model_path(), None
    if args.artifacts is not None:
        from recsys.artifacts import resolve_version_dir

        vdir = resolve_version_dir(args.artifacts)
        bi_path = vdir / "interest"
        ce_path = vdir / "cross_encoder" if (vdir / "cross_encoder").is_dir() else None
    enc = TextEncoder.load(bi_path, device="cuda", precision="bf16")
    ce = CrossEncoder.load(ce_path, device="cuda") if ce_path else CrossEncoder.from_base(base_model_path(), "cuda")
    items, users, _ = load_texts(args.data, 10**9, 10**9)
    rep = lambda xs, n: [xs[i % len(xs)] for i in range(n)]  # noqa: E731
    item_texts, user_texts = rep(items, args.items), rep(users, args.users)
    rng = np.random.default_rng(0)
    pair_users = [users[i] for i in rng.integers(len(users), size=args.pairs)]
    pair_items = [items[i] for i in rng.integers(len(items), size=args.pairs)]
    tok = enc.tokenizer

    def n_tokens(texts, max_len, pair=None) -> int:
        enc_ = tok(texts, pair, truncation=True, max_length=max_len) if pair else tok(texts, truncation=True,
                                                                                     max_length=max_len)
        return int(sum(len(x) for x in enc_["input_ids"]))

    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu}, torch {torch.__version__}, peak {args.peak_tflops:g} TFLOP/s dense bf16", flush=True)
    p_bi, p_ce = _params(enc.model), _params(ce.model)
    rows = []
    tokens_items = n_tokens(item_texts, ITEM_MAX_LENGTH)
    tokens_users = n_tokens(user_texts, USER_MAX_LENGTH)
    tokens_pairs = n_tokens(pair_users, CROSS_MAX_LENGTH, pair_items)
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        s = _time(lambda: enc.encode(item_texts, max_length=ITEM_MAX_LENGTH, batch_size=bs), args.repeats)
        rows.append(_row("bi-encoder items (texts)", len(item_texts), tokens_items, s, p_bi, args.peak_tflops,
                         batch_size=bs, max_length=ITEM_MAX_LENGTH))
        s = _time(lambda: enc.encode(user_texts, max_length=USER_MAX_LENGTH, batch_size=bs), args.repeats)
        rows.append(_row("bi-encoder users (texts)", len(user_texts), tokens_users, s, p_bi, args.peak_tflops,
                         batch_size=bs, max_length=USER_MAX_LENGTH))
        s = _time(lambda: ce.predict(pair_users, pair_items, batch_size=bs), args.repeats)
        rows.append(_row("cross-encoder (pairs)", len(pair_items), tokens_pairs, s, p_ce, args.peak_tflops,
                         batch_size=bs, max_length=CROSS_MAX_LENGTH))
    result = {"gpu": gpu, "torch": torch.__version__, "peak_tflops": args.peak_tflops,
              "params": {"bi_encoder": p_bi[0], "bi_encoder_non_embedding": p_bi[1], "cross_encoder": p_ce[0],
                         "cross_encoder_non_embedding": p_ce[1]},
              "flops_estimate": "2 x params x real tokens", "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
