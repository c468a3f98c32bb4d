"""How a memory is made: the constructors that name its store, the option objects, and the
class's reference (its docstring's examples run as they are, offline, in a fresh directory:
what a new user copies from it works)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import chromadb
import pytest

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ReadOptions,
    SelectionOptions,
    WriteOptions,
)
from langchain_outprofile.store import ProfileStore
from langchain_outprofile.tokens import OFFLINE_ENCODING
from tests import docstrings
from tests.conftest import unique_name

SECTIONS = ["Instantiate", "Add", "Select", "Feedback", "Async"]
"""The docstring's sections with examples, in the order they run (each uses the last's memory)."""


def test_the_class_docstring_has_the_partner_sections() -> None:
    doc = inspect.cleandoc(OutputProfileMemory.__doc__ or "")
    titles = re.findall(r"^(\S[^\n]*):$", doc, re.M)
    assert titles[0] == "Setup"
    assert [t for t in titles if t in SECTIONS] == SECTIONS
    assert any(t.startswith("Key init args") for t in titles)


@pytest.mark.parametrize(
    "constructor",
    ["__init__", "from_path", "from_client", "from_vectorstore"],
)
def test_the_class_docstring_names_every_argument(constructor: str) -> None:
    """A constructor's argument missing from "Key init args" is one a reader never learns."""
    doc = OutputProfileMemory.__doc__ or ""
    names = inspect.signature(getattr(OutputProfileMemory, constructor)).parameters
    missing = [n for n in names if n not in ("self", "store", "settings") and n not in doc]
    assert not missing, f"{constructor}: {missing}"


def test_the_class_docstring_examples_run(tmp_path: Path) -> None:
    examples = docstrings.examples(OutputProfileMemory.__doc__ or "")
    assert set(SECTIONS) <= set(examples), sorted(examples)
    check = "print('selectable', memory.stats('ana').selectable)"
    done = docstrings.run(docstrings.script(examples, SECTIONS, check), tmp_path)
    assert done.returncode == 0, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Short answer first, then bullets." in done.stdout  # the Select example's block
    # two added, one endorsed through feedback, one added by the async example
    assert done.stdout.strip().splitlines()[-1] == "selectable 4"
    assert (tmp_path / "profiles").is_dir()  # the Instantiate example's store, on disk


def _client_memory(**settings: Any) -> OutputProfileMemory:
    return OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=unique_name("ctor"),
        tokens=OFFLINE_ENCODING,
        **settings,
    )


def test_the_constructors_name_the_same_store(tmp_path: Path) -> None:
    written = OutputProfileMemory.from_path(tmp_path / "store", tokens=OFFLINE_ENCODING)
    written.add("Short answer first.", user_id="ana")
    store = ProfileStore(path=tmp_path / "store")
    opened = OutputProfileMemory(store, tokens=OFFLINE_ENCODING)
    assert [e.text for e in opened.select("ana").entries] == ["Short answer first."]


def test_the_default_store_is_in_the_user_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    memory = OutputProfileMemory(tokens=OFFLINE_ENCODING)
    memory.add("Stored where a user's data goes.", user_id="ana")
    assert list((tmp_path / "xdg" / "langchain-outprofile" / "chroma").iterdir())


def test_the_option_objects_reach_the_memory() -> None:
    reads = ReadOptions(cache_ttl_s=0, pin_threads=False)
    writes = WriteOptions(max_text_chars=10, retention_s=60)
    memory = _client_memory(reads=reads, writes=writes, options=SelectionOptions(max_tokens=99))
    assert (memory.reads, memory.writes, memory.options.max_tokens) == (reads, writes, 99)
    with pytest.raises(InvalidInputError, match="over the limit of 10"):
        memory.add("Longer than ten characters.", user_id="ana")
    entry = memory.add("Short.", user_id="ana")
    assert entry.expires_at is not None and entry.expires_at - entry.created_at == 60


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"reads": {"cache_ttl_s": 0}}, "reads must be a ReadOptions"),
        ({"writes": ReadOptions()}, "writes must be a WriteOptions"),
        ({"options": {"max_tokens": 10}}, "options must be a SelectionOptions"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidInputError, match=named):
        _client_memory(**settings)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: ReadOptions(pin_threads="false"), "pin_threads must be True or False"),  # type: ignore[arg-type]
        (lambda: ReadOptions(pin_ttl_s=0), "pin_ttl_s must be a finite number > 0"),
        (lambda: WriteOptions(max_text_chars=0), "max_text_chars must be a finite number >= 1"),
        (lambda: WriteOptions(retention_s=-1), "retention_s must be"),
        (lambda: WriteOptions(strengths={"authored": 1}), "strengths must be a SignalStrengths"),  # type: ignore[arg-type]
    ],
)
def test_option_objects_refuse_bad_values(make: Any, named: str) -> None:
    with pytest.raises(InvalidInputError, match=named):
        make()
