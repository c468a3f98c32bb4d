"""Cold reads from a ranking head on a real ``chroma run`` server: the async facade reads
(``chromadb.AsyncHttpClient``) while a synchronous client of another memory writes, and
every read after a write is served from the head and equals a full load."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory, ReadOptions, SelectionOptions
from langchain_outprofile.memory import reader as reader_module
from tests.conftest import ManualClock, unique_name

pytestmark = pytest.mark.integration
USER = "ana"
OPTIONS = SelectionOptions(max_tokens=200, pool_size=8, half_life_days=None)


@pytest.fixture
async def async_client(chroma_server: tuple[str, int]) -> AsyncIterator[Any]:
    host, port = chroma_server
    yield await chromadb.AsyncHttpClient(host=host, port=port)


async def test_an_async_cold_reader_on_a_server_reads_writes_from_the_head(
    async_client: Any, chroma_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "HEAD_MIN_RATIO", 2)  # heads for a few hundred entries
    host, port = chroma_server
    sync_client = chromadb.HttpClient(host=host, port=port)
    clock = ManualClock()
    common: dict[str, Any] = {"collection_name": unique_name("head"), "clock": clock}
    writer = OutputProfileMemory.from_client(sync_client, **common)
    fresh = OutputProfileMemory.from_client(
        sync_client, reads=ReadOptions(cache_ttl_s=0, snapshot_ttl_s=0), **common
    )
    cold = OutputProfileMemory.from_client(async_client, reads=ReadOptions(cache_ttl_s=0), **common)
    served: list[bool] = []
    from_head = cold._reader._from_head

    async def counted(*args: Any, **kwargs: Any) -> Any:
        found = await from_head(*args, **kwargs)
        served.append(found is not None)
        return found

    monkeypatch.setattr(cold._reader, "_from_head", counted)
    writer.add_many(
        [
            {
                "text": f"seeded answer number {n}, kept short",
                "user_id": USER,
                "signal": ("authored", "endorsed", "accepted")[n % 3],
            }
            for n in range(260)
        ]
    )
    first = await cold.aselect(USER, options=OPTIONS)  # loads the profile, saves the head
    assert first.text == fresh.select(USER, options=OPTIONS).text and served == []
    for n, signal in enumerate(("authored", "edited", "endorsed")):  # each moves the version
        clock.advance(1.0)
        writer.add(f"a new answer {n}, shipped", user_id=USER, signal=signal)
        got, want = await cold.aselect(USER, options=OPTIONS), fresh.select(USER, options=OPTIONS)
        assert (got.text, got.choice.left_out_total) == (want.text, want.choice.left_out_total)
    assert served == [True, True, True]
