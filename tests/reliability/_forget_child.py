"""Child process of the interrupted-forget test: ``forget`` one user and die part-way.

Usage: ``python _forget_child.py STORE_PATH STEP N``. Opens the store, makes the store's
N-th call of ``STEP`` (``rows``: deleting entry rows; ``events``: deleting log events;
``state``: deleting state rows) kill this process with SIGKILL before it runs, then
forgets ``ana``. A real kill at a named point, not a timed one.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.store import ProfileStore
from langchain_outprofile.store.state import StateRows

COLLECTION = "forget"
STEPS = {"rows": (ProfileStore, "_drop_rows"), "events": (ProfileStore, "_drop_events")}


def main(path: str, step: str, n: int) -> None:
    owner, name = STEPS.get(step, (StateRows, "forget"))
    original = getattr(owner, name)
    calls = [0]

    async def dying(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] >= n:
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, *args, **kwargs)

    memory = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
    memory.store.delete_batch = 50  # several batches: kill points inside the purge
    setattr(owner, name, dying)
    memory.forget("ana")
    print("finished", flush=True)  # the kill point came after the forget: the test says so


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
