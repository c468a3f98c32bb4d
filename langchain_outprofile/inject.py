"""Inject: the profile block as the first thing a chat model reads, in any LCEL chain.

``ProfileInjector`` sits between a prompt and a model (``prompt | injector | model``), so
the model keeps ``bind_tools`` and ``with_structured_output``. Every surface reads
``user_id`` from the explicit argument, else
from ``config["configurable"]["user_id"]``, else raise :class:`MissingUserIdError`; a
shared profile is never used silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.records import InvalidInputError, validate_user_id
from langchain_outprofile.render import ProfileSelection
from langchain_outprofile.selection import SelectionOptions

__all__ = [
    "USER_ID_SPEC",
    "MissingUserIdError",
    "Placement",
    "ProfileInjector",
    "place_block",
    "profile_messages",
    "resolve_options",
    "user_id_from_config",
]

Placement = Literal["merge", "separate"]
BLOCK_SEPARATOR = "\n\n"
"""Between the block and the system prompt it was merged into."""

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


class MissingUserIdError(InvalidInputError):
    """No ``user_id`` was given, so no profile can be chosen (none is shared by default)."""


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


def resolve_options(
    memory: OutputProfileMemory,
    options: SelectionOptions | None = None,
    *,
    max_tokens: int | None = None,
    task: str | None = None,
    **changes: Any,
) -> SelectionOptions:
    """The selection options a surface will use, validated now rather than on first call.

    Example:
        ```python
        resolve_options(memory, max_tokens=300, order="stable").max_tokens  # 300
        ```
    """
    try:
        return (options or memory.options).with_changes(max_tokens=max_tokens, task=task, **changes)
    except TypeError as error:
        raise InvalidInputError(f"unknown selection option: {error}") from None


def check_placement(placement: str) -> Placement:
    """Return a valid placement or raise :class:`InvalidInputError`.

    Example:
        ```python
        check_placement("separate")  # "separate"
        ```
    """
    if placement not in ("merge", "separate"):
        raise InvalidInputError(f"placement must be 'merge' or 'separate'; got {placement!r}")
    return placement  # type: ignore[return-value]


def to_messages(value: LanguageModelInput) -> list[BaseMessage]:
    """Everything a chat model accepts (PromptValue, str, message-likes) as a message list.

    Example:
        ```python
        to_messages([("system", "Be brief."), ("human", "hi")])  # [SystemMessage, HumanMessage]
        ```
    """
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, Sequence):
        try:
            return convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError) as error:
            raise InvalidInputError(f"cannot read the input as chat messages: {error}") from None
    raise InvalidInputError(
        "the injector takes what a chat model takes: a PromptValue, a string, or a list of "
        f"messages / (role, text) tuples / dicts; got {type(value).__name__}"
    )


def merge_into(message: SystemMessage, block: str) -> SystemMessage:
    """A copy of ``message`` whose content starts with ``block``; the rest stays intact.

    Example:
        ```python
        merge_into(SystemMessage("Be brief."), "BLOCK").content  # "BLOCK\n\nBe brief."
        ```
    """
    content = message.content
    if isinstance(content, str):
        merged: Any = f"{block}{BLOCK_SEPARATOR}{content}" if content else block
    else:
        merged = [{"type": "text", "text": f"{block}{BLOCK_SEPARATOR}"}, *content]
    return message.model_copy(update={"content": merged})


def place_block(
    messages: Sequence[BaseMessage], block: str, placement: Placement = "merge"
) -> list[BaseMessage]:
    """Put ``block`` first: merged into a leading system message, or as its own at index 0.

    With ``merge``, a system message at index 0 gets the block at its top; otherwise a new
    system message is inserted at index 0 (so the block always leads). An empty block
    leaves the messages unchanged.

    Example:
        ```python
        place_block([SystemMessage("Be brief."), HumanMessage("hi")], "<user_profile>...")
        ```
    """
    out = list(messages)
    if not block:
        return out
    if placement == "merge" and out and isinstance(out[0], SystemMessage):
        return [merge_into(out[0], block), *out[1:]]
    return [SystemMessage(content=block), *out]


def last_human_text(messages: Sequence[BaseMessage]) -> str | None:
    """Text of the latest human message (the query, read only when relevance_weight > 0).

    Example:
        ```python
        last_human_text([HumanMessage("a"), AIMessage("b"), HumanMessage("c")])  # "c"
        ```
    """
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text or None
    return None


def profile_messages(
    memory: OutputProfileMemory,
    user_id: str,
    *,
    options: SelectionOptions | None = None,
    max_tokens: int | None = None,
    task: str | None = None,
    **changes: Any,
) -> list[BaseMessage]:
    """The block as messages for a ``MessagesPlaceholder``: one SystemMessage, or ``[]``.

    Example:
        ```python
        prompt = ChatPromptTemplate.from_messages([
            MessagesPlaceholder("profile", optional=True),
            ("system", "You write emails."),
            ("human", "{question}"),
        ])
        prompt.invoke({"profile": memory.block_messages("ana"), "question": "..."})
        ```
    """
    chosen = resolve_options(memory, options, max_tokens=max_tokens, task=task, **changes)
    selection = memory.select(user_id, options=chosen)
    return [SystemMessage(content=selection.text)] if selection.text else []


class ProfileInjector(Runnable[LanguageModelInput, list[BaseMessage]]):
    """A runnable between prompt and model that puts the user's profile block first.

    Args:
        memory: where the profile lives.
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
        memory: OutputProfileMemory,
        *,
        user_id: str | None = None,
        placement: Placement = "merge",
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> None:
        self.memory = memory
        self.user_id = None if user_id is None else validate_user_id(user_id)
        self.placement = check_placement(placement)
        self.options = resolve_options(memory, options, max_tokens=max_tokens, task=task, **changes)
        self.name = "ProfileInjector"

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` (unless fixed at construction)."""
        return [] if self.user_id is not None else [USER_ID_SPEC]

    def select(self, messages: Sequence[BaseMessage], config: RunnableConfig) -> ProfileSelection:
        """The selection for this call's user (reads the store; no model call)."""
        user = user_id_from_config(self.user_id, config)
        return self.memory.select(user, options=self.options, query=last_human_text(messages))

    def _inject(
        self,
        value: LanguageModelInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        messages = to_messages(value)
        return place_block(messages, self.select(messages, config).text, self.placement)

    async def _ainject(
        self,
        value: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> list[BaseMessage]:
        messages = to_messages(value)
        selection = await asyncio.to_thread(self.select, messages, config)
        return place_block(messages, selection.text, self.placement)

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
