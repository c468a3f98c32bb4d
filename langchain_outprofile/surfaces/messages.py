"""Messages: the profile block as chat messages, placed first or after the shared prefix.

What the injector, the middleware and ``block_messages`` share: reading any chat-model
input as messages, putting the block at the top of the leading system message (or as its
own), or after the app's leading system messages, with an optional prompt-cache breakpoint
at the end of those (:func:`with_cache_breakpoint`), and the last human text (read only
when ``relevance_weight`` > 0).
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
from langchain_outprofile.surfaces._common import DEFAULT_PLACEMENT, Placement
from langchain_outprofile.types import ProfileSelection, ProfileSource, SelectionOptions

__all__ = [
    "BLOCK_SEPARATOR",
    "CACHE_CONTROL",
    "block_as_messages",
    "last_human_text",
    "leading_system_count",
    "merge_into",
    "place_block",
    "profile_messages",
    "to_messages",
    "with_cache_breakpoint",
]

BLOCK_SEPARATOR = "\n\n"
"""Between the block and the system prompt it was merged into."""

CACHE_CONTROL: dict[str, str] = {"type": "ephemeral"}
"""Anthropic's cache breakpoint, as ``langchain-anthropic`` passes it on from a content
block: the prompt up to and including that block is cached (tools, then system, then
messages). A fresh dict is put on each block, so no two messages share one."""


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
    messages: Sequence[BaseMessage],
    block: str,
    placement: Placement = DEFAULT_PLACEMENT,
    *,
    cache_breakpoint: bool = False,
) -> list[BaseMessage]:
    """Put ``block`` into ``messages`` where ``placement`` says.

    - ``merge``: at the top of a system message at index 0, else as its own at index 0;
    - ``separate``: its own system message at index 0;
    - ``after_system``: its own system message right after the leading run of system
      messages (the app's static prefix, shared by every user), or at index 0 when there
      is none. With ``cache_breakpoint``, the last non-empty content block of that run
      carries :data:`CACHE_CONTROL`, so a provider that honours it (Anthropic) caches the
      prefix once for all users; nothing is marked when there is no prefix.

    An empty block leaves the messages unchanged (and unmarked). The input is not changed.

    Example:
        ```python
        place_block([SystemMessage("Be brief."), HumanMessage("hi")], "<user_profile>...")
        # [SystemMessage("Be brief."), SystemMessage("<user_profile>..."), HumanMessage("hi")]
        place_block([SystemMessage("Be brief."), HumanMessage("hi")], "<user_profile>...",
                    "merge")
        # [SystemMessage("<user_profile>...\n\nBe brief."), HumanMessage("hi")]
        ```
    """
    out = list(messages)
    if not block:
        return out
    if placement == "after_system":
        prefix = leading_system_count(out)
        head = with_cache_breakpoint(out[:prefix]) if cache_breakpoint else out[:prefix]
        return [*head, SystemMessage(content=block), *out[prefix:]]
    if placement == "merge" and out and isinstance(out[0], SystemMessage):
        return [merge_into(out[0], block), *out[1:]]
    return [SystemMessage(content=block), *out]


def leading_system_count(messages: Sequence[BaseMessage]) -> int:
    """How many messages at the start are system messages (the app's static prefix).

    Example:
        ```python
        leading_system_count([SystemMessage("a"), SystemMessage("b"), HumanMessage("c")])  # 2
        ```
    """
    count = 0
    for message in messages:
        if not isinstance(message, SystemMessage):
            break
        count += 1
    return count


def with_cache_breakpoint(prefix: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``prefix`` with :data:`CACHE_CONTROL` on its last non-empty content block.

    A string content becomes one text block carrying it (the form ``langchain-anthropic``
    reads); a list keeps its blocks, the last non-empty one copied with the marker. Empty
    blocks are skipped since Anthropic refuses a breakpoint on an empty text block; a
    prefix with no text at all comes back unchanged. Only the copy is marked.

    Example:
        ```python
        with_cache_breakpoint([SystemMessage("Be brief.")])[0].content
        # [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
        ```
    """
    out = list(prefix)
    for index in range(len(out) - 1, -1, -1):
        marked = _marked_content(out[index].content)
        if marked is not None:
            out[index] = out[index].model_copy(update={"content": marked})
            return out
    return out


def _marked_content(content: str | list[Any]) -> list[Any] | None:
    """``content`` as blocks with the last non-empty one marked, or None if all are empty."""
    blocks: list[Any] = [content] if isinstance(content, str) else list(content)
    for index in range(len(blocks) - 1, -1, -1):
        block = blocks[index]
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, dict) or not (block.get("text") or block.get("type") != "text"):
            continue
        blocks[index] = {**block, "cache_control": dict(CACHE_CONTROL)}
        return blocks
    return None


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
