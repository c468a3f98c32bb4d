"""The helper that runs README snippets, examples and docstring examples in new processes
ends them as an interpreter would, so those tests can fail as a real run would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fresh_process import run_python

PROGRAM = """
import atexit, os, sys, threading
atexit.register(lambda: print("atexit ran", flush=True))
printed = threading.Event()
def late():  # a non-daemon thread still running when the program's last line is done
    printed.wait()
    print("thread done", flush=True)
threading.Thread(target=late).start()
print(os.getcwd(), os.environ.get("FRESH_MARK"), sys.argv[0], __name__, flush=True)
print("to stderr", file=sys.stderr)
printed.set()
"""


def _both(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    env = {**os.environ, "FRESH_MARK": "m1"}
    forked = run_python(code=code, cwd=tmp_path, env=env)
    plain = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    return forked, plain


def test_a_program_ends_as_under_a_new_interpreter(tmp_path: Path) -> None:
    forked, plain = _both(tmp_path, PROGRAM)
    assert forked.returncode == plain.returncode == 0
    assert forked.stdout == plain.stdout == f"{tmp_path} m1 -c __main__\nthread done\natexit ran\n"
    assert forked.stderr == plain.stderr == "to stderr\n"


@pytest.mark.parametrize(
    ("code", "status", "said"),
    [
        ("raise ValueError('bad snippet')", 1, "ValueError: bad snippet"),
        ("import sys; sys.exit(3)", 3, ""),
        ("import sys; sys.exit('stopped')", 1, "stopped"),
    ],
)
def test_a_failing_program_fails(tmp_path: Path, code: str, status: int, said: str) -> None:
    forked, plain = _both(tmp_path, code)
    assert forked.returncode == plain.returncode == status
    assert said in forked.stderr and said in plain.stderr


def test_a_script_runs_as_main_beside_its_modules(tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("VALUE = 7\n")
    script = tmp_path / "main.py"
    script.write_text("import sys, helper_mod\nprint(helper_mod.VALUE, __name__, sys.argv)\n")
    done = run_python(path=script)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"7 __main__ [{str(script)!r}]\n"


def test_a_program_past_its_timeout_is_killed(tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_python(code="import time; time.sleep(30)", cwd=tmp_path, timeout=1)
