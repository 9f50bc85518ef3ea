"""recsys/cli.py: the one error tail of the command lines. Known errors and `fail` print one line and return
their code, Ctrl-C returns 130, argparse's exits and unknown errors are not swallowed; and every `main` of the
project goes through it."""
import argparse
import importlib
import subprocess
import sys

import pytest

from recsys.cli import CliFailure, cli_main, fail, first_line, run_cli
from recsys.errors import ArtifactError, EthicrecError


def _run(body, capsys, **kw):
    rc = run_cli(body, **kw)
    out, err = capsys.readouterr()
    return rc, out, err


def test_success_returns_the_body_code(capsys):
    assert _run(lambda: 3, capsys) == (3, "", "")


def test_fail_prints_one_line_with_its_code(capsys):
    assert _run(lambda: fail("--n must be >= 1"), capsys) == (2, "", "error: --n must be >= 1\n")
    assert _run(lambda: fail("broken chain", 1), capsys, prefix="verify: ") == (1, "", "verify: broken chain\n")


def _raise(exc):
    def body():
        raise exc
    return body


def test_known_errors_are_one_line_with_the_command_code(capsys):
    rc, _, err = _run(_raise(ArtifactError("artifact directory not found: x")), capsys,
                      errors=(EthicrecError, OSError), code=1, prefix="ethicrec: ",
                      message=lambda e: f"cannot start: {e}")
    assert (rc, err) == (1, "ethicrec: cannot start: artifact directory not found: x\n")


def test_errors_may_be_named_lazily(capsys):
    called = []

    def errors():
        called.append(1)
        return (KeyError,)

    assert _run(lambda: 0, capsys, errors=errors) == (0, "", "")
    assert called == []   # not resolved on success
    assert _run(_raise(KeyError("k")), capsys, errors=errors)[0] == 2


def test_first_line_for_library_errors(capsys):
    rc, _, err = _run(_raise(ValueError("bad value\n  detail line\n")), capsys, errors=(ValueError,),
                      message=first_line)
    assert (rc, err) == (2, "error: bad value\n")
    assert first_line(OSError()) == "OSError"


def test_keyboard_interrupt_is_130(capsys):
    assert _run(_raise(KeyboardInterrupt()), capsys) == (130, "", "error: interrupted\n")


def test_unknown_errors_and_argparse_exits_are_not_swallowed(capsys):
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 // 0, errors=(ValueError,))
    with pytest.raises(RuntimeError):
        run_cli(_raise(RuntimeError("bug")))

    @cli_main(errors=(ValueError,))
    def main(argv=None):
        ap = argparse.ArgumentParser(prog="x")
        ap.add_argument("--n", type=int, required=True)
        return ap.parse_args(argv).n

    with pytest.raises(SystemExit) as e:
        main(["--n", "zz"])
    assert e.value.code == 2
    assert main(["--n", "7"]) == 7 and main.__name__ == "main"


def test_cli_failure_is_not_an_ethicrec_error():
    """So a main's `except EthicrecError` can never swallow a deliberate stop."""
    assert not issubclass(CliFailure, EthicrecError)


MAINS = ["recsys.user_vectors", "recsys.train_cross_encoder", "recsys.upsert_items", "recsys.evaluate",
         "recsys.batch.cli", "recsys.train", "audit.train_harm", "audit.verify", "audit.report.__main__",
         "audit.lookup", "audit.evaluate_harm", "service.demo", "service.__main__"]


@pytest.mark.parametrize("module", MAINS)
def test_every_main_runs_under_the_runner(module):
    main = importlib.import_module(module).main
    assert main.__wrapped__.__name__ == "main"   # functools.wraps of cli_main


def test_a_real_process_exits_2_with_one_line(tmp_path):
    """The `python -m` wiring: exit status and the single stderr line reach the shell."""
    res = subprocess.run([sys.executable, "-m", "audit.verify", "--log", str(tmp_path / "none.db")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
