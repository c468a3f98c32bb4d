"""Common: what every LangChain surface shares: whose profile, and with which settings.

Every surface reads ``user_id`` from the explicit argument, else from
``config["configurable"]["user_id"]``, else raises :class:`MissingUserIdError`: a shared
profile is never used silently. (The middleware also reads it from the agent's
``runtime.context``, and the LangGraph store from the namespace.)

One route for a call's settings, the same on every surface (injector, middleware,
retriever, LangGraph store, tracked runnable): ``config["configurable"]["profile_<name>"]``
sets the setting ``<name>`` (``profile_max_tokens``, ``profile_task``,
``profile_placement`` or any other :class:`SelectionOptions` field) for that call, and
``config["configurable"]["thread_id"]`` (LangGraph's checkpointer key) names the thread
whose pinned block the call gets. :meth:`SurfaceSettings.for_call` reads both, and every
surface calls it: the chains with the config they are invoked with, the middleware and the
store with the config of the LangGraph run they are called in (``get_config()``). The
surfaces declare these keys in their ``config_specs``. Other configurable keys are ignored,
as every LangChain runnable ignores keys it does not declare. The ``profile_`` prefix keeps
them apart from a chat model's own ``max_tokens`` in the same chain.

A call's settings may come from an untrusted request (a web app passing query parameters
into the config), so the app bounds them with :class:`CallLimits`: the largest budget a call
may ask for, and which settings a call may change at all. By default a call may set the
budget (up to 4,000 tokens, or the surface's own budget when larger), the task, the
placement, the order, the fields and ``fill_from_profile``: settings with few values each.
The numeric knobs (``max_entry_tokens``, ``mmr_lambda``, ``pool_size``, the weights, ...)
take any number, and every new value is a ranking built afresh (seconds for a large
profile), so a request changes them only when the app lists them in ``settable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_outprofile.bridge import call
from langchain_outprofile.errors import InvalidInputError, MissingUserIdError, RequestLimitError
from langchain_outprofile.types import (
    ProfileEntry,
    ProfileSelection,
    ProfileSource,
    SelectionOptions,
)
from langchain_outprofile.validation import validate_thread_id, validate_user_id

__all__ = [
    "CONFIG_PREFIX",
    "DEFAULT_CALL_SETTINGS",
    "DEFAULT_MAX_CALL_TOKENS",
    "OPTION_NAMES",
    "PLACEMENTS",
    "SERVED_KEY",
    "SETTING_NAMES",
    "USER_ID_SPEC",
    "CallLimits",
    "CallSettings",
    "Placement",
    "ServedBlocks",
    "SurfaceSettings",
    "arecord_output",
    "aselect",
    "check_breakpoint",
    "check_placement",
    "note_served",
    "refuse_keywords",
    "served_blocks",
    "setting_specs",
    "settings_from_config",
    "thread_id_from_config",
    "user_id_from_config",
]

Placement = Literal["merge", "separate", "after_system"]
PLACEMENTS: tuple[Placement, ...] = ("merge", "separate", "after_system")
DEFAULT_PLACEMENT: Placement = "after_system"
"""Where the block goes unless a surface or call says otherwise: its own system message after
the app's leading system messages (at the top when there are none). Measured against the
block at the top (``merge``) after a static system prompt of 300 and 1,000 tokens, it lifts
the gold's likelihood more and lets a prefix cache reuse the app's prompt across users
(docs/evaluation.md and docs/benchmarks.md, "Placement")."""
"""Where a surface puts the block: ``merge`` (top of the leading system message) and
``separate`` (its own system message first) lead the prompt; ``after_system`` follows the
app's leading system messages, so a static prefix every user shares stays a prefix that a
provider's prompt cache can reuse from one user to the next (see ``messages.place_block``)."""

USER_ID_SPEC = ConfigurableFieldSpec(
    id="user_id",
    annotation=str,
    name="User ID",
    description="Unique identifier for the user.",
    default="",
    is_shared=True,
)
"""How ``user_id`` is declared in ``config_specs``: exactly the spec of
``RunnableWithMessageHistory``'s documented ``history_factory_config`` example, so that both
can share one ``user_id`` in a chain (two different specs for one id are refused)."""


CONFIG_PREFIX = "profile_"
"""``config["configurable"][CONFIG_PREFIX + name]`` sets the setting ``name`` for one call."""

OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SelectionOptions))
"""Every :class:`SelectionOptions` field: each can be set per call."""

