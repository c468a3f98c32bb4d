"""The big-write benchmark: another user's reads while one ``add_many`` writes many entries.

One thread writes ``entries`` texts of one user in a single ``add_many``; another thread,
with a memory of its own on the same store, reads the block of a second user over and over
until the write returns (5 ms apart). Each read checks that user's profile version in Chroma, so it
waits for whatever the write holds: the location lock of an embedded store (one Chroma
call at a time per location), or the server's own queue. What it guards: a
50,000-entry write used to leave the other user's reads at p99 1.78 s.

Run ``python -m outprofile_lab.bench --scenario big-write --many-entries 50000``
(``--modes embedded,server``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_outprofile import OutputProfileMemory, ReadOptions
from outprofile_lab.bench.synthetic import user_entries, user_name

__all__ = ["BIG_WRITE_COLUMNS", "big_write_scenario"]

_READER_ENTRIES = 200
_GAP_S = 0.005  # between two reads: a stream of requests, not a loop that hogs the lock

BIG_WRITE_COLUMNS = (
    ("mode", "mode"),
    ("scenario", "scenario"),
    ("entries", "entries"),
    ("write s", "write_s"),
    ("reads", "reads"),
    ("read p50 ms", "read_p50_ms"),
    ("read p99 ms", "read_p99_ms"),
    ("read max ms", "read_max_ms"),
    ("idle read p99 ms", "idle_read_p99_ms"),
)


def _percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1e3


def _reads(read: Callable[[], object], until: threading.Event, at_least: int) -> list[float]:
    """Seconds of each ``read()``, until ``until`` is set (and at least ``at_least``)."""
    took: list[float] = []
    while not until.is_set() or len(took) < at_least:
        start = time.perf_counter()
        read()
        took.append(time.perf_counter() - start)
        time.sleep(_GAP_S)
    return took


def big_write_scenario(
    client: Any,
    name: str,
    *,
    entries: int,
    max_tokens: int,
    seed: int,
    idle_reads: int = 50,
) -> dict[str, Any]:
    """Time another user's reads during one ``add_many`` of ``entries`` texts.

    Returns a row: the write's seconds, how many reads ran during it, their p50/p99/max,
    and the p99 of the same reads with nothing writing (the floor)."""
    collection = f"bench-big-write-{name}"
    writer = OutputProfileMemory.from_client(client, collection_name=collection)
    # no in-process cache: every read asks Chroma for the version, as a read after the
    # cache's 2 s does (otherwise most reads never wait for anything)
    reader = OutputProfileMemory.from_client(
        client, collection_name=collection, reads=ReadOptions(cache_ttl_s=0.0)
    )
    other = user_name(1)
    writer.add_many(list(user_entries(1, _READER_ENTRIES, seed=seed)))

    def read() -> object:
        return reader.select(other, max_tokens=max_tokens)

    read()  # the ranking is built once; every later read checks the version
    finished = threading.Event()
    finished.set()  # nothing writes: just ``idle_reads`` reads
    idle = _reads(read, finished, idle_reads)
    big = list(user_entries(0, entries, seed=seed))
    done = threading.Event()
    took: list[float] = []
    thread = threading.Thread(target=lambda: took.extend(_reads(read, done, 1)))
    start = time.perf_counter()
    thread.start()
    try:
        writer.add_many(big)
    finally:
        write_s = time.perf_counter() - start
        done.set()
        thread.join()
    return {
        "scenario": name,
        "entries": entries,
        "write_s": write_s,
        "reads": len(took),
        "read_p50_ms": _percentile(took, 0.5),
        "read_p99_ms": _percentile(took, 0.99),
        "read_max_ms": max(took) * 1e3,
        "idle_read_p99_ms": _percentile(idle, 0.99),
    }
