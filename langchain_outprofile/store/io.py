"""I/O: one piece of store logic for Chroma's synchronous and asynchronous clients.

Every operation of the store (and of the memory above it) is written once, as a coroutine
that awaits each Chroma call through :func:`settle` and holds the location's lock through
:func:`hold`. With a synchronous client (embedded, persistent, ``HttpClient``) nothing in it
ever suspends, so the synchronous API runs it to its end on the calling thread; with
``chromadb.AsyncHttpClient`` the calls return awaitables, nothing is locked, and the
memory's ``a``-prefixed methods await the same coroutine on the event loop, which never
blocks. ``bridge.py`` runs these coroutines for either kind of caller.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

__all__ = ["NoLock", "hold", "pause", "settle"]

_T = TypeVar("_T")


@overload
async def settle(value: Awaitable[_T]) -> _T: ...


@overload
async def settle(value: _T) -> _T: ...


async def settle(value: Any) -> Any:
    """The result of a Chroma call: awaited when the client is async, as it is otherwise."""
    if inspect.isawaitable(value):
        return await value
    return value


class NoLock:
    """What the calls of a server's store hold: nothing (a server orders its own calls, and
    no write reads-folds-writes: ``store/log.py``).

    Args:
        on_loop: the store's coroutines run on an event loop (an async client), so a long
            operation gives other tasks a turn between its batches.
    """

    def __init__(self, *, on_loop: bool = False) -> None:
        self.on_loop = on_loop


@asynccontextmanager
async def hold(lock: Any) -> AsyncIterator[None]:
    """Hold a store lock around a step of a store coroutine: a :class:`LocationLock` (or
    its read part) blocks the calling thread, as the synchronous API always did (only
    embedded Chroma has one); a :class:`NoLock` is nothing."""
    if isinstance(lock, NoLock):
        yield
    else:
        with lock:
            yield


async def pause(lock: Any) -> None:
    """Between the batches of a long operation: let waiting holders go first (other
    tasks of the loop, with an async client)."""
    if not isinstance(lock, NoLock):
        lock.pause()
    elif lock.on_loop:
        await asyncio.sleep(0)
