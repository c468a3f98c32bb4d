"""Injector: the profile block as the first thing a chat model reads, in any LCEL chain.

``ProfileInjector`` sits between a prompt and a model (``prompt | injector | model``), so
the model keeps ``bind_tools`` and ``with_structured_output``.
"""

from __future__ import annotations

import asyncio
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

from langchain_outprofile.surfaces._common import Placement, SurfaceSettings
from langchain_outprofile.surfaces.messages import last_human_text, place_block, to_messages
from langchain_outprofile.types import ProfileSelection, ProfileSource, SelectionOptions

__all__ = ["ProfileInjector"]


class ProfileInjector(Runnable[LanguageModelInput, list[BaseMessage]]):
    """A runnable between prompt and model that puts the user's profile block first.

    Args:
        memory: where the profile lives (any :class:`ProfileSource`).
        user_id: a fixed user; default: ``config["configurable"]["user_id"]`` per call.
        placement: ``"merge"`` into the leading system message, or ``"separate"``.
        options: selection options (default: the memory's).
        max_tokens: budget of the block.
        task: prefer entries of this task.
        **changes: any other :class:`SelectionOptions` field, e.g. ``order="stable"``.

    Example:
        ```python
        chain = prompt | memory.injector() | model
        chain.invoke({"question": "..."}, config={"configurable": {"user_id": "ana"}})
        ```
    """

    def __init__(
        self,
        memory: ProfileSource,
        *,
        user_id: str | None = None,
        placement: Placement = "merge",
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> None:
        self.memory = memory
        self.settings = SurfaceSettings.resolve(
            memory,
            user_id=user_id,
            placement=placement,
            options=options,
            max_tokens=max_tokens,
            task=task,
            **changes,
        )
        self.name = "ProfileInjector"

    @property
    def user_id(self) -> str | None:
        """The fixed user, or None when each call's config names it."""
        return self.settings.user_id

    @property
    def options(self) -> SelectionOptions:
        """The selection options every call uses."""
        return self.settings.options

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` (unless fixed at construction)."""
        return self.settings.config_specs

    def select(self, messages: Sequence[BaseMessage], config: RunnableConfig) -> ProfileSelection:
        """The selection for this call's user (reads the store; no model call)."""
        user = self.settings.user_for(config)
        return self.memory.select(user, options=self.options, query=last_human_text(messages))

    def _inject(
        self,
        value: LanguageModelInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        messages = to_messages(value)
        return place_block(messages, self.select(messages, config).text, self.settings.placement)

    async def _ainject(
        self,
        value: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        messages = to_messages(value)
        selection = await asyncio.to_thread(self.select, messages, config)
        return place_block(messages, selection.text, self.settings.placement)

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """The input as messages, with the profile block first."""
        return self._call_with_config(self._inject, input, ensure_config(config), run_type="prompt")

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Async :meth:`invoke`; the store read runs in a worker thread."""
        return await self._acall_with_config(
            self._ainject, input, ensure_config(config), run_type="prompt"
        )