SETTING_NAMES: tuple[str, ...] = ("placement", *OPTION_NAMES)
"""Every setting a call may set: the injector and the middleware read all of them; the
retriever and the LangGraph store, which place no block, read :data:`OPTION_NAMES`."""

_SETTINGS: dict[str, tuple[Any, str]] = {
    "placement": (
        Literal["merge", "separate", "after_system"],
        "Where the profile block goes: 'merge' (top of the leading system message), "
        "'separate' (its own system message first) or 'after_system' (its own system "
        "message after the app's leading system messages, which stay a shared prefix).",
    ),
    "max_tokens": (int, "Token budget of the whole profile block."),
    "max_entry_tokens": (int, "Longer profile entries are cut at a sentence boundary."),
    "half_life_days": (float, "Recency half-life of profile entries, in days."),
    "order": (Literal["strongest", "stable"], "Profile entries 'strongest' first, or 'stable'."),
    "fields": (Literal["output", "input", "full"], "What each profile entry shows."),
    "task": (str, "Prefer profile entries of this task."),
    "fill_from_profile": (bool, "Fill the budget from other tasks when the task scope cannot."),
    "relevance_weight": (float, "0 ignores the query; up to 1 blends query relevance in."),
    "typicality_weight": (float, "Up to 1 blends in closeness to the user's style centroid."),
    "mmr_lambda": (float, "1 ranks by score alone; lower values favour stylistic diversity."),
    "duplicate_threshold": (float, "Style similarity from which like-worded text is a duplicate."),
    "pool_size": (int, "How many top-scored candidates diversity and packing consider."),
    "credit_weight": (
        float,
        "0 ignores feedback credit; up to 4 favours entries of approved blocks.",
    ),
    "explore": (bool, "Give one block place to the entry with the least feedback yet."),
}
assert set(_SETTINGS) == set(SETTING_NAMES), "every SelectionOptions field needs a config spec"


DEFAULT_MAX_CALL_TOKENS = 4_000
"""The largest budget a call may ask for when the app sets none (or the surface's own budget,
when that is larger). Six times the default budget of 600, room for a long profile, and still
a small part of any context window: a request cannot make the block the whole prompt (an
attacker's unbounded budget built a 530,031-token block)."""

DEFAULT_CALL_SETTINGS: frozenset[str] = frozenset(
    {"max_tokens", "task", "placement", "order", "fields", "fill_from_profile"}
)
"""What a call may change when the app says nothing: the budget (bounded), the task, and the
settings with two or three values. The other :class:`SelectionOptions` fields take any
number, and rotating their values by tiny steps forced a cold ranking (~3.3 s) per call."""


@dataclass(frozen=True)
class CallLimits:
    """What one call may change of a surface's settings: the app's bound on a request.

    Args:
        max_tokens: the largest budget a call may ask for (``profile_max_tokens``, or the
            retriever's ``configurable_fields`` value). None: :data:`DEFAULT_MAX_CALL_TOKENS`,
            or the surface's own budget when that is larger.
        settable: the settings a call may change (names of :data:`SETTING_NAMES`).

    Raises:
        InvalidInputError: for a budget that is not an int >= 1, or an unknown setting.

    Example:
        ```python
        limits = CallLimits(max_tokens=1_000, settable={"max_tokens", "task", "mmr_lambda"})
        injector = memory.injector(max_tokens=300, limits=limits)
        ```
    """

    max_tokens: int | None = None
    settable: frozenset[str] = DEFAULT_CALL_SETTINGS

    def __post_init__(self) -> None:
        budget = self.max_tokens
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)):
            raise InvalidInputError(f"CallLimits.max_tokens must be an int; got {budget!r:.40}")
        if budget is not None and budget < 1:
            raise InvalidInputError(f"CallLimits.max_tokens must be >= 1; got {budget}")
        if isinstance(self.settable, str) or not isinstance(self.settable, Iterable):
            raise InvalidInputError(
                f"CallLimits.settable must be a set of setting names; got {self.settable!r:.60}"
            )
        names = frozenset(self.settable)
        unknown = sorted(str(n) for n in names - set(SETTING_NAMES))
        if unknown:
            raise InvalidInputError(
                f"CallLimits.settable names unknown setting(s) {unknown}; use {list(SETTING_NAMES)}"
            )
        object.__setattr__(self, "settable", names)

    def around(self, options: SelectionOptions) -> CallLimits:
        """These limits with the budget filled in for a surface built with ``options``.

        Raises:
            RequestLimitError: when the app gave a ``max_tokens`` below the surface's own
                budget (a retriever copy ``configurable_fields`` builds comes this way too).
        """
        if self.max_tokens is None:
            return replace(self, max_tokens=max(DEFAULT_MAX_CALL_TOKENS, options.max_tokens))
        self.check_budget(options.max_tokens, "max_tokens")
        return self

    def check_budget(self, budget: int, name: str) -> None:
        """Refuse a budget over :attr:`max_tokens`."""
        if self.max_tokens is not None and budget > self.max_tokens:
            raise RequestLimitError(
                f"{name}={budget} is over this surface's limit of {self.max_tokens} tokens; "
                f"ask for at most {self.max_tokens}, or build the surface with "
                f"limits=CallLimits(max_tokens=...)"
            )

    def check_names(self, names: Iterable[str], prefix: str = "") -> None:
        """Refuse a call that changes a setting outside :attr:`settable`."""
        refused = sorted(set(names) - self.settable)
        if refused:
            raise RequestLimitError(
                f"a call may not change {[prefix + n for n in refused]}: this surface lets a "
                f"call change {sorted(self.settable)}; to allow more, build it with "
                "limits=CallLimits(settable={...})"
            )


