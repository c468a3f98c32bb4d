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
moved while it was being saved is taken back (as snapshots are: see ``reader.py``).

A pin row holds the ids of its entries, their scores and a hash of the block, never a text
(a pin quoting its entries with large metadata was 1.3 MB). Before a pin is served, its
entries are read by id and the block rendered again: a pin naming an entry that no longer
exists (deleted, forgotten, superseded), of a user with no version (a ``forget`` whose pin
was saved by a reader killed before it could take it back), or whose block would differ,
is dropped and the thread gets the current block.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_outprofile.memory.reader import CacheSettings
from langchain_outprofile.memory.snapshots import snapshot_key, stored_selection
from langchain_outprofile.render import BlockTemplate, render_block
from langchain_outprofile.types import (
    Candidate,
    ProfileEntry,
    ProfileSelection,
    SelectionOptions,
)

__all__ = ["ThreadPins"]

_CACHED_PINS = 4096
"""Pins one memory keeps in process (least recently used go first)."""
PIN_FORMAT = 3
"""Pins name their entries by id (format 2 quoted them whole: never served now)."""


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

    def __init__(self, memory: CacheSettings) -> None:
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
        fresh = hit is not None and memory.monotonic() - hit.checked_at < memory.reads.cache_ttl_s
        if hit is not None and fresh and hit.expires_at > memory.clock():
            return hit.selection
        now = memory.clock()
        found = await memory.store.apin(user, thread, key, now=now)
        if found is not None:
            pinned = await self._served(user, found[0], options, now)
            if pinned is not None:
                self._keep(cache_key, pinned, found[1])
                return pinned
            await memory.store.adrop_pin(user, thread, key)  # names what is gone: repin
        return await self._pin(user, thread, key, options, current)

    async def _served(
        self, user: str, payload: str, options: SelectionOptions, now: float
    ) -> ProfileSelection | None:
        """The pinned selection, if every entry it names still exists, the user has a
        version (none after a ``forget``) and the block renders to the bytes pinned."""
        memory = self._memory
        ids = pinned_ids(payload)
        if ids is None or not await memory.store.aversion(user):
            return None
        entries = await memory.store.aentries_by_id(user, ids) if ids else {}
        return load_pin(
            payload,
            user_id=user,
            options=options,
            now=now,
            entries=entries,
            template=memory.template,
        )

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
        expires_at = min([now + memory.reads.pin_ttl_s, *ends])
        payload = dump_pin(selection, until=expires_at)
        held = await memory.store.asave_pin(
            user, thread, key, payload, version=version, now=now, expires_at=expires_at
        )
        if held is None:
            return selection
        pinned = (
            selection if held[0] == payload else await self._served(user, held[0], options, now)
        )
        if pinned is None:
            return selection
        self._keep((user, thread, key), pinned, held[1])
        return pinned

    def _keep(
        self, cache_key: tuple[str, str, str], selection: ProfileSelection, expires_at: float
    ) -> None:
        memory = self._memory
        if memory.reads.cache_ttl_s <= 0:
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


def dump_pin(selection: ProfileSelection, *, until: float) -> str:
    """A pin's payload: the chosen entries' ids and scores and the block's hash, no text."""
    choice = selection.choice
    return json.dumps(
        {
            "format": PIN_FORMAT,
            "valid_until": until,
            "ids": [c.entry.id for c in choice.chosen],
            "scores": [[c.score, c.age_days, c.tokens, c.cut, c.reason] for c in choice.chosen],
            "sha": _digest(selection.text),
            "tokens": selection.tokens,
            "encoding": selection.encoding,
            "left_out_total": choice.left_out_total,
            "note": choice.note,
        },
        separators=(",", ":"),
    )


def pinned_ids(payload: str) -> list[str] | None:
    """The entry ids a pin names, or None when it is damaged or of another format."""
    try:
        data = json.loads(payload)
        if data.get("format") != PIN_FORMAT:
            return None
        return [str(i) for i in data["ids"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def load_pin(
    payload: str,
    *,
    user_id: str,
    options: SelectionOptions,
    now: float,
    entries: Mapping[str, ProfileEntry],
    template: BlockTemplate,
) -> ProfileSelection | None:
    """The pinned selection rebuilt from ``entries`` (read by id), or None when the pin
    expired, is damaged, names an entry missing from ``entries``, or renders to a block
    other than the one pinned (its hash)."""
    try:
        data: dict[str, Any] = json.loads(payload)
        if data.get("format") != PIN_FORMAT or float(data["valid_until"]) <= now:
            return None
        named = [entries.get(str(i)) for i in data["ids"]]
        chosen = tuple(
            Candidate(e, float(s[0]), float(s[1]), int(s[2]), bool(s[3]), str(s[4]))
            for e, s in zip(named, data["scores"], strict=True)
            if e is not None
        )
        if len(chosen) != len(named) or any(c.entry.user_id != user_id for c in chosen):
            return None
        text = render_block([c.entry for c in chosen], options.fields, template)
        if _digest(text) != data["sha"]:
            return None
        return stored_selection(
            data, user_id=user_id, text=text, chosen=chosen, left_out=(), options=options
        )
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
