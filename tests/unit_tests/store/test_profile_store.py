"""The Chroma-backed store on every real client mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import chromadb
import pytest

from langchain_outprofile import (
    EmbeddingMismatchError,
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    ProfileStats,
    Signal,
    StyleEmbeddings,
    WriteOptions,
)
from langchain_outprofile.store import ProfileStore, http_client
from langchain_outprofile.store import profile_store as store_module
from langchain_outprofile.store.clients import location_lock
from langchain_outprofile.store.state import state_id
from tests.conftest import ManualClock, MemoryFactory, unique_name


def test_add_is_idempotent_and_accumulates_signals(memory: OutputProfileMemory) -> None:
    first = memory.add("Short answer first.", user_id="ana", signal="accepted")
    again = memory.add("  Short   answer first. ", user_id="ana", signal="accepted")
    assert again.id == first.id
    assert again.signals == (Signal.ACCEPTED, Signal.ACCEPTED)
    assert again.strength == pytest.approx(1 - 0.6 * 0.6)
    assert memory.store.count("ana") == 1


def test_later_rejection_wins_and_later_approval_lifts_it(memory: OutputProfileMemory) -> None:
    memory.add("Keep it brief.", user_id="ana", signal="endorsed")
    rejected = memory.add("Keep it brief.", user_id="ana", signal="rejected")
    assert rejected.rejected and not rejected.selectable and rejected.strength == 0.0
    lifted = memory.add("Keep it brief.", user_id="ana", signal="endorsed")
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
    source.add("Noted.", user_id="ana", signal="endorsed")
    records = source.export("ana")
    target = make_memory(collection_name=unique_name("copy"))
    assert target.import_(records) == 2
    assert target.export("ana") == records


def test_stats_counts_states(memory: OutputProfileMemory) -> None:
    memory.add("a", user_id="ana", task="email")
    memory.add("b", user_id="ana", signal="pending", run_id="r1")
    memory.add("c", user_id="ana")
    memory.add("c", user_id="ana", signal="rejected")
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
    memory = OutputProfileMemory.from_path(path)
    memory.add("Written in process one.", user_id="ana", task="email")
    script = textwrap.dedent(
        f"""
        from langchain_outprofile import OutputProfileMemory
        memory = OutputProfileMemory.from_path({str(path)!r})
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


@pytest.mark.parametrize("schema", [1, 99])
def test_a_collection_of_another_schema_is_a_clear_error(
    make_memory: MemoryFactory, schema: int
) -> None:
    """Only row format 2 is read: a collection of another ``outprofile_schema`` (format 1
    was never released; a later one is a newer version's) is refused, naming the schema."""
    probe = make_memory()
    embedder = StyleEmbeddings()
    name = unique_name("other")
    probe.store.client.create_collection(
        name,
        metadata={
            "outprofile_schema": schema,
            "embedding": embedder.fingerprint,
            "dimension": embedder.dimension,
        },
        embedding_function=None,
    )
    with pytest.raises(EmbeddingMismatchError, match=f"outprofile_schema={schema}"):
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


# -- one lock per store location per process --------------------------------------------------


def _same_lock(a: OutputProfileMemory, b: OutputProfileMemory) -> bool:
    return a.store._write_lock is b.store._write_lock


def test_memories_on_one_path_share_one_lock(tmp_path: Path) -> None:
    path = tmp_path / "store"
    (tmp_path / "elsewhere").mkdir()
    first = OutputProfileMemory.from_path(path)
    same_collection = OutputProfileMemory.from_path(path)
    other_collection = OutputProfileMemory.from_path(path, collection_name=unique_name())
    other_spelling = OutputProfileMemory.from_client(
        chromadb.PersistentClient(path=str(tmp_path / "elsewhere" / ".." / "store"))
    )
    for other in (same_collection, other_collection, other_spelling):
        assert _same_lock(first, other)
        assert other.store.state._lock is first.store._write_lock
    assert location_lock(first.store.client) is first.store._write_lock


