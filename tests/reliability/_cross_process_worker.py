"""A worker process of the cross-process tests: one memory on a shared store, one role.

Usage: ``python _cross_process_worker.py LOCATION COLLECTION ROLE COUNT GO_FILE`` where LOCATION
is ``path:/dir`` (an embedded store several processes share) or ``url:http://host:port`` (a
``chroma run`` server). The worker opens its memory, prints ``ready``, waits until GO_FILE
exists (so both workers start together), runs its role, and prints one JSON line:

- ``reject`` / ``accept``: rejects (accepts) text ``i`` of user ``shared`` for i < COUNT, one
  call each; reports the indexes whose call returned (acknowledged).
- ``mixed-ana`` / ``mixed-bob``: COUNT random operations on its own user (add, add_many of
  five, endorse, delete, select, export) and reads of the other worker's user (select, with
  vectors, and export); reports the texts it kept, so the test can compare the store.

Any exception ends the worker with a non-zero status and the traceback on stderr.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import chromadb
from pytest_socket import disable_socket, socket_allow_hosts

from langchain_outprofile import OutputProfileMemory, ReadOptions

SHARED_USER = "shared"


def shared_text(i: int) -> str:
    """Text ``i`` of the reject/accept race."""
    return f"Shared output number {i}: lead with the answer, then the detail."


def _memory(location: str, collection: str) -> OutputProfileMemory:
    kind, _, where = location.partition(":")
    if kind == "path":
        disable_socket(allow_unix_socket=True)
        return OutputProfileMemory.from_path(
            where, collection_name=collection, reads=ReadOptions(cache_ttl_s=0.0)
        )
    socket_allow_hosts(["127.0.0.1", "::1"])
    host, port = where.removeprefix("http://").split(":")
    client = chromadb.HttpClient(host=host, port=int(port))
    return OutputProfileMemory.from_client(
        client, collection_name=collection, reads=ReadOptions(cache_ttl_s=0.0)
    )


def _race(memory: OutputProfileMemory, role: str, count: int) -> dict[str, object]:
    acked = []
    for i in range(count):
        if role == "reject":
            memory.add(shared_text(i), user_id=SHARED_USER, signal="rejected")
        else:
            memory.add(shared_text(i), user_id=SHARED_USER, signal="accepted")
        acked.append(i)
    return {"acked": acked}


def _mixed(memory: OutputProfileMemory, user: str, other: str, count: int) -> dict[str, object]:
    rng = random.Random(user)
    kept: dict[str, str] = {}  # text -> id
    for i in range(count):
        roll = rng.random()
        if roll < 0.3:
            text = f"{user} single {i}"
            kept[text] = memory.add(text, user_id=user).id
        elif roll < 0.45:
            stored = memory.add_many(
                [{"text": f"{user} batch {i}.{k}", "user_id": user} for k in range(5)]
            )
            kept.update({e.text: e.id for e in stored})
        elif roll < 0.55 and kept:
            text = rng.choice(sorted(kept))
            memory.add(text, user_id=user, signal="endorsed")
        elif roll < 0.65 and kept:
            text = rng.choice(sorted(kept))
            assert memory.delete(kept.pop(text), user_id=user)
        elif roll < 0.8:
            chosen = memory.select(user, max_tokens=300).entries
            assert all(e.user_id == user for e in chosen)
        elif roll < 0.9:
            records = memory.export(user)
            assert {r["text"] for r in records} == set(kept), "own export differs from model"
        else:  # the other worker's user, vectors included: written by the other process
            assert all(e.user_id == other for e in memory.select(other, max_tokens=300).entries)
            assert all(r["user_id"] == other for r in memory.export(other))
    return {"kept": sorted(kept)}


def main(location: str, collection: str, role: str, count: int, go_file: str) -> None:
    """Open the memory, wait for the go file, run the role, report one JSON line."""
    memory = _memory(location, collection)
    print("ready", flush=True)
    go = Path(go_file)
    while not go.exists():
        time.sleep(0.005)
    started = time.monotonic()
    if role in ("reject", "accept"):
        report = _race(memory, role, count)
    else:
        user, other = ("ana", "bob") if role == "mixed-ana" else ("bob", "ana")
        report = _mixed(memory, user, other, count)
    report["seconds"] = time.monotonic() - started
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
