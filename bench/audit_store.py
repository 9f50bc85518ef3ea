"""The PostgreSQL audit store against SQLite: throughput from N writers, the audit's share of `Rank`, failover.

Every part starts its own throw-away PostgreSQL (tests/postgres_server.py: initdb + pg_ctl on a loopback port,
fsync on, as an unprivileged user when run as root), so nothing outside is touched.

    python bench/audit_store.py writers  [--seconds 4] [--writers 1 2 4 8] [--out bench/results/audit_store_writers.json]
    python bench/audit_store.py share    --artifacts artifacts [--requests 400] [--out bench/results/audit_store_share.json]
    python bench/audit_store.py failover [--outages 3 15] [--out bench/results/audit_store_failover.json]
    python bench/audit_store.py staleness [--out bench/results/audit_store_staleness.json]

writers: N writer processes (a replica's process each), each with 4 threads appending realistic records (100
candidates, as the audit stage writes them) as fast as they can for --seconds; records per second committed to
the store. Chains: `per-writer` (the design: one chain per process) against `global` (every process on one
chain, i.e. one lock for the whole fleet), and SQLite (one file, one chain, its write lock) as the peer. Modes:
`journal` (the server's default: a record is durable in the local journal, batches are shipped) and `direct`
(the response waits for the database commit; concurrent requests of a process share one group commit). The
variants run interleaved, round after round, and each figure is the median over the rounds.

share: four in-process gRPC servers on one artifact (SQLite / PostgreSQL x journal / direct), sequential `Rank`
calls in alternating blocks; the audit stage's own time inside the very calls whose latency is measured.

failover: one writer appending at a fixed rate in journal mode while the database is stopped for D seconds,
then started; how many appends were refused (the journal bound), how long after the database is back the
backlog is shipped, and that every record is stored exactly once; and the same in direct mode (how many calls
fail closed, how soon after the database is back they succeed again).

staleness: two replicas' user-group monitors sharing one window through the store, each observing at a fixed
rate; how long after replica A observes a request replica B's window holds it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.log import AuditLog, AuditRecord, CandidateCodes  # noqa: E402
from tests.postgres_server import LocalPostgres  # noqa: E402


def _record(prefix: str, i: int, rng: np.random.Generator) -> AuditRecord:
    """A decision as the audit stage writes it: 100 candidates in three item groups, 10 returned."""
    ids = [f"item{(i * 7 + k) % 9000}" for k in range(100)]
    return AuditRecord(f"{prefix}-{i:09d}", time.time(), f"req-{prefix}-{i}", "model-1", "policy-1",
                       "hmac:0123456789ab:" + "ab" * 32, "ENFORCE", "PASS", 10, ids[:10], [],
                       CandidateCodes(ids, ["head", "mid", "long_tail"], rng.integers(0, 3, 100).tolist(),
                                      list(range(10)), {}),
                       [], {"gender": "F", "age_band": "25-34"})


# -- writers ------------------------------------------------------------------------------------------------
def _writer(target: str, chain: str, journal: bool, seconds: float, jdir: str, ready, out) -> None:
    os.environ["ETHICREC_AUDIT_STORE_PASSWORD"] = os.environ.get("BENCH_PG_PASSWORD", "")
    log = AuditLog(target, salt=b"bench", journal=journal, journal_dir=jdir, writer=chain,
                   store_options={"pool_size": 6} if target.startswith("postgresql") else None)
    rng = np.random.default_rng(os.getpid())
    recs = [_record(f"{os.getpid()}-{t}", i, rng) for t in range(4) for i in range(64)]
    counts = [0] * 4
    log.open()
    ready.wait()        # every process imported and connected before any clock starts
    start = time.time()
    stop = start + seconds

    def run(t: int) -> None:
        n = 0
        while time.time() < stop:
            if journal and log.pending() > 4096:   # closed loop: what the store sustains, not the journal's bound
                time.sleep(0.001)
                continue
            r = recs[t * 64 + n % 64]
            r.audit_id = f"{os.getpid()}-{t}-{n:09d}"
            log.append(r)
            n += 1
        counts[t] = n

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.flush()
    done = time.time()
    log.close()
    out.put((sum(counts), done - start))  # elapsed: until every record is in the store


def _run_writers(target: str, n: int, chain: str, journal: bool, seconds: float, tmp: Path) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ready = ctx.Barrier(n)
    procs = [ctx.Process(target=_writer, args=(target, chain if chain == "global" else f"w{i}", journal, seconds,
                                               str(tmp / f"j{i}"), ready, q)) for i in range(n)]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return sum(r[0] for r in results) / max(r[1] for r in results)


def writers(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-store-bench-"))
    out: dict = {"seconds": args.seconds, "threads_per_writer": 4, "rounds": args.rounds, "records_per_s": {}}
    with LocalPostgres() as pg:
        os.environ["BENCH_PG_PASSWORD"] = pg.password
        variants = [(store, chain, mode) for mode in ("journal", "direct")
                    for store, chain in (("postgres", "per-writer"), ("postgres", "global"), ("sqlite", "one"))]
        runs: dict[str, list[float]] = {}
        k = 0
        for rnd in range(args.rounds):
            for n in args.writers:
                for store, chain, mode in variants:
                    k += 1
                    target = pg.create_database(f"b{k}") if store == "postgres" else str(tmp / f"s{k}.db")
                    rate = _run_writers(target, n, "global" if chain == "global" else "per", mode == "journal",
                                        args.seconds, tmp / f"r{k}")
                    key = f"{store}/{chain}/{mode}/{n}"
                    runs.setdefault(key, []).append(rate)
                    print(f"round {rnd} {key}: {rate:,.0f} records/s", flush=True)
    for key, rates in runs.items():
        out["records_per_s"][key] = {"median": statistics.median(rates), "runs": rates}
    print(f"\n{'writers':>7} {'mode':>8} {'pg per-writer':>14} {'pg global':>10} {'sqlite':>8}  (records/s, median)")
    for mode in ("journal", "direct"):
        for n in args.writers:
            row = [out["records_per_s"][f"{s}/{c}/{mode}/{n}"]["median"]
                   for s, c in (("postgres", "per-writer"), ("postgres", "global"), ("sqlite", "one"))]
            print(f"{n:>7} {mode:>8} {row[0]:>14,.0f} {row[1]:>10,.0f} {row[2]:>8,.0f}")
    return out


# -- share of Rank --------------------------------------------------------------------------------------------
class _Timed:
    def __init__(self, stage) -> None:
        self.stage, self.times = stage, []

    def __getattr__(self, name: str):
        return getattr(self.stage, name)

    def __call__(self, ctx) -> None:
        t0 = time.perf_counter()
        self.stage(ctx)
        self.times.append(time.perf_counter() - t0)


def share(args) -> dict:
    import dataclasses

    import grpc
    from ethicrec.v1 import recommender_pb2 as pb
    from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

    from audit.policy import load_policy
    from service.config import ServiceConfig
    from service.server import create_server, freeze_loaded_objects, load_app

    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-store-share-"))
    servers = {}
    with LocalPostgres() as pg:
        os.environ["ETHICREC_AUDIT_STORE_PASSWORD"] = pg.password
        for store in ("sqlite", "postgres"):
            for write in ("journal", "direct"):
                name = f"{store}-{write}"
                target = pg.create_database(name.replace("-", "_")) if store == "postgres" else str(tmp / f"{name}.db")
                pol = tmp / f"{name}.toml"
                text = (ROOT / "audit/policies/default.toml").read_text()
                pol.write_text(text.replace('write = "journal"', f'write = "{write}"'))
                cfg = ServiceConfig(host="127.0.0.1", port=0, artifacts=args.artifacts, audit_store=target,
                                    audit_journal_dir=tmp / f"j-{name}", policy=pol, device="cpu")
                app = load_app(cfg)
                stages = app.current.get().pipeline.stages
                i = next(j for j, st in enumerate(stages) if st.name == "audit")
                timed = stages[i] = _Timed(stages[i])
                srv, port = create_server(cfg, app)
                srv.start()
                servers[name] = (app, srv, timed, grpc.insecure_channel(f"127.0.0.1:{port}"))
        freeze_loaded_objects()
        from recsys.compose import load_artifacts

        art = next(iter(servers.values()))[0].artifacts
        cat = art.catalog
        order = np.argsort(-cat.stats.log_pop, kind="stable")
        msg = pb.RankRequest(user=pb.User(user_id=next(iter(art.users)),
                                          audit_attributes={"gender": "F", "age_band": "25-34"}),
                             candidates=[pb.Candidate(item_id=cat.item_ids[i]) for i in order[:300:3]], top_k=10,
                             audit_mode=pb.AUDIT_MODE_ENFORCE)
        stubs = {n: pb_grpc.RecommenderStub(s[3]) for n, s in servers.items()}
        for n, stub in stubs.items():
            for _ in range(30):
                stub.Rank(msg, timeout=30)
            del servers[n][2].times[:]
        lat: dict[str, list[float]] = {n: [] for n in servers}
        for _ in range(args.requests // 25):
            for n, stub in stubs.items():
                for _ in range(25):
                    t0 = time.perf_counter()
                    stub.Rank(msg, timeout=30)
                    lat[n].append(time.perf_counter() - t0)
        out: dict = {"requests_per_mode": args.requests, "candidates": 100, "modes": {}}
        print(f"{'mode':<17} {'Rank p50':>9} {'audit p50':>10} {'audit/Rank':>10} {'p90':>7}")
        for n, (app, srv, timed, ch) in servers.items():
            r, a = np.array(lat[n]), np.array(timed.times)
            m = out["modes"][n] = {"rank_p50_ms": float(np.median(r) * 1e3), "audit_p50_ms": float(np.median(a) * 1e3),
                                   "audit_share_per_request_p50": float(np.median(a / r)),
                                   "audit_share_per_request_p90": float(np.percentile(a / r, 90))}
            print(f"{n:<17} {m['rank_p50_ms']:>7.2f}ms {m['audit_p50_ms']:>8.3f}ms {m['audit_share_per_request_p50']:>10.1%} "
                  f"{m['audit_share_per_request_p90']:>7.1%}")
        for app, srv, timed, ch in servers.values():
            ch.close()
            srv.stop(0).wait()
            app.close()
    return out


# -- failover -----------------------------------------------------------------------------------------------
def _failover_once(pg: LocalPostgres, db: str, outage_s: float, journal: bool, rate: float, tmp: Path) -> dict:
    import psycopg

    url = pg.create_database(db)
    log = AuditLog(url, salt=b"bench", journal=journal, journal_dir=tmp / db, writer="r/1",
                   store_options={"checkout_timeout_s": 0.5} if not journal else None)
    rng = np.random.default_rng(0)
    rec = _record("f", 0, rng)
    accepted, refused, i = [], 0, 0
    events: dict[str, float] = {}
    t_start = time.monotonic()
    phase_end = {"before": 2.0, "down": 2.0 + outage_s, "after": 2.0 + outage_s + 6.0}
    first_ok_after: float | None = None
    pg_stopped = pg_started = False
    shipped: list[float] = []
    done = threading.Event()

    def poll() -> None:
        # Journal mode: the backlog counts as shipped once what is pending is back to a normal level (a quarter
        # second of appends) after the database is up again.
        while not done.is_set():
            if "up" in events and log.pending() <= rate / 4:
                shipped.append(time.monotonic() - events["up"])
                return
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    if journal:
        poller.start()
    while True:
        now = time.monotonic() - t_start
        if not pg_stopped and now >= phase_end["before"]:
            pg.stop("immediate")
            pg_stopped, events["down"] = True, time.monotonic()
        if pg_stopped and not pg_started and now >= phase_end["down"]:
            pg.start_again()
            pg_started, events["up"] = True, time.monotonic()
        if now >= phase_end["after"]:
            break
        rec.audit_id = f"f-{i:09d}"
        rec.ts = time.time()
        try:
            log.append(rec)
            accepted.append(rec.audit_id)
            if pg_started and first_ok_after is None:
                first_ok_after = time.monotonic() - events["up"]
        except Exception:
            refused += 1
        i += 1
        time.sleep(max(0.0, t_start + i / rate - time.monotonic()))
    if journal:
        poller.join(timeout=120)
    done.set()
    shipped_after = shipped[0] if shipped else None
    log.close()
    with psycopg.connect(url, password=pg.password) as conn:
        stored = [r[0] for r in conn.execute("SELECT audit_id FROM audit_records")]
    return {"outage_s": outage_s, "mode": "journal" if journal else "direct", "rate_per_s": rate,
            "appends": i, "accepted": len(accepted), "refused": refused,
            "stored": len(stored), "stored_distinct": len(set(stored)),
            "accepted_all_stored": set(accepted) <= set(stored),
            "journal_shipped_s_after_db_back": shipped_after,
            "first_ok_s_after_db_back": first_ok_after}


def failover(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-store-failover-"))
    out: dict = {"runs": []}
    with LocalPostgres() as pg:
        os.environ["ETHICREC_AUDIT_STORE_PASSWORD"] = pg.password
        k = 0
        for outage in args.outages:
            for journal in (True, False):
                k += 1
                res = _failover_once(pg, f"f{k}", outage, journal, args.rate, tmp)
                out["runs"].append(res)
                print(json.dumps(res), flush=True)
    return out


# -- staleness ------------------------------------------------------------------------------------------------
def staleness(args) -> dict:
    from audit.monitor import Observation, UserGroupMonitor, decode_observation, encode_observation
    from audit.policy import load_policy

    pol = load_policy().monitor
    tmp = Path(tempfile.mkdtemp(prefix="ethicrec-store-stale-"))
    lags: list[float] = []
    with LocalPostgres() as pg:
        os.environ["ETHICREC_AUDIT_STORE_PASSWORD"] = pg.password
        url = pg.create_database("s")
        logs = [AuditLog(url, salt=b"s", journal_dir=tmp / f"j{i}", writer=f"replica-{i}/1", shared_windows=True)
                for i in range(2)]
        mons = [UserGroupMonitor(pol, shared=log.window_source("monitor", pol.window, encode_observation,
                                                                decode_observation)) for log in logs]
        stop = threading.Event()

        def traffic(m: UserGroupMonitor) -> None:
            i = 0
            while not stop.is_set():
                m.observe(Observation({"gender": "FM"[i % 2]}, 0.5, 1, 10, False))
                i += 1
                time.sleep(1.0 / args.rate)

        threads = [threading.Thread(target=traffic, args=(m,), daemon=True) for m in mons]
        for t in threads:
            t.start()
        time.sleep(6)
        for k in range(args.markers):
            marker = f"marker-{k}"
            t0 = time.monotonic()
            mons[0].observe(Observation({"gender": marker}, 0.5, 1, 10, False))
            while not any(o.attributes.get("gender") == marker for o in list(mons[1]._window)):
                time.sleep(0.02)
            lags.append(time.monotonic() - t0)
            print(f"marker {k}: in replica B's window after {lags[-1]:.2f} s", flush=True)
            time.sleep(float(np.random.default_rng(k).uniform(0.5, 3.0)))
        stop.set()
        for m in mons:
            m.close()
        for log in logs:
            log.close()
    out = {"rate_per_replica_per_s": args.rate, "refresh_every": pol.refresh_every, "lags_s": lags,
           "median_s": statistics.median(lags), "max_s": max(lags)}
    print(f"lag: median {out['median_s']:.2f} s, max {out['max_s']:.2f} s over {len(lags)} markers "
          f"({args.rate}/s per replica, refresh_every {pol.refresh_every})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("writers")
    w.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8])
    w.add_argument("--seconds", type=float, default=4.0)
    w.add_argument("--rounds", type=int, default=2)
    s = sub.add_parser("share")
    s.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    s.add_argument("--requests", type=int, default=400)
    f = sub.add_parser("failover")
    f.add_argument("--outages", type=float, nargs="+", default=[3.0, 15.0])
    f.add_argument("--rate", type=float, default=200.0)
    st = sub.add_parser("staleness")
    st.add_argument("--rate", type=float, default=50.0, help="observations per second per replica")
    st.add_argument("--markers", type=int, default=10)
    for p in (w, s, f, st):
        p.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = {"writers": writers, "share": share, "failover": failover, "staleness": staleness}[args.cmd](args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