def test_memories_on_different_locations_have_different_locks(tmp_path: Path) -> None:
    one = OutputProfileMemory.from_path(tmp_path / "one")
    two = OutputProfileMemory.from_path(tmp_path / "two")
    in_memory = OutputProfileMemory.from_client(chromadb.EphemeralClient(), collection_name="c-1")
    assert not _same_lock(one, two)
    assert not _same_lock(one, in_memory) and not _same_lock(two, in_memory)


def test_memories_on_the_in_process_ephemeral_store_share_one_lock() -> None:
    first = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name()
    )
    second = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name()
    )
    assert _same_lock(first, second)


@pytest.mark.integration
def test_memories_on_a_server_hold_no_lock(chroma_server: tuple[str, int]) -> None:
    """No write reads, folds and writes back (store/log.py), so nothing locks a server's
    calls: no lock file (it would only be shared by one machine) and no thread lock."""
    host, port = chroma_server
    memory = OutputProfileMemory.from_client(http_client(f"http://{host}:{port}"))
    location = memory.store._location
    assert location.free and location.lock_file is None
    held = threading.Event()

    def hold_it() -> None:
        with location:
            held.set()
            memory.add("Written while another thread holds the lock.", user_id="ana")

    other = threading.Thread(target=hold_it)
    with location:  # were the lock real, the other thread could not take it now
        other.start()
        other.join(timeout=30)
    assert held.is_set() and not other.is_alive()


def test_while_one_memory_writes_no_thread_can_enter_another_on_the_same_path(
    tmp_path: Path,
) -> None:
    """The race of docs/reliability.md needs a read of one store object to run inside Chroma
    while a write of another runs there. While the writer is inside Chroma's upsert, another
    thread tries (without waiting) to take the lock the reader's every Chroma call holds."""
    writer = OutputProfileMemory.from_path(tmp_path / "store")
    reader = OutputProfileMemory.from_path(tmp_path / "store")
    could_enter: list[bool] = []

    def try_to_enter() -> None:
        lock = reader.store._write_lock
        entered = lock.acquire(blocking=False)
        if entered:
            lock.release()
        could_enter.append(entered)

    class Probe:
        def __init__(self, collection: Any) -> None:
            self._collection = collection

        def __getattr__(self, name: str) -> Any:
            return getattr(self._collection, name)

        def upsert(self, **kwargs: Any) -> None:
            other = threading.Thread(target=try_to_enter)
            other.start()
            other.join()
            self._collection.upsert(**kwargs)

    guarded = writer.store._collection  # the probe sits inside the guard, in Chroma's call
    guarded._collection = Probe(guarded._collection)
    writer.add("Written while the reader waits.", user_id="ana")

    assert could_enter == [False]
    assert [e.text for e in reader.select("ana").entries] == ["Written while the reader waits."]


# -- listing users ------------------------------------------------------------------------------


class _GetSpy:
    """Stands in for the entries collection and records the ``include`` of every ``get``."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.includes: list[list[str] | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def get(self, **kwargs: Any) -> Any:
        self.includes.append(kwargs.get("include"))
        return self._collection.get(**kwargs)


def _spy_on_entries(store: ProfileStore) -> _GetSpy:
    spy = _GetSpy(store._collection)
    store._collection = spy
    return spy


def test_user_ids_never_reads_entry_text_or_metadata(memory: OutputProfileMemory) -> None:
    memory.add_many(
        [{"text": f"Entry {i} of {user}.", "user_id": user} for user in "abc" for i in range(3)]
    )
    spy = _spy_on_entries(memory.store)

    assert memory.store.user_ids() == ["a", "b", "c"]
    assert spy.includes == []  # the version rows say who has entries: no entry is read

    memory.forget("a")
    spy.includes.clear()  # the forget's own reads
    assert memory.store.user_ids() == ["b", "c"]
    assert spy.includes == []  # a forgotten user has no version row: not even looked up


class _CallCounter:
    """Stands in for a collection and counts the calls to it (every method, by name)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._collection, name)
        if not callable(method):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


