"""Crash safety: SIGKILL a writer at random moments; every acknowledged write survives.

A child process (``crash_child.py``) writes into a ``PersistentClient`` store and prints
each id after its write returned. The test kills it with SIGKILL at a random moment
(sometimes while it is still opening the store), then the next child reopens the same
store and counts the acknowledged ids; at the end this process opens the store too.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langchain_outprofile import OutputProfileMemory

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


def _one_round(store: Path, acked_file: Path, round_: int, rng: random.Random) -> list[str]:
    """Run one child, kill it, return the ids it acknowledged; assert its open check."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(round_), str(acked_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    early = rng.random() < 0.2
    if early:  # kill while the child may still be importing or opening the store
        time.sleep(rng.uniform(0.0, 3.0))
    else:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.startswith("open "), (first, child.stderr and child.stderr.read())
        found, expected = map(int, first.split()[1:])
        assert found == expected, f"round {round_}: {expected - found} acknowledged writes lost"
        time.sleep(rng.uniform(0.0, 1.2))
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err[-2000:]
    lines = out.split("\n")[:-1]  # the last piece has no newline: not acknowledged
    return [line for line in lines if line.startswith("op-")]


def _crash_rounds(tmp_path: Path, rounds: int, seed: int) -> None:
    store = tmp_path / "store"
    acked_file = tmp_path / "acked.txt"
    acked_file.write_text("")
    rng = random.Random(seed)
    acked: list[str] = []
    for round_ in range(rounds):
        acked += _one_round(store, acked_file, round_, rng)
        acked_file.write_text("\n".join(acked))
    assert acked, "no write was acknowledged in any round: the kills came too early"
    memory = OutputProfileMemory(path=store, collection_name="crash")
    present = set(memory.store._collection.get(ids=acked, include=[])["ids"])
    assert present == set(acked), f"{len(set(acked) - present)} acknowledged writes lost"
    exported = {r["id"] for user in ("ana", "bob", "cy") for r in memory.export(user)}
    assert set(acked) <= exported
    memory.add("the store still takes writes after the crashes", user_id="ana")


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, rounds=3, seed=7)


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill_slow(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, rounds=24, seed=11)
