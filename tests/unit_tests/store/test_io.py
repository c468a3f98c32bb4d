"""store/io.py: one coroutine per store operation, run at once for a synchronous client,
awaited for an async one; the async write lock excludes tasks and threads without blocking
the event loop."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from langchain_outprofile.errors import AsyncClientError
from langchain_outprofile.store.clients import LocationLock
from langchain_outprofile.store.io import NoLock, drive, hold, pause, settle


async def _sum(values: list[int]) -> int:
    total = 0
    for value in values:
        total += await settle(value)  # a plain value, as a synchronous client returns
    return total


def test_drive_runs_a_coroutine_that_never_waits_to_its_result() -> None:
    assert drive(_sum([1, 2, 3])) == 6


def test_drive_refuses_a_coroutine_that_waits_and_closes_it() -> None:
    finished: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            finished.append(True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would fail here
        with pytest.raises(AsyncClientError, match="a-prefixed"):
            drive(waits())
    assert finished == [True]  # closed: its finally ran


def test_drive_passes_the_coroutines_own_errors_through() -> None:
    async def fails() -> None:
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        drive(fails())


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

    assert drive(inside()) is True
    assert not lock.held()
    drive(pause(NoLock()))  # nothing to let go, and nothing waits on a loop


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
