# ruff: noqa: E501  (one row of the bad-input tables per line reads best)
"""Bad input across the API and the CLI: a typed, clear error, and nothing stored changes.

Every row runs against a real store holding two users (and a tracked pending run); the
exports of both users and the collection size are compared before and after.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from langgraph.store.base import InvalidNamespaceError

from langchain_outprofile import (
    EmbeddingMismatchError,
    InvalidInputError,
    OutputProfileMemory,
    ReadOptions,
    StyleEmbeddings,
)
from langchain_outprofile.cli import main
from langchain_outprofile.errors import OutprofileError, UnknownRunError
from tests.conftest import unique_name

RUN = "6f1c0f9e-1111-4c1e-9f00-000000000001"
USERS = ("ana", "bob")
Row = tuple[str, Callable[[OutputProfileMemory], Any], type[Exception], str]


def _seed(memory: OutputProfileMemory) -> OutputProfileMemory:
    memory.add("Short answer first.", user_id="ana")
    memory.add("Bullets, no fluff.", user_id="ana", task="email", signal="endorsed")
    memory.add("Cheers, Bob", user_id="bob", signal="edited")
    memory.add("A tracked answer.", user_id="ana", signal="pending", run_id=RUN)
    return memory


def _snapshot(memory: OutputProfileMemory) -> tuple[Any, ...]:
    return (*(memory.export(u) for u in USERS), memory.store.total())


def _good(text: str = "fine") -> dict[str, Any]:
    return {"text": text, "user_id": "ana"}


API_ROWS: list[Row] = [
    ("text not a string", lambda m: m.add(123, user_id="ana"), InvalidInputError, "text must be a string"),
    ("empty text", lambda m: m.add("", user_id="ana"), InvalidInputError, "empty"),
    ("whitespace text", lambda m: m.add(" \n\t ", user_id="ana"), InvalidInputError, "empty"),
    ("huge text", lambda m: m.add("x" * 20_001, user_id="ana"), InvalidInputError, "over the limit"),
    ("lone surrogate", lambda m: m.add("hi \ud800", user_id="ana"), InvalidInputError, "lone surrogates"),
    ("user_id None", lambda m: m.add("hi", user_id=None), InvalidInputError, "user_id must be"),
    ("user_id empty", lambda m: m.add("hi", user_id="  "), InvalidInputError, "user_id must be"),
    ("user_id huge", lambda m: m.add("hi", user_id="u" * 300), InvalidInputError, "256"),
    ("unknown signal", lambda m: m.add("hi", user_id="ana", signal="loved"), InvalidInputError, "signal must be one of"),
    ("NaN rating", lambda m: m.add("hi", user_id="ana", rating=math.nan), InvalidInputError, "rating must be"),
    ("rating 6", lambda m: m.add("hi", user_id="ana", rating=6), InvalidInputError, "rating must be"),
    ("rating bool", lambda m: m.add("hi", user_id="ana", rating=True), InvalidInputError, "rating must be"),
    ("rating + other signal", lambda m: m.add("hi", user_id="ana", signal="endorsed", rating=4), InvalidInputError, "rating= goes with"),
    ("negative created_at", lambda m: m.add("hi", user_id="ana", created_at=-1), InvalidInputError, "created_at"),
    ("infinite created_at", lambda m: m.add("hi", user_id="ana", created_at=math.inf), InvalidInputError, "created_at"),
    ("list metadata value", lambda m: m.add("hi", user_id="ana", metadata={"k": [1]}), InvalidInputError, "metadata['k']"),
    ("NaN metadata value", lambda m: m.add("hi", user_id="ana", metadata={"k": math.nan}), InvalidInputError, "finite"),
    ("metadata not a dict", lambda m: m.add("hi", user_id="ana", metadata="k=v"), InvalidInputError, "metadata must be a dict"),
    ("add_many one bad item", lambda m: m.add_many([_good("a"), _good(""), _good("b")]), InvalidInputError, "entries[1]"),
    ("add_many not a dict", lambda m: m.add_many(["just text"]), InvalidInputError, "entries[0]"),
    ("add_many unknown field", lambda m: m.add_many([{**_good(), "colour": "red"}]), InvalidInputError, "entries[0]"),
    ("feedback unknown run", lambda m: m.feedback("no-such-run", "endorsed"), UnknownRunError, "no tracked output"),
    ("feedback empty run id", lambda m: m.feedback("", "endorsed"), InvalidInputError, "run_id"),
    ("feedback other user's run", lambda m: m.feedback(RUN, "endorsed", user_id="bob"), UnknownRunError, "for user 'bob'"),
    ("feedback without signal", lambda m: m.feedback(RUN), InvalidInputError, "give feedback"),
    ("feedback authored", lambda m: m.feedback(RUN, "authored"), InvalidInputError, "feedback signal must be"),
    ("feedback edited + rating", lambda m: m.feedback(RUN, edited="new", rating=3), InvalidInputError, "edited= stands alone"),
    ("feedback NaN rating", lambda m: m.feedback(RUN, rating=math.nan), InvalidInputError, "rating must be"),
    ("import missing text", lambda m: m.import_([{"user_id": "ana", "signals": ["authored"]}]), InvalidInputError, "missing ['text']"),
    ("import signals not a list", lambda m: m.import_([{**_good(), "signals": "authored"}]), InvalidInputError, "signals"),
    ("import strength 2", lambda m: m.import_([{**_good(), "signals": ["authored"], "strength": 2}]), InvalidInputError, "strength"),
    ("import good then bad", lambda m: m.import_([{**_good(), "signals": ["authored"]}, "not a record"]), InvalidInputError, "record 1"),
    ("select max_tokens 0", lambda m: m.select("ana", max_tokens=0), InvalidInputError, "max_tokens"),
    ("select unknown option", lambda m: m.select("ana", colour="red"), InvalidInputError, "unknown selection option"),
    ("select bad order", lambda m: m.select("ana", order="random"), InvalidInputError, "order"),
    ("forget user_id int", lambda m: m.forget(5), InvalidInputError, "user_id must be"),
    ("delete user_id empty", lambda m: m.delete("op-x", user_id=""), InvalidInputError, "user_id must be"),
    ("bad collection name", lambda m: OutputProfileMemory.from_client(m.store.client, collection_name="a"), InvalidInputError, "collection_name must be"),
    ("other embedder dimension", lambda m: OutputProfileMemory.from_client(m.store.client, collection_name=m.store.collection_name, embeddings=StyleEmbeddings(dimension=64)), EmbeddingMismatchError, "open it with the embedder it was written with"),
    ("path as the store", lambda m: OutputProfileMemory("x"), InvalidInputError, "from_path"),
    ("negative cache ttl", lambda m: OutputProfileMemory.from_client(m.store.client, reads=ReadOptions(cache_ttl_s=-1)), InvalidInputError, "cache_ttl_s"),
]  # fmt: skip


@pytest.fixture(scope="module")
def seeded() -> OutputProfileMemory:
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name()
    )
    return _seed(memory)


@pytest.mark.parametrize(("case", "call", "error", "says"), API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_rejects_bad_input_and_changes_nothing(
    seeded: OutputProfileMemory,
    case: str,
    call: Callable[[OutputProfileMemory], Any],
    error: type[Exception],
    says: str,
) -> None:
    before = _snapshot(seeded)
    versions = {u: seeded.store.version(u) for u in USERS}
    with pytest.raises(error) as raised:
        call(seeded)
    assert says in str(raised.value), f"{case}: unclear message {raised.value!r}"
    assert _snapshot(seeded) == before
    assert {u: seeded.store.version(u) for u in USERS} == versions  # no write reached the store
    reopened = OutputProfileMemory.from_client(
        seeded.store.client, collection_name=seeded.store.collection_name
    )
    assert _snapshot(reopened) == before  # the collection still opens, as it was
    assert seeded.select("ana").entries


# -- CLI --------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, lines: list[str]) -> str:
    target = tmp_path / name
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(target)


def _line(**record: Any) -> str:
    return json.dumps(record)


CliRow = tuple[str, Callable[[Path], list[str]], str]

CLI_ROWS: list[CliRow] = [
    ("ingest missing file", lambda p: ["ingest", str(p / "nope.jsonl")], "no such file; check the path"),
    ("ingest corrupt line", lambda p: ["ingest", _write(p, "a.jsonl", [_line(text="ok", user_id="ana"), "{not json"])], "line 2 is not valid JSON"),
    ("ingest lone surrogate", lambda p: ["ingest", _write(p, "b.jsonl", ['{"text": "hi \\ud800", "user_id": "ana"}'])], "lone surrogates"),
    ("ingest NaN rating", lambda p: ["ingest", _write(p, "c.jsonl", ['{"text": "hi", "user_id": "ana", "rating": NaN}'])], "rating must be"),
    ("ingest unknown field", lambda p: ["ingest", _write(p, "d.jsonl", [_line(text="hi", user_id="ana", colour="red")])], "unknown field"),
    ("ingest without user", lambda p: ["ingest", _write(p, "e.jsonl", [_line(text="hi")])], "no user_id"),
    ("ingest not an object", lambda p: ["ingest", _write(p, "f.jsonl", ["[1, 2]"])], "must be a JSON object"),
    ("import corrupt line", lambda p: ["import", _write(p, "g.jsonl", ["{"])], "line 1 is not valid JSON"),
    ("import bad strength", lambda p: ["import", _write(p, "h.jsonl", [_line(text="x", user_id="ana", signals=["authored"], strength=5)])], "strength"),
    ("ingest not UTF-8", lambda p: ["ingest", (p / "l.jsonl").write_bytes(b'{"text": "caf\xe9"}\n') and str(p / "l.jsonl")], "not UTF-8 text (line 1, byte 13); save it as UTF-8"),
    ("ingest a directory", lambda p: ["ingest", str(p)], "is a directory; pass a JSONL or JSON file"),
    ("preview max-tokens 0", lambda p: ["preview", "--user", "ana", "--max-tokens", "0"], "Invalid value for '--max-tokens': must be 1 or more"),
    ("preview max-tokens -5", lambda p: ["preview", "--user", "ana", "--max-tokens", "-5"], "Invalid value for '--max-tokens': must be 1 or more"),
    ("preview max-tokens many", lambda p: ["preview", "--user", "ana", "--max-tokens", "many"], "Invalid value for '--max-tokens'"),
    ("preview without --user", lambda p: ["preview"], "Missing option '--user' (see: outprofile preview --help)"),
    ("preview markup user", lambda p: ["preview", "--user", "[bold]zed[/]"], "no entries stored for user '[bold]zed[/]'"),
    ("preview unknown user", lambda p: ["preview", "--user", "zed"], "no entries stored for user 'zed'"),
    ("forget unknown user", lambda p: ["forget", "--user", "zed", "--yes"], "no entries stored for user 'zed'"),
    ("export unknown user", lambda p: ["export", "--user", "Ana"], "no entries stored for user 'Ana'"),
    ("bad chroma url", lambda p: ["--chroma-url", "ftp://x", "stats"], "a Chroma URL looks like"),
    ("path and url", lambda p: ["--path", str(p / "store"), "--chroma-url", "http://127.0.0.1:9", "stats"], "either --path or --chroma-url"),
    ("path is a file", lambda p: ["--path", _write(p, "file", ["x"]), "stats"], "is a file; pass a directory"),
    ("path inside a file", lambda p: ["--path", _write(p, "file", ["x"]) + "/store", "stats"], "is inside the file"),
    ("bad collection", lambda p: ["--collection", "a", "stats"], "collection_name must be"),
    ("unknown option", lambda p: ["stats", "--colour", "red"], "No such option: --colour (see: outprofile stats --help)"),
    ("unknown command", lambda p: ["stat"], "No such command 'stat'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "args", "says"), CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_rejects_bad_input_and_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    args: Callable[[Path], list[str]],
    says: str,
) -> None:
    """Through the `outprofile` entry point: a non-zero exit and one line on stderr."""
    store = tmp_path / "store"
    memory = _seed(OutputProfileMemory.from_path(store))
    before = _snapshot(memory)
    argv = args(tmp_path)
    if "--chroma-url" not in argv and "--path" not in argv:
        argv = ["--path", str(store), *argv]
    monkeypatch.setattr(sys, "argv", ["outprofile", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code not in (0, None), f"{case}: exit 0\n{out}{err}"
    assert "Traceback" not in out + err, f"{case}: traceback\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: not one line {err!r}"
    assert says in lines[0], f"{case}: unclear message {err!r}"
    assert _snapshot(memory) == before


# -- every public method x ordinary bad values: each a typed error, nothing stored ------------

# Values a request, a JSON body, a CSV column or a numpy pipeline hands over by mistake.
BAD_VALUES: dict[str, Any] = {
    "None": None,
    "0": 0,
    "-1": -1,
    "1.5": 1.5,
    "True": True,
    "huge int": 10**400,
    "NaN": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "numpy float": np.float64(2.0),
    "numpy int": np.int64(3),
    "numpy bool": np.bool_(True),
    "Decimal": Decimal("2"),
    "Fraction": Fraction(1, 2),
    "UUID": uuid.UUID(RUN),
    "bytes": b"ana",
    "set": {"ana"},
    "list": ["ana"],
    "dict": {"text": "x"},
}
# Per argument, the values it takes on purpose (documented: e.g. a thread id may be an int or
# a UUID, a rating 1.5, a created_at 0); every other value must be refused. The LangGraph
# store's keys are left out: LangGraph's own put/get/delete turn any key into str(key).
Arg = tuple[str, Callable[[OutputProfileMemory, Any], Any], frozenset[str]]
_NUMBERS = frozenset({"0", "1.5", "numpy float"})  # numpy's float64 is a float
_RATINGS = frozenset({"1.5", "numpy float"})
_NONE = frozenset({"None"})
_IDS = frozenset({"0", "-1", "huge int", "UUID"})  # thread ids: str, int or UUID
_BIG = frozenset({"huge int"})  # a valid int, however large: a budget or a page size


def _store(m: OutputProfileMemory) -> Any:
    return m.as_store()


ARGS: list[Arg] = [
    ("add text", lambda m, v: m.add(v, user_id="ana"), frozenset()),
    ("add user_id", lambda m, v: m.add("hi", user_id=v), frozenset()),
    ("add signal", lambda m, v: m.add("hi", user_id="ana", signal=v), _NONE),
    ("add rating", lambda m, v: m.add("hi", user_id="ana", rating=v), _NONE | _RATINGS),
    ("add task", lambda m, v: m.add("hi", user_id="ana", task=v), _NONE),
    ("add source_input", lambda m, v: m.add("hi", user_id="ana", source_input=v), _NONE),
    ("add created_at", lambda m, v: m.add("hi", user_id="ana", created_at=v), _NONE | _NUMBERS),
    ("add run_id", lambda m, v: m.add("hi", user_id="ana", run_id=v), _NONE),
    ("add metadata", lambda m, v: m.add("hi", user_id="ana", metadata=v), _NONE | {"dict"}),
    ("add metadata value", lambda m, v: m.add("hi", user_id="ana", metadata={"k": v}), frozenset({"0", "-1", "1.5", "True", "numpy float"})),
    ("add endorsed text", lambda m, v: m.add(v, user_id="ana", signal="endorsed"), frozenset()),
    ("accept user_id", lambda m, v: m.add("hi", user_id=v, signal="accepted"), frozenset()),
    ("reject text", lambda m, v: m.add(v, user_id="ana", signal="rejected"), frozenset()),
    ("add_many entries", lambda m, v: m.add_many(v), frozenset()),
    ("add_many item", lambda m, v: m.add_many([v]), frozenset()),
    ("add_many item text", lambda m, v: m.add_many([{"text": v, "user_id": "ana"}]), frozenset()),
    ("add_many item created_at", lambda m, v: m.add_many([{"text": "hi", "user_id": "ana", "created_at": v}]), _NONE | _NUMBERS),
    ("add_many item rating", lambda m, v: m.add_many([{"text": "hi", "user_id": "ana", "rating": v}]), _NONE | _RATINGS),
    ("import_ records", lambda m, v: m.import_(v), frozenset()),
    ("import_ record", lambda m, v: m.import_([v]), frozenset()),
    ("import_ strength", lambda m, v: m.import_([{**_good(), "signals": ["authored"], "strength": v}]), frozenset({"0"})),
    ("import_ created_at", lambda m, v: m.import_([{**_good(), "signals": ["authored"], "created_at": v}]), _NUMBERS),
    ("import_ updated_at", lambda m, v: m.import_([{**_good(), "signals": ["authored"], "updated_at": v}]), _NONE | _NUMBERS),
    ("import_ signals", lambda m, v: m.import_([{**_good(), "signals": v}]), frozenset()),
    ("import_ signal", lambda m, v: m.import_([{**_good(), "signals": [v]}]), frozenset()),
    ("import_ metadata", lambda m, v: m.import_([{**_good(), "signals": ["authored"], "metadata": v}]), _NONE | {"dict"}),
    ("delete entry_id", lambda m, v: m.delete(v, user_id="ana"), frozenset()),
    ("delete user_id", lambda m, v: m.delete("op-x", user_id=v), frozenset()),
    ("forget user_id", lambda m, v: m.forget(v), frozenset()),
    ("forget purge", lambda m, v: m.forget("ana", purge=v), frozenset({"True"})),
    ("export user_id", lambda m, v: m.export(v), frozenset()),
    ("stats user_id", lambda m, v: m.stats(v), frozenset()),
    ("expire user_id", lambda m, v: m.expire(v), _NONE),
    ("select user_id", lambda m, v: m.select(v), frozenset()),
    ("select max_tokens", lambda m, v: m.select("ana", max_tokens=v), _NONE | _BIG),
    ("select task", lambda m, v: m.select("ana", task=v), _NONE),
    ("select query", lambda m, v: m.select("ana", query=v), _NONE),
    ("select thread_id", lambda m, v: m.select("ana", thread_id=v), _NONE | _IDS),
    ("select options", lambda m, v: m.select("ana", options=v), _NONE),
    ("select mmr_lambda", lambda m, v: m.select("ana", mmr_lambda=v), _NONE | frozenset({"0"})),
    ("select half_life_days", lambda m, v: m.select("ana", half_life_days=v), _NONE | frozenset({"1.5", "numpy float", "inf"})),
    ("select fill_from_profile", lambda m, v: m.select("ana", fill_from_profile=v), _NONE | frozenset({"True"})),
    ("block_messages user_id", lambda m, v: m.block_messages(v), frozenset()),
    ("record_output text", lambda m, v: m.record_output(v, user_id="ana", run_id=str(uuid.uuid4())), frozenset()),
    ("record_output run_id", lambda m, v: m.record_output("hi", user_id="ana", run_id=v), frozenset({"UUID"})),
    ("feedback run_id", lambda m, v: m.feedback(v, "endorsed"), frozenset({"UUID"})),
    ("feedback signal", lambda m, v: m.feedback(RUN, v), frozenset()),
    ("feedback rating", lambda m, v: m.feedback(RUN, rating=v), _RATINGS),
    ("feedback edited", lambda m, v: m.feedback(RUN, edited=v), frozenset()),
    ("feedback user_id", lambda m, v: m.feedback(RUN, "endorsed", user_id=v), _NONE),
    ("injector user_id", lambda m, v: m.injector(user_id=v), _NONE),
    ("injector max_tokens", lambda m, v: m.injector(max_tokens=v), _NONE | _BIG),
    ("injector placement", lambda m, v: m.injector(placement=v), frozenset()),
    ("retriever k", lambda m, v: m.as_retriever(k=v), _NONE | _BIG),
    ("store put namespace user", lambda m, v: _store(m).put(("profile", v), "k", {"text": "hi"}), frozenset()),
    ("store put value", lambda m, v: _store(m).put(("profile", "ana"), "k", v), _NONE | {"dict"}),
    ("store put text", lambda m, v: _store(m).put(("profile", "ana"), "k", {"text": v}), frozenset()),
    ("store put strength", lambda m, v: _store(m).put(("profile", "ana"), "k", {"text": "hi", "strength": v}), _NONE | {"0"}),
    ("store put rating", lambda m, v: _store(m).put(("profile", "ana"), "k", {"text": "hi", "rating": v}), _NONE | _RATINGS),
    ("store search limit", lambda m, v: _store(m).search(("profile", "ana"), limit=v), _BIG),
    ("store search offset", lambda m, v: _store(m).search(("profile", "ana"), offset=v), frozenset({"0"}) | _BIG),
    ("store search query", lambda m, v: _store(m).search(("profile", "ana"), query=v), _NONE),
    ("store list limit", lambda m, v: _store(m).list_namespaces(limit=v), _BIG),
    ("store list offset", lambda m, v: _store(m).list_namespaces(offset=v), frozenset({"0"}) | _BIG),
    ("store list max_depth", lambda m, v: _store(m).list_namespaces(max_depth=v), _NONE | _BIG),
]  # fmt: skip

BAD_CASES = [
    pytest.param(call, value, id=f"{arg} = {name}")
    for arg, call, accepted in ARGS
    for name, value in BAD_VALUES.items()
    if name not in accepted
]


@pytest.mark.parametrize(("call", "value"), BAD_CASES)
def test_every_public_argument_refuses_ordinary_bad_values(
    seeded: OutputProfileMemory, call: Callable[[OutputProfileMemory, Any], Any], value: Any
) -> None:
    before = _snapshot(seeded)
    with pytest.raises(Exception) as raised:
        call(seeded, value)
    error = raised.value
    typed = isinstance(error, OutprofileError | InvalidNamespaceError)
    assert typed, f"untyped {type(error).__name__}: {error}"
    assert _snapshot(seeded) == before
