"""Two real processes on one embedded store path: folds and mixed operations stay correct.

Each test starts two worker processes (``_cross_process_worker.py``) on one
``PersistentClient`` path, lets them run at the same moment, and then checks the store from
this process. The server variants of the same races are in
``tests/integration_tests/test_cross_process_server.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from langchain_outprofile import OutputProfileMemory, ReadOptions, Signal
from tests.reliability._cross_process_worker import SHARED_USER, shared_text

WORKER = Path(__file__).with_name("_cross_process_worker.py")
ROOT = Path(__file__).resolve().parents[2]
RACE_TEXTS = 100  # fewer than the server variant's 150: the embedded store serializes per location
SERVER_RACE_TEXTS = 150


def run_pair(
    location: str, collection: str, roles: tuple[str, str], count: int, tmp_path: Path
) -> list[dict[str, Any]]:
    """Start two workers, release them together, return their reports (fail on any error)."""
    go = tmp_path / f"go-{collection}"
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), location, collection, role, str(count), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for role in roles
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.strip() == "ready", (line, worker.stderr and worker.stderr.read())
        go.touch()
        reports = []
        for role, worker in zip(roles, workers, strict=True):
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, f"worker {role} failed:\n{err[-3000:]}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def check_race(memory: OutputProfileMemory, reports: list[dict[str, Any]], texts: int) -> None:
    """Every acknowledged rejection and acceptance is in the stored entry's signals, and a
    text whose last signal is a rejection is never in the block."""
    rejected, accepted = (set(r["acked"]) for r in reports)
    assert rejected == accepted == set(range(texts)), "a worker did not finish its calls"
    stored = {r["text"]: r["signals"] for r in memory.export(SHARED_USER)}
    lost_rejections = [i for i in rejected if "rejected" not in stored.get(shared_text(i), [])]
    lost_acceptances = [i for i in accepted if "accepted" not in stored.get(shared_text(i), [])]
    assert not lost_rejections, f"{len(lost_rejections)} acknowledged rejections vanished"
    assert not lost_acceptances, f"{len(lost_acceptances)} acknowledged acceptances vanished"
    block = {e.text for e in memory.select(SHARED_USER, max_tokens=100_000, pool_size=500).entries}
    for text, signals in stored.items():
        if signals[-1] == Signal.REJECTED.value:
            assert text not in block, "a text whose last signal is a rejection was served"


def check_mixed(memory: OutputProfileMemory, reports: list[dict[str, Any]]) -> None:
    """Each user's store holds exactly the texts its worker kept, and a fresh process reads
    every entry with its vector (what the workers persisted is whole)."""
    for user, report in zip(("ana", "bob"), reports, strict=True):
        assert sorted(r["text"] for r in memory.export(user)) == report["kept"], user
        profile = memory.store.load(user)
        assert profile.vectors_for(range(len(profile.entries))).shape[0] == len(report["kept"])


def test_two_processes_on_one_path_lose_no_acknowledged_rejection(tmp_path: Path) -> None:
    """One process rejects texts while another accepts the same texts;
    every call returns, so every signal must be in the stored entry."""
    store = tmp_path / "store"
    reports = run_pair(f"path:{store}", "race", ("reject", "accept"), RACE_TEXTS, tmp_path)
    memory = OutputProfileMemory.from_path(
        store, collection_name="race", reads=ReadOptions(cache_ttl_s=0)
    )
    check_race(memory, reports, RACE_TEXTS)


def test_two_processes_on_one_path_run_mixed_operations_without_errors(tmp_path: Path) -> None:
    """Two processes doing adds, batches, deletes, reads and exports on
    one path never fail inside Chroma, and each user ends with exactly what its worker kept."""
    store = tmp_path / "store"
    started = time.monotonic()
    reports = run_pair(f"path:{store}", "mixed", ("mixed-ana", "mixed-bob"), 120, tmp_path)
    assert time.monotonic() - started < 600
    check_mixed(
        OutputProfileMemory.from_path(
            store, collection_name="mixed", reads=ReadOptions(cache_ttl_s=0)
        ),
        reports,
    )
