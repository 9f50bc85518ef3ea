"""Batch progress on stderr: tqdm's bar on a terminal, and elsewhere (a scheduler's log, a pipe, a file) one
plain line every few seconds with rows done, rows/s and ETA, because a bar is unreadable there and tqdm
turns itself off when stderr is not a terminal, which left such logs silent for minutes."""
from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between two progress lines when stderr is not a terminal (`--progress-every`).
DEFAULT_INTERVAL_S = 5.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LineProgress:
    """tqdm's `update`/`close`/`n` as plain lines: `<desc>: <done>/<total> rows (<%>), <rate> rows/s, ETA <h:mm:ss>`
    at most every `interval` seconds, and a last line at `close`."""

    def __init__(self, total: int, desc: str, *, interval: float = DEFAULT_INTERVAL_S,
                 stream: TextIO | None = None, clock=time.monotonic) -> None:
        self.total = total
        self.desc = desc
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self.n = 0
        self._t0 = self._last = clock()
        self._closed = False

    def _line(self, now: float, final: bool = False) -> str:
        elapsed = max(now - self._t0, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n:,}/{self.total:,} rows ({100.0 * self.n / self.total:.1f} %)" if self.total else f"{self.n:,} rows"
        if final:
            return f"{self.desc}: {done} in {_clock(elapsed)}, {rate:,.0f} rows/s"
        eta = _clock((self.total - self.n) / rate) if rate > 0 and self.total >= self.n else "?"
        return f"{self.desc}: {done}, {rate:,.0f} rows/s, ETA {eta}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            print(self._line(now), file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n:
            print(self._line(self._clock(), final=True), file=self.stream, flush=True)


class _Off:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress(total: int, desc: str, *, enabled: bool, interval: float = DEFAULT_INTERVAL_S, stream: TextIO | None = None,
             **tqdm_kw):
    """A progress reporter for `total` rows: nothing when not `enabled`; tqdm's bar when `stream` (stderr)
    is a terminal; otherwise `LineProgress`."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _Off()
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="row", unit_scale=True, file=stream, **tqdm_kw)
    return LineProgress(total, desc, interval=interval, stream=stream)
