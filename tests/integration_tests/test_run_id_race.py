"""Two users claim one run id at the same moment: exactly one holds it, the other is refused.

The outside attack on 754359b: 40 of 40 pairs racing for one run id (async memories on a
server, or threads on an embedded store) were both acknowledged, and after the pending output
expired, ``feedback(run_id, edited=...)`` landed in the other user's profile. Run ids are now
claims (the first event under the id wins; ``store/log.py``), so in every pair one user
holds the run, the other gets ``RunIdConflictError`` with nothing stored, and feedback
reaches only the holder.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory, RunIdConflictError, UnknownRunError
from tests.conftest import unique_name

PAIRS = 40


def _settled(memory: OutputProfileMemory, run: str, results: dict[str, object]) -> str:
    """Check one raced pair; returns the holder."""
    held = [u for u, r in results.items() if not isinstance(r, BaseException)]
    refused = [u for u, r in results.items() if isinstance(r, RunIdConflictError)]
    assert len(held) == 1 and len(refused) == 1, results
    holder, loser = held[0], refused[0]
    assert run not in [r["run_id"] for r in memory.export(loser)]
    return holder


def test_threads_racing_for_one_run_id_on_an_embedded_store(tmp_path: Path) -> None:
    memory = OutputProfileMemory.from_path(tmp_path / "store", collection_name="race")
    holders = []
    for n in range(PAIRS):
        run = f"req-{n}"
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def claim(
            user: str,
            run: str = run,
            start: threading.Barrier = start,
            results: dict[str, object] = results,
        ) -> None:
            start.wait()
            try:
                results[user] = memory.record_output(
                    f"{user}'s answer {run}", user_id=user, run_id=run
                )
            except BaseException as error:
                results[user] = error

        threads = [threading.Thread(target=claim, args=(u,)) for u in ("ana", "bob")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        holders.append(_settled(memory, run, results))
    for n, holder in enumerate(holders):
        other = "bob" if holder == "ana" else "ana"
        with pytest.raises(UnknownRunError):
            memory.feedback(f"req-{n}", edited="a correction", user_id=other)
        assert memory.feedback(f"req-{n}", edited=f"{holder} fixed {n}").user_id == holder
    for user in ("ana", "bob"):
        texts = " ".join(r["text"] for r in memory.export(user))
        other = "bob" if user == "ana" else "ana"
        assert f"{other}'s" not in texts and f"{other} fixed" not in texts


@pytest.mark.integration
def test_async_memories_racing_for_one_run_id_on_a_server(
    chroma_server: tuple[str, int],
) -> None:
    host, port = chroma_server
    name = unique_name("race")

    async def race() -> list[dict[str, object]]:
        ana = OutputProfileMemory.from_client(
            await chromadb.AsyncHttpClient(host=host, port=port), collection_name=name
        )
        bob = OutputProfileMemory.from_client(
            await chromadb.AsyncHttpClient(host=host, port=port), collection_name=name
        )
        outcomes: list[dict[str, object]] = []
        for n in range(PAIRS):
            run = f"req-{n}-{uuid.uuid4().hex[:6]}"
            got = await asyncio.gather(
                ana.arecord_output(f"ana's answer {n}", user_id="ana", run_id=run),
                bob.arecord_output(f"bob's answer {n}", user_id="bob", run_id=run),
                return_exceptions=True,
            )
            outcomes.append({"ana": got[0], "bob": got[1], "run": run})
        return outcomes

    outcomes = asyncio.run(race())
    reader = OutputProfileMemory.from_client(
        chromadb.HttpClient(host=host, port=port), collection_name=name
    )
    for outcome in outcomes:
        run = str(outcome.pop("run"))
        holder = _settled(reader, run, outcome)
        assert reader.feedback(run, edited=f"{holder} fixed").user_id == holder
    for user in ("ana", "bob"):
        other = "bob" if user == "ana" else "ana"
        assert all(not r["text"].startswith(other) for r in reader.export(user))
