"""Structured logs: one JSON object per line on stderr.

A 30-line stdlib formatter rather than python-json-logger or structlog: the
service needs exactly "standard fields + whatever was passed in `extra=`",
and one dependency fewer in the serving image is worth more than the
library's options. Fields passed with `extra=` (request_id, audit_id,
model_version, ...) become top-level keys, so log pipelines can index them.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one writing to `stream` (stderr).

    fmt: json | text | auto (text when the stream is a terminal, JSON otherwise,
    so a developer's console stays readable and a container's log is parseable).
    """
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)   # library warnings become log records too, so stderr stays one format
    return handler
