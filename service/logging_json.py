"""Structured logs: one JSON object per line on stderr.

A 30-line stdlib formatter rather than python-json-logger or structlog: the
service needs exactly "standard fields + whatever was passed in `extra=`",
and one dependency fewer in the serving image is worth more than the
library's options. Fields passed with `extra=` (request_id, audit_id,
model_version, ...) become top-level keys, so log pipelines can index them.
"""
from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import queue
import sys
import time
from datetime import datetime, timezone
from typing import IO

import orjson

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
        elif record.exc_text:          # formatted before it was queued (_Enqueue)
            out["exc"] = record.exc_text
        try:
            # orjson: ~0.5 us for a Rank line against json.dumps's ~5.5 us (the listener thread holds the GIL
            # while it formats, so this is time the request threads wait for). Same JSON object, compact.
            return orjson.dumps(out, default=str).decode()
        except TypeError:   # what orjson refuses even with default= (e.g. an int past 64 bits)
            return json.dumps(out, default=str, ensure_ascii=False)


class _Enqueue(logging.handlers.QueueHandler):
    """The caller's thread only merges the message and queues the record; a listener thread formats and
    writes it. Why: formatting a JSON line and the write(2) cost tens of microseconds on every Rank, and
    the write releases the GIL, after which the request thread often waits for another thread to give it
    back. The price: lines still queued when the process is SIGKILLed are lost (the audit log, not the
    text log, is the durable record of each decision)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message is merged in place (arguments as they are now, not when written): any other handler
        # of the record formats the same text from it. Only a record with a traceback is copied, because
        # the queued one drops exc_info, which another handler may still need (the stdlib copies always).
        if record.exc_info:
            record = copy.copy(record)
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        record.msg, record.args = record.getMessage(), None
        return record


# How long the listener lets records gather after the first one wakes it.
LOG_BATCH_S = 0.02


class _BatchingListener(logging.handlers.QueueListener):
    """A QueueListener that wakes once per burst, not once per record. Why: each wake-up is a thread that
    asks for the GIL while a request is still sending its response; with one line per `Rank` that was one
    hand-off per request. Measured with one client calling `Rank` back to back, three alternating pairs
    of 8 s runs: p50 3.31 -> 2.61, 3.36 -> 3.10, 3.38 -> 2.19 ms (per-record wake-ups -> bursts of 20 ms;
    bench/README.md). Records keep their order; a line appears at most ~20 ms later than before; stop()
    writes out everything queued before it."""

    def __init__(self, q: queue.SimpleQueue, *handlers: logging.Handler, interval: float = LOG_BATCH_S) -> None:
        super().__init__(q, *handlers, respect_handler_level=True)
        self.interval = interval

    def _monitor(self) -> None:
        q = self.queue
        while True:
            batch = [q.get()]
            time.sleep(self.interval)
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            for record in batch:
                if record is self._sentinel:
                    return   # stop() queues the sentinel last: everything before it was handled above
                self.handle(record)


_listeners: list[logging.handlers.QueueListener] = []


@atexit.register
def stop_background_logging() -> None:
    """Write out every queued record and stop the listener threads (at exit, and for tests)."""
    while _listeners:
        _listeners.pop().stop()


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: IO[str] | None = None, *,
                      background: bool = False) -> logging.Handler:
    """Replace the root logger's handlers with one writing to `stream` (stderr); returns that handler.

    fmt: json | text | auto (text when the stream is a terminal, JSON otherwise,
    so a developer's console stays readable and a container's log is parseable).
    background: records are queued and written by a listener thread (`_Enqueue`), stopped and flushed at
    exit; `python -m service` runs so.
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
    if background:
        # The logging HOWTO's "Optimization" switches for what neither format prints: the caller's frame
        # (a stack walk per record), thread and multiprocessing details.
        logging._srcfile = None
        logging.logThreads = logging.logMultiprocessing = False
        q: queue.SimpleQueue = queue.SimpleQueue()
        listener = _BatchingListener(q, handler)
        listener.start()
        _listeners.append(listener)
        root.addHandler(_Enqueue(q))
    else:
        root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)   # library warnings become log records too, so stderr stays one format
    return handler
