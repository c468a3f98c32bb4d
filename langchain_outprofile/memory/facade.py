"""Facade: ``OutputProfileMemory``, the one object users touch.

Writes go to the store, then move the written users' cached rankings by what they added
and removed (a delta, no re-read); a write no delta describes (an import, a write that
failed part-way) drops the users' read state instead. Reads go through the reader
(``reader.py``); tracked outputs and feedback come from ``feedback.py``; the
LangChain surfaces are built over this object as their :class:`ProfileSource`.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypedDict, TypeVar, Unpack

from langchain_core.embeddings import Embeddings
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from langchain_outprofile.bridge import run_async, run_sync
from langchain_outprofile.capture import coerce_item, timely
from langchain_outprofile.errors import InvalidInputError, MissingExtraError
from langchain_outprofile.memory.feedback import FeedbackMixin
from langchain_outprofile.memory.pins import ThreadPins
from langchain_outprofile.memory.reader import BudgetTooSmallWarning, ProfileReader
from langchain_outprofile.memory.retention import NowAndThen, RetentionMixin
from langchain_outprofile.render import DEFAULT_TEMPLATE, BlockTemplate
from langchain_outprofile.store import DEFAULT_COLLECTION, ProfileStore, Written
from langchain_outprofile.store.purge import PurgeReport, scrub
from langchain_outprofile.store.purge import purge as purge_store
from langchain_outprofile.surfaces._common import CallLimits
from langchain_outprofile.surfaces.injector import ProfileInjector
from langchain_outprofile.surfaces.messages import block_as_messages, profile_messages
from langchain_outprofile.surfaces.retriever import ProfileRetriever
from langchain_outprofile.surfaces.tracking import TrackedRunnable
from langchain_outprofile.telemetry import MemoryTelemetry, Operation, OperationSpan, signal_name
from langchain_outprofile.tokens import DEFAULT_MODEL, TokenCounter, TokenSource
from langchain_outprofile.types import (
    EntryFields,
    ProfileEntry,
    ProfileSelection,
    ReadOptions,
    SelectionOptions,
    WriteOptions,
)
from langchain_outprofile.validation import (
    expiry_of,
    validate_entry_id,
    validate_items,
    validate_optional_str,
    validate_thread_id,
    validate_user_id,
)

if TYPE_CHECKING:
    from chromadb.api import AsyncClientAPI, ClientAPI
    from opentelemetry.trace import TracerProvider

    from langchain_outprofile.surfaces.langgraph_store import OutputProfileStore
    from langchain_outprofile.surfaces.middleware import ProfileMiddleware

__all__ = ["MemorySettings", "OutputProfileMemory", "ProfileStats"]

_T = TypeVar("_T")
_O = TypeVar("_O")


@dataclass(frozen=True)
class ProfileStats:
    """Counts of one user's profile."""

    user_id: str
    entries: int
    selectable: int
    pending: int
    rejected: int
    by_signal: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    oldest: float | None = None
    newest: float | None = None

    @classmethod
    def of(cls, user_id: str, entries: Sequence[ProfileEntry]) -> ProfileStats:
        """Counts of one user's entries (as the store loads them) by state, signal and task.

        Example:
            ```python
            found = memory.store.load_many(["ana", "bo"])  # a few reads for the group
            [ProfileStats.of(user, entries) for user, entries in found.items()]
            ```
        """
        by_signal: dict[str, int] = {}
        tasks: dict[str, int] = {}
        for entry in entries:
            by_signal[entry.signal.value] = by_signal.get(entry.signal.value, 0) + 1
            tasks[entry.task] = tasks.get(entry.task, 0) + 1
        return cls(
            user_id=user_id,
            entries=len(entries),
            selectable=sum(e.selectable for e in entries),
            pending=sum(e.pending for e in entries),
            rejected=sum(e.rejected for e in entries),
            by_signal=by_signal,
            tasks=tasks,
            oldest=min((e.created_at for e in entries), default=None),
            newest=max((e.created_at for e in entries), default=None),
        )


class MemorySettings(TypedDict, total=False):
    """The keyword arguments :class:`OutputProfileMemory`'s constructors share (the
    classmethods pass them on to ``__init__``)."""

    tokens: TokenSource | None
    options: SelectionOptions | None
    reads: ReadOptions | None
    writes: WriteOptions | None
    template: BlockTemplate
    tracer_provider: TracerProvider | None
    trace_content: bool | None
    clock: Callable[[], float]
    monotonic: Callable[[], float]