def setting_specs(names: Iterable[str] = SETTING_NAMES) -> list[ConfigurableFieldSpec]:
    """The ``config_specs`` of the per-call settings: ``profile_<name>``, default None (the
    surface's own setting).

    Example:
        ```python
        [spec.id for spec in setting_specs(["max_tokens", "task"])]
        # ["profile_max_tokens", "profile_task"]
        ```
    """
    return [
        ConfigurableFieldSpec(
            id=CONFIG_PREFIX + name,
            annotation=_SETTINGS[name][0] | None,
            name=f"Profile {name.replace('_', ' ')}",
            description=_SETTINGS[name][1],
            default=None,
        )
        for name in names
    ]


def settings_from_config(
    config: RunnableConfig | None, names: Iterable[str] = SETTING_NAMES
) -> dict[str, Any]:
    """The settings one call's config sets (``profile_<name>`` keys that are not None).

    Example:
        ```python
        settings_from_config({"configurable": {"profile_max_tokens": 200, "other": 1}})
        # {"max_tokens": 200}
        ```
    """
    configurable: Mapping[str, Any] = (config or {}).get("configurable") or {}
    found = {name: configurable.get(CONFIG_PREFIX + name) for name in names}
    return {name: value for name, value in found.items() if value is not None}


def user_id_from_config(explicit: str | None, config: RunnableConfig | None) -> str:
    """The user whose profile to use: ``explicit``, else ``config["configurable"]["user_id"]``.

    Raises:
        MissingUserIdError: when neither names a user.

    Example:
        ```python
        user_id_from_config(None, {"configurable": {"user_id": "ana"}})  # "ana"
        ```
    """
    if explicit is not None:
        return validate_user_id(explicit)
    found = ((config or {}).get("configurable") or {}).get("user_id")
    if found is None or found == "":
        raise MissingUserIdError(
            "no user_id: pass config={'configurable': {'user_id': ...}} to invoke, or give "
            "user_id= when creating the injector (there is no shared profile)"
        )
    return validate_user_id(found)


def thread_id_from_config(config: RunnableConfig | None) -> str | None:
    """The conversation thread of this call: ``config["configurable"]["thread_id"]`` (the
    key LangGraph's checkpointers use), or None.

    Example:
        ```python
        thread_id_from_config({"configurable": {"thread_id": "t-1"}})  # "t-1"
        ```
    """
    found = ((config or {}).get("configurable") or {}).get("thread_id")
    return None if found is None or found == "" else validate_thread_id(found)


def check_placement(placement: object) -> Placement:
    """Return a valid placement or raise :class:`InvalidInputError`.

    Example:
        ```python
        check_placement("separate")  # "separate"
        ```
    """
    if placement not in PLACEMENTS:
        choices = ", ".join(repr(p) for p in PLACEMENTS)
        raise InvalidInputError(f"placement must be one of {choices}; got {placement!r:.60}")
    return placement


def check_breakpoint(placement: Placement, cache_breakpoint: object) -> Placement:
    """``placement`` when a ``cache_breakpoint`` setting fits it, else
    :class:`InvalidInputError`.

    The breakpoint marks the end of the prefix every user shares; only ``after_system``
    leaves one in front of the block (``merge`` and ``separate`` put the per-user block
    first, so a breakpoint behind it would cache one user's prompt, not a shared one).

    Example:
        ```python
        check_breakpoint("after_system", True)  # "after_system"
        ```
    """
    if not isinstance(cache_breakpoint, bool):
        raise InvalidInputError(
            f"cache_breakpoint must be True or False; got {cache_breakpoint!r:.40}"
        )
    if cache_breakpoint and placement != "after_system":
        raise InvalidInputError(
            f"cache_breakpoint=True needs placement='after_system'; got {placement!r}: with "
            "the block first there is no prefix shared by all users to mark"
        )
    return placement


