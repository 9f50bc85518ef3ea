"""The one error tail of every command line (`python -m recsys.train`, `audit.report`, `service`, ...).

A command line that fails on purpose prints ONE line to stderr and exits non-zero: no traceback, no
half-written file (the developers' guide). Each `main(argv)` used to end in its own try/except doing that;
now a main is decorated with `cli_main(...)` (or calls `run_cli`) and states only which errors are "known"
for it and what exit code they get:

- `fail(message, code)` anywhere in the body: prints `<prefix><message>`, returns `code` (2 by default:
  bad input);
- an exception of one of the known `errors`: prints `<prefix><message(exc)>`, returns `code`;
- KeyboardInterrupt: prints `<prefix>interrupted`, returns 130 (the shell's code for SIGINT);
- anything else is not swallowed: it propagates with its traceback, because it is a bug to fix, not an
  input to explain. argparse's own SystemExit (usage errors: 2, --help: 0) passes through untouched.

`errors` may be a zero-argument callable returning the classes, so a main that imports its heavy modules
lazily (torch, pandas) does not have to import them just to name their error types.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

__all__ = ["CliFailure", "cli_main", "fail", "first_line", "run_cli"]

ErrorTypes = tuple[type[BaseException], ...]
F = TypeVar("F", bound=Callable[..., int])


class CliFailure(Exception):
    """A command line's deliberate stop: `message` is printed as one line and `code` returned."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the running command line with one line and exit code `code` (2: bad input)."""
    raise CliFailure(message, code)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty (for errors
    from libraries, whose messages can span lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_cli(body: Callable[[], int], *, errors: ErrorTypes | Callable[[], ErrorTypes] = (), code: int = 2,
            prefix: str = "error: ", message: Callable[[BaseException], str] = str) -> int:
    """Run a command line's body with the one error tail (module docstring); returns its exit code."""
    try:
        return body()
    except CliFailure as exc:
        print(f"{prefix}{exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        known = errors() if callable(errors) else errors
        if known and isinstance(exc, known):
            print(f"{prefix}{message(exc)}", file=sys.stderr)
            return code
        raise


def cli_main(*, errors: ErrorTypes | Callable[[], ErrorTypes] = (), code: int = 2, prefix: str = "error: ",
             message: Callable[[BaseException], str] = str) -> Callable[[F], F]:
    """Decorate `main(argv=None) -> int` so it runs under `run_cli` with these options."""
    def wrap(main: F) -> F:
        @functools.wraps(main)
        def wrapped(*args, **kwargs) -> int:
            return run_cli(lambda: main(*args, **kwargs), errors=errors, code=code, prefix=prefix, message=message)
        return wrapped  # type: ignore[return-value]
    return wrap
