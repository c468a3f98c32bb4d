"""Common: what every LangChain surface shares: whose profile, and with which settings.

Every surface reads ``user_id`` from the explicit argument, else from
``config["configurable"]["user_id"]``, else raises :class:`MissingUserIdError`: a shared
profile is never used silently.

The block's settings can change per call: ``config["configurable"]["profile_<name>"]`` sets
the setting ``<name>`` (``profile_max_tokens``, ``profile_task``, ``profile_placement`` or
any other :class:`SelectionOptions` field) for that call; the surfaces declare these keys
in their ``config_specs``. Other configurable keys are ignored, as every LangChain runnable
ignores keys it does not declare. The ``profile_`` prefix keeps them apart from a chat
model's own ``max_tokens`` in the same chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_outprofile.errors import InvalidInputError, MissingUserIdError
from langchain_outprofile.types import (
    ProfileEntry,
    ProfileSelection,
    ProfileSource,
    SelectionOptions,
)
from langchain_outprofile.validation import validate_thread_id, validate_user_id

__all__ = [
    "CONFIG_PREFIX",
    "OPTION_NAMES",
    "SETTING_NAMES",
    "USER_ID_SPEC",
    "Placement",
    "SurfaceSettings",
    "arecord_output",
    "aselect",
    "check_placement",
    "setting_specs",
    "settings_from_config",
    "user_id_from_config",
]

Placement = Literal["merge", "separate"]

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
"""Every setting the injector takes per call (the retriever takes :data:`OPTION_NAMES`)."""

_SETTINGS: dict[str, tuple[Any, str]] = {
    "placement": (
        Literal["merge", "separate"],
        "Where the profile block goes: 'merge' (top of the leading system message) or "
        "'separate' (its own system message first).",
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
    "duplicate_threshold": (float, "Cosine similarity above which an entry is a duplicate."),
    "pool_size": (int, "How many top-scored candidates diversity and packing consider."),
}
assert set(_SETTINGS) == set(SETTING_NAMES), "every SelectionOptions field needs a config spec"


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
    if placement not in ("merge", "separate"):
        raise InvalidInputError(f"placement must be 'merge' or 'separate'; got {placement!r}")
    return placement


@dataclass(frozen=True)
class SurfaceSettings:
    """Whose block a surface reads and how it is chosen, checked when the surface is built.

    Example:
        ```python
        settings = SurfaceSettings.resolve(memory, max_tokens=300, order="stable")
        settings.options.max_tokens  # 300
        ```
    """

    user_id: str | None
    placement: Placement
    options: SelectionOptions

    @classmethod
    def resolve(
        cls,
        source: ProfileSource,
        *,
        user_id: str | None = None,
        placement: Placement = "merge",
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> SurfaceSettings:
        """Validate a surface's arguments now rather than on its first call."""
        chosen = (options or source.options).with_changes(
            max_tokens=max_tokens, task=task, **changes
        )
        return cls(
            user_id=None if user_id is None else validate_user_id(user_id),
            placement=check_placement(placement),
            options=chosen,
        )

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` unless it is fixed."""
        return [] if self.user_id is not None else [USER_ID_SPEC]

    def for_call(
        self,
        config: RunnableConfig | None,
        overrides: Mapping[str, Any] | None = None,
        names: Iterable[str] = SETTING_NAMES,
    ) -> SurfaceSettings:
        """These settings changed for one call: first by the config's ``profile_<name>``
        keys, then by ``overrides`` (the call's keyword arguments); None values are ignored.

        Raises:
            InvalidInputError: for an unknown override or a value out of range; a bad config
                value is named by its config key.

        Example:
            ```python
            settings.for_call({"configurable": {"profile_task": "email"}}).options.task
            # "email"
            ```
        """
        allowed = set(names)
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise InvalidInputError(f"unknown setting(s) {unknown}; a call takes {sorted(allowed)}")
        from_config = settings_from_config(config, allowed)
        if not from_config and not given:
            return self
        try:
            settings = self._changed(from_config)
        except InvalidInputError as error:
            keys = sorted(CONFIG_PREFIX + name for name in from_config)
            raise InvalidInputError(f"config['configurable'] {keys}: {error}") from None
        return settings._changed(given)

    def _changed(self, changes: Mapping[str, Any]) -> SurfaceSettings:
        if not changes:
            return self
        options = dict(changes)
        placement = check_placement(options.pop("placement", self.placement))
        return SurfaceSettings(
            user_id=self.user_id,
            placement=placement,
            options=self.options.with_changes(**options) if options else self.options,
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
    selection: ProfileSelection = await _from_loop(source, "select", user_id, **arguments)
    return selection


async def arecord_output(source: ProfileSource, text: str, **arguments: Any) -> ProfileEntry:
    """``source.record_output`` from the event loop, as :func:`aselect` reads."""
    entry: ProfileEntry = await _from_loop(source, "record_output", text, **arguments)
    return entry


async def _from_loop(source: ProfileSource, method: str, *args: Any, **kwargs: Any) -> Any:
    """The source's ``a``-prefixed twin of ``method`` awaited, else ``method`` on a thread."""
    native = getattr(source, f"a{method}", None)
    if native is not None:
        return await native(*args, **kwargs)
    return await asyncio.to_thread(getattr(source, method), *args, **kwargs)
