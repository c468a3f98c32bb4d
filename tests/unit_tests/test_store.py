"""The Chroma-backed store on every real client mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chromadb
import pytest

from langchain_outprofile import (
    EmbeddingMismatchError,
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    Signal,
    StyleEmbeddings,
)
from langchain_outprofile.store import ProfileStore
from langchain_outprofile.store import profile_store as store_module
from tests.conftest import MemoryFactory, unique_name


def test_add_is_idempotent_and_accumulates_signals(memory: OutputProfileMemory) -> None:
    first = memory.add("Short answer first.", user_id="ana", signal="accepted")
    again = memory.add("  Short   answer first. ", user_id="ana", signal="accepted")
    assert again.id == first.id
    assert again.signals == (Signal.ACCEPTED, Signal.ACCEPTED)
    assert again.strength == pytest.approx(1 - 0.6 * 0.6)
    assert memory.store.count("ana") == 1


def test_later_rejection_wins_and_later_approval_lifts_it(memory: OutputProfileMemory) -> None:
    memory.endorse("Keep it brief.", user_id="ana")
    rejected = memory.reject("Keep it brief.", user_id="ana")
    assert rejected.rejected and not rejected.selectable and rejected.strength == 0.0
    lifted = memory.endorse("Keep it brief.", user_id="ana")
    assert lifted.selectable and lifted.strength == pytest.approx(0.8)


def test_reads_deletes_and_exports_are_per_user(memory: OutputProfileMemory) -> None:
    memory.add("ana one", user_id="ana")
    memory.add("ana two", user_id="ana")
    bob = memory.add("bob one", user_id="bob")
    assert {r["text"] for r in memory.export("ana")} == {"ana one", "ana two"}
    assert memory.delete(bob.id, user_id="ana") is False  # ana cannot delete bob's entry
    assert memory.store.count("bob") == 1
    assert memory.forget("ana") == 2
    assert memory.export("ana") == []
    assert [r["text"] for r in memory.export("bob")] == ["bob one"]


def test_same_text_for_two_users_is_two_entries(memory: OutputProfileMemory) -> None:
    a = memory.add("Same words.", user_id="ana")
    b = memory.add("Same words.", user_id="bob")
    assert a.id != b.id
    memory.forget("ana")
    assert memory.stats("bob").entries == 1


def test_add_many_batches_under_the_client_limit(make_memory: MemoryFactory) -> None:
    memory = make_memory()
    memory.store._max_batch = 7  # force several batches on a small input
    stored = memory.add_many(
        [{"text": f"line {i}", "user_id": f"u{i % 3}", "task": "t"} for i in range(40)]
    )
    assert len(stored) == 40
    assert sum(memory.stats(f"u{i}").entries for i in range(3)) == 40


def test_export_import_round_trip(make_memory: MemoryFactory) -> None:
    source = make_memory()
    source.add(
        "Cheers!",
        user_id="ana",
        task="email",
        source_input="say bye",
        metadata={"channel": "mail", "stars": 5},
    )
    source.endorse("Noted.", user_id="ana")
    records = source.export("ana")
    target = make_memory(collection_name=unique_name("copy"))
    assert target.import_(records) == 2
    assert target.export("ana") == records


def test_stats_counts_states(memory: OutputProfileMemory) -> None:
    memory.add("a", user_id="ana", task="email")
    memory.add("b", user_id="ana", signal="pending", run_id="r1")
    memory.add("c", user_id="ana")
    memory.reject("c", user_id="ana")
    stats = memory.stats("ana")
    assert (stats.entries, stats.selectable, stats.pending, stats.rejected) == (3, 1, 1, 1)
    assert stats.tasks == {"email": 1, "": 2}


def test_other_embedder_on_existing_collection_is_a_clear_error(tmp_path: Path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    ProfileStore(client=client, collection_name="coll")
    with pytest.raises(EmbeddingMismatchError, match="dim64"):
        ProfileStore(
            client=client, collection_name="coll", embeddings=StyleEmbeddings(dimension=64)
        )


def test_entries_survive_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "profiles"
    memory = OutputProfileMemory(path=path)
    memory.add("Written in process one.", user_id="ana", task="email")
    script = textwrap.dedent(
        f"""
        from langchain_outprofile import OutputProfileMemory
        memory = OutputProfileMemory(path={str(path)!r})
        print(memory.export("ana")[0]["text"], memory.select("ana").entries[0].task)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.stdout.strip() == "Written in process one. email"


