"""A separate Python process on a shared Chroma server: the writer or the reader of the test.

Run as ``python _two_process_worker.py writer|reader HOST PORT COLLECTION [TTL_S]``. It talks
to the test over stdin/stdout, one line per step, so the test decides the order of events.
"""

from __future__ import annotations

import json
import sys
import time

import chromadb

from langchain_outprofile import OutputProfileMemory, ReadOptions

USER = "shared-user"
FIRST = "Short answers first, then the detail. No filler words."
SECOND = "Bullet points beat paragraphs when the reader is busy!"
LONG_TTL_S = 300.0


def _memory(host: str, port: int, collection: str, ttl: float) -> OutputProfileMemory:
    client = chromadb.HttpClient(host=host, port=port)
    return OutputProfileMemory.from_client(
        client, collection_name=collection, reads=ReadOptions(cache_ttl_s=ttl)
    )


def _texts(memory: OutputProfileMemory) -> list[str]:
    return sorted(e.text for e in memory.select(USER, max_tokens=400).entries)


def writer(host: str, port: int, collection: str) -> None:
    """Write FIRST, wait for 'go', write SECOND, report."""
    memory = _memory(host, port, collection, 0.0)
    memory.add(FIRST, user_id=USER, signal="authored")
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    memory.add(SECOND, user_id=USER, signal="authored")
    print("written", flush=True)


def reader(host: str, port: int, collection: str, ttl: float) -> None:
    """Cache the profile in two memories (short and long TTL), then poll after the write.

    Every read is reported with how long after the start of the caching read it began, so
    the test can tell exactly which reads the cache had to serve.
    """
    short, long = _memory(host, port, collection, ttl), _memory(host, port, collection, LONG_TTL_S)
    started = time.monotonic()
    cached = {"short": _texts(short), "long": _texts(long)}
    print("cached", flush=True)
    assert sys.stdin.readline().strip() == "check"
    polls = []
    deadline = time.monotonic() + ttl + 30.0
    while time.monotonic() < deadline:
        at = time.monotonic() - started
        texts = _texts(short)
        polls.append({"since_cache_s": at, "texts": texts})
        if SECOND in texts:
            break
        time.sleep(0.05)
    long_at = time.monotonic() - started
    report = {
        "cached": cached,
        "polls": polls,
        "long": {"since_cache_s": long_at, "texts": _texts(long)},
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    role, host, port, collection = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if role == "writer":
        writer(host, port, collection)
    else:
        reader(host, port, collection, float(sys.argv[5]))
