"""Injector: the profile block as the first thing a chat model reads (or right after the
app's system prompt), in any LCEL chain.

``ProfileInjector`` sits between a prompt and a model (``prompt | injector | model``), so
the model keeps ``bind_tools`` and ``with_structured_output``. Its settings (budget, task,
placement, any selection option) can change per call, three ways, later ones winning:

- ``injector.configurable_fields(max_tokens=ConfigurableField(id="budget"))``, then
  ``config={"configurable": {"budget": 200}}``: LangChain builds the injector anew with
  that field for the call (any constructor field can be made configurable so);
- ``config={"configurable": {"profile_max_tokens": 200}}``: the ``profile_<name>`` keys
  the injector declares in ``config_specs`` (see :mod:`~langchain_outprofile.surfaces._common`);
- keyword arguments of ``invoke`` (so ``injector.bind(task="email")`` works too).

A request may change only what ``limits`` (:class:`~langchain_outprofile.CallLimits`) allows:
by default a budget up to 4,000 tokens (or the injector's own, when larger), the task, the
placement, the order, the fields and ``fill_from_profile``; anything else, or more, raises
:class:`~langchain_outprofile.RequestLimitError` before anything is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableSerializable, ensure_config
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import ConfigDict, PrivateAttr, SkipValidation

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.surfaces._common import (
    OPTION_NAMES,
    CallLimits,
    Placement,
    SurfaceSettings,
    aselect,
    setting_specs,
    thread_id_from_config,
)
from langchain_outprofile.surfaces.messages import last_human_text, place_block, to_messages
from langchain_outprofile.types import (
    Fields,
    Order,
    ProfileSelection,
    ProfileSource,
    SelectionOptions,
)

__all__ = ["ProfileInjector"]


class ProfileInjector(RunnableSerializable[LanguageModelInput, list[BaseMessage]]):
    """A runnable between prompt and model that puts the user's profile block first.

    Args:
        memory: where the profile lives (any :class:`ProfileSource`).
        user_id: a fixed user; default: ``config["configurable"]["user_id"]`` per call.
        placement: ``"merge"`` into the leading system message, ``"separate"`` (its own
            system message first) or ``"after_system"`` (its own system message after the
            prompt's leading system messages, which stay a prefix shared by all users).
        cache_breakpoint: with ``"after_system"``, mark the end of those system messages
            with Anthropic's ``cache_control`` (see :func:`~.messages.place_block`).
        options: selection options (default: the memory's).
        max_tokens: budget of the block.
        task: prefer entries of this task.
        **changes: any other :class:`SelectionOptions` field, e.g. ``order="stable"``.

    Every setting but ``memory`` and ``user_id`` can also change per call: through
    ``configurable_fields``, through the ``profile_<name>`` keys of
    ``config["configurable"]`` declared in ``config_specs``, or as keyword arguments of
    ``invoke`` (and so of ``bind``). A value of None means "unchanged": to turn recency
    decay off, pass ``options=SelectionOptions(half_life_days=None)``.

    Example:
        ```python
        chain = prompt | memory.injector(max_tokens=300) | model
        chain.invoke({"question": "..."}, config={"configurable": {"user_id": "ana"}})
        chain.invoke(
            {"question": "..."},
            config={"configurable": {"user_id": "ana", "profile_max_tokens": 120,
                                     "profile_task": "email"}},
        )
        budget = memory.injector().configurable_fields(
            max_tokens=ConfigurableField(id="budget", name="Profile budget")
        )
        (prompt | budget | model).with_config(configurable={"budget": 200})
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: SkipValidation[ProfileSource]
    """Where the profile lives."""
    user_id: str | None = None
    """A fixed user; default: ``config["configurable"]["user_id"]`` per call."""
    placement: Placement = "merge"
    """``"merge"`` into the leading system message, ``"separate"`` or ``"after_system"``."""
    cache_breakpoint: bool = False
    """With ``"after_system"``: a ``cache_control`` breakpoint at the end of the prompt's
    leading system messages (for ChatAnthropic; off by default, see the README)."""
    options: SkipValidation[SelectionOptions | None] = None
    """Selection options the other fields change (default: the memory's)."""
    max_tokens: int | None = None
    """Budget of the whole block."""
    task: str | None = None
    """Prefer entries of this task."""
    max_entry_tokens: int | None = None
    """Longer entries are cut at a sentence boundary."""
    half_life_days: float | None = None
    """Recency half-life (None: the options' value)."""
    order: Order | None = None
    """``"strongest"`` first, or ``"stable"``."""
    fields: Fields | None = None
    """``"output"``, ``"input"`` or ``"full"``."""
    fill_from_profile: bool | None = None
    """Fill from other tasks when the task scope cannot fill the budget."""
    relevance_weight: float | None = None
    """0 ignores the query; up to 1 blends it in."""
    typicality_weight: float | None = None
    """Up to 1 blends in closeness to the user's style centroid."""
    mmr_lambda: float | None = None
    """1 ranks by score alone; lower values favour stylistic diversity."""
    duplicate_threshold: float | None = None
    """Style similarity from which an entry sharing its wording is a near-duplicate."""
    pool_size: int | None = None
    """How many top-scored candidates diversity and packing consider."""
    limits: SkipValidation[CallLimits | None] = None
    """What a call may change (default :class:`CallLimits`: the budget up to 4,000 tokens,
    task, placement, order, fields, fill_from_profile). Set when the injector is built and
    kept when ``configurable_fields`` builds it anew for a call, so a budget from a request
    is bounded on that path too."""

    _settings: SurfaceSettings = PrivateAttr()

    def __init__(self, memory: ProfileSource, **data: Any) -> None:
        """Build the injector; bad settings raise :class:`InvalidInputError` here."""
        unknown = sorted(set(data) - set(type(self).model_fields))
        if unknown:
            raise InvalidInputError(
                f"unknown injector setting(s) {unknown}; it takes memory, user_id, placement, "
                f"options, limits and any SelectionOptions field {list(OPTION_NAMES)}"
            )
        changes = {name: data.get(name) for name in OPTION_NAMES}
        settings = SurfaceSettings.resolve(
            memory,
            user_id=data.get("user_id"),
            placement=data.get("placement", "merge"),
            options=data.get("options"),
            limits=data.get("limits"),
            cache_breakpoint=data.get("cache_breakpoint", False),
            **changes,
        )
        # the resolved limits become the field, so a copy LangChain builds for a call (from
        # this object's fields) keeps the bound this one was given, not a bound its new
        # budget would widen
        super().__init__(**{**data, "memory": memory, "limits": settings.limits})
        self._settings = settings

    @property
    def settings(self) -> SurfaceSettings:
        """The user, placement and selection options every call starts from."""
        return self._settings

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` (unless fixed) and the ``profile_<name>`` key of every setting
        a call may change (see ``limits``)."""
        return [*self._settings.config_specs, *setting_specs(self._settings.settable())]

    def settings_for(self, config: RunnableConfig | None, **overrides: Any) -> SurfaceSettings:
        """The settings of one call: the config's ``profile_<name>`` keys, then ``overrides``.

        Example:
            ```python
            injector.settings_for({"configurable": {"profile_max_tokens": 120}}).options
            ```
        """
        return self._settings.for_call(config, overrides)

    def select(
        self, messages: Sequence[BaseMessage], config: RunnableConfig, **overrides: Any
    ) -> ProfileSelection:
        """The selection for this call's user (reads the store; no model call)."""
        return self._select(messages, config, self.settings_for(config, **overrides))

    def _select(
        self, messages: Sequence[BaseMessage], config: RunnableConfig, settings: SurfaceSettings
    ) -> ProfileSelection:
        return self.memory.select(
            settings.user_for(config), **self._read_arguments(messages, config, settings)
        )

    def _read_arguments(
        self, messages: Sequence[BaseMessage], config: RunnableConfig, settings: SurfaceSettings
    ) -> dict[str, Any]:
        """What a call's read asks of the memory besides the user."""
        return {
            "options": settings.options,
            "query": last_human_text(messages),
            "thread_id": thread_id_from_config(config),
        }

    def _inject(
        self,
        value: LanguageModelInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **overrides: Any,
    ) -> list[BaseMessage]:
        settings = self.settings_for(config, **overrides)
        messages = to_messages(value)
        selection = self._select(messages, config, settings)
        return place_block(
            messages,
            selection.text,
            settings.placement,
            cache_breakpoint=settings.cache_breakpoint,
        )

    async def _ainject(
        self,
        value: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **overrides: Any,
    ) -> list[BaseMessage]:
        settings = self.settings_for(config, **overrides)
        messages = to_messages(value)
        user, arguments = (
            settings.user_for(config),
            self._read_arguments(messages, config, settings),
        )
        selection = await aselect(self.memory, user, **arguments)
        return place_block(
            messages,
            selection.text,
            settings.placement,
            cache_breakpoint=settings.cache_breakpoint,
        )

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """The input as messages, with the profile block first.

        ``kwargs`` are settings for this call (``max_tokens``, ``task``, ``placement`` or
        any :class:`SelectionOptions` field); an unknown one raises
        :class:`InvalidInputError`.
        """
        return self._call_with_config(
            self._inject, input, ensure_config(config), run_type="prompt", **kwargs
        )

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Async :meth:`invoke`: the memory's ``aselect`` (with an async Chroma client the
        read never blocks the event loop; with a synchronous one it runs on a worker thread)."""
        return await self._acall_with_config(
            self._ainject, input, ensure_config(config), run_type="prompt", **kwargs
        )
