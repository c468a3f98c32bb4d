"""store/io.py: one coroutine per store operation, run at once for a synchronous client,
awaited for an async one; the async write lock excludes tasks and threads without blocking
the event loop."""

from __future__ import annotations

import asyncio
import threading
import warnings
from pathlib import Path

import pytest

from langchain_outprofile.errors import AsyncClientError
from langchain_outprofile.store.clients import LocationLock
from langchain_outprofile.store.io import AsyncWriteLock, NoLock, drive, hold, pause, settle


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
    drive(pause(NoLock()))  # nothing to let go


async def test_async_write_lock_excludes_tasks_and_is_reentrant_per_task() -> None:
    lock = AsyncWriteLock(LocationLock("ephemeral", None))
    trace: list[str] = []

    async def writer(name: str) -> None:
        async with hold(lock):
            trace.append(f"{name} in")
            async with hold(lock):  # a write's steps nest holds
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            trace.append(f"{name} out")

    await asyncio.gather(writer("a"), writer("b"))
    assert trace == ["a in", "a out", "b in", "b out"]
    assert not lock.location_lock.held()


async def test_async_write_lock_waits_for_a_thread_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    location = LocationLock("http://test", tmp_path / "server.lock")
    lock = AsyncWriteLock(location)
    taken, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        with location:
            taken.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=other_thread)
    thread.start()
    taken.wait(timeout=30)
    ticks = 0

    async def acquire() -> None:
        async with hold(lock):
            assert location.held()

    waiting = asyncio.create_task(acquire())
    while ticks < 5:  # the loop keeps running other tasks while the write waits
        await asyncio.sleep(0.001)
        ticks += 1
        assert not waiting.done()
    release.set()
    await waiting
    thread.join(timeout=30)
    assert ticks == 5 and not location.held()
