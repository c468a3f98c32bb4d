"""A ``forget`` killed part-way: the user is served nothing, and the next open finishes it.

A real child process forgets ``ana`` and SIGKILLs itself at the N-th call of one step of the
forget (deleting state rows, entry rows, log events). Then a fresh memory opens the store:
no read of ``ana`` serves her text, no row of any collection names her, and ``bob``'s
entries are untouched. Before the fix, 2 of 6 killed rounds left 1,000 entries still served
while ``ana`` was missing from ``user_ids``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from langchain_outprofile import OutputProfileMemory
from tests.conftest import ManualClock
from tests.reliability._forget_child import COLLECTION

CHILD = Path(__file__).with_name("_forget_child.py")
ROUNDS = [
    ("state", 1, 120),
    ("state", 2, 120),
    ("rows", 1, 120),
    ("rows", 3, 120),
    ("events", 2, 120),
]
# the child deletes 50 rows or events a call: every kill point below is reached
SLOW_ROUNDS = [
    (step, n, size)
    for size in (60, 180, 300)
    for step, n in (("state", 1), ("state", 2), ("rows", 1), ("rows", 2), ("events", 1))
] + [("rows", 4, 180), ("rows", 6, 300), ("events", 2, 60), ("events", 4, 180), ("events", 6, 300)]


def _rows_naming(memory: OutputProfileMemory, user: str) -> int:
    store = memory.store
    return sum(
        len(collection.get(where={"user_id": user}, include=[])["ids"])
        for collection in (store._collection, store._log, store.state._collection)
    )


def _round(tmp_path: Path, step: str, n: int, size: int) -> None:
    path = str(tmp_path / f"store-{step}-{n}")
    memory = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
    memory.add_many([{"text": f"ana secret {i}", "user_id": "ana"} for i in range(size)])
    memory.add_many([{"text": f"bob note {i}", "user_id": "bob"} for i in range(30)])
    memory.add("ana secret 7", user_id="ana", signal="endorsed")  # an entry with two events
    assert "ana secret" in memory.select("ana", max_tokens=200).text
    bob_before = memory.export("bob")
    del memory
    done = subprocess.run(
        [sys.executable, str(CHILD), path, step, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -9, (done.returncode, done.stdout, done.stderr[-2000:])

    fresh = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
    assert fresh.select("ana", max_tokens=2000).text == ""
    assert fresh.export("ana") == []
    assert _rows_naming(fresh, "ana") == 0
    assert fresh.export("bob") == bob_before
    assert fresh.store.user_ids() == ["bob"]
    fresh.add("ana again", user_id="ana")  # she can come back, with nothing of before
    assert [r["text"] for r in fresh.export("ana")] == ["ana again"]


@pytest.mark.parametrize(("step", "n", "size"), ROUNDS)
def test_a_killed_forget_is_finished_by_the_next_open(
    tmp_path: Path, step: str, n: int, size: int
) -> None:
    _round(tmp_path, step, n, size)


@pytest.mark.slow
@pytest.mark.parametrize(("step", "n", "size"), SLOW_ROUNDS)
def test_a_killed_forget_is_finished_by_the_next_open_soak(
    tmp_path: Path, step: str, n: int, size: int
) -> None:
    _round(tmp_path, step, n, size)


def test_a_reader_serves_nothing_of_an_interrupted_forget_and_finishes_it(
    tmp_path: Path,
) -> None:
    """A memory already open when another process's forget died: its next read of the
    user (past the read cache) serves nothing and finishes the forget."""
    path = str(tmp_path / "store")
    ticks = ManualClock(0.0)
    reader = OutputProfileMemory.from_path(path, collection_name=COLLECTION, monotonic=ticks)
    reader.add_many([{"text": f"ana secret {i}", "user_id": "ana"} for i in range(120)])
    assert reader.select("ana", max_tokens=200).text
    done = subprocess.run(
        [sys.executable, str(CHILD), path, "rows", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    ticks.advance(reader.reads.cache_ttl_s + 1)
    assert reader.select("ana", max_tokens=2000).text == ""
    reader.flush()  # the finishing runs in the reader's background work
    assert _rows_naming(reader, "ana") == 0
