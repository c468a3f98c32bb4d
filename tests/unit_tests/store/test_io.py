"""store/io.py: a store coroutine's Chroma calls are settled as they come (a value at once,
an awaitable awaited), its steps hold the location's lock, and a long operation of an
async store gives other tasks a turn (``test_bridge.py`` runs the coroutines)."""

from __future__ import annotations

import asyncio

from langchain_outprofile.bridge import run_sync
from langchain_outprofile.store.clients import LocationLock
from langchain_outprofile.store.io import NoLock, hold, pause, settle


async def _sum(values: list[int]) -> int:
    total = 0
    for value in values:
        total += await settle(value)  # a plain value, as a synchronous client returns
    return total


def test_settle_passes_a_synchronous_clients_values_through_without_waiting() -> None:
    assert run_sync(_sum([1, 2, 3])) == 6  # run_sync refuses a coroutine that waited


async def test_settle_awaits_what_an_async_client_returns() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await settle(answer()) == 42
    assert await settle(7) == 7


def test_hold_takes_a_location_lock_for_the_synchronous_path() -> None:
    lock = LocationLock("ephemeral", None)

    async def inside() -> bool:
        async with hold(lock):
            return lock.held()

    assert run_sync(inside()) is True
    assert not lock.held()
    run_sync(pause(NoLock()))  # nothing to let go, and nothing waits on a loop


async def test_a_long_operation_of_an_async_store_gives_other_tasks_a_turn() -> None:
    trace: list[str] = []

    async def long_operation() -> None:
        trace.append("batch 1")
        await pause(NoLock(on_loop=True))
        trace.append("batch 2")

    async def other() -> None:
        trace.append("other")

    await asyncio.gather(long_operation(), other())
    assert trace == ["batch 1", "other", "batch 2"]
