"""A fake chat model that records exactly the messages it received (for surface tests)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import Field


def _replies() -> Iterator[AIMessage | str]:
    return (f"reply {n}" for n in itertools.count(1))


class RecordingChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that keeps every call's input messages in ``received``.

    ``bind_tools`` returns the model itself (tools are recorded in ``bound_tools``), so
    ``create_agent`` can use it. Every path (invoke, stream, their async forms, batch) goes
    through ``_generate`` / ``_agenerate``, each recording once.

    Example:
        ```python
        model = RecordingChatModel()
        model.invoke([("system", "Be brief."), ("human", "hi")])
        model.received[0][0].content  # "Be brief."
        ```
    """

    messages: Iterator[AIMessage | str] = Field(default_factory=_replies)
    received: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[Any] = Field(default_factory=list)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        self.bound_tools.extend(tools)
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append([m.model_copy(deep=True) for m in messages])
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop=stop, **kwargs)

    def texts(self, call: int = -1) -> list[str]:
        """The text of each message of one recorded call, in order."""
        return [m.text for m in self.received[call]]

    def block(self, call: int = -1) -> str:
        """The text of the profile block's message in one recorded call: the one message
        that starts with ``<user_profile>``, wherever the placement put it."""
        found = [m.text for m in self.received[call] if m.text.startswith("<user_profile>")]
        assert len(found) == 1, f"{len(found)} messages start with <user_profile> in call {call}"
        return found[0]


class ToolStreamingChatModel(RecordingChatModel):
    """RecordingChatModel whose stream keeps tool calls (GenericFakeChatModel's drops them,
    and fails on a message with no text), so a streamed agent can run a tool loop.

    A reply streams as its whitespace-split tokens, then one chunk with its tool calls.

    Example:
        ```python
        call = AIMessage("", tool_calls=[{"name": "weather", "args": {}, "id": "c1"}])
        model = ToolStreamingChatModel(messages=iter([call, AIMessage("Sunny.")]))
        ```
    """

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop=stop, **kwargs).generations[0].message
        assert isinstance(message, AIMessage)
        chunks = [
            AIMessageChunk(content=token, id=message.id)
            for token in re.split(r"(\s)", message.text)
            if token
        ]
        if message.tool_calls:
            calls = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(message.tool_calls)
            ]
            chunks.append(AIMessageChunk(content="", id=message.id, tool_call_chunks=calls))
        for chunk in chunks:
            generation = ChatGenerationChunk(message=chunk)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=generation)
            yield generation
