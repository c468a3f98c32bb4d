"""Crash safety: SIGKILL a writer at random moments; every acknowledged write survives, and a
store Chroma leaves damaged is repaired without losing one.

A child process (``crash_child.py``) writes into a ``PersistentClient`` store, in single adds
and batches of five, or in ``add_many`` calls of 1,000 or 20,000 entries, and prints each id
after its write returned. The test kills it with SIGKILL at a random moment (sometimes while
it is still opening the store), then the next child reopens the same store and counts the
acknowledged ids. A child that finds the store damaged (Chroma's "Failed to apply logs to
the hnsw segment writer" class) exits; the test then runs the repair in a
process of its own, as ``outprofile repair`` would, and goes on. At the end this process
opens the store, checks every acknowledged id and its export, and writes again.

Every run prints one line: rounds, acknowledged entries, entries lost (must be 0), stores
found damaged, and stores still unusable after the repair (must be 0).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.store.clients import StoreDamagedError
from langchain_outprofile.store.repair import diagnose
from tests.reliability.crash_child import COLLECTION, EXIT_DAMAGED, USERS

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]
_REPAIR = (
    "import json, sys\n"
    "from langchain_outprofile.store.repair import repair\n"
    "report = repair(sys.argv[1], sys.argv[2])\n"
    "print(json.dumps({'entries': report.entries, 'problems': report.problems}))\n"
)
# seconds before the kill: after the open (batches of 5), or after the first call of a large
# batch returned (so the kill lands in a later call, or between calls)
_KILL_AFTER = {5: (0.0, 1.2), 1000: (0.0, 4.0), 20_000: (0.0, 15.0)}


@dataclass
class Tally:
    """What the rounds of one run saw."""

    rounds: int = 0
    acked: list[str] = field(default_factory=list)
    damaged: int = 0
    repairs: list[dict[str, object]] = field(default_factory=list)
    unusable: int = 0

    def line(self, batch: int) -> str:
        return (
            f"crash batch={batch}: {self.rounds} rounds, {len(set(self.acked))} acknowledged "
            f"entries, stores found damaged {self.damaged}, unusable after repair "
            f"{self.unusable}, repairs {json.dumps(self.repairs)}"
        )


def _repair(store: Path, tally: Tally) -> None:
    """What an operator does on ``damaged``: ``outprofile repair`` in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", _REPAIR, str(store), COLLECTION],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    if done.returncode != 0:
        tally.unusable += 1
        raise AssertionError(f"the repair failed:\n{done.stderr[-3000:]}")
    tally.repairs.append(json.loads(done.stdout.strip().splitlines()[-1]))


def _one_round(
    store: Path, acked_file: Path, round_: int, batch: int, rng: random.Random, tally: Tally
) -> list[str]:
    """Run one child, kill it, return the ids it acknowledged; assert its open check."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(round_), str(acked_file), str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: list[str] = []  # read all along: a child blocked on a full pipe writes nothing
    reader = threading.Thread(target=lambda: lines.extend(child.stdout or []), daemon=True)
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(child.stderr or []), daemon=True)
    early = rng.random() < 0.2
    if early:  # kill while the child may still be importing or opening the store
        reader.start()
        time.sleep(rng.uniform(0.0, 3.0))
    else:
        first = child.stdout.readline()
        reader.start()
        if first.startswith("damaged "):
            assert child.wait(timeout=60) == EXIT_DAMAGED
            tally.damaged += 1
            _repair(store, tally)
            return []
        assert first.startswith("open "), (first, child.stderr.read())
        found, expected = map(int, first.split()[1:])
        assert found == expected, f"round {round_}: {expected - found} acknowledged writes lost"
        if batch > 5:  # large calls: kill inside a later call, which re-upserts stored ids
            deadline = time.monotonic() + 600
            while not lines and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(rng.uniform(*_KILL_AFTER[batch]))
    drain.start()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=120)
    reader.join(60)
    drain.join(60)
    if child.returncode == EXIT_DAMAGED:  # found damage before the kill landed
        tally.damaged += 1
        _repair(store, tally)
        return []
    assert child.returncode == -signal.SIGKILL, "".join(errors)[-2000:]
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # the last piece has no newline: not acknowledged
    return [line.strip() for line in lines if line.startswith("op-")]


def _crash_rounds(tmp_path: Path, rounds: int, seed: int, batch: int) -> Tally:
    store = tmp_path / "store"
    acked_file = tmp_path / "acked.txt"
    acked_file.write_text("")
    rng = random.Random(seed)
    tally = Tally()
    for round_ in range(rounds):
        tally.acked += _one_round(store, acked_file, round_, batch, rng, tally)
        tally.rounds += 1
        acked_file.write_text("\n".join(sorted(set(tally.acked))))
    try:
        memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)
    except StoreDamagedError:
        tally.damaged += 1
        _repair(store, tally)
        memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)
    print(tally.line(batch))
    assert tally.acked, "no write was acknowledged in any round: the kills came too early"
    acked = sorted(set(tally.acked))
    present: set[str] = set()
    for start in range(0, len(acked), 5000):
        ids = acked[start : start + 5000]
        present.update(memory.store._collection.get(ids=ids, include=[])["ids"])
    assert present == set(acked), f"{len(set(acked) - present)} acknowledged writes lost"
    exported = {r["id"] for user in USERS for r in memory.export(user)}
    assert set(acked) <= exported
    memory.add("the store still takes writes after the crashes", user_id="ana")
    assert memory.select("ana", max_tokens=300).entries
    assert diagnose(store, COLLECTION) == {}, "the store is unusable after recovery"
    return tally


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, rounds=3, seed=7, batch=5)


def test_acknowledged_batches_of_1000_survive_sigkill(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, rounds=2, seed=5, batch=1000)


@pytest.mark.slow  # 20,000-entry batches are soak-length: slow only
@pytest.mark.parametrize(("batch", "seed"), [(5, 11), (1000, 12), (20_000, 13), (20_000, 14)])
def test_acknowledged_writes_survive_sigkill_slow(tmp_path: Path, batch: int, seed: int) -> None:
    _crash_rounds(tmp_path, rounds=24, seed=seed, batch=batch)
