"""Memory: ``OutputProfileMemory``, the one object users touch, and its read-path cache."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from langchain_outprofile.reader import ProfileReader
from langchain_outprofile.records import (
    DEFAULT_MAX_TEXT_CHARS,
    InvalidInputError,
    ProfileEntry,
    Signal,
    SignalStrengths,
    validate_user_id,
)
from langchain_outprofile.render import (
    DEFAULT_TEMPLATE,
    BlockTemplate,
    ProfileSelection,
)
from langchain_outprofile.selection import SelectionOptions
from langchain_outprofile.store import DEFAULT_COLLECTION, ProfileStore
from langchain_outprofile.tokens import DEFAULT_MODEL, TokenCounter

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = ["OutputProfileMemory", "ProfileStats"]


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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


class OutputProfileMemory:
    """A user's own outputs, selected by preference signal, packed to an exact token budget.

    Args:
        path: directory of the embedded Chroma store (default: the user data directory).
        client: any chromadb client instead of ``path`` (``HttpClient`` for a server).
        collection_name: one collection holds every user.
        embeddings: style embedder; default :class:`StyleEmbeddings` (offline).
        model: the target chat model's name, for exact token counts.
        options: default :class:`SelectionOptions` for :meth:`select`.
        template: the block's framing text.
        strengths: the strength of each positive signal.
        max_text_chars: longest entry accepted.
        cache_ttl_s: how long a user's cached candidates serve reads before re-reading the
            store (writes through this object invalidate at once; 0 = always read through).
        cache_size: users kept in the read cache (least recently used are dropped).
        snapshot_ttl_s: how long a selection saved in the store serves cold reads of an
            unchanged profile (every write makes it stale at once; 0 = never save one).
        pending_ttl_s: tracked outputs still pending after this long are deleted.

    Example:
        ```python
        from langchain_outprofile import OutputProfileMemory, Signal

        memory = OutputProfileMemory(path="./profiles")
        memory.add("Short answer first, then bullets. No fluff.", user_id="ana",
                   signal=Signal.AUTHORED, task="email")
        memory.endorse("Here is the summary you asked for ...", user_id="ana")
        print(memory.select("ana", max_tokens=300).text)
        ```
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        embeddings: Embeddings | None = None,
        model: str = DEFAULT_MODEL,
        options: SelectionOptions | None = None,
        template: BlockTemplate = DEFAULT_TEMPLATE,
        strengths: SignalStrengths | None = None,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        cache_ttl_s: float = 2.0,
        cache_size: int = 1024,
        snapshot_ttl_s: float = 3600.0,
        pending_ttl_s: float = 7 * 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cache_ttl_s < 0 or cache_size < 1 or pending_ttl_s <= 0 or snapshot_ttl_s < 0:
            raise InvalidInputError(
                "cache_ttl_s >= 0, cache_size >= 1, snapshot_ttl_s >= 0 and pending_ttl_s > 0"
            )
        self.store = ProfileStore(
            path=path, client=client, collection_name=collection_name, embeddings=embeddings
        )
        self.counter = TokenCounter(model)
        self.options = options or SelectionOptions()
        self.template = template
        self.strengths = strengths or SignalStrengths()
        self.max_text_chars = max_text_chars
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self.snapshot_ttl_s = snapshot_ttl_s
        self.pending_ttl_s = pending_ttl_s
        self.clock = clock
        self._reader = ProfileReader(self)

    # -- writes ---------------------------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        user_id: str,
        signal: Signal | str | None = None,
        rating: float | None = None,
        task: str | None = None,
        source_input: str | None = None,
        created_at: float | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ProfileEntry:
        """Remember one output of one user; re-adding the same text accumulates its signals.

        Returns the entry as stored (signals combined with any earlier ones).
        """
        entry = self.entry(
            text,
            user_id=user_id,
            signal=signal,
            rating=rating,
            task=task,
            source_input=source_input,
            created_at=created_at,
            run_id=run_id,
            metadata=metadata,
        )
        return self._upsert([entry])[0]

    def entry(self, text: str, *, user_id: str, **fields: Any) -> ProfileEntry:
        """Build and validate an entry with this memory's strengths and limits (not stored)."""
        fields.setdefault("created_at", None)
        if fields["created_at"] is None:
            fields["created_at"] = self.clock()
        return ProfileEntry.create(
            text,
            user_id=user_id,
            strengths=self.strengths,
            max_chars=self.max_text_chars,
            **fields,
        )

    def endorse(self, text: str, *, user_id: str, **fields: Any) -> ProfileEntry:
        """Remember an assistant output the user explicitly approved."""
        return self.add(text, user_id=user_id, signal=Signal.ENDORSED, **fields)

    def accept(self, text: str, *, user_id: str, **fields: Any) -> ProfileEntry:
        """Remember an assistant output the user implicitly approved (copied, sent, kept)."""
        return self.add(text, user_id=user_id, signal=Signal.ACCEPTED, **fields)

    def reject(self, text: str, *, user_id: str) -> ProfileEntry:
        """Mark a text as rejected: it is never selected again (until approved anew)."""
        return self.add(text, user_id=user_id, signal=Signal.REJECTED)

    def add_many(self, entries: Iterable[ProfileEntry | Mapping[str, Any]]) -> list[ProfileEntry]:
        """Remember many entries in batched writes. Every item is validated before any write.

        Items are :class:`ProfileEntry` objects or dicts with the keyword arguments of
        :meth:`add` (``text`` and ``user_id`` required).
        """
        built = [self._coerce(item, i) for i, item in enumerate(entries)]
        return self._upsert(built)

    def _coerce(self, item: ProfileEntry | Mapping[str, Any], index: int) -> ProfileEntry:
        if isinstance(item, ProfileEntry):
            return item
        if not isinstance(item, Mapping) or "text" not in item or "user_id" not in item:
            raise InvalidInputError(
                f"entries[{index}] must be a ProfileEntry or a dict with 'text' and 'user_id'"
            )
        fields = dict(item)
        try:
            return self.entry(fields.pop("text"), user_id=fields.pop("user_id"), **fields)
        except TypeError as error:
            raise InvalidInputError(f"entries[{index}]: {error}") from None
        except InvalidInputError as error:
            raise InvalidInputError(f"entries[{index}]: {error}") from None

    def _upsert(self, entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
        stored = self.store.upsert(entries)
        self._invalidate({e.user_id for e in entries})
        return stored

    def delete(self, entry_id: str, *, user_id: str) -> bool:
        """Delete one entry of one user. Returns whether it existed."""
        removed = self.store.delete(user_id, [entry_id]) > 0
        self._invalidate({user_id})
        return removed

    def forget(self, user_id: str) -> int:
        """Hard-delete everything stored for a user, pending entries included."""
        removed = self.store.delete_user(user_id)
        self._invalidate({user_id})
        return removed

    def import_(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Restore records written by :meth:`export` exactly (all are validated first)."""
        entries = [self._from_record(r, i) for i, r in enumerate(records)]
        self.store.replace(entries)
        self._invalidate({e.user_id for e in entries})
        return len(entries)

    def _from_record(self, record: Mapping[str, Any], index: int) -> ProfileEntry:
        try:
            return ProfileEntry.from_dict(record, self.max_text_chars)
        except InvalidInputError as error:
            raise InvalidInputError(f"record {index}: {error}") from None

    # -- reads ----------------------------------------------------------------------------

    def export(self, user_id: str) -> list[dict[str, Any]]:
        """Everything stored for one user, and only that, as JSON-ready dicts."""
        profile = self.store.load(user_id, with_vectors=False)
        return [e.to_dict() for e in profile.entries]

    def stats(self, user_id: str) -> ProfileStats:
        """Counts of one user's profile by state, signal and task."""
        entries = self.store.load(user_id, with_vectors=False).entries
        by_signal: dict[str, int] = {}
        tasks: dict[str, int] = {}
        for entry in entries:
            by_signal[entry.signal.value] = by_signal.get(entry.signal.value, 0) + 1
            tasks[entry.task] = tasks.get(entry.task, 0) + 1
        return ProfileStats(
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

    def select(
        self,
        user_id: str,
        *,
        max_tokens: int | None = None,
        task: str | None = None,
        query: str | None = None,
        options: SelectionOptions | None = None,
        **changes: Any,
    ) -> ProfileSelection:
        """The user's profile block: chosen by preference signal, within ``max_tokens``.

        Args:
            user_id: whose profile.
            max_tokens: budget of the whole block; default from ``options``.
            task: prefer entries of this task.
            query: only read when ``relevance_weight`` > 0.
            options: replaces this memory's default options.
            **changes: any other :class:`SelectionOptions` field, e.g. ``order="stable"``.

        No LLM call and no embedding call happen unless ``relevance_weight`` > 0.
        """
        user = validate_user_id(user_id)
        try:
            chosen = (options or self.options).with_changes(
                max_tokens=max_tokens, task=task, **changes
            )
        except TypeError as error:
            raise InvalidInputError(f"unknown selection option: {error}") from None
        return self._reader.select(user, chosen, query)

    def _invalidate(self, users: Iterable[str]) -> None:
        """Drop the read state of users just written through this object."""
        self._reader.invalidate(users)

    # -- LangChain surfaces (each imports its module on first use) -------------------------

    def injector(
        self,
        user_id: str | None = None,
        *,
        placement: Placement = "merge",
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> ProfileInjector:
        """A runnable for ``prompt | memory.injector() | model`` that puts the block first.

        ``user_id`` defaults to ``config["configurable"]["user_id"]`` on each call.

        Example:
            ```python
            chain = prompt | memory.injector(max_tokens=300) | model
            chain.invoke({"question": "..."}, config={"configurable": {"user_id": "ana"}})
            ```
        """
        from langchain_outprofile.inject import ProfileInjector

        return ProfileInjector(
            self,
            user_id=user_id,
            placement=placement,
            options=options,
            max_tokens=max_tokens,
            task=task,
            **changes,
        )

    def middleware(
        self,
        user_id: str | None = None,
        *,
        placement: Placement = "merge",
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> ProfileMiddleware:
        """A ``create_agent`` middleware leading each model call with the block (``agents`` extra).

        Example:
            ```python
            agent = create_agent(model, tools, middleware=[memory.middleware()],
                                 context_schema=Context)
            ```
        """
        from langchain_outprofile.middleware import ProfileMiddleware

        return ProfileMiddleware(
            self,
            user_id=user_id,
            placement=placement,
            options=options,
            max_tokens=max_tokens,
            task=task,
            **changes,
        )

    def as_retriever(
        self,
        user_id: str | None = None,
        *,
        k: int | None = None,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> ProfileRetriever:
        """The selection as a LangChain retriever of Documents (at most ``k``).

        Example:
            ```python
            docs = memory.as_retriever(user_id="ana", k=5).invoke("any query")
            ```
        """
        from langchain_outprofile.inject import resolve_options
        from langchain_outprofile.retriever import ProfileRetriever

        chosen = resolve_options(self, options, **changes) if changes else options
        return ProfileRetriever(
            memory=self, user_id=user_id, k=k, options=chosen, max_tokens=max_tokens, task=task
        )

    def block_messages(
        self,
        user_id: str,
        *,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> list[BaseMessage]:
        """The block as ``[SystemMessage]`` (``[]`` when empty) for a ``MessagesPlaceholder``.

        Example:
            ```python
            prompt.invoke({"profile": memory.block_messages("ana"), "question": "..."})
            ```
        """
        from langchain_outprofile.inject import profile_messages

        return profile_messages(
            self, user_id, options=options, max_tokens=max_tokens, task=task, **changes
        )

    def track(self, chain: Runnable[Any, Any], *, task: str | None = None) -> TrackedRunnable:
        """Wrap ``chain`` so each run's output is stored as ``pending`` under its run id.

        Example:
            ```python
            tracked = memory.track(chain)
            tracked.invoke(inputs, config={"configurable": {"user_id": "ana"}, "run_id": rid})
            ```
        """
        from langchain_outprofile.feedback import track

        return track(self, chain, task=task)

    def feedback(
        self,
        run_id: str | UUID,
        signal: Signal | str | None = None,
        *,
        rating: float | None = None,
        edited: str | None = None,
        user_id: str | None = None,
    ) -> ProfileEntry:
        """Turn a tracked run's output into endorsed / rejected / accepted / rating / edited.

        Example:
            ```python
            memory.feedback(rid, "endorsed")
            memory.feedback(rid, edited="The user's corrected text.")
            ```
        """
        from langchain_outprofile.feedback import feedback

        return feedback(self, run_id, signal, rating=rating, edited=edited, user_id=user_id)

    def expire_pending(self, user_id: str) -> int:
        """Delete the user's tracked outputs pending longer than ``pending_ttl_s``."""
        from langchain_outprofile.feedback import expire_pending

        return expire_pending(self, user_id)


if TYPE_CHECKING:  # the surfaces import this module; these names are for annotations only
    from uuid import UUID

    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable

    from langchain_outprofile.feedback import TrackedRunnable
    from langchain_outprofile.inject import Placement, ProfileInjector
    from langchain_outprofile.middleware import ProfileMiddleware
    from langchain_outprofile.retriever import ProfileRetriever