@dataclass(frozen=True)
class CallSettings:
    """What one call reads with: the surface's settings as the call's config changed them,
    and the thread whose pinned block it gets (:meth:`SurfaceSettings.for_call`).

    Example:
        ```python
        call = CallSettings("merge", SelectionOptions(max_tokens=200), False, "t-1")
        memory.select("ana", **call.read(query=None))  # the pinned block of thread t-1
        ```
    """

    placement: Placement
    options: SelectionOptions
    cache_breakpoint: bool
    thread_id: str | None

    def read(self, query: str | None) -> dict[str, Any]:
        """The arguments of the memory's ``select`` besides the user."""
        return {"options": self.options, "query": query, "thread_id": self.thread_id}


def refuse_keywords(surface: str, given: Mapping[str, Any], allowed: Iterable[str] = ()) -> None:
    """Refuse ``invoke`` keyword arguments outside ``allowed``: settings come from the
    config only, and a keyword dropped silently would look like a setting that took.

    Raises:
        InvalidInputError: naming the config key to use instead.

    Example:
        ```python
        refuse_keywords("the retriever", {"k": 2}, allowed={"k"})  # None
        refuse_keywords("the injector", {"task": "email"})  # InvalidInputError: profile_task
        ```
    """
    refused = sorted(set(given) - set(allowed))
    if refused:
        keys = {CONFIG_PREFIX + name: "..." for name in refused if name in SETTING_NAMES}
        fix = f"config={{'configurable': {keys}}}" if keys else "config['configurable']"
        raise InvalidInputError(
            f"{surface} takes no keyword argument(s) {refused} to invoke: a call's settings "
            f"come from its config only; pass {fix} (or .with_config(configurable=...))"
        )


