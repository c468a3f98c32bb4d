"""bridge.py: one way to run an operation for a synchronous or an asynchronous caller, on
any thread, inside or outside a running event loop, with its errors and cancellation passed
through and no thread or loop left behind."""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings

import pytest

from langchain_outprofile.bridge import call, run_async, run_sync
from langchain_outprofile.errors import AsyncClientError

_DEADLOCK_S = 30.0
"""How long a test waits for an event that arrives at once unless the code under test
blocks the wrong thread: only reached when the test fails."""


async def _where() -> tuple[int, asyncio.AbstractEventLoop | None]:
    """The thread the coroutine runs on and the event loop running there (None: none)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    return threading.get_ident(), loop


async def _nested() -> int:
    """Awaits another coroutine that never waits, as the store's operations do."""
    thread, _ = await _where()
    return thread


class _Source:
    """An object with one method that has an ``a``-prefixed twin and one that has none;
    each records the thread it ran on."""

    def __init__(self) -> None:
        self.threads: dict[str, int] = {}

    def select(self, user: str) -> str:
        self.threads["select"] = threading.get_ident()
        return f"plain {user}"

    async def aselect(self, user: str) -> str:
        self.threads["aselect"] = threading.get_ident()
        return f"twin {user}"

    def record_output(self, text: str) -> str:
        self.threads["record_output"] = threading.get_ident()
        return text


# -- run_sync ---------------------------------------------------------------------------------


def test_run_sync_runs_on_the_calling_thread_without_a_loop_or_a_thread() -> None:
    before = set(threading.enumerate())
    thread, loop = run_sync(_where())
    assert thread == threading.get_ident()
    assert loop is None  # no event loop was made to run it
    assert run_sync(_nested()) == threading.get_ident()
    assert set(threading.enumerate()) - before == set()


async def test_run_sync_inside_a_running_loop_runs_on_its_thread_and_leaves_it_alone() -> None:
    """As a LangChain sync callback or a notebook cell calls a plain method on the loop's
    thread: no second loop, no task, no thread."""
    running = asyncio.get_running_loop()
    tasks = asyncio.all_tasks()
    thread, loop = run_sync(_where())
    assert thread == threading.get_ident()
    assert loop is running
    assert asyncio.all_tasks() == tasks


def test_run_sync_from_a_worker_thread_runs_there() -> None:
    results: list[tuple[int, asyncio.AbstractEventLoop | None]] = []
    worker = threading.Thread(target=lambda: results.append(run_sync(_where())))
    worker.start()
    worker.join()
    assert worker.ident is not None
    assert results == [(worker.ident, None)]


def test_run_sync_refuses_a_coroutine_that_waits_and_closes_it() -> None:
    finished: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            finished.append(True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would fail here
        with pytest.raises(AsyncClientError, match="a-prefixed"):
            run_sync(waits())
    assert finished == [True]  # closed: its finally ran


def test_run_sync_closes_an_async_clients_operation_unstarted() -> None:
    started: list[bool] = []

    async def operation() -> None:
        started.append(True)

    coroutine = operation()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AsyncClientError, match="a-prefixed"):
            run_sync(coroutine, async_io=True)
    assert started == []
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


def test_run_sync_passes_the_operations_own_error_through() -> None:
    error = KeyError("mine")

    async def fails() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        run_sync(fails())
    assert caught.value is error


# -- run_async --------------------------------------------------------------------------------


async def test_run_async_awaits_an_async_operation_on_the_loop() -> None:
    thread, loop = await run_async(_where(), async_io=True)
    assert thread == threading.get_ident()
    assert loop is asyncio.get_running_loop()


async def test_run_async_runs_a_blocking_operation_on_a_worker_thread_and_the_loop_goes_on() -> (
    None
):
    loop_ran = threading.Event()

    async def blocking() -> int:
        # a synchronous client's call blocks its thread: here, until the loop ran a task
        assert loop_ran.wait(_DEADLOCK_S), "the operation blocked the event loop"
        return threading.get_ident()

    async def heartbeat() -> None:
        loop_ran.set()

    thread, _ = await asyncio.gather(run_async(blocking(), async_io=False), heartbeat())
    assert thread != threading.get_ident()


async def test_run_async_passes_the_operations_own_error_through() -> None:
    for async_io in (True, False):
        error = ValueError(f"mine, async_io={async_io}")

        async def fails(error: ValueError = error) -> None:
            raise error

        with pytest.raises(ValueError) as caught:
            await run_async(fails(), async_io=async_io)
        assert caught.value is error


async def test_run_async_refuses_an_operation_said_to_block_that_waits_after_all() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(AsyncClientError):
        await run_async(waits(), async_io=False)


async def test_cancelling_the_caller_cancels_an_awaited_operation_where_it_waits() -> None:
    waiting = asyncio.Event()
    cancelled_in: list[int] = []

    async def operation() -> None:
        waiting.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled_in.append(threading.get_ident())
            raise

    caller = asyncio.create_task(run_async(operation(), async_io=True))
    await waiting.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled_in == [threading.get_ident()]


async def test_cancelling_the_caller_lets_an_operation_on_a_thread_finish() -> None:
    """A synchronous client's call cannot be interrupted: the caller is cancelled at once
    and the operation (a write, say) still runs to its end, never half done."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    async def operation() -> None:
        started.set()
        release.wait(_DEADLOCK_S)
        finished.set()

    caller = asyncio.create_task(run_async(operation(), async_io=False))
    assert await asyncio.to_thread(started.wait, _DEADLOCK_S)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not finished.is_set()  # the caller did not wait for it
    release.set()
    assert await asyncio.to_thread(finished.wait, _DEADLOCK_S)


def test_no_thread_outlives_the_loop_that_used_the_bridge() -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        await run_async(_where(), async_io=False)
        await call(_Source(), "record_output", "text")

    asyncio.run(main())  # waits for the loop's worker threads, as every app's loop does
    assert set(threading.enumerate()) - before == set()


# -- call -------------------------------------------------------------------------------------


async def test_call_awaits_the_twin_on_the_loop_else_runs_the_method_on_a_thread() -> None:
    source = _Source()
    assert await call(source, "select", "ana") == "twin ana"
    assert await call(source, "record_output", "an answer") == "an answer"
    assert source.threads["aselect"] == threading.get_ident()
    assert source.threads["record_output"] != threading.get_ident()
    assert "select" not in source.threads


def test_call_here_runs_the_plain_method_on_this_thread_for_run_sync() -> None:
    source = _Source()
    assert run_sync(call(source, "select", "ana", here=True)) == "plain ana"
    assert source.threads == {"select": threading.get_ident()}


async def test_call_passes_the_methods_own_errors_through() -> None:
    error = LookupError("mine")

    class Failing:
        def select(self) -> None:
            raise error

        async def aforget(self) -> None:
            raise error

    for method in ("select", "forget"):
        with pytest.raises(LookupError) as caught:
            await call(Failing(), method)
        assert caught.value is error
    with pytest.raises(LookupError) as caught:
        run_sync(call(Failing(), "select", here=True))
    assert caught.value is error
