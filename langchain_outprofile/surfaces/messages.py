"""Messages: the profile block as chat messages, placed first.

What the injector, the middleware and ``block_messages`` share: reading any chat-model
input as messages, putting the block at the top of the leading system message (or as its
own), and the last human text (read only when ``relevance_weight`` > 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.surfaces._common import Placement
from langchain_outprofile.types import ProfileSelection, ProfileSource, SelectionOptions

__all__ = [
    "BLOCK_SEPARATOR",
    "block_as_messages",
    "last_human_text",
    "merge_into",
    "place_block",
    "profile_messages",
    "to_messages",
]

BLOCK_SEPARATOR = "\n\n"
"""Between the block and the system prompt it was merged into."""


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
    source: ProfileSource,
    user_id: str,
    *,
    options: SelectionOptions | None = None,
    max_tokens: int | None = None,
    task: str | None = None,
    thread_id: str | None = None,
) -> list[BaseMessage]:
    """The block as messages for a ``MessagesPlaceholder``: one SystemMessage, or ``[]``.
    With ``thread_id``, the block pinned for that thread (see ``memory/pins.py``).

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
    selection = source.select(
        user_id, options=options, max_tokens=max_tokens, task=task, thread_id=thread_id
    )
    return block_as_messages(selection)


def block_as_messages(selection: ProfileSelection) -> list[BaseMessage]:
    """A selection's block as ``[SystemMessage]``, or ``[]`` when it is empty.

    Example:
        ```python
        block_as_messages(memory.select("ana"))  # [SystemMessage("<user_profile>...")]
        ```
    """
    return [SystemMessage(content=selection.text)] if selection.text else []
