"""Structured logs: one JSON object per line; each Rank names its request and audit record."""
import io
import json
import logging

import grpc

from service.logging_json import JsonFormatter, configure_logging
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


def test_configure_logging_json_includes_exceptions():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    try:
        configure_logging("auto", "INFO", stream=buf)   # not a terminal -> JSON
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logging.getLogger("ethicrec.test").exception("failed", extra={"request_id": "r1"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1      # the traceback stays inside the one object
    rec = json.loads(lines[0])
    assert rec["msg"] == "failed" and rec["request_id"] == "r1" and "ValueError: boom" in rec["exc"]
