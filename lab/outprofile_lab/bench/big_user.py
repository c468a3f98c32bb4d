"""The big-user benchmark: one user with many entries, read and forgotten in fresh processes.

The issue this measures (24, item 21): an outside attacker's 200,000-entry user took a
10.9 s cold read, 1.15 GB of RAM and an 88 s ``forget`` on an embedded persistent store.

Every phase runs in a process of its own (``python -m outprofile_lab.bench.big_user
--phase ...``), so a read is the first of its process and the peak RSS
(``resource.getrusage``) is that phase's alone:

1. ``build``: ``add_many`` of ``entries`` synthetic texts of one user in chunks of 5,000
   (the package's own write path), then 200 texts of a small user.
2. ``first-read``: the first ``select`` of the big user in a new process, which ranks the
   whole profile (nothing has read it since the write, so no snapshot serves it); then
   warm reads (the in-process cache, or the snapshot that first read saved). RSS is read
   before the select (the process with the package and Chroma open) and after.
3. ``cold-read``: the first ``select`` of a new process once the profile is unchanged since
   it was last read (the saved snapshot serves it).
4. ``small-user``: a second user's first read in a new process, then reads that ask the
   store for the version every time (``cache_ttl_s=0``), while the big user exists.
5. ``after-write``: one ``add`` of the big user in a process of its own (``touch``), then
   the first ``select`` of a new process: the read after a write, which a ranking head
   saved with the last snapshot serves from what the log gained (a tree without heads
   loads the whole profile again).
6. ``forget``: ``forget`` of the big user in a new process.

``--trees A,B`` runs every phase for each source tree (its library first on the import path,
this checkout's lab after it, so the phases are the same code), each on
a store built by that tree, the trees taking turns phase by phase, so "before" and "after"
come from one run, side by side; ``--repeats`` gives medians of several runs (the machine
this was measured on is shared, and one run of a phase varied by 2x with its load).

Run ``python -m outprofile_lab.bench --scenario big-user --big-user-entries 200000``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
from chromadb.config import Settings

import langchain_outprofile
from langchain_outprofile import OutputProfileMemory, ReadOptions
from outprofile_lab.bench.synthetic import user_entries, user_name

__all__ = ["BIG_USER_COLUMNS", "big_user_scenario"]

_LAB = Path(__file__).resolve().parents[2]
"""This checkout's lab/ folder: the phases' code, whichever tree the library comes from."""
_CHUNK = 5000
_SMALL_ENTRIES = 200
_COLLECTION = "bench-big-user"
_PHASES = ("build", "touch", "first-read", "cold-read", "small-user", "after-write", "forget")

BIG_USER_COLUMNS = (
    ("code", "code"),
    ("entries", "entries"),
    ("build s", "build_s"),
    ("first read s", "first_read_s"),
    ("first read RSS MB", "first_read_rss_mb"),
    ("RSS before MB", "open_rss_mb"),
    ("warm read ms", "warm_read_ms"),
    ("cold read ms", "cold_read_ms"),
    ("small first ms", "small_first_ms"),
    ("small p99 ms", "small_p99_ms"),
    ("after write s", "after_write_s"),
    ("after write RSS MB", "after_write_rss_mb"),
    ("forget s", "forget_s"),
    ("forget RSS MB", "forget_rss_mb"),
    ("load avg", "load_avg"),
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory(path: str, **options: Any) -> OutputProfileMemory:
    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    return OutputProfileMemory.from_client(client, collection_name=_COLLECTION, **options)


def _timed_ms(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def _percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _phase(phase: str, path: str, entries: int, max_tokens: int, seed: int) -> dict[str, Any]:
    """One phase, in this process (a child of :func:`big_user_scenario`)."""
    big, small = user_name(0), user_name(1)
    if phase == "build":
        memory = _memory(path)
        start = time.perf_counter()
        chunk: list[dict[str, Any]] = []
        for record in user_entries(0, entries, seed=seed):
            chunk.append(record)
            if len(chunk) == _CHUNK:
                memory.add_many(chunk)
                chunk = []
        if chunk:
            memory.add_many(chunk)
        build_s = time.perf_counter() - start
        memory.add_many(list(user_entries(1, _SMALL_ENTRIES, seed=seed)))
        return {"build_s": build_s}
    if phase == "touch":  # a write of the big user: the next first read ranks again
        _memory(path).add(f"A new answer, written at {time.time_ns()}.", user_id=big)
        return {}
    if phase == "first-read":
        memory = _memory(path)
        open_rss = _rss_mb()
        first = _timed_ms(lambda: memory.select(big, max_tokens=max_tokens))
        rss = _rss_mb()
        warm = [_timed_ms(lambda: memory.select(big, max_tokens=max_tokens)) for _ in range(20)]
        return {
            "first_read_s": first / 1e3,
            "first_read_rss_mb": rss,
            "open_rss_mb": open_rss,
            "warm_read_ms": _percentile(warm, 0.5),
        }
    if phase == "after-write":
        memory = _memory(path)
        took = _timed_ms(lambda: memory.select(big, max_tokens=max_tokens))
        return {"after_write_s": took / 1e3, "after_write_rss_mb": _rss_mb()}
    if phase == "cold-read":
        memory = _memory(path)
        return {"cold_read_ms": _timed_ms(lambda: memory.select(big, max_tokens=max_tokens))}
    if phase == "small-user":
        memory = _memory(path, reads=ReadOptions(cache_ttl_s=0.0))
        first = _timed_ms(lambda: memory.select(small, max_tokens=max_tokens))
        reads = [_timed_ms(lambda: memory.select(small, max_tokens=max_tokens)) for _ in range(50)]
        return {"small_first_ms": first, "small_p99_ms": _percentile(reads, 0.99)}
    if phase == "forget":
        memory = _memory(path)
        start = time.perf_counter()
        memory.forget(big)
        took = time.perf_counter() - start
        left = len(memory.export(big))
        return {"forget_s": took, "forget_rss_mb": _rss_mb(), "left_after_forget": left}
    raise ValueError(f"unknown phase {phase!r}")


def _child(
    phase: str, path: Path, entries: int, max_tokens: int, seed: int, tree: str | None
) -> dict[str, Any]:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([tree, str(_LAB)])
    command = [sys.executable, "-m", "outprofile_lab.bench.big_user", "--phase", phase]
    command += ["--expect", tree or ""]
    command += ["--path", str(path), "--entries", str(entries)]
    command += ["--max-tokens", str(max_tokens), "--seed", str(seed)]
    # ``-m`` puts the working directory first on sys.path: run in the tree, or the library
    # of the directory the benchmark was started from would be imported instead of its
    done = subprocess.run(
        command, env=env, cwd=tree or None, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def big_user_scenario(
    *,
    entries: int = 200_000,
    max_tokens: int = 600,
    seed: int = 0,
    trees: Sequence[str | None] = (None,),
    repeats: int = 1,
    root: Path | None = None,
) -> list[dict[str, Any]]:
    """Every phase (module docstring) for each source tree in ``trees`` (None: this
    process's own ``PYTHONPATH``), one store per tree; returns one row per tree, each
    figure the median of ``repeats`` runs. The trees take turns phase by phase, so a
    change in the machine's load falls on all of them; before each repeat after the first,
    one ``add`` of the big user makes the next first read rank again, and every ``forget``
    but the last runs on a copy of the store."""
    samples: list[dict[str, list[float]]] = [{} for _ in trees]
    rows = [
        {"code": tree or "this", "entries": entries, "load_avg": os.getloadavg()[0]}
        for tree in trees
    ]

    def run(phase: str, n: int, path: Path) -> None:
        for key, value in _child(phase, path, entries, max_tokens, seed, trees[n]).items():
            samples[n].setdefault(key, []).append(float(value))
        print(f"{rows[n]['code']}: {phase} done", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="outprofile-big-user-", dir=root) as tmp:
        stores = [Path(tmp) / f"store-{n}" for n in range(len(trees))]
        for n, store in enumerate(stores):
            run("build", n, store)
        for repeat in range(repeats):
            for n, store in enumerate(stores):
                if repeat:
                    run("touch", n, store)
                for phase in ("first-read", "cold-read", "small-user", "touch", "after-write"):
                    run(phase, n, store)
        for repeat in range(repeats):
            for n, store in enumerate(stores):
                last = repeat == repeats - 1
                target = store if last else Path(tmp) / "forget-copy"
                if not last:
                    shutil.copytree(store, target)
                run("forget", n, target)
                if not last:
                    shutil.rmtree(target)
    for row, measured in zip(rows, samples, strict=True):
        row.update({key: statistics.median(values) for key, values in measured.items()})
        row["repeats"] = repeats
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """A child's entry: run one phase and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", required=True, choices=_PHASES)
    parser.add_argument("--path", required=True)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--expect", default="", help="the source tree this must run from")
    args = parser.parse_args(argv)
    library = Path(langchain_outprofile.__file__).resolve().parents[1]
    if args.expect and library != Path(args.expect).resolve():
        raise SystemExit(f"the library was imported from {library}, not {args.expect}")
    result = _phase(args.phase, args.path, args.entries, args.max_tokens, args.seed)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