class OutputProfileMemory(RetentionMixin, FeedbackMixin):
    """A user's own outputs, selected by preference signal, packed to an exact token budget.

    Setup:
        Install the package; the embedded Chroma store, the offline style embedder and
        exact token counts for OpenAI models come with it (no API key, no model):

        ```bash
        pip install langchain-outprofile
        ```

    Key init args — store (one constructor for each way to name it):
        from_path(path): a directory of embedded Chroma (``None``: the user data
            directory; ``OutputProfileMemory()`` opens that one too).
        from_client(client, collection_name=...): any chromadb client: ``HttpClient`` or
            ``AsyncHttpClient`` for a ``chroma run`` server, ``EphemeralClient`` in memory.
        from_vectorstore(vectorstore): a ``langchain_chroma.Chroma`` (its client, collection
            and embeddings are used; its existing rows are left alone), or a chromadb
            collection together with ``client=``, the client that opened it.
        embeddings: style embedder; default :class:`StyleEmbeddings` (offline).
        documents: also write each entry's text as the row's Chroma document, so Chroma's
            own similarity search over the collection finds the entries. Off by default:
            it makes every write dearer (docs/benchmarks.md).
        retry_s: how long, in all, a call waits for a ``chroma run`` server it cannot reach
            before it raises :class:`StoreUnavailableError` naming the URL (default 10 s).
        lock_timeout_s: the longest wait for an embedded store directory's lock that
            another process holds, then :class:`StoreBusyError` naming that process
            (default 30 s, or ``OUTPROFILE_LOCK_TIMEOUT_S``).

    Key init args — selection:
        tokens: what to count tokens with, so a budget is exact for the model that reads
            the block: a model name (default ``"gpt-4o-mini"``: its tiktoken encoding), a
            :class:`TokenCounter`, a tiktoken encoding (or its name), a GGUF path or
            ``llama_cpp.Llama``, a Hugging Face tokenizer, a chat model, or any
            ``Callable[[str], int]`` (see :meth:`TokenCounter.of`).
        options: default :class:`SelectionOptions` for :meth:`select`.
        template: the block's framing text (:class:`BlockTemplate`).

    Key init args — reads and writes:
        reads: :class:`ReadOptions`: the read cache, saved selections (snapshots) and
            thread pins.
        writes: :class:`WriteOptions`: signal strengths, the longest text, how long entries
            (``retention_s``) and tracked outputs (``pending_ttl_s``) are kept.

    Key init args — tracing:
        tracer_provider: where the OpenTelemetry spans of every memory operation go
            (default: the global provider; a no-op until an OpenTelemetry SDK sets one).
        trace_content: also put entry texts and queries on those spans. Off by default:
            ids and counts only (default: ``True`` when
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true``).

    Key init args — for tests and replays:
        clock: the time entries and events are stamped with (``time.time``).
        monotonic: the clock ``cache_ttl_s`` is measured on (``time.monotonic``; tests
            pass a fake one to expire the cache without waiting).

    Instantiate:
        ```python
        from langchain_outprofile import OutputProfileMemory, ReadOptions, Signal

        memory = OutputProfileMemory.from_path("./profiles", reads=ReadOptions(cache_ttl_s=5))
        ```

    Add:
        ```python
        memory.add("Short answer first, then bullets. No fluff.", user_id="ana",
                   signal=Signal.AUTHORED, task="email")
        memory.add("Here is the summary you asked for, in three lines.", user_id="ana",
                   signal="endorsed")
        memory.stats("ana").selectable  # 2
        ```

    Select:
        ```python
        block = memory.select("ana", max_tokens=300)
        print(block.text)  # the framed block, at most 300 tokens
        ```

    Feedback:
        ```python
        import uuid

        rid = str(uuid.uuid4())
        memory.record_output("Hi Ana, yes: Tuesday works.", user_id="ana", run_id=rid)
        memory.feedback(rid, "endorsed")  # the output joins the profile
        ```

    Async:
        ```python
        await memory.aadd("Bullets over paragraphs.", user_id="ana")
        block = await memory.aselect("ana", max_tokens=300)
        await memory.aflush()
        ```
    """

    def __init__(
        self,
        store: ProfileStore | None = None,
        *,
        tokens: TokenSource | None = None,
        options: SelectionOptions | None = None,
        reads: ReadOptions | None = None,
        writes: WriteOptions | None = None,
        template: BlockTemplate = DEFAULT_TEMPLATE,
        tracer_provider: TracerProvider | None = None,
        trace_content: bool | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """A memory over ``store`` (default: the embedded store in the user data
        directory); :meth:`from_path`, :meth:`from_client` and :meth:`from_vectorstore`
        build the store. The other arguments are the class's Key init args."""
        self.reads = _of_type(reads, ReadOptions, "reads")
        self.writes = _of_type(writes, WriteOptions, "writes")
        if store is not None and not isinstance(store, ProfileStore):
            raise InvalidInputError(
                f"store must be a ProfileStore; got {type(store).__name__} (name the store "
                "with OutputProfileMemory.from_path, .from_client or .from_vectorstore)"
            )
        self.store = ProfileStore() if store is None else store
        self.counter = TokenCounter(DEFAULT_MODEL) if tokens is None else TokenCounter.of(tokens)
        self.options = _of_type(options, SelectionOptions, "options")
        self.template = template
        # FeedbackMixin reads these two as attributes (set once: ``writes`` is frozen)
        self.max_text_chars = self.writes.max_text_chars
        self.pending_ttl_s = self.writes.pending_ttl_s
        self.clock = clock
        self.monotonic = monotonic
        self.store.clock = lambda: self.clock()  # events are stamped with the memory's clock
        self._reader = ProfileReader(self)
        self._pins = ThreadPins(self)
        # how often a user's writes sweep expired entries and stale tracked outputs
        self._pending_sweeps = NowAndThen(self._pending_interval, lambda: self.clock())
        self._expiry_sweeps = NowAndThen(self._sweep_interval, lambda: self.clock())
        self.telemetry = MemoryTelemetry(
            self.store.collection_name,
            tracer_provider=tracer_provider,
            capture_content=trace_content,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path | None = None,
        *,
        collection_name: str = DEFAULT_COLLECTION,
        embeddings: Embeddings | None = None,
        documents: bool = False,
        lock_timeout_s: float | None = None,
        **settings: Unpack[MemorySettings],
    ) -> Self:
        """A memory in the embedded Chroma store at ``path`` (created if missing; ``None``:
        the user data directory), in its collection ``collection_name``.

        Example:
            ```python
            memory = OutputProfileMemory.from_path("./profiles", tokens="gpt-4o-mini")
            ```
        """
        store = ProfileStore(
            path=path,
            collection_name=collection_name,
            embeddings=embeddings,
            documents=documents,
            lock_timeout_s=lock_timeout_s,
        )
        return cls(store, **settings)

    @classmethod
    def from_client(
        cls,
        client: ClientAPI | AsyncClientAPI,
        *,
        collection_name: str = DEFAULT_COLLECTION,
        embeddings: Embeddings | None = None,
        documents: bool = False,
        retry_s: float | None = None,
        lock_timeout_s: float | None = None,
        **settings: Unpack[MemorySettings],
    ) -> Self:
        """A memory in the collection ``collection_name`` of any chromadb client:
        ``HttpClient`` for a ``chroma run`` server, ``AsyncHttpClient`` (then the
        ``a``-prefixed methods never block the event loop), ``EphemeralClient`` in memory,
        or a ``PersistentClient``. The memory keeps a state collection beside it.

        Example:
            ```python
            memory = OutputProfileMemory.from_client(
                chromadb.HttpClient(host="127.0.0.1", port=8000), collection_name="profiles"
            )
            ```
        """
        store = ProfileStore(
            client=client,
            collection_name=collection_name,
            embeddings=embeddings,
            documents=documents,
            retry_s=retry_s,
            lock_timeout_s=lock_timeout_s,
        )
        return cls(store, **settings)

    @classmethod
    def from_vectorstore(
        cls,
        vectorstore: Any,
        *,
        client: ClientAPI | AsyncClientAPI | None = None,
        embeddings: Embeddings | None = None,
        documents: bool = False,
        retry_s: float | None = None,
        lock_timeout_s: float | None = None,
        **settings: Unpack[MemorySettings],
    ) -> Self:
        """A memory in the collection of a ``langchain_chroma.Chroma`` (its client,
        collection and embeddings are used, unless ``embeddings`` is given), or of a
        chromadb collection opened by ``client``. The collection's existing rows are left
        alone; with ``documents=True`` Chroma's own similarity search
        (``vectorstore.similarity_search(q, filter={"user_id": "ana"})``) finds the entries.

        Example:
            ```python
            vectorstore = Chroma(collection_name="docs", embedding_function=embeddings)
            memory = OutputProfileMemory.from_vectorstore(vectorstore, documents=True)
            ```
        """
        found_client, name, found_embeddings = _chroma_of(vectorstore, client)
        store = ProfileStore(
            client=found_client,
            collection_name=name,
            embeddings=embeddings or found_embeddings,
            documents=documents,
            retry_s=retry_s,
            lock_timeout_s=lock_timeout_s,
        )
        return cls(store, **settings)

    # -- writes ---------------------------------------------------------------------------

    def add(self, text: str, *, user_id: str, **fields: Unpack[EntryFields]) -> ProfileEntry:
        """Remember one output of one user; re-adding the same text accumulates its signals.

        Args:
            text: the output (NFC-normalized, surrounding white space stripped).
            user_id: whose output it is.
            **fields: ``signal``, a :class:`Signal` or its name: ``authored`` (the default;
                ``rating`` with ``rating=``), ``edited``, ``endorsed`` (approved outright),
                ``accepted`` (approved by use: copied, sent, kept) or ``rejected`` (never
                selected again until approved anew); ``rating`` (1-5; 1-2 stars reject),
                ``task``, ``source_input`` (the request it answered), ``created_at`` (epoch
                seconds; default: the memory's clock), ``run_id``, ``metadata`` (scalars),
                ``expires_at`` (epoch seconds) or ``ttl_s`` (seconds from now): when the
                entry expires (default: ``retention_s`` from now, or never); the latest
                signal that names an expiry sets the entry's.

        Returns:
            The entry as stored (signals combined with any earlier ones).

        Example:
            ```python
            memory.add("Short answer first.", user_id="ana", task="email")
            memory.add("My phone is 555-0100.", user_id="ana", ttl_s=30 * 86_400)
            ```
        """
        return self._traced(
            "upsert_memory",
            lambda: self._write_one(self.entry(text, user_id=user_id, **fields)),
            OperationSpan.entry,
            user_id=user_id,
            signal=signal_name(fields.get("signal"), fields.get("rating")),
        )

    async def aadd(self, text: str, *, user_id: str, **fields: Unpack[EntryFields]) -> ProfileEntry:
        """Async :meth:`add`.

        Example:
            ```python
            await memory.aadd("Short answer first.", user_id="ana", task="email")
            ```
        """
        return await self._atraced(
            "upsert_memory",
            lambda: self._write_one(self.entry(text, user_id=user_id, **fields)),
            OperationSpan.entry,
            user_id=user_id,
            signal=signal_name(fields.get("signal"), fields.get("rating")),
        )

    async def _write_one(self, entry: ProfileEntry) -> ProfileEntry:
        return (await self._write_entries([entry]))[0]

    def entry(self, text: str, *, user_id: str, **fields: Unpack[EntryFields]) -> ProfileEntry:
        """Build and validate an entry with this memory's strengths and limits (not stored)."""
        now = self.clock()
        if fields.get("created_at") is None:
            fields["created_at"] = now
        expires_at = expiry_of(
            expires_at=fields.pop("expires_at", None),
            ttl_s=fields.pop("ttl_s", None),
            retention_s=self.writes.retention_s,
            now=now,
        )
        entry = ProfileEntry.create(
            text,
            user_id=user_id,
            strengths=self.writes.strengths,
            max_chars=self.writes.max_text_chars,
            expires_at=expires_at,
            **fields,  # type: ignore[misc]
        )
        return timely(entry, now)

    def add_many(self, entries: Iterable[ProfileEntry | Mapping[str, Any]]) -> list[ProfileEntry]:
        """Remember many entries in batched writes. Every item is validated before any write.

        Items are :class:`ProfileEntry` objects (checked field by field; the id is derived
        from their user and text again) or dicts with the keyword arguments of :meth:`add`
        (``text`` and ``user_id`` required).
        """
        return self._traced(
            "upsert_memory",
            lambda: self._write_entries(self._built(entries)),  # checked inside the span
            OperationSpan.entries,
        )

    async def aadd_many(
        self, entries: Iterable[ProfileEntry | Mapping[str, Any]]
    ) -> list[ProfileEntry]:
        """Async :meth:`add_many` (every item is validated before any write)."""
        return await self._atraced(
            "upsert_memory",
            lambda: self._write_entries(self._built(entries)),
            OperationSpan.entries,
        )

    def _built(self, entries: Iterable[ProfileEntry | Mapping[str, Any]]) -> list[ProfileEntry]:
        built = [
            coerce_item(item, i, self.entry, self.writes.max_text_chars)
            for i, item in enumerate(validate_items(entries, "entries"))
        ]
        now = self.clock()  # after building: entries stamped meanwhile are not in the future
        return [self._timely(entry, i, "entries", now) for i, entry in enumerate(built)]

    def _timely(self, entry: ProfileEntry, index: int, name: str, now: float) -> ProfileEntry:
        """A caller's entry with its times clamped to now (a far-future one is refused), and
        the memory's retention when it names no expiry (one already past is refused)."""
        try:
            return self._retained(timely(entry, now), now)
        except InvalidInputError as error:
            raise InvalidInputError(f"{name}[{index}]: {error}") from None

    def _retained(self, entry: ProfileEntry, now: float) -> ProfileEntry:
        """``entry`` with the expiry a write gives it (its own, checked, else retention)."""
        expires_at = expiry_of(
            expires_at=entry.expires_at, ttl_s=None, retention_s=self.writes.retention_s, now=now
        )
        return entry if expires_at == entry.expires_at else replace(entry, expires_at=expires_at)

    async def _write_entries(
        self, entries: Sequence[ProfileEntry], **options: Any
    ) -> list[ProfileEntry]:
        try:
            written = await self.store.awrite(entries, **options)
        except BaseException:  # a write failing part-way may have stored some batches
            self._invalidate({e.user_id for e in entries})
            raise
        self._reader.written(written)
        expiring = any(e.expires_at is not None for e in entries)
        self._sweep_now_and_then({e.user_id for e in entries}, expiring=expiring)
        return written.entries

    def delete(self, entry_id: str, *, user_id: str) -> bool:
        """Delete one entry of one user. Returns whether it existed."""
        removed: int = self._traced(
            "delete_memory",
            lambda: self._deleting(entry_id, user_id),
            _attempted_one,
            user_id=user_id,
            record_id=entry_id,
        )
        return removed > 0

    async def adelete(self, entry_id: str, *, user_id: str) -> bool:
        """Async :meth:`delete`."""
        removed: int = await self._atraced(
            "delete_memory",
            lambda: self._deleting(entry_id, user_id),
            _attempted_one,
            user_id=user_id,
            record_id=entry_id,
        )
        return removed > 0

    def _deleting(self, entry_id: object, user_id: object) -> Coroutine[Any, Any, int]:
        """The delete, its arguments checked before anything runs."""
        user, entry = validate_user_id(user_id), validate_entry_id(entry_id)
        return self._remove_ids(user, [entry], pending_only=False)

    async def _remove_ids(self, user_id: str, ids: list[str], *, pending_only: bool) -> int:
        """Delete entries of one user (only those still pending, with ``pending_only``)."""
        try:
            written = await self.store.aremove(user_id, ids, pending_only=pending_only)
        except BaseException:
            self._invalidate({user_id})
            raise
        return await self._took(written)

    async def _took(self, written: Written) -> int:
        """Take a removal through this memory's read state, and out of the store's backups
        (a deleted or superseded text must not stay in them: store/purge.py); returns how
        many entries went."""
        self._reader.written(written)
        for user in written.moved:  # the store dropped the user's pins with the removed text
            self._pins.forget(user)
        scrub(self.store, entries=written.removed)
        return sum(len(ids) for ids in written.removed.values())

    def forget(self, user_id: str, *, purge: bool = False) -> int:
        """Hard-delete everything stored for a user, pending entries included, and the
        user's rows in every backup ``outprofile repair`` made of the store. With
        ``purge``, then :meth:`purge`: Chroma's files are rewritten so the user's text
        leaves the disk now, not at Chroma's next compaction (docs/reliability.md,
        "Privacy: what stays on disk").

        Example:
            ```python
            memory.forget("ana", purge=True)  # how many entries went
            ```
        """
        forgetting = partial(self._forget, user_id, purge)
        return self._traced("delete_memory", forgetting, OperationSpan.counted, user_id=user_id)

    async def aforget(self, user_id: str, *, purge: bool = False) -> int:
        """Async :meth:`forget`."""
        forgetting = partial(self._forget, user_id, purge)
        return await self._atraced(
            "delete_memory", forgetting, OperationSpan.counted, user_id=user_id
        )

    async def _forget(self, user_id: str, purge: bool = False) -> int:
        user_id = validate_user_id(user_id)  # before the cleanup below uses it as a key
        if not isinstance(purge, bool):
            raise InvalidInputError(f"purge must be True or False; got {purge!r}")
        try:
            removed = await self.store.adelete_user(user_id)
        finally:
            self._invalidate({user_id})
            self._pins.forget(user_id)
        scrub(self.store, users={user_id})
        if purge:
            purge_store(self.store)
        return removed

    def purge(self) -> PurgeReport:
        """Rewrite the embedded store's Chroma files so that nothing forgotten, deleted or
        superseded by an edit stays in them, and strip every backup ``outprofile repair``
        made down to its ``entries.jsonl`` (store/purge.py). Takes the store location's
        lock: the other processes of the machine wait (about a second for a store of
        10,000 entries: the file is rebuilt), then reload. For a ``chroma run`` server
        nothing can be rewritten from here: the report's ``note`` says what the server's
        operator runs. Without a purge, Chroma's files keep such text until its write log
        is purged (every 1,000 writes of a collection) and the freed pages are reused.

        Example:
            ```python
            memory.forget("ana")
            print(memory.purge().summary())
            ```
        """
        return purge_store(self.store)

    async def apurge(self) -> PurgeReport:
        """Async :meth:`purge` (on a worker thread: it is file work under a lock)."""
        return await asyncio.to_thread(purge_store, self.store)

    def import_(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Restore records written by :meth:`export` exactly (all are validated first).

        A record's ``expires_at`` is kept; one naming none gets ``retention_s`` from now; one
        already expired is left out. Returns how many records were stored."""
        return self._traced(
            "upsert_memory", lambda: self._import(self._records(records)), OperationSpan.counted
        )

    async def aimport_(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Async :meth:`import_`."""
        return await self._atraced(
            "upsert_memory", lambda: self._import(self._records(records)), OperationSpan.counted
        )

    def _records(self, records: Iterable[Mapping[str, Any]]) -> list[ProfileEntry]:
        """The records to import: validated, and those already expired left out (a backup
        restored later brings back only what had not expired)."""
        entries = [
            self._from_record(r, i) for i, r in enumerate(validate_items(records, "records"))
        ]
        now = self.clock()  # after building: records stamped meanwhile are not in the future
        return [
            self._timely(entry, i, "records", now)
            for i, entry in enumerate(entries)
            if not entry.expired(now)
        ]

    async def _import(self, entries: list[ProfileEntry]) -> int:
        await self.store.areplace(entries)
        self._invalidate({e.user_id for e in entries})
        return len(entries)

    def _from_record(self, record: Mapping[str, Any], index: int) -> ProfileEntry:
        try:
            return ProfileEntry.from_dict(record, self.writes.max_text_chars)
        except InvalidInputError as error:
            raise InvalidInputError(f"record {index}: {error}") from None

    # -- reads ----------------------------------------------------------------------------

    def export(self, user_id: str) -> list[dict[str, Any]]:
        """Everything stored for one user, and only that, as JSON-ready dicts."""
        exporting = partial(self._export, user_id)
        return self._traced("search_memory", exporting, _counted_all, user_id=user_id)

    async def aexport(self, user_id: str) -> list[dict[str, Any]]:
        """Async :meth:`export`."""
        exporting = partial(self._export, user_id)
        return await self._atraced("search_memory", exporting, _counted_all, user_id=user_id)

    async def _export(self, user_id: str) -> list[dict[str, Any]]:
        profile = await self.store.aload(user_id, with_vectors=False)
        return [e.to_dict() for e in profile.entries]

    def stats(self, user_id: str) -> ProfileStats:
        """Counts of one user's profile by state, signal and task."""
        counting = partial(self._stats, user_id)
        return self._traced("search_memory", counting, _stats_counted, user_id=user_id)

    async def astats(self, user_id: str) -> ProfileStats:
        """Async :meth:`stats`."""
        counting = partial(self._stats, user_id)
        return await self._atraced("search_memory", counting, _stats_counted, user_id=user_id)

    async def _stats(self, user_id: str) -> ProfileStats:
        entries = (await self.store.aload(user_id, with_vectors=False)).entries
        return ProfileStats.of(user_id, entries)

    def select(
        self,
        user_id: str,
        *,
        max_tokens: int | None = None,
        task: str | None = None,
        query: str | None = None,
        options: SelectionOptions | None = None,
        thread_id: str | None = None,
        **changes: Any,
    ) -> ProfileSelection:
        """The user's profile block: chosen by preference signal, within ``max_tokens``.

        Args:
            user_id: whose profile.
            max_tokens: budget of the whole block; default from ``options``.
            task: prefer entries of this task.
            query: only read when ``relevance_weight`` > 0.
            options: replaces this memory's default options.
            thread_id: a conversation thread: with ``pin_threads`` (the default), the
                block chosen at the thread's first read is served for the whole thread.
            **changes: any other :class:`SelectionOptions` field, e.g. ``order="stable"``.

        No LLM call and no embedding call happen unless ``relevance_weight`` > 0.

        Example:
            ```python
            memory.select("ana", max_tokens=300, thread_id="t-1").text
            ```
        """
        selection = self._traced(
            "search_memory",
            lambda: self._selecting(user_id, max_tokens, task, query, options, thread_id, changes),
            _selected,
            user_id=user_id,
            query=query,
        )
        if selection.choice.note:  # on every path: ranked, cached or read from a snapshot
            warnings.warn(selection.choice.note, BudgetTooSmallWarning, stacklevel=2)
        return selection

    async def aselect(
        self,
        user_id: str,
        *,
        max_tokens: int | None = None,
        task: str | None = None,
        query: str | None = None,
        options: SelectionOptions | None = None,
        thread_id: str | None = None,
        **changes: Any,
    ) -> ProfileSelection:
        """Async :meth:`select`: with an async Chroma client it never blocks the event loop
        (a cached block is served without any I/O).

        Example:
            ```python
            (await memory.aselect("ana", max_tokens=300, thread_id="t-1")).text
            ```
        """
        selection = await self._atraced(
            "search_memory",
            lambda: self._selecting(user_id, max_tokens, task, query, options, thread_id, changes),
            _selected,
            user_id=user_id,
            query=query,
        )
        if selection.choice.note:
            warnings.warn(selection.choice.note, BudgetTooSmallWarning, stacklevel=2)
        return selection

    def _selecting(
        self,
        user_id: str,
        max_tokens: int | None,
        task: str | None,
        query: str | None,
        options: SelectionOptions | None,
        thread_id: str | None,
        changes: dict[str, Any],
    ) -> Coroutine[Any, Any, ProfileSelection]:
        """The read :meth:`select` runs, its arguments checked first."""
        user = validate_user_id(user_id)
        if options is not None and not isinstance(options, SelectionOptions):
            raise InvalidInputError(
                f"options must be a SelectionOptions; got {type(options).__name__}"
            )
        if query is not None:
            query = validate_optional_str(query, "query")
        chosen = (options or self.options).with_changes(max_tokens=max_tokens, task=task, **changes)
        if thread_id is not None and self.reads.pin_threads and chosen.relevance_weight <= 0:
            thread = validate_thread_id(thread_id)
            return self._pins.select(
                user, thread, chosen, lambda: self._reader.aselect(user, chosen, query)
            )
        return self._reader.aselect(user, chosen, query)

    def flush(self) -> None:
        """Wait for what this memory does in the background: block snapshots it saves, and
        tracked outputs it expires (the interpreter waits for them at exit too)."""
        self._reader.flush()

    async def aflush(self) -> None:
        """Async :meth:`flush` (with an async client the background work is tasks of the
        event loop: await this before the loop closes)."""
        await self._reader.aflush()

    def _run(self, operation: Coroutine[Any, Any, _T]) -> _T:
        """Run a memory operation for a synchronous method (synchronous client only)."""
        return run_sync(operation, async_io=self.store.is_async)

    async def _arun(self, operation: Coroutine[Any, Any, _T]) -> _T:
        """Run a memory operation for an ``a``-prefixed method: on the event loop with an
        async client (whose collections open on first use), else on a worker thread."""
        if self.store.is_async:
            try:
                await self.store.aopen()
            except BaseException:
                operation.close()  # never started: nothing warns it was not awaited
                raise
        return await run_async(operation, async_io=self.store.is_async)

    def _traced(
        self,
        operation: Operation,
        build: Callable[[], Coroutine[Any, Any, _T]],
        report: Callable[[OperationSpan, _T], None],
        **span: Any,
    ) -> _T:
        """Run a memory operation for a synchronous method inside its span: the operation
        is built (its arguments checked) inside the span, so a refused call is traced too;
        ``report`` adds what the result says (counts, ids). Without an SDK, no span at all."""
        if not self.telemetry.active():
            return self._run(build())
        with self.telemetry.span(operation, **span) as traced:
            result = self._run(build())
            report(traced, result)
            return result

    async def _atraced(
        self,
        operation: Operation,
        build: Callable[[], Coroutine[Any, Any, _T]],
        report: Callable[[OperationSpan, _T], None],
        **span: Any,
    ) -> _T:
        """Async :meth:`_traced`."""
        if not self.telemetry.active():
            return await self._arun(build())
        with self.telemetry.span(operation, **span) as traced:
            result = await self._arun(build())
            report(traced, result)
            return result

    def _invalidate(self, users: Iterable[str]) -> None:
        """Drop the read state of users just written through this object."""
        self._reader.invalidate(users)

    # -- LangChain surfaces ---------------------------------------------------------------

    def injector(self, user_id: str | None = None, **settings: Any) -> ProfileInjector:
        """A runnable for ``prompt | memory.injector() | model`` that adds the block (by
        default as its own system message after the prompt's system messages).

        ``user_id`` defaults to ``config["configurable"]["user_id"]`` on each call;
        ``settings`` are :class:`ProfileInjector`'s (``placement``, ``options``,
        ``max_tokens``, ``task``, ``limits`` or any :class:`SelectionOptions` field); a call
        changes them by its config's ``profile_<name>`` keys.

        Example:
            ```python
            chain = prompt | memory.injector(max_tokens=300) | model
            chain.invoke({"question": "..."}, config={"configurable": {"user_id": "ana"}})
            ```
        """
        return ProfileInjector(self, user_id=user_id, **settings)

    def middleware(self, user_id: str | None = None, **settings: Any) -> ProfileMiddleware:
        """A ``create_agent`` middleware that gives each model call the block.

        Needs the ``agents`` extra (``pip install 'langchain-outprofile[agents]'``);
        ``settings`` are :class:`ProfileMiddleware`'s.

        Example:
            ```python
            agent = create_agent(model, tools, middleware=[memory.middleware()],
                                 context_schema=Context)
            ```
        """
        try:
            from langchain_outprofile.surfaces.middleware import ProfileMiddleware  # agents
        except ImportError as error:
            raise _needs_agents("memory.middleware()", error) from error
        return ProfileMiddleware(self, user_id=user_id, **settings)

    def as_store(
        self,
        *,
        namespace: Iterable[str] | None = None,
        prefix: str | None = None,
        **settings: Any,
    ) -> OutputProfileStore:
        """This memory as a LangGraph ``BaseStore`` (``agents`` extra): namespaces follow the
        template ``namespace`` (default ``("profile", "{user_id}")``, so
        ``("profile", user_id, ...)``; ``("{user_id}", "profile")`` under LangGraph Platform's
        ``@auth.on.store`` rewrite); ``search`` returns the user's block in block order.

        Example:
            ```python
            graph = builder.compile(store=memory.as_store(max_tokens=300))
            platform = memory.as_store(namespace=("{user_id}", "profile"))
            ```
        """
        try:
            from langchain_outprofile.surfaces.langgraph_store import OutputProfileStore
        except ImportError as error:  # langgraph comes with the agents extra
            raise _needs_agents("memory.as_store()", error) from error
        return OutputProfileStore(self, namespace=namespace, prefix=prefix, **settings)

    def as_retriever(
        self, user_id: str | None = None, *, k: int | None = None, **settings: Any
    ) -> ProfileRetriever:
        """The selection as a LangChain retriever of Documents (at most ``k``).

        ``settings``: ``options``, ``max_tokens``, ``task``, or any :class:`SelectionOptions`
        field (folded into ``options``).

        Example:
            ```python
            docs = memory.as_retriever(user_id="ana", k=5).invoke("any query")
            ```
        """
        fixed = {
            key: settings.pop(key) for key in ("max_tokens", "task", "limits") if key in settings
        }
        options = settings.pop("options", None)
        if settings:
            options = (options or self.options).with_changes(**settings)
        return ProfileRetriever(memory=self, user_id=user_id, k=k, options=options, **fixed)

    def block_messages(
        self,
        user_id: str,
        *,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        thread_id: str | None = None,
        **changes: Any,
    ) -> list[BaseMessage]:
        """The block as ``[SystemMessage]`` (``[]`` when empty) for a ``MessagesPlaceholder``.

        Example:
            ```python
            prompt.invoke({"profile": memory.block_messages("ana", thread_id="t-1"),
                           "question": "..."})
            ```
        """
        chosen = (options or self.options).with_changes(**changes) if changes else options
        return profile_messages(
            self, user_id, options=chosen, max_tokens=max_tokens, task=task, thread_id=thread_id
        )

    async def ablock_messages(
        self,
        user_id: str,
        *,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        thread_id: str | None = None,
        **changes: Any,
    ) -> list[BaseMessage]:
        """Async :meth:`block_messages`."""
        chosen = (options or self.options).with_changes(**changes) if changes else options
        selection = await self.aselect(
            user_id, options=chosen, max_tokens=max_tokens, task=task, thread_id=thread_id
        )
        return block_as_messages(selection)

    def track(
        self,
        chain: Runnable[Any, Any],
        *,
        task: str | None = None,
        limits: CallLimits | None = None,
    ) -> TrackedRunnable:
        """Wrap ``chain`` so each run's output is stored as ``pending`` under its run id
        (and ``task``, or the call's ``profile_task``); ``limits`` bound a call's
        ``profile_<name>`` keys as on every surface (see :class:`TrackedRunnable`).

        Example:
            ```python
            tracked = memory.track(chain)
            tracked.invoke(inputs, config={"configurable": {"user_id": "ana"}, "run_id": rid})
            memory.feedback(rid, "endorsed")
            ```
        """
        return TrackedRunnable(self, chain, task=task, limits=limits)


def _attempted_one(span: OperationSpan, _removed: int) -> None:
    """A delete of one id: the conventions count the records it attempted to delete."""
    span.counted(1)


def _counted_all(span: OperationSpan, records: list[dict[str, Any]]) -> None:
    span.counted(len(records))


def _stats_counted(span: OperationSpan, stats: ProfileStats) -> None:
    span.counted(stats.entries)


def _selected(span: OperationSpan, selection: ProfileSelection) -> None:
    """A read returns the block's entries (``search_memory`` counts what it returned)."""
    span.returned(selection.entries)


def _chroma_of(
    vectorstore: Any, client: ClientAPI | AsyncClientAPI | None
) -> tuple[ClientAPI | AsyncClientAPI, str, Embeddings | None]:
    """(client, collection name, embeddings) of a ``langchain_chroma.Chroma``, or of a
    chromadb collection and the client that opened it, refusing what contradicts them."""
    inner = getattr(vectorstore, "_client", None), getattr(vectorstore, "_collection", None)
    if inner[0] is not None and inner[1] is not None:  # langchain_chroma.Chroma
        if client is not None:
            raise InvalidInputError(
                "pass a langchain_chroma.Chroma alone: it already names the client and the "
                "collection (drop client=)"
            )
        return inner[0], str(inner[1].name), getattr(vectorstore, "embeddings", None)
    name = getattr(vectorstore, "name", None)
    if not isinstance(name, str):
        raise InvalidInputError(
            "from_vectorstore() takes a langchain_chroma.Chroma or a chromadb collection; "
            f"got {type(vectorstore).__name__}"
        )
    if client is None:
        raise InvalidInputError(
            "a chromadb collection needs client=, the chromadb client that opened it (the "
            "memory keeps a state collection beside it)"
        )
    return client, name, None


def _of_type(value: object, kind: type[_O], name: str) -> _O:
    """``value``, or ``kind()`` when it is None; anything else is refused by name (a dict
    of settings, say, is not read field by field)."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise InvalidInputError(f"{name} must be a {kind.__name__}; got {type(value).__name__}")
    return value


def _needs_agents(what: str, error: ImportError) -> MissingExtraError:
    """The error for a surface whose optional ``agents`` extra did not import: it names the
    install (a bare ``ModuleNotFoundError: langgraph`` did not), and the original cause."""
    return MissingExtraError(
        f"{what} needs the `agents` extra (LangChain v1's create_agent and LangGraph): "
        f"pip install 'langchain-outprofile[agents]' ({error})"
    )