def _listing_calls(make_memory: MemoryFactory, users: int) -> int:
    """Chroma calls (entries and state collections) of ``user_ids`` over ``users`` users,
    written by another memory on the same path; checks the listing too."""
    writer = make_memory(collection_name=unique_name())
    names = [f"user-{n:04d}" for n in range(users)]
    writer.add_many([{"text": f"Entry of {u}.", "user_id": u} for u in names])
    reader = make_memory(collection_name=writer.store.collection_name)
    entries, state = (
        _CallCounter(reader.store._collection),
        _CallCounter(reader.store.state._collection),
    )
    reader.store._collection, reader.store.state._collection = entries, state
    assert reader.store.user_ids() == names
    return len(entries.calls) + len(state.calls)


def test_listing_users_costs_the_same_calls_for_10_or_200_users(
    make_memory: MemoryFactory,
) -> None:
    """Listing users read each user (10,000 users: 41 s). Now two per page of state rows."""
    assert _listing_calls(make_memory, 200) == _listing_calls(make_memory, 10) <= 2


def test_user_ids_keep_their_meaning_across_two_memories(make_memory: MemoryFactory) -> None:
    """Listed: users with an entry row, pending outputs too (as before). Not listed: a user
    forgotten, or whose last entry was deleted or expired, whichever memory on the path
    did it; a user back after that is listed again. Only those doubted users cost a read."""
    one, two = make_memory(), make_memory()
    one.add("Ana's entry.", user_id="ana")
    last = one.add("Bob's only entry.", user_id="bob")
    one.add("Cy's entry.", user_id="cy")
    one.record_output("Dee's tracked answer.", user_id="dee", run_id="run-dee")
    assert two.store.user_ids() == ["ana", "bob", "cy", "dee"]  # pending only: listed

    assert two.delete(last.id, user_id="bob")
    two.forget("cy")
    spy = _spy_on_entries(one.store)
    assert one.store.user_ids() == ["ana", "dee"]
    assert spy.includes == [[]]  # bob, doubted after the delete, is confirmed by one id read

    entry = one.store.load("dee").entries[0]
    assert one.store.remove("dee", [entry.id]).removed == {"dee": [entry.id]}
    assert two.store.user_ids() == ["ana"]
    two.add("Bob is back.", user_id="bob")
    one.record_output("Dee again.", user_id="dee", run_id="run-dee-2")
    assert one.store.user_ids() == ["ana", "bob", "dee"]


def test_expired_pending_outputs_leave_their_user_unlisted(make_memory: MemoryFactory) -> None:
    """A user whose only entries were pending outputs that expired has no entry left."""
    clock = ManualClock()
    memory = make_memory(clock=clock, writes=WriteOptions(pending_ttl_s=60))
    memory.record_output("Eve's tracked answer.", user_id="eve", run_id="run-eve")
    memory.add("Ana's entry.", user_id="ana")
    assert memory.store.user_ids() == ["ana", "eve"]
    clock.advance(61)
    memory.expire("eve")  # marks it stale by this clock
    clock.advance(61)
    assert memory.expire("eve").pending == 1
    assert make_memory().store.user_ids() == ["ana"]


def test_user_ids_follow_adds_deletes_and_forget(memory: OutputProfileMemory) -> None:
    assert memory.store.user_ids() == []
    memory.add("Ana's only entry.", user_id="ana")
    bob = [memory.add(f"Bob's entry {i}.", user_id="bob") for i in range(2)]
    memory.add("Cy's entry.", user_id="cy")
    assert memory.store.user_ids() == ["ana", "bob", "cy"]

    assert memory.forget("ana") == 1
    assert memory.store.user_ids() == ["bob", "cy"]
    assert memory.delete(bob[0].id, user_id="bob")
    assert memory.store.user_ids() == ["bob", "cy"]  # one entry left
    assert memory.delete(bob[1].id, user_id="bob")
    assert memory.store.user_ids() == ["cy"]

    memory.add("Ana is back.", user_id="ana")
    assert memory.store.user_ids() == ["ana", "cy"]


# -- state rows ---------------------------------------------------------------------------------


