"""Child process of the crash-safety test: open a persistent store, then write until killed.

Usage: ``python crash_child.py STORE_PATH ROUND ACKED_FILE BATCH``. It first checks that every
id listed in ACKED_FILE (writes acknowledged by earlier, killed children) is present and
prints ``open <found> <expected>`` (or ``damaged <message>`` and exits with status 3 when the
store reports :class:`StoreDamagedError`); then it writes forever, printing each entry id on
its own line only after the write returned: with BATCH = 5, single adds and batches of five
(three users); with a larger BATCH, ``add_many`` calls of BATCH entries, re-adding a third
of the previous call's texts (so stored ids are upserted again, the case that wedges
Chroma's compaction when killed).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from pytest_socket import disable_socket

USERS = ("ana", "bob", "cy")
COLLECTION = "crash"
EXIT_DAMAGED = 3


def main(path: str, round_: int, acked_file: str, batch: int) -> None:
    """Open the store, report the acknowledged ids found, then write until killed."""
    disable_socket(allow_unix_socket=True)  # no path may open a network connection
    from langchain_outprofile import OutputProfileMemory
    from langchain_outprofile.store.clients import StoreDamagedError

    acked = sorted({line for line in Path(acked_file).read_text().split() if line})
    try:
        memory = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
        found = 0
        for start in range(0, len(acked), 5000):
            ids = acked[start : start + 5000]
            found += len(memory.store._collection.get(ids=ids, include=[])["ids"])
    except StoreDamagedError as error:
        print(f"damaged {error}", flush=True)
        sys.exit(EXIT_DAMAGED)
    print(f"open {found} {len(acked)}", flush=True)
    rng = random.Random(round_)
    if batch <= 5:
        _small(memory, round_, rng)
    else:
        _large(memory, round_, rng, batch)


def _small(memory: object, round_: int, rng: random.Random) -> None:
    i = 0
    while True:
        user = USERS[i % len(USERS)]
        if rng.random() < 0.25:
            items = [
                {"text": f"round {round_} write {i}.{k} {rng.random()}", "user_id": user}
                for k in range(5)
            ]
            stored = memory.add_many(items)  # type: ignore[attr-defined]
        else:
            text = f"round {round_} write {i} {rng.random()}"
            stored = [memory.add(text, user_id=user)]  # type: ignore[attr-defined]
        for entry in stored:
            print(entry.id, flush=True)
        i += 1


def _large(memory: object, round_: int, rng: random.Random, batch: int) -> None:
    previous: list[dict[str, str]] = []
    i = 0
    while True:
        again = previous[: batch // 3]  # stored ids upserted again, with a new signal
        items = [
            {"text": f"round {round_} call {i} entry {k} {rng.random()}", "user_id": USERS[k % 3]}
            for k in range(batch - len(again))
        ]
        signals = ("accepted", "endorsed", "rejected")
        call = [{**item, "signal": rng.choice(signals)} for item in again + items]
        stored = memory.add_many(call)  # type: ignore[attr-defined]
        print("\n".join(entry.id for entry in stored), flush=True)
        previous = [{"text": e["text"], "user_id": e["user_id"]} for e in call]
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 5)