def test_bad_collection_name_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="collection_name"):
        ProfileStore(client=chromadb.EphemeralClient(), collection_name="c")


def test_default_path_is_in_the_user_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = ProfileStore(collection_name=unique_name())
    store.upsert([ProfileEntry.create("hello", user_id="ana")])
    assert list((tmp_path / "xdg" / "langchain-outprofile" / "chroma").iterdir())


def test_drop_deletes_the_entries_and_the_state_collection(memory: OutputProfileMemory) -> None:
    memory.add("Gone with the store.", user_id="ana")
    memory.select("ana")  # writes a snapshot into the state collection
    client, name = memory.store.client, memory.store.collection_name

    memory.store.drop()

    names = {c.name for c in client.list_collections()}
    assert name not in names and f"{name}.state" not in names


def _row_format_1_collection(client: chromadb.api.ClientAPI, schema: int) -> str:
    """A collection as langchain-outprofile 0.1 wrote it: text as the document, a key a field."""
    embedder = StyleEmbeddings()
    name = unique_name("v1")
    collection = client.create_collection(
        name,
        metadata={
            "outprofile_schema": schema,
            "embedding": embedder.fingerprint,
            "dimension": embedder.dimension,
            "hnsw:space": "cosine",
        },
        embedding_function=None,
    )
    old = ProfileEntry.create("Written by the old version!", user_id="ana", task="email")
    collection.add(
        ids=[old.id],
        documents=[old.text],
        embeddings=embedder.embed_documents([old.text]),
        metadatas=[
            {
                "user_id": "ana",
                "signals": "authored",
                "strength": old.strength,
                "selectable": True,
                "pending": False,
                "task": "email",
                "source_input": "",
                "created_at": old.created_at,
                "updated_at": old.updated_at,
                "run_id": "",
                "m.channel": "mail",
            }
        ],
    )
    return name


def test_rows_of_format_1_are_read_and_folded_into(make_memory: MemoryFactory) -> None:
    probe = make_memory()
    name = _row_format_1_collection(probe.store.client, schema=1)
    memory = make_memory(collection_name=name)

    (record,) = memory.export("ana")
    assert record["text"] == "Written by the old version!"
    assert record["task"] == "email" and record["metadata"] == {"channel": "mail"}
    assert memory.select("ana").text.count("Written by the old version!") == 1

    again = memory.endorse("Written by the old version!", user_id="ana")
    assert [s.value for s in again.signals] == ["authored", "endorsed"]
    (record,) = memory.export("ana")
    assert record["signals"] == ["authored", "endorsed"] and record["task"] == "email"


def test_a_collection_of_a_newer_schema_is_a_clear_error(make_memory: MemoryFactory) -> None:
    probe = make_memory()
    name = _row_format_1_collection(probe.store.client, schema=99)
    with pytest.raises(EmbeddingMismatchError, match="outprofile_schema=99"):
        make_memory(collection_name=name)


def test_a_profile_larger_than_a_read_page_loads_whole(
    memory: OutputProfileMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"Entry number {i} of many." for i in range(7)]
    memory.add_many(
        [{"text": t, "user_id": "ana", "created_at": 1e9 + i} for i, t in enumerate(texts)]
    )
    memory.add("Not Ana's.", user_id="bob")
    monkeypatch.setattr(store_module, "_READ_PAGE", 3)  # pages of 3: 7 entries read in 3 pages
    memory.store.eager_rows = 0

    assert [e.text for e in memory.store.load("ana").entries] == texts
    assert len(memory.export("ana")) == 7
