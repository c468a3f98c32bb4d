"""A class's reference, checked as a reader uses it: its docstring's sections in LangChain's
partner order, each constructor argument under "Key init args", and its examples run as
they are, in a fresh process and directory, offline."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import textwrap
from pathlib import Path

from tests.fresh_process import run_python

_TITLE = re.compile(r"^(\S[^\n]*):\n", re.M)


def sections(doc: str) -> dict[str, str]:
    """The top-level sections of ``doc`` (dedented bodies), by title, in order."""
    parts = _TITLE.split(inspect.cleandoc(doc) + "\n")
    return {
        title: textwrap.dedent(body) for title, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def examples(doc: str) -> dict[str, str]:
    """The first ``python`` block of each top-level section of ``doc``, by section title."""
    found: dict[str, str] = {}
    for title, body in sections(doc).items():
        block = re.search(r"```python\n(.*?)```", body, re.S)
        if block:
            found[title] = block.group(1)
    return found


def undocumented(doc: str, arguments: list[str]) -> list[str]:
    """The ``arguments`` no "Key init args" section of ``doc`` lists as ``name:`` (or
    ``**name:`` for the catch-all keywords)."""
    listed = "\n".join(
        body for title, body in sections(doc).items() if title.startswith("Key init args")
    )
    return [
        name for name in arguments if not re.search(rf"^\s*(\*\*)?{re.escape(name)}:", listed, re.M)
    ]


def script(found: dict[str, str], order: list[str], check: str) -> str:
    """The examples of ``order`` as one program: the synchronous ones in order (each uses the
    names the last defined), then ``Async``'s awaited inside a coroutine whose names stay
    defined after it, then ``check``."""
    sync = "\n".join(found[title] for title in order if title != "Async")
    body = found["Async"] + "globals().update(locals())\n"
    coroutine = "async def _async_example() -> None:\n" + textwrap.indent(body, "    ")
    return "\n".join([sync, coroutine, "import asyncio\nasyncio.run(_async_example())", check])


def run(program: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``program`` run by this interpreter in ``cwd``; warnings off, so stdout is the
    examples' own output."""
    return run_python(code=program, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
