"""Bounded load on loopback: 8 clients x 25 calls, all answered and audited."""
from concurrent.futures import ThreadPoolExecutor

import grpc

from audit.log import read_records
from tests.service.support import config, rank_request, running, stub


def test_8_clients_x_25_calls_no_errors(artifact_root, tmp_path, known_items):
    with running(config(artifact_root, tmp_path, max_workers=4, max_queue=16)) as (app, target):
        def client(n: int) -> list[tuple[str, str]]:
            out = []
            with grpc.insecure_channel(target) as ch:
                s = stub(ch)
                for i in range(25):
                    items = known_items[(n + i) % 10:(n + i) % 10 + 25]
                    r = s.Rank(rank_request(items, user_id=str(1 + (n * 25 + i) % 50), request_id=f"{n}-{i}"),
                               timeout=60)
                    assert r.request_id == f"{n}-{i}" and len(r.items) == 10
                    out.append((r.request_id, r.audit.audit_id))
            return out

        with ThreadPoolExecutor(8) as pool:
            answered = dict(pair for chunk in pool.map(client, range(8), timeout=300) for pair in chunk)
        assert len(answered) == 200
        app.audit_log.flush()  # journal mode: records reach SQLite in the background
        assert {r.request_id: r.audit_id for r in read_records(app.audit_log.path)} == answered
