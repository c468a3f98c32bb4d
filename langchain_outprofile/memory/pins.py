"""Pins: the block a conversation thread started with, served for the whole thread.

Providers (OpenAI, Anthropic, DeepSeek, llama.cpp's server, vLLM) cache a prompt by its
exact prefix, and the block leads the prompt: a block that changes between two turns of a
thread makes the provider evaluate the whole conversation again. So a read that names a
thread (``thread_id``, LangGraph's key in ``config["configurable"]``) gets the block chosen
at the thread's first read, byte for byte, while feedback keeps landing in the store; a new
thread gets the current block. The trade-off: feedback given during a thread shows in the
next thread, not in this one.

Pins are rows of the store's state collection (``store/state.py``), so every worker process
serving a thread sends the same bytes. They expire after ``pin_ttl_s`` (expired pins of a
user are deleted when the user's next pin is saved), and ``forget`` and ``delete`` remove
them with the user's other state rows. Each process keeps the pins it read for
``cache_ttl_s`` before reading the row again (one read by id). A read of a user with no
profile version (never written, or forgotten) pins nothing, and a pin whose user's version
moved while it was being saved is taken back (as snapshots are: see ``reader.py``), so no
pin outlives a ``forget`` it raced.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from langchain_outprofile.memory.reader import CacheSettings
from langchain_outprofile.memory.snapshots import dump_selection, load_selection, snapshot_key
from langchain_outprofile.types import ProfileSelection, SelectionOptions

__all__ = ["ThreadPins"]

_CACHED_PINS = 4096
"""Pins one memory keeps in process (least recently used go first)."""


class PinSettings(CacheSettings, Protocol):
    """What the pins use of their memory."""

    pin_ttl_s: float


@dataclass(frozen=True)
class _Pinned:
    selection: ProfileSelection
    expires_at: float
    checked_at: float


class ThreadPins:
    """The blocks pinned to conversation threads, for one memory.

    Example:
        ```python
        pins = ThreadPins(memory)  # what OutputProfileMemory does for itself
        await pins.select("ana", "thread-1", options, current=lambda: reader.aselect(...))
        ```
    """

    def __init__(self, memory: PinSettings) -> None:
        self._memory = memory
        self._cache: OrderedDict[tuple[str, str, str], _Pinned] = OrderedDict()
        self._lock = threading.Lock()

    async def select(
        self,
        user: str,
        thread: str,
        options: SelectionOptions,
        current: Callable[[], Awaitable[ProfileSelection]],
    ) -> ProfileSelection:
        """The block pinned for the user's ``thread`` under ``options``; at the thread's
        first read (or after its pin expired), ``await current()``, pinned from then on."""
        memory = self._memory
        key = snapshot_key(options, memory.template, memory.counter.name)
        cache_key = (user, thread, key)
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None:
                self._cache.move_to_end(cache_key)
        fresh = hit is not None and memory.monotonic() - hit.checked_at < memory.cache_ttl_s
        if hit is not None and fresh and hit.expires_at > memory.clock():
            return hit.selection
        now = memory.clock()
        found = await memory.store.apin(user, thread, key, now=now)
        if found is not None:
            pinned = load_selection(found[0], user_id=user, options=options, now=now)
            if pinned is not None:
                self._keep(cache_key, pinned, found[1])
                return pinned
        return await self._pin(user, thread, key, options, current)

    async def _pin(
        self,
        user: str,
        thread: str,
        key: str,
        options: SelectionOptions,
        current: Callable[[], Awaitable[ProfileSelection]],
    ) -> ProfileSelection:
        """Pin ``await current()`` for the thread, unless the user has no version (nothing to
        pin, and a read writes nothing for such a user) or it moved meanwhile."""
        memory = self._memory
        version = await memory.store.aversion(user)
        selection = await current()
        if not version:
            return selection
        now = memory.clock()
        # a pin never shows an entry past its expiry: it ends when its first entry expires
        ends = (e.expires_at for e in selection.entries if e.expires_at is not None)
        expires_at = min([now + memory.pin_ttl_s, *ends])
        payload = dump_selection(selection, until=expires_at)
        held = await memory.store.asave_pin(
            user, thread, key, payload, version=version, now=now, expires_at=expires_at
        )
        if held is None:
            return selection
        pinned = load_selection(held[0], user_id=user, options=options, now=now)
        if pinned is None:
            return selection
        self._keep((user, thread, key), pinned, held[1])
        return pinned

    def _keep(
        self, cache_key: tuple[str, str, str], selection: ProfileSelection, expires_at: float
    ) -> None:
        memory = self._memory
        if memory.cache_ttl_s <= 0:
            return
        with self._lock:
            self._cache[cache_key] = _Pinned(selection, expires_at, memory.monotonic())
            self._cache.move_to_end(cache_key)
            while len(self._cache) > _CACHED_PINS:
                self._cache.popitem(last=False)

    def forget(self, user: str) -> None:
        """Drop the user's pins kept in this process (the store's go with its state rows)."""
        with self._lock:
            for cache_key in [k for k in self._cache if k[0] == user]:
                del self._cache[cache_key]