@dataclass(frozen=True)
class SurfaceSettings:
    """Whose block a surface reads and how it is chosen, checked when the surface is built,
    and what a call may change of it (:class:`CallLimits`).

    Example:
        ```python
        settings = SurfaceSettings.resolve(memory, max_tokens=300, order="stable")
        settings.options.max_tokens  # 300
        settings.limits.max_tokens  # 4000: a call may ask for up to this
        ```
    """

    user_id: str | None
    placement: Placement
    options: SelectionOptions
    limits: CallLimits = CallLimits()
    cache_breakpoint: bool = False
    """Mark the end of the app's leading system messages as a prompt-cache breakpoint
    (``after_system`` only; see :func:`check_breakpoint`)."""

    @classmethod
    def resolve(
        cls,
        source: ProfileSource,
        *,
        user_id: str | None = None,
        placement: Placement = DEFAULT_PLACEMENT,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        limits: CallLimits | None = None,
        cache_breakpoint: bool = False,
        **changes: Any,
    ) -> SurfaceSettings:
        """Validate a surface's arguments now rather than on its first call.

        Raises:
            InvalidInputError: for a bad setting, ``limits`` that are not
                :class:`CallLimits`, or a ``cache_breakpoint`` without ``after_system``.
            RequestLimitError: for a budget over the ``limits`` given.
        """
        if limits is not None and not isinstance(limits, CallLimits):
            raise InvalidInputError(f"limits must be a CallLimits; got {type(limits).__name__}")
        chosen = (options or source.options).with_changes(
            max_tokens=max_tokens, task=task, **changes
        )
        return cls(
            user_id=None if user_id is None else validate_user_id(user_id),
            placement=check_breakpoint(check_placement(placement), cache_breakpoint),
            options=chosen,
            limits=(limits or CallLimits()).around(chosen),
            cache_breakpoint=cache_breakpoint,
        )

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` unless it is fixed."""
        return [] if self.user_id is not None else [USER_ID_SPEC]

    def settable(self, names: Iterable[str] = SETTING_NAMES) -> list[str]:
        """Of ``names``, those a call may change (in their order): the keys to declare."""
        return [name for name in names if name in self.limits.settable]

    def for_call(
        self, config: RunnableConfig | None, names: Iterable[str] = SETTING_NAMES
    ) -> CallSettings:
        """One call's settings: these, changed by the config's ``profile_<name>`` keys
        (those of ``names``; None values are ignored), and the config's ``thread_id``.

        The one route of per-call settings: every surface calls this with the config of
        the call (see the module docstring).

        Raises:
            InvalidInputError: for a value out of range (named by its config key) or a bad
                ``thread_id``.
            RequestLimitError: for a setting the limits do not let a call change, or a
                budget over their ``max_tokens``.

        Example:
            ```python
            call = settings.for_call({"configurable": {"profile_task": "email",
                                                       "thread_id": "t-1"}})
            call.options.task, call.thread_id  # ("email", "t-1")
            ```
        """
        from_config = settings_from_config(config, names)
        changed = self
        if from_config:
            # refused before any value is looked at: a request learns nothing from a refused key
            self.limits.check_names(from_config, CONFIG_PREFIX)
            try:
                changed = self._changed(from_config)
            except InvalidInputError as error:
                keys = sorted(CONFIG_PREFIX + name for name in from_config)
                raise InvalidInputError(f"config['configurable'] {keys}: {error}") from None
            self.limits.check_budget(changed.options.max_tokens, CONFIG_PREFIX + "max_tokens")
        return CallSettings(
            placement=changed.placement,
            options=changed.options,
            cache_breakpoint=changed.cache_breakpoint,
            thread_id=thread_id_from_config(config),
        )

    def _changed(self, changes: Mapping[str, Any]) -> SurfaceSettings:
        if not changes:
            return self
        options = dict(changes)
        placement = check_placement(options.pop("placement", self.placement))
        return SurfaceSettings(
            user_id=self.user_id,
            placement=check_breakpoint(placement, self.cache_breakpoint),
            options=self.options.with_changes(**options) if options else self.options,
            limits=self.limits,
            cache_breakpoint=self.cache_breakpoint,
        )

    def user_for(self, config: RunnableConfig | None) -> str:
        """The user of one call (see :func:`user_id_from_config`)."""
        return user_id_from_config(self.user_id, config)


async def aselect(source: ProfileSource, user_id: str, **arguments: Any) -> ProfileSelection:
    """``source.select`` from the event loop: the source's own ``aselect`` when it has one
    (:class:`~langchain_outprofile.OutputProfileMemory`'s never blocks the loop with an async
    Chroma client), else ``select`` on a worker thread.

    Example:
        ```python
        selection = await aselect(memory, "ana", options=options, thread_id="t-1")
        ```
    """
    selection: ProfileSelection = await call(source, "select", user_id, **arguments)
    return selection


async def arecord_output(source: ProfileSource, text: str, **arguments: Any) -> ProfileEntry:
    """``source.record_output`` from the event loop, as :func:`aselect` reads."""
    entry: ProfileEntry = await call(source, "record_output", text, **arguments)
    return entry


SERVED_KEY = "__outprofile_served"
"""The ``configurable`` key under which a tracked run hands its :class:`ServedBlocks` to the
surfaces inside it. Private: LangChain and LangGraph copy only keys without a leading
``__`` into trace and checkpoint metadata."""


@dataclass
class ServedBlocks:
    """The entries of the blocks served to the run's user inside one tracked run, in the
    order first served: the run's output is recorded with them, so feedback on it credits
    (or debits) them."""

    user_id: str
    entries: list[str] = field(default_factory=list)

    def note(self, selection: ProfileSelection, count: int | None = None) -> None:
        """Add a selection's entries (its first ``count``, when a surface passed on only
        those), if it is the run's user's: another user's is never credited by this run's
        feedback."""
        self.add(selection.user_id, [e.id for e in selection.entries[:count]])

    def add(self, user_id: str, entry_ids: Iterable[str]) -> None:
        """Add entries a surface served, if they are the run's user's."""
        if user_id != self.user_id:
            return
        held = set(self.entries)
        self.entries += [i for i in dict.fromkeys(entry_ids) if i not in held]


def served_blocks(config: RunnableConfig | None) -> ServedBlocks | None:
    """The :class:`ServedBlocks` of the tracked run around this call, if any."""
    served = (config or {}).get("configurable", {}).get(SERVED_KEY)
    return served if isinstance(served, ServedBlocks) else None


def note_served(config: RunnableConfig | None, selection: ProfileSelection) -> None:
    """Tell the tracked run around this call, if any, which block it was served.

    Example:
        ```python
        selection = memory.select(user, **call.read(query))
        note_served(config, selection)
        ```
    """
    served = served_blocks(config)
    if served is not None:
        served.note(selection)
