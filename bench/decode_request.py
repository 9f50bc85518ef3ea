"""The request deserializer on the valid path: `RankRequest.FromString` (what gRPC called before) vs
`service.decode.RequestDecoder` (what it calls now: the same parse inside a try, so that bytes that do not
parse become INVALID_ARGUMENT instead of INTERNAL). Alternating rounds in one process; median ns per call.

    python bench/decode_request.py [--rounds 21] [--calls 20000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ethicrec.v1 import recommender_pb2 as pb  # noqa: E402

from service.decode import RequestDecoder  # noqa: E402


def payloads() -> dict[str, bytes]:
    user = pb.User(user_id="414", audit_attributes={"age_band": "25-34"})
    ids = [str(i) for i in range(1, 101)]
    return {
        "100 Candidate messages": pb.RankRequest(user=user, candidates=[pb.Candidate(item_id=i) for i in ids],
                                                 top_k=10).SerializeToString(),
        "100 candidate_ids": pb.RankRequest(user=user, candidate_ids=ids, top_k=10).SerializeToString(),
        "2 candidates with text": pb.RankRequest(user=user, candidates=[
            pb.Candidate(item_id="n1", text="A quiet drama about two sisters " * 4, group="indie"),
            pb.Candidate(item_id="n2", text="Ünïcödé 文字 🎬 " * 8)]).SerializeToString(),
    }


def per_call_ns(fn, data: bytes, calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn(data)
    return (time.perf_counter_ns() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    decoder = RequestDecoder(pb.RankRequest, "Rank").decode
    plain = pb.RankRequest.FromString
    for name, data in payloads().items():
        assert decoder(data) == plain(data)
        a, b = [], []
        for r in range(args.rounds):
            first, second = (plain, decoder) if r % 2 == 0 else (decoder, plain)
            x, y = per_call_ns(first, data, args.calls), per_call_ns(second, data, args.calls)
            (a if first is plain else b).append(x)
            (b if first is plain else a).append(y)
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:24s} ({len(data):4d} B): FromString {ma:8.0f} ns, RequestDecoder {mb:8.0f} ns, "
              f"+{mb - ma:5.0f} ns ({mb / ma:.3f}x)")
    bad = payloads()["100 candidate_ids"].replace(b"\x0250", b"\x02\xc3\x28", 1)
    t = per_call_ns(decoder, bad, 2000)
    print(f"error path, invalid UTF-8 in candidate_ids (field located): {t / 1000:.1f} us per call")


if __name__ == "__main__":
    main()
