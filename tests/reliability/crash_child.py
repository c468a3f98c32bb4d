"""Child process of the crash-safety test: open a persistent store, then write until killed.

Usage: ``python crash_child.py STORE_PATH ROUND ACKED_FILE``. It first checks that every id
listed in ACKED_FILE (writes acknowledged by earlier, killed children) is present and prints
``open <found> <expected>``; then it writes forever, printing each entry id on its own line
only after the write returned (single adds and batches of five, several users).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from pytest_socket import disable_socket

USERS = ("ana", "bob", "cy")


def main(path: str, round_: int, acked_file: str) -> None:
    """Open the store, report the acknowledged ids found, then write until killed."""
    disable_socket(allow_unix_socket=True)  # no path may open a network connection
    from langchain_outprofile import OutputProfileMemory

    memory = OutputProfileMemory(path=path, collection_name="crash")
    acked = [line for line in Path(acked_file).read_text().split() if line]
    found = memory.store._collection.get(ids=acked, include=[])["ids"] if acked else []
    print(f"open {len(found)} {len(acked)}", flush=True)
    rng = random.Random(round_)
    i = 0
    while True:
        user = USERS[i % len(USERS)]
        if rng.random() < 0.25:
            batch = [
                {"text": f"round {round_} write {i}.{k} {rng.random()}", "user_id": user}
                for k in range(5)
            ]
            stored = memory.add_many(batch)
        else:
            stored = [memory.add(f"round {round_} write {i} {rng.random()}", user_id=user)]
        for entry in stored:
            print(entry.id, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
