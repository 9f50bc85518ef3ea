"""Structured logs: one JSON object per line; each Rank names its request and audit record."""
import io
import json
import logging

import grpc

import pytest

from service.logging_json import JsonFormatter, configure_logging, stop_background_logging
from tests.service.support import config, rank_request, running, stub


def test_rank_log_line_carries_request_and_audit_ids(artifact_root, tmp_path, known_items):
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ethicrec")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with running(config(artifact_root, tmp_path)) as (app, target), grpc.insecure_channel(target) as ch:
            resp = stub(ch).Rank(rank_request(known_items[:10], request_id="req-json"), timeout=30)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]   # every line parses on its own
    ranks = [x for x in lines if x.get("request_id") == "req-json"]
    assert len(ranks) == 1
    line = ranks[0]
    assert line["audit_id"] == resp.audit.audit_id
    assert line["model_version"] == app.artifacts.version
    assert line["level"] == "INFO" and line["logger"] == "ethicrec.service"
    assert line["returned"] == 10 and line["duration_ms"] > 0


@pytest.mark.parametrize("background", [False, True])
def test_configure_logging_json_includes_exceptions(background):
    """Written by the caller, or queued and written by the listener thread (`python -m service`): the
    same one JSON object per record, traceback included, arguments as they were when logged."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging._srcfile, logging.logThreads, logging.logMultiprocessing
    buf = io.StringIO()
    try:
        configure_logging("auto", "INFO", stream=buf, background=background)   # not a terminal -> JSON
        items = ["a"]
        logging.getLogger("ethicrec.test").info("items %s", items, extra={"request_id": "r0"})
        items.append("b")        # after the call: must not show in the line
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logging.getLogger("ethicrec.test").exception("failed", extra={"request_id": "r1"})
        stop_background_logging()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved[2:]
        logging.captureWarnings(False)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2      # the traceback stays inside its one object
    first, rec = json.loads(lines[0]), json.loads(lines[1])
    assert first["msg"] == "items ['a']" and first["request_id"] == "r0"
    assert rec["msg"] == "failed" and rec["request_id"] == "r1" and "ValueError: boom" in rec["exc"]
    assert rec["level"] == "ERROR" and rec["logger"] == "ethicrec.test"


def test_other_handlers_see_the_same_record_after_it_is_queued():
    """The queueing handler merges the message into the record in place (no copy per record); a handler
    after it formats the same text, and a record with a traceback keeps its exc_info for that handler."""
    from service.logging_json import _Enqueue
    import queue

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.seen = []

        def emit(self, record):
            self.seen.append((record.getMessage(), record.exc_info is not None, self.format(record)))

    logger = logging.getLogger("ethicrec.test.prepare")
    q, keep = queue.SimpleQueue(), Keep()
    logger.addHandler(_Enqueue(q))
    logger.addHandler(keep)
    logger.propagate = False
    try:
        logger.warning("n=%d %s", 3, "x")
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed %s", "here")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    queued = [q.get_nowait(), q.get_nowait()]
    assert [r.getMessage() for r in queued] == ["n=3 x", "failed here"]
    assert queued[0].args is None and queued[1].exc_info is None and "KeyError" in queued[1].exc_text
    assert keep.seen[0][:2] == ("n=3 x", False)
    assert keep.seen[1][:2] == ("failed here", True) and "KeyError: 'k'" in keep.seen[1][2]


def test_odd_extra_values_still_make_one_json_line():
    """Values orjson cannot take as they are (a set, a path, an int past 64 bits) are written as text; the
    line stays one JSON object, non-ASCII text as it is."""
    from pathlib import Path

    rec = logging.LogRecord("ethicrec.test", logging.INFO, "x.py", 1, "ok %s", ("é",), None)
    rec.tags, rec.where, rec.n = {"a"}, Path("/tmp/x"), 7
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "é" in line
    got = json.loads(line)
    assert got["msg"] == "ok é" and got["tags"] == "{'a'}" and got["where"] == "/tmp/x" and got["n"] == 7
    rec.n = 2 ** 70
    assert json.loads(JsonFormatter().format(rec))["n"] == 2 ** 70


def test_background_listener_writes_bursts_in_order_promptly_and_all_at_stop():
    """The listener wakes once per burst (service/logging_json.py): every record still comes out, in
    order, a few tens of milliseconds later at most, and stop() writes out what is queued; the handler's
    own level still filters."""
    import queue
    import time

    from service.logging_json import LOG_BATCH_S, _BatchingListener

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    wakes = []

    class CountingQueue(queue.SimpleQueue):
        def get(self, block=True, timeout=None):
            if block:
                wakes.append(time.monotonic())   # a blocking get is one wake-up of the listener
            return super().get(block, timeout)

    q = CountingQueue()
    listener = _BatchingListener(q, handler)
    listener.start()

    def record(i: int, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("ethicrec.test", level, "x.py", 1, "line %d", (i,), None)

    q.put(record(0))
    deadline = time.monotonic() + 5
    while not buf.getvalue() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert json.loads(buf.getvalue())["msg"] == "line 0"          # written without a stop
    records = [record(i, logging.DEBUG if i == 7 else logging.INFO) for i in range(1, 501)]
    before = len(wakes)
    for r in records:
        q.put(r)
    time.sleep(10 * LOG_BATCH_S)
    assert len(wakes) - before <= 3    # a burst of 500 is a few wake-ups (a plain QueueListener: 500)
    listener.stop()
    msgs = [json.loads(x)["msg"] for x in buf.getvalue().splitlines()]
    assert msgs == [f"line {i}" for i in range(501) if i != 7]      # all, in order, DEBUG filtered
