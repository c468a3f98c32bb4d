"""Long writes: forget deletes by ids in batches and lets other reads in between them; a write
killed or failing part-way renews the profile version and this process's read state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from langchain_outprofile import OutputProfileMemory, ReadOptions

ROOT = Path(__file__).resolve().parents[2]


class _Probe:
    """Stands in for a store's entries collection and calls hooks around ``delete``/``get``."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.deletes: list[dict[str, Any]] = []
        self.on_delete: Any = None
        self.on_get: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def delete(self, **kwargs: Any) -> Any:
        result = self._collection.delete(**kwargs)
        self.deletes.append(kwargs)
        if self.on_delete is not None:
            self.on_delete(len(self.deletes))
        return result

    def get(self, **kwargs: Any) -> Any:
        if self.on_get is not None:
            self.on_get()
        return self._collection.get(**kwargs)


def test_forget_deletes_by_ids_in_batches_and_lets_another_read_in_between(
    tmp_path: Path,
) -> None:
    """While one large profile is forgotten, a read of another user gets the lock between
    two delete batches instead of waiting for the whole forget.

    The interleaving is forced by events, not by sleeping: once the first batch is deleted
    (the hook runs in the forgetting thread, after that batch's Chroma call returned), the
    forget waits until the reader has read. A forget that kept the lock across its batches
    would keep the reader out, so the wait would run out and the reader would see every
    batch deleted."""
    memory = OutputProfileMemory.from_path(tmp_path / "store", collection_name="forget")
    memory.add_many([{"text": f"ana's output {i}", "user_id": "ana"} for i in range(2500)])
    memory.add("Bob's only output.", user_id="bob")
    memory.store.delete_batch = 1000  # three batches
    probe = _Probe(memory.store._collection)
    memory.store._collection = probe  # the one way in: the store takes no collection hook
    first_batch_deleted, reader_done = threading.Event(), threading.Event()
    reader = threading.get_ident()  # replaced by the reader thread's id below
    deletes_seen_by_reader: list[int] = []
    reader_got_in: list[bool] = []

    def after_delete(calls: int) -> None:  # runs in the forgetting thread
        if calls == 1:
            first_batch_deleted.set()
            reader_got_in.append(reader_done.wait(30))

    def on_get() -> None:
        if threading.get_ident() == reader:
            deletes_seen_by_reader.append(len(probe.deletes))

    def read_bob() -> None:
        nonlocal reader
        reader = threading.get_ident()
        try:
            assert first_batch_deleted.wait(60)
            assert [r["text"] for r in memory.export("bob")] == ["Bob's only output."]
        finally:
            reader_done.set()

    probe.on_delete, probe.on_get = after_delete, on_get
    thread = threading.Thread(target=read_bob)
    thread.start()
    assert memory.forget("ana") == 2500
    thread.join(30)

    assert reader_got_in == [True], "the read could not get in after the first batch"
    assert deletes_seen_by_reader, "the reader never read"
    assert deletes_seen_by_reader[0] < len(probe.deletes), (
        f"the read waited for all {len(probe.deletes)} delete batches"
    )
    assert all(set(call) == {"ids"} for call in probe.deletes), "a delete carried where="
    assert len(probe.deletes) == 3
    assert memory.store.count("ana") == 0 and memory.store.count("bob") == 1


class _FailingUpserts:
    """Stands in for the entries collection; the ``fail_at``-th upsert raises."""

    def __init__(self, collection: Any, fail_at: int) -> None:
        self._collection = collection
        self.calls = 0
        self.fail_at = fail_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def upsert(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("the disk went away")
        return self._collection.upsert(**kwargs)


def test_a_failed_batch_renews_the_version_and_this_process_cache(tmp_path: Path) -> None:
    """``add_many`` fails in its second batch; the first batch is
    stored, so the version must be new and neither the cache nor a snapshot may serve the
    block from before the call."""
    memory = OutputProfileMemory.from_path(
        tmp_path / "store", collection_name="versions", reads=ReadOptions(cache_ttl_s=600)
    )
    memory.add("The first output.", user_id="ana")
    assert [e.text for e in memory.select("ana").entries] == ["The first output."]
    version = memory.store.version("ana")
    memory.store._max_batch = 10
    memory.store._collection = _FailingUpserts(memory.store._collection, fail_at=2)
    batch = [{"text": f"Batch output {i}.", "user_id": "ana"} for i in range(25)]

    with pytest.raises(OSError, match="disk went away"):
        memory.add_many(batch)

    assert memory.store.version("ana") != version
    # the first batch is stored (the second's signals may be too: its events landed before
    # its rows failed); this process's cache and the store's snapshot serve what is stored
    assert {f"Batch output {i}." for i in range(10)} <= {e["text"] for e in memory.export("ana")}
    block = memory.select("ana", max_tokens=2000).text
    assert block != "" and "Batch output 0." in block
    fresh = OutputProfileMemory.from_path(tmp_path / "store", collection_name="versions")
    assert fresh.select("ana", max_tokens=2000).text == block


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from langchain_outprofile import OutputProfileMemory

    memory = OutputProfileMemory.from_path(sys.argv[1], collection_name="versions")
    memory.add("The first output.", user_id="ana")
    memory.select("ana", max_tokens=2000)  # saves the snapshot of the one-entry profile
    store = memory.store
    store._max_batch = 10
    entries = store._collection

    class KillAfterFirstBatch:
        def __getattr__(self, name):
            return getattr(entries, name)

        def upsert(self, **kwargs):
            entries.upsert(**kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

    store._collection = KillAfterFirstBatch()
    memory.add_many([{"text": f"Batch output {i}.", "user_id": "ana"} for i in range(25)])
    """
)


def test_a_writer_killed_after_its_first_batch_leaves_no_stale_snapshot(tmp_path: Path) -> None:
    """The same with a real SIGKILL: the first batch of ``add_many`` is in the
    store, the process dies before the call returns; a new process must see those entries,
    not the block saved before the call."""
    store = tmp_path / "store"
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(store)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]

    memory = OutputProfileMemory.from_path(store, collection_name="versions")
    assert memory.store.count("ana") == 11
    shown = {e.text for e in memory.select("ana", max_tokens=2000).entries}
    assert {f"Batch output {i}." for i in range(10)} <= shown
