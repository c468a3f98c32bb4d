"""The README's Python snippets run as they are, offline, in a fresh directory.

Every snippet is complete: it imports what it uses and defines every name (a new user copies
one snippet, not the page; four once used ``prompt``, ``model``, ``tools``, ``Context``,
``inputs`` and ``rid`` without defining them). Snippets that answer with a model use the
embedded SmolLM2 (the ``local`` extra), with a few tokens each.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from langchain_outprofile.cli import app
from tests.fresh_process import run_python

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
COMPLETE = [b for b in BLOCKS if re.search(r"^(from|import) langchain_outprofile\b", b, re.M)]
SERVER = [b for b in COMPLETE if "AsyncHttpClient(" in b]
"""Snippets that talk to a ``chroma run`` server (integration: run on the test server)."""
OFFLINE = [b for b in COMPLETE if b not in SERVER]


def test_every_python_snippet_is_complete() -> None:
    fragments = [b for b in BLOCKS if b not in COMPLETE]
    assert not fragments, "snippets that do not import the package:\n" + "\n---\n".join(fragments)


def test_the_readme_has_complete_snippets() -> None:
    assert len(OFFLINE) >= 2, "the short tour and the LangGraph store snippet"
    assert len(SERVER) == 1, "the async snippet"


def _commands(cli: typer.Typer) -> list[str]:
    return [c.name or (c.callback.__name__ if c.callback else "") for c in cli.registered_commands]


@pytest.mark.parametrize("command", _commands(app))
def test_the_readme_shows_every_command(command: str) -> None:
    """A new user learns the commands from the README (it once never named ``serve-model``):
    each appears as ``outprofile [global options] COMMAND``."""
    text = README.read_text("utf-8")
    assert re.search(rf"`?outprofile (--[\w-]+ \S+ )*{re.escape(command)}\b", text), command


def test_the_readme_shows_the_served_demo() -> None:
    assert "outprofile demo --serve" in README.read_text("utf-8")


@pytest.mark.parametrize("code", OFFLINE, ids=[f"snippet{i}" for i in range(len(OFFLINE))])
def test_a_readme_snippet_runs(code: str, tmp_path: Path) -> None:
    _run(code, tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("code", SERVER, ids=[f"server{i}" for i in range(len(SERVER))])
def test_a_readme_server_snippet_runs_against_a_chroma_server(
    code: str, tmp_path: Path, chroma_server: tuple[str, int]
) -> None:
    host, port = chroma_server
    pointed = code.replace('host="127.0.0.1", port=8000', f"host={host!r}, port={port}")
    assert pointed != code, "the snippet names the server as host=..., port=8000"
    _run(pointed, tmp_path)


def _run(code: str, tmp_path: Path) -> None:
    done = run_python(code=code, cwd=tmp_path)
    assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr
