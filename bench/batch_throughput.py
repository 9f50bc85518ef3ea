"""Batch rescoring throughput and memory: `python -m recsys.batch` on generated inputs.

    .venv/bin/python bench/batch_throughput.py --artifacts artifacts --out bench/results/batch_throughput.json

Scenarios (100 candidates per user unless said otherwise):
  warm       local engine in-process, catalog candidates (precomputed item vectors), user
             vectors already cached by a warm-up run: the pipeline's own cost per pair
  cold       the CLI in a fresh process on the same input: adds start-up and loading the artifact
             (and one BERT encode per user history the artifact has no precomputed vector for);
             cold_workers the same with --workers 2 (each worker loads the artifact too)
  texts      local engine in-process, every candidate an unknown item with its own text:
             BERT item encodes and the harm classifier on every row; run twice alternating with
             texts_fp32 (the same with encode_precision fp32), each reported as its better round
  workers    the local engine with --workers 2 (two worker processes, started and warmed once), run
             alternately with `warm` (one process) on the same input and chunking: the ratio is the
             figure to quote
  ray        the CLI with --engine ray --workers 2 on the cold input (local Ray cluster)
  memory     peak RSS of the CLI process (local engine) for an input and one 10x larger
Users in `warm`/`cold`/`ray` are the artifact's known users (real histories) topped up
with unknown ids; `memory` uses unknown ids only (empty histories) so its long input
stays quick.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_input(path: Path, artifacts, n_users: int, per_user: int, *, known_users: bool = True,
               texts: bool = False, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    cat = artifacts.catalog
    ok = np.flatnonzero(cat.harm_score < artifacts.harm.threshold)
    known = list(artifacts.users) if known_users else []
    writer = None
    written = 0
    for start in range(0, n_users, 1000):
        u, it, tx, age = [], [], [], []
        for k in range(start, min(n_users, start + 1000)):
            uid = known[k] if k < len(known) else f"bench-{k}"
            idx = rng.choice(ok, per_user, replace=False)
            u += [uid] * per_user
            if texts:
                it += [f"new-{k}-{j}" for j in range(per_user)]
                tx += [f"{cat.titles[i]} (fan cut {k}.{j}), {cat.genres[i].replace('|', ', ')}"
                       for j, i in enumerate(idx)]
            else:
                it += [str(cat.item_ids[i]) for i in idx]
            age += ["under_18" if k % 10 == 0 else "25-34"] * per_user
        cols = {"user_id": pa.array(u), "item_id": pa.array(it), "audit.age_band": pa.array(age)}
        if texts:
            cols["text"] = pa.array(tx)
        t = pa.table(cols)
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
        written += t.num_rows
    writer.close()
    return written


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def in_process(artifacts_dir: str, src: Path, out: Path, *, warmup: bool, torch_threads: int,
               encode_precision: str = "auto") -> dict:
    from recsys.batch import PipelineRecipe, run_batch

    db = out.parent / f"{out.name}-audit.db"
    recipe = PipelineRecipe(artifacts=artifacts_dir, policy=None, audit_log=str(db), device="cpu",
                            torch_threads=torch_threads, encode_precision=encode_precision)
    pipeline, artifacts, log = recipe.build()
    if warmup:
        run_batch(pipeline, artifacts.catalog.index, (), src, out.with_name(out.name + "-warmup"), progress=False)
    la = load_avg()
    t0 = time.perf_counter()
    s = run_batch(pipeline, artifacts.catalog.index, (), src, out, progress=False)
    dt = time.perf_counter() - t0
    log.close()
    return {"rows": s.rows, "users": s.users, "encode_precision": artifacts.store.encoder.precision,
            "seconds": round(dt, 2), "rows_per_s": round(s.rows / dt),
            "check_seconds": s.seconds["check"], "score_seconds": s.seconds["score"],
            "score_rows_per_s": round(s.rows / s.seconds["score"]), "load_avg_1m_before": la}


def workers_vs_one(artifacts_dir: str, src: Path, out: Path, *, workers: int, rounds: int, chunk_users: int) -> dict:
    """Alternating timed runs of one job: in this process, then on a warm WorkerPool."""
    from recsys.batch import PipelineRecipe, run_batch
    from recsys.batch.process_engine import WorkerPool
    from recsys.device import freeze_loaded_objects

    recipe = PipelineRecipe(artifacts=artifacts_dir, policy=None, audit_log=str(out.parent / f"{out.name}-audit.db"),
                            device="cpu", torch_threads=1)
    pipeline, artifacts, log = recipe.build()
    freeze_loaded_objects()   # as the CLI does
    one, many = [], []
    with WorkerPool(recipe, workers) as pool:
        t0 = time.perf_counter()
        pool.warm_up()
        start = time.perf_counter() - t0
        for name, kw in (("warm-one", {}), ("warm-pool", {"pool": pool})):   # caches, numba, first-chunk costs
            run_batch(pipeline, artifacts.catalog.index, (), src, out / name, progress=False,
                      chunk_users=chunk_users, **kw)
        la = load_avg()
        for r in range(rounds):
            for runs, kw in ((one, {}), (many, {"pool": pool})):
                t0 = time.perf_counter()
                s = run_batch(pipeline, artifacts.catalog.index, (), src, out / f"{len(runs)}-{len(kw)}-{r}",
                              progress=False, chunk_users=chunk_users, **kw)
                runs.append(s.rows / (time.perf_counter() - t0))
    log.close()
    return {"rows": s.rows, "workers": workers, "chunk_users": chunk_users, "pool_start_seconds": round(start, 1),
            "one_process_rows_per_s": [round(x) for x in one], "workers_rows_per_s": [round(x) for x in many],
            "one_process_median": round(float(np.median(one))), "workers_median": round(float(np.median(many))),
            "ratio_median": round(float(np.median(np.array(many) / np.array(one))), 2), "load_avg_1m_before": la}


def cli(artifacts_dir: str, src: Path, out: Path, *extra: str, torch_threads: int) -> dict:
    """Runs the CLI through a small wrapper whose RUSAGE_CHILDREN is exactly the CLI's peak RSS
    (with --engine ray the Ray workers are not counted)."""
    cmd = [sys.executable, "-m", "recsys.batch", "--input", str(src), "--output", str(out), "--artifacts",
           artifacts_dir, "--audit-log", str(out.parent / f"{out.name}-audit.db"), "--no-progress",
           "--torch-threads", str(torch_threads), *extra]
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, time.perf_counter() - t, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.stderr.write(r.stderr[-2000:])")
    la = load_avg()
    res = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    rc, seconds, rss_kb = res.stdout.split()
    if rc != "0":
        raise SystemExit(f"batch CLI failed: {res.stderr.strip().splitlines()[-1:]}")
    rows = json.loads((out / "_manifest.json").read_text())["plan"]["rows"]
    return {"rows": rows, "seconds": round(float(seconds), 2), "rows_per_s": round(rows / float(seconds)),
            "peak_rss_mib": round(int(rss_kb) / 1024), "load_avg_1m_before": la}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch_throughput.json")
    ap.add_argument("--users", type=int, default=1000, help="users in the warm/cold/ray input (100 candidates each)")
    ap.add_argument("--text-users", type=int, default=20)
    ap.add_argument("--memory-users", type=int, default=2000, help="users of the small memory input (x10 for large)")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the `workers` scenario")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of the `workers` scenario")
    ap.add_argument("--chunk-users", type=int, default=128, help="users per chunk in the `workers` scenario")
    ap.add_argument("--skip", nargs="*", default=[], choices=["warm", "cold", "texts", "workers", "ray", "memory"])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recsys.compose import load_artifacts

    art = load_artifacts(args.artifacts, device="cpu", verify=False)
    adir = str(Path(args.artifacts).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    results: dict = {"artifact": art.version, "cpus": os.cpu_count(), "python": platform.python_version(),
                     "date": time.strftime("%Y-%m-%d %H:%M"), "per_user": 100}
    try:
        src = tmp / "catalog.parquet"
        make_input(src, art, args.users, 100)
        if "warm" not in args.skip:
            results["warm"] = in_process(adir, src, tmp / "warm", warmup=True, torch_threads=args.torch_threads)
            print("warm", results["warm"], flush=True)
        if "workers" not in args.skip:
            results["workers"] = workers_vs_one(adir, src, tmp / "workers", workers=args.workers, rounds=args.rounds,
                                                chunk_users=args.chunk_users)
            print("workers", results["workers"], flush=True)
        if "cold" not in args.skip:
            results["cold"] = cli(adir, src, tmp / "cold", torch_threads=args.torch_threads)
            print("cold", results["cold"], flush=True)
            results["cold_workers"] = cli(adir, src, tmp / "cold-workers", "--workers", str(args.workers),
                                          torch_threads=args.torch_threads)
            print("cold_workers", results["cold_workers"], flush=True)
        if "texts" not in args.skip:
            tsrc = tmp / "texts.parquet"
            make_input(tsrc, art, args.text_users, 100, known_users=False, texts=True)
            # The shipped precision (auto: bf16 on a CPU with native bf16) and fp32, alternating twice.
            for r in range(2):
                for name, precision in (("texts", "auto"), ("texts_fp32", "fp32")):
                    res = in_process(adir, tsrc, tmp / f"{name}-{r}", warmup=False, torch_threads=args.torch_threads,
                                     encode_precision=precision)
                    results.setdefault(name + "_rounds", []).append(res)
                    print(name, res, flush=True)
            for name in ("texts", "texts_fp32"):
                rounds = results[name + "_rounds"]
                results[name] = max(rounds, key=lambda x: x["rows_per_s"])
        if "ray" not in args.skip:
            results["ray"] = cli(adir, src, tmp / "ray", "--engine", "ray", "--workers", "2",
                                 torch_threads=args.torch_threads)
            print("ray", results["ray"], flush=True)
        if "memory" not in args.skip:
            for name, users in (("memory_small", args.memory_users), ("memory_large", 10 * args.memory_users)):
                msrc = tmp / f"{name}.parquet"
                make_input(msrc, art, users, 100, known_users=False)
                results[name] = cli(adir, msrc, tmp / name, torch_threads=args.torch_threads)
                results[name]["input_mib"] = round(msrc.stat().st_size / 2**20, 1)
                print(name, results[name], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
