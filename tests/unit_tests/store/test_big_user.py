"""A user with many entries (issue 24, item 21): what a cold read and a ``forget`` ask Chroma
for, recorded on the real collections. A 200,000-entry user took a 10.9 s cold read, 1.15 GB
of RAM and an 88 s ``forget``; the times are the big-user benchmark's, these tests pin the
requests that made them grow with the whole history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_outprofile import OutputProfileMemory, ReadOptions
from tests.conftest import MemoryFactory

_ENTRIES = 60
_EAGER = 8  # profiles above this read metadata-only, paged: the path a big user takes


@dataclass
class _Get:
    include: list[str]
    by_id: bool
    rows: int


@dataclass
class _Recorder:
    """Stands in for a collection: every ``get`` passes through, with what it asked for."""

    collection: Any
    gets: list[_Get] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)

    def get(self, **query: Any) -> Any:
        found = self.collection.get(**query)
        include = list(query.get("include") or [])
        self.gets.append(_Get(include, "ids" in query, len(found["ids"])))
        return found

    def content_rows(self) -> int:
        """Rows returned with their text or metadata (which holds the text)."""
        return sum(g.rows for g in self.gets if {"documents", "metadatas"} & set(g.include))


def _filled(make_memory: MemoryFactory) -> OutputProfileMemory:
    writer = make_memory()
    writer.add_many(
        [{"text": f"Answer number {n} of ana, short.", "user_id": "ana"} for n in range(_ENTRIES)]
    )
    writer.add("A note of bob.", user_id="bob")
    return writer


def test_a_cold_read_of_a_big_profile_reads_no_entry_row_in_full(
    make_memory: MemoryFactory,
) -> None:
    writer = _filled(make_memory)
    expected = make_memory(reads=ReadOptions(snapshot_ttl_s=0)).select(
        "ana", max_tokens=200
    )  # eager path

    reader = make_memory(reads=ReadOptions(snapshot_ttl_s=0))
    reader.store.eager_rows = _EAGER
    rows = _Recorder(reader.store._collection)
    reader.store._collection = rows
    got = reader.select("ana", max_tokens=200)

    assert got.text == expected.text and got.entries  # the same block
    # every entry is folded from its events; the rows written since the log are caches of
    # that fold and hold no base, so no row's text or metadata is read past the probe that
    # would have served a small profile whole: ids, then the pool's vectors by id
    probe, *reads = rows.gets
    assert probe.rows == _EAGER + 1 and rows.content_rows() == probe.rows
    assert [g.include for g in reads if not g.by_id] == [[], []]
    assert all(g.include == ["embeddings"] for g in reads if g.by_id)
    assert writer.export("bob")  # another user's rows untouched by the reads


def test_forget_of_a_big_user_reads_ids_not_texts_and_no_rescans(
    make_memory: MemoryFactory,
) -> None:
    writer = _filled(make_memory)
    memory = make_memory()
    memory.store.delete_batch = 10
    log = _Recorder(memory.store._log)
    memory.store._log = log
    rows = _Recorder(memory.store._collection)
    memory.store._collection = rows

    assert memory.forget("ana") == _ENTRIES

    # events before the forget are deleted by id unread: only the forget's own event (and
    # any a later write stamped at or after it) comes back with its metadata
    assert log.content_rows() <= 2
    # the user's row ids are read once, then once more to find racing writes (there were
    # none): not again per batch of ``delete_batch``
    assert len([g for g in rows.gets if not g.by_id]) == 2
    assert writer.export("ana") == [] and memory.export("ana") == []
    assert [r["text"] for r in memory.export("bob")] == ["A note of bob."]
    raw = writer.store._collection.get(where={"user_id": "ana"}, include=[])
    assert raw["ids"] == []
    assert writer.store._log.get(where={"user_id": "ana"}, include=[])["ids"] == []
