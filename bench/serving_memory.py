"""Resident memory of the serving process: with the artifact's own catalog, and with 100,000 more items.

    python bench/serving_memory.py --artifacts artifacts [--extra-items 100000] [--out FILE]

1. Copies the artifact's latest version to a temporary root and adds `--extra-items` synthetic items with
   `python -m recsys.upsert_items`' own code (catalog rows, item vectors, harm scores, empty co-occurrence
   columns: everything a real upsert writes). Only the two model calls are replaced, so that 100k texts
   need not go through BERT on 2 cores: item vectors are random unit vectors and harm scores 0. The
   arrays, their shapes and dtypes are the ones a real upsert stores, so memory is the same.
2. Starts `python -m service` on each root in turn, sends `--requests` Rank calls with 100 random catalog
   candidates each (so vectors of many items are touched), and reads VmRSS / VmHWM from /proc.

The server reads item_vectors.npy into memory (since session 9; before, it was memory-mapped and only the
pages of requested items became resident), so all of it is resident from the start; its size is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rank_vs_echo import free_port  # noqa: E402


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def grow_catalog(src_root: Path, dst_root: Path, extra: int, seed: int = 0) -> Path:
    """A copy of the latest version of src_root with `extra` synthetic items added by upsert_items."""
    import pandas as pd

    from audit.harm import HarmClassifier
    from audit.harm_bert import BertHarmClassifier
    from recsys.artifact_update import base_version_dir
    from recsys.compose import load_artifacts
    from recsys.encoder import TextEncoder
    from recsys.upsert_items import upsert_items

    vdir = base_version_dir(src_root)
    dst_root.mkdir(parents=True)
    shutil.copytree(vdir, dst_root / vdir.name)
    (dst_root / "LATEST").write_text(vdir.name + "\n")
    cat = load_artifacts(vdir, device="cpu", verify=False).catalog
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(cat), extra)
    items = pd.DataFrame({"item_id": [f"synthetic-{k}" for k in range(extra)],
                          "title": [f"{cat.titles[i]} (synthetic {k})" for k, i in enumerate(pick)],
                          "genres": [cat.genres[i] for i in pick]})
    path = dst_root.parent / "items.parquet"
    items.to_parquet(path)

    def fake_encode(self, texts, max_length=64, batch_size=64, **kw):
        v = rng.normal(size=(len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def fake_harm(self, texts):
        return np.zeros(len(texts)), ["neither"] * len(texts)

    saved = TextEncoder.encode, HarmClassifier.score, BertHarmClassifier.score
    TextEncoder.encode, HarmClassifier.score, BertHarmClassifier.score = fake_encode, fake_harm, fake_harm
    try:
        return upsert_items(dst_root, path, device="cpu")
    finally:
        TextEncoder.encode, HarmClassifier.score, BertHarmClassifier.score = saved


def measure(artifacts_root: Path, requests: int, tmp: Path, seed: int = 0) -> dict:
    import grpc
    from ethicrec.v1 import recommender_pb2 as pb
    from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

    from recsys.compose import load_artifacts
    from service.demo import stop_process, wait_healthy

    art = load_artifacts(artifacts_root, device="cpu", verify=False)
    ids = list(art.catalog.item_ids)
    users = list(art.users)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--artifacts", str(artifacts_root), "--port", str(port),
                             "--audit-log", str(tmp / f"audit-{port}.db")], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"127.0.0.1:{port}", 300, proc)
        idle = _status_kib(proc.pid)
        rng = np.random.default_rng(seed)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.RecommenderStub(ch)
            for k in range(requests):
                cands = rng.choice(len(ids), 100, replace=False)
                stub.Rank(pb.RankRequest(user=pb.User(user_id=users[k % len(users)]),
                                         candidates=[pb.Candidate(item_id=str(ids[i])) for i in cands], top_k=10),
                          timeout=60)
        busy = _status_kib(proc.pid)
    finally:
        stop_process(proc)
    vectors = art.store.item_vectors
    return {"catalog_items": len(ids), "rss_idle_mib": idle["VmRSS"] / 1024, "rss_after_mib": busy["VmRSS"] / 1024,
            "peak_mib": busy["VmHWM"] / 1024, "item_vectors_file_mib": vectors.nbytes / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--extra-items", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-memory-"))
    try:
        t0 = time.perf_counter()
        grown = grow_catalog(args.artifacts, tmp / "grown", args.extra_items)
        print(f"built {grown} in {time.perf_counter() - t0:.0f} s", flush=True)
        base = measure(args.artifacts, args.requests, tmp)
        big = measure(tmp / "grown", args.requests, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per = {k: (big[k] - base[k]) * 100_000 / args.extra_items for k in ("rss_idle_mib", "rss_after_mib", "peak_mib",
                                                                        "item_vectors_file_mib")}
    res = {"default": base, "grown": big, "per_100k_items_mib": per, "requests": args.requests}
    for name, r in (("default catalog", base), (f"+{args.extra_items:,} items", big)):
        print(f"{name:>18}: {r['catalog_items']:>7,} items, RSS idle {r['rss_idle_mib']:.0f} MiB, after "
              f"{args.requests} Rank calls {r['rss_after_mib']:.0f} MiB (peak {r['peak_mib']:.0f}); item vectors file "
              f"{r['item_vectors_file_mib']:.0f} MiB (read into memory)")
    print(f"per 100k catalog items: RSS idle +{per['rss_idle_mib']:.0f} MiB, after requests "
          f"+{per['rss_after_mib']:.0f} MiB, peak +{per['peak_mib']:.0f} MiB; vectors file +{per['item_vectors_file_mib']:.0f} MiB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
