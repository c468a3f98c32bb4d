"""Privacy: export is complete and exclusive, forget is a hard delete, nothing goes online.

The first three tests run on every real Chroma mode (ephemeral, persistent, and the
``chroma run`` server under ``integration``). The suite itself runs with sockets blocked
by pytest-socket (see ``tests/conftest.py``); the last tests prove the guard is active and
that a whole session of the API and the CLI never even tries to open a socket.
"""

from __future__ import annotations

import socket
import uuid
import warnings
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda
from pytest_socket import SocketBlockedError
from typer.testing import CliRunner

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.cli import app
from langchain_outprofile.errors import UnknownRunError
from langchain_outprofile.validation import entry_id

NEIGHBOURS = ("Ana", "ana ", "ana-2")  # ids an unanchored or case-folding filter would mix up


def _fill(memory: OutputProfileMemory, run: str) -> dict[str, dict[str, object]]:
    """Store a varied profile for ana (and the same texts for her neighbours)."""
    memory.add("Short answer first.", user_id="ana", task="email", source_input="Reply to Bo")
    memory.endorse("Bullets, no fluff.", user_id="ana", metadata={"app": "mail", "n": 3})
    memory.add("Too long, sorry.", user_id="ana", rating=2)
    memory.reject("As an AI language model...", user_id="ana")
    memory.add("A tracked draft.", user_id="ana", signal="pending", run_id=run)
    for user in NEIGHBOURS:
        memory.add("Short answer first.", user_id=user)
        memory.add(f"Only {user!r} wrote this.", user_id=user)
    return {r["id"]: r for r in memory.export("ana")}


def test_export_is_everything_of_the_user_and_only_that(memory: OutputProfileMemory) -> None:
    run = str(uuid.uuid4())
    exported = _fill(memory, run)
    texts = [
        "Short answer first.",
        "Bullets, no fluff.",
        "Too long, sorry.",
        "As an AI language model...",
        "A tracked draft.",
    ]
    assert set(exported) == {entry_id("ana", t) for t in texts}
    raw = memory.store._collection.get(where={"user_id": "ana"}, include=[])
    assert set(raw["ids"]) == set(exported)  # nothing of ana is left out of the export
    assert all(r["user_id"] == "ana" for r in exported.values())
    first = exported[entry_id("ana", "Short answer first.")]
    assert (first["task"], first["source_input"]) == ("email", "Reply to Bo")
    assert exported[entry_id("ana", "Bullets, no fluff.")]["metadata"] == {"app": "mail", "n": 3}
    assert exported[entry_id("ana", "A tracked draft.")]["run_id"] == run
    assert exported[entry_id("ana", "As an AI language model...")]["signals"] == ["rejected"]
    for user in NEIGHBOURS:
        assert {r["text"] for r in memory.export(user)} == {
            "Short answer first.",
            f"Only {user!r} wrote this.",
        }


def test_an_export_restores_exactly(memory: OutputProfileMemory, tmp_path: Path) -> None:
    exported = _fill(memory, str(uuid.uuid4()))
    elsewhere = OutputProfileMemory(path=tmp_path / "restored")
    assert elsewhere.import_(exported.values()) == len(exported)
    assert {r["id"]: r for r in elsewhere.export("ana")} == exported
    assert elsewhere.export("Ana") == []


def test_forget_is_a_hard_delete(memory: OutputProfileMemory) -> None:
    run = str(uuid.uuid4())
    ids = list(_fill(memory, run))
    neighbours = {u: memory.export(u) for u in NEIGHBOURS}
    memory.select("ana")  # warm the read cache: forget must clear it too
    assert memory.forget("ana") == len(ids)
    assert memory.store._collection.get(ids=ids, include=[])["ids"] == []
    assert memory.store._collection.get(where={"user_id": "ana"}, include=[])["ids"] == []
    assert memory.store.find_runs(run) == []
    with pytest.raises(UnknownRunError):
        memory.feedback(run, "endorsed")
    assert memory.export("ana") == [] and not memory.select("ana")
    assert memory.stats("ana").entries == 0
    assert {u: memory.export(u) for u in NEIGHBOURS} == neighbours
    assert memory.forget("ana") == 0


def test_no_user_can_delete_another_users_entry(memory: OutputProfileMemory) -> None:
    entry = memory.add("Mine.", user_id="ana")
    for user in ("Ana", "ana ", "bob"):
        assert memory.delete(entry.id, user_id=user) is False
    assert [r["id"] for r in memory.export("ana")] == [entry.id]


@pytest.mark.xfail(
    strict=True,
    reason="Chroma's embedded write-ahead log (embeddings_queue in chroma.sqlite3) keeps the "
    "text of recent writes until the vector index persists (hnsw:sync_threshold, 1000 writes); "
    "see docs/reliability.md",
)
def test_a_forgotten_text_leaves_no_bytes_on_disk(tmp_path: Path) -> None:
    memory = OutputProfileMemory(path=tmp_path / "store")
    secret = f"secret-{uuid.uuid4().hex}"
    memory.add(f"My diary: {secret}", user_id="ana")
    memory.forget("ana")
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []


def test_sockets_are_blocked_in_this_suite() -> None:
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("example.com", 80), timeout=1)


def test_a_whole_session_never_tries_the_network(tmp_path: Path) -> None:
    store = tmp_path / "store"
    OutputProfileMemory(path=store)  # the token counter is built (and cached) here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        memory = OutputProfileMemory(path=store)
        memory.add_many([{"text": f"Note {i}.", "user_id": "ana"} for i in range(20)])
        tracked = memory.track(RunnableLambda(lambda q: f"Answer to {q}"))
        run = uuid.uuid4()
        tracked.invoke("hi", config={"configurable": {"user_id": "ana"}, "run_id": run})
        memory.feedback(run, "endorsed")
        assert "Answer to hi" in memory.select("ana", max_tokens=400).text
        memory.select("ana", relevance_weight=0.5, query="notes")
        records = memory.export("ana")
        memory.forget("ana")
        memory.import_(records)
        for args in (["stats"], ["preview", "--user", "ana"], ["export", "--user", "ana"]):
            result = CliRunner().invoke(app, ["--path", str(store), *args])
            assert result.exit_code == 0, result.output
    attempts = [str(w.message) for w in caught if "socket" in str(w.message)]
    assert attempts == []
