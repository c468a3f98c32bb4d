"""Bridge: how synchronous and asynchronous callers run the package's operations, in one place.

Every operation of the store and of the memory above it is one coroutine (``store/io.py``).
With a synchronous Chroma client nothing in it ever suspends, so a synchronous caller runs it
to its end on its own thread with :func:`run_sync`: no event loop is made or needed, so it
works alike outside a loop, on a loop's thread (a LangChain sync callback inside ``ainvoke``,
a notebook) and on any worker thread. An async caller uses :func:`run_async`: the coroutine
is awaited on the loop when its calls are awaitable (``chromadb.AsyncHttpClient``), else it
runs on a worker thread (``asyncio.to_thread``), since every call of a synchronous client
blocks. Code that holds an object rather than a coroutine (the surfaces over a
``ProfileSource``, the LangGraph store over the memory) uses :func:`call`, which picks the
method's ``a``-prefixed twin or the method itself by the same rule.

No library primitive runs a coroutine that never waits without an event loop:
``asyncio.run`` starts a loop per call and refuses to run inside one, and
``anyio.from_thread`` needs a loop running in another thread; so :func:`run_sync` is a single
``send``, and everything that needs a thread is ``asyncio.to_thread`` (it copies the
caller's context, so tracing and telemetry spans follow the call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from langchain_outprofile.errors import AsyncClientError

__all__ = ["call", "run_async", "run_sync"]

_T = TypeVar("_T")

_ASYNC_ONLY = (
    "this memory was given an async Chroma client (chromadb.AsyncHttpClient): call the "
    "a-prefixed methods from the event loop (await memory.aselect(...), "
    "await memory.aadd(...)), or give it a synchronous client for the plain ones"
)


def run_sync(operation: Coroutine[Any, Any, _T], *, async_io: bool = False) -> _T:
    """Run ``operation`` to its end on the calling thread and return its result; its own
    errors pass through unchanged.

    Args:
        operation: a coroutine whose awaits all complete at once (a synchronous client's).
        async_io: its calls return awaitables (an async client): it is closed unstarted,
            since those calls can only complete on the event loop.

    Raises:
        AsyncClientError: ``async_io`` is true, or the coroutine waited for real I/O after
            all (it is closed, so its ``finally`` blocks run and nothing warns that it was
            never awaited).
    """
    if async_io:
        operation.close()
        raise AsyncClientError(_ASYNC_ONLY)
    try:
        operation.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    operation.close()
    raise AsyncClientError(_ASYNC_ONLY)


async def run_async(operation: Coroutine[Any, Any, _T], *, async_io: bool) -> _T:
    """Run ``operation`` for a caller on the event loop without blocking the loop: awaited
    on it when its calls are awaitable (``async_io``), else :func:`run_sync` on a worker
    thread.

    Cancelling the caller cancels an awaited operation where it waits; an operation on a
    worker thread cannot be interrupted, so it runs to its end (a write is never left half
    done) while the caller gets its ``CancelledError`` at once.
    """
    if async_io:
        return await operation
    return await asyncio.to_thread(run_sync, operation)


async def call(obj: object, method: str, /, *args: Any, here: bool = False, **kwargs: Any) -> Any:
    """``obj.<method>(*args, **kwargs)`` from a coroutine: its ``a``-prefixed twin awaited
    when ``obj`` has one, else the method on a worker thread, so the loop never blocks.

    Args:
        here: the calling coroutine is run by :func:`run_sync` (a synchronous caller, free
            to block): the plain method runs on this thread.
    """
    if here:
        return getattr(obj, method)(*args, **kwargs)
    twin = getattr(obj, f"a{method}", None)
    if twin is not None:
        return await twin(*args, **kwargs)
    return await asyncio.to_thread(getattr(obj, method), *args, **kwargs)
