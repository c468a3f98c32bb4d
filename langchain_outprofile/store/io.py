"""I/O: one piece of store logic for Chroma's synchronous and asynchronous clients.

Every operation of the store (and of the memory above it) is written once, as a coroutine
that awaits each Chroma call through :func:`settle` and holds the location's lock through
:func:`hold`. With a synchronous client (embedded, persistent, ``HttpClient``) nothing in it
ever suspends, so the synchronous API runs it to its end on the calling thread with
:func:`drive`; with ``chromadb.AsyncHttpClient`` the calls return awaitables, the lock is an
:class:`AsyncWriteLock`, and the memory's ``a``-prefixed methods await the same coroutine on
the event loop, which never blocks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from langchain_outprofile.errors import AsyncClientError

if TYPE_CHECKING:
    from langchain_outprofile.store.clients import LocationLock

__all__ = ["AsyncWriteLock", "NoLock", "drive", "hold", "pause", "run_now", "settle"]

_T = TypeVar("_T")

_POLL_S = 0.002
"""How long a coroutine waits before trying a lock another thread or process holds again."""


_ASYNC_ONLY = (
    "this memory was given an async Chroma client (chromadb.AsyncHttpClient): call the "
    "a-prefixed methods from the event loop (await memory.aselect(...), "
    "await memory.aadd(...)), or give it a synchronous client for the plain ones"
)


def drive(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a store coroutine to its end here and now (every call it awaits is synchronous).

    Raises:
        AsyncClientError: the coroutine waited for real I/O: the store has an async client,
            whose operations only the ``a``-prefixed methods can run.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AsyncClientError(_ASYNC_ONLY)


def run_now(operation: Coroutine[Any, Any, _T], *, async_client: bool) -> _T:
    """What a synchronous method does with its operation: :func:`drive` it, unless the
    store has an async client, whose calls cannot run outside the event loop (then the
    operation is closed unstarted).

    Raises:
        AsyncClientError: ``async_client`` is true.
    """
    if async_client:
        operation.close()
        raise AsyncClientError(_ASYNC_ONLY)
    return drive(operation)


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
    """What reads of an async client hold: nothing (the server orders its own reads; the
    read-fold-write of a write holds the :class:`AsyncWriteLock`)."""


class AsyncWriteLock:
    """A store location's write lock, for the coroutines of one event loop.

    Reentrant per task (a write's steps nest holds, as they do the thread lock). A task
    first takes this loop's ``asyncio`` lock, so other tasks queue without blocking the
    loop, then the :class:`LocationLock` (other threads of this process, and through its
    file the other processes of this machine), which it tries without blocking and waits
    for with ``asyncio.sleep`` when another holds it.

    Args:
        lock: the location's lock shared with every synchronous store on that location.
    """

    def __init__(self, lock: LocationLock) -> None:
        self.location_lock = lock
        self._tasks = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def acquire(self) -> None:
        """Take the lock (re-entering when the current task holds it)."""
        task = asyncio.current_task()
        if self._owner is task and task is not None:
            self._depth += 1
            return
        await self._tasks.acquire()
        try:
            while not self.location_lock.acquire(blocking=False):
                await asyncio.sleep(_POLL_S)
        except BaseException:
            self._tasks.release()
            raise
        self._owner, self._depth = task, 1

    def release(self) -> None:
        """Give back one hold (both locks at the outermost)."""
        self._depth -= 1
        if self._depth:
            return
        self._owner = None
        try:
            self.location_lock.release()
        finally:
            self._tasks.release()


@asynccontextmanager
async def hold(lock: Any) -> AsyncIterator[None]:
    """Hold a store lock around a step of a store coroutine: a :class:`LocationLock` (or
    its read part) blocks the calling thread, as the synchronous API always did; an
    :class:`AsyncWriteLock` waits on the event loop; a :class:`NoLock` is nothing."""
    if isinstance(lock, NoLock):
        yield
    elif isinstance(lock, AsyncWriteLock):
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
    else:
        with lock:
            yield


async def pause(lock: Any) -> None:
    """Between the batches of a long operation: let waiting holders go first."""
    if isinstance(lock, AsyncWriteLock):
        await asyncio.sleep(0)
    elif not isinstance(lock, NoLock):
        lock.pause()