def test_a_version_row_that_lost_its_version_is_read_as_none_and_replaced(
    make_memory: MemoryFactory,
) -> None:
    writer = make_memory()
    writer.add("Stay brief.", user_id="ana")
    rows = writer.store.state._collection
    version_id = state_id("v", "ana")
    rows.delete(ids=[version_id])  # an upsert would keep the keys it leaves out
    rows.upsert(ids=[version_id], metadatas=[{"user_id": "ana"}], embeddings=[[1.0]])
    rows.upsert(ids=["v:no-user"], metadatas=[{"version": "x"}], embeddings=[[1.0]])

    reader = make_memory()
    assert reader.store.version("ana") == ""
    assert [e.text for e in reader.select("ana").entries] == ["Stay brief."]
    assert reader.store.user_ids() == ["ana"]

    writer.add("Use bullets.", user_id="ana")
    (meta,) = rows.get(ids=[version_id], include=["metadatas"])["metadatas"]
    assert meta["user_id"] == "ana" and len(str(meta["version"])) == 32
    assert {e.text for e in make_memory().select("ana").entries} == {"Stay brief.", "Use bullets."}


class _BatchHook:
    """Stands in for the entries collection of a writer: after the write's first ``upsert``
    of entry rows, starts ``read`` on another thread, and before each later ``upsert``
    waits (holding no lock: this sits outside the store's guarded collection) for it."""

    def __init__(self, collection: Any, read: Any) -> None:
        self._collection = collection
        self._reader = threading.Thread(target=read)
        self.upserts = 0
        self.read_done_before: list[int] = []  # upserts begun after the read was seen done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def upsert(self, **kwargs: Any) -> Any:
        if self.upserts:
            self._reader.join(timeout=30)  # a writer holding the lock here would starve it
            if not self._reader.is_alive():
                self.read_done_before.append(self.upserts)
        found = self._collection.upsert(**kwargs)
        self.upserts += 1
        if self.upserts == 1:
            self._reader.start()
        return found


def test_a_big_write_lets_another_users_read_in_between_its_batches(
    make_memory: MemoryFactory,
) -> None:
    """A 50,000-entry add_many stalled other users' reads (p99 1.78 s): one
    Chroma call wrote 5,461 rows. Now a write goes ``write_batch`` rows at a time, and a read
    of another user completes between two of its batches (timings: the big-write bench)."""
    writer, reader = make_memory(), make_memory()
    reader.add("Bob's entry.", user_id="bob")
    blocks: list[str] = []
    hook = _BatchHook(writer.store._collection, lambda: blocks.append(reader.select("bob").text))
    writer.store._collection = hook
    size = 250  # the default write_batch; Chroma alone takes 5,461 rows a call
    writer.add_many([{"text": f"Ana's entry {n}.", "user_id": "ana"} for n in range(2 * size)])
    assert hook.upserts == 2
    assert hook.read_done_before == [1]  # before the last batch's rows, the read had finished
    assert "Bob's entry." in blocks[0]
    assert writer.store.count("ana") == 2 * size


def _stats_calls(make_memory: MemoryFactory, users: int) -> int:
    """Chroma calls of ``load_many`` over ``users`` users, as ``outprofile stats`` reads
    them (their counts checked against ``stats``)."""
    memory = make_memory(collection_name=unique_name())
    names = [f"user-{n:04d}" for n in range(users)]
    memory.add_many([{"text": f"Entry {i} of {u}.", "user_id": u} for u in names for i in range(2)])
    memory.record_output("A pending answer.", user_id=names[0], run_id="run-0")
    memory.forget(names[-1])
    expected = [memory.stats(u) for u in names]
    store = memory.store
    rows, log = _CallCounter(store._collection), _CallCounter(store._log)
    store._collection, store._log = rows, log
    found = store.load_many(names)
    assert [ProfileStats.of(user, entries) for user, entries in found.items()] == expected
    return len(rows.calls) + len(log.calls)


def test_stats_of_many_users_costs_the_same_calls_for_10_or_200_users(
    make_memory: MemoryFactory,
) -> None:
    """``outprofile stats`` read each user (10,000 users: 156 s). Now two reads at most."""
    assert _stats_calls(make_memory, 200) == _stats_calls(make_memory, 10) <= 2
