"""Run a command-line tool's `main(argv)` in this process.

Why: each `python -m ...` subprocess spends 8-15 s importing torch and transformers on 2 cores, and most CLI
tests only check an exit status, the one line printed and what was (not) written. Every `__main__` here is
`sys.exit(main())`, so calling `main` runs the same code; an exception escaping `main` fails the test, as a
traceback would. The tests that need a real process (signals, kills, ports held by another process, the
`python -m` wiring itself) still start one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_main(main: Callable[[list[str] | None], int], argv: Sequence[object], capsys) -> CliResult:
    """`main(argv)` with stdout/stderr captured; argparse's SystemExit becomes the return code."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return CliResult(int(rc or 0), out, err)
