"""Python programs run as a new user runs them, each in a new process of its own, without
each paying again the ~1.3 s of importing chromadb, LangChain and the package.

multiprocessing's ``forkserver`` imports those once (per test worker, in a process that runs
no test) and forks one child per program. The child gets the program's working directory,
environment, ``sys.argv`` and ``__main__``; its stdout and stderr go to files; and it ends
as an interpreter ends (non-daemon threads joined, then the ``atexit`` handlers, which a
multiprocessing child otherwise skips), with the program's exit status. What stays shared is
only what the imports did, which a fresh ``python`` would do the same way.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["chromadb", "langchain_core.runnables", "langchain_outprofile.memory"]
"""The imports every program here starts with (the heavy part of an interpreter's start)."""

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


@dataclass(frozen=True)
class _Program:
    """What the child runs, where and with what environment."""

    code: str | None
    path: str | None
    cwd: str
    env: dict[str, str]
    stdout: str
    stderr: str


def run_python(
    *,
    code: str | None = None,
    path: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` or ``python path`` (exactly one) in a new process, in ``cwd``
    (default: this one's) with ``env`` (default: this one's); what ``subprocess.run`` with
    ``capture_output=True, text=True`` returns."""
    if (code is None) == (path is None):
        raise ValueError("give code or path")
    with tempfile.TemporaryDirectory(prefix="fresh-process-") as scratch:
        program = _Program(
            code=code,
            path=None if path is None else str(path),
            cwd=str(cwd or Path.cwd()),
            env=dict(os.environ if env is None else env),
            stdout=os.path.join(scratch, "stdout"),
            stderr=os.path.join(scratch, "stderr"),
        )
        child = _CONTEXT.Process(target=_run_program, args=(program,))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(_args(program), timeout)
        return subprocess.CompletedProcess(
            _args(program),
            child.exitcode,
            Path(program.stdout).read_text("utf-8", errors="replace"),
            Path(program.stderr).read_text("utf-8", errors="replace"),
        )


def _args(program: _Program) -> list[str]:
    return [sys.executable, *(["-c", program.code] if program.code else [str(program.path)])]


def _run_program(program: _Program) -> None:  # in the child
    os.chdir(program.cwd)
    os.environ.clear()
    os.environ.update(program.env)
    if program.env.get("PYTHONWARNINGS") == "ignore":
        warnings.simplefilter("ignore")
    for fd, name in ((1, program.stdout), (2, program.stderr)):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    sys.argv = _args(program)[1:] if program.path else ["-c"]
    status = 0
    try:
        if program.path is not None:
            sys.path.insert(0, str(Path(program.path).parent))
            runpy.run_path(program.path, run_name="__main__")
        else:
            sys.path.insert(0, "")
            exec(compile(program.code or "", "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter's exit does
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives a process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
