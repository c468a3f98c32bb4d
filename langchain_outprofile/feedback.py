"""Feedback: record a chain's outputs by run id, and turn later feedback into signals.

``track(memory, chain)`` wraps any runnable: each run's output text is stored in Chroma as
a ``pending`` entry under its run id (``config["run_id"]``, else a new UUID that is also
the run id of the chain's trace), so feedback may arrive later, from another process.
``feedback(memory, run_id, ...)`` makes it endorsed / rejected / rating / accepted, or
stores the user's edited text instead. Pending entries expire after ``pending_ttl_s``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from langchain_outprofile.inject import USER_ID_SPEC, user_id_from_config
from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.records import (
    InvalidInputError,
    OutprofileError,
    ProfileEntry,
    Signal,
    validate_user_id,
)

__all__ = [
    "TrackedRunnable",
    "UnknownRunError",
    "expire_pending",
    "feedback",
    "output_text",
    "track",
]

_FEEDBACK_SIGNALS = {Signal.ENDORSED, Signal.REJECTED, Signal.RATING, Signal.ACCEPTED}
_OUTPUT_KEYS = ("output", "answer", "text", "content", "result")
_INPUT_KEYS = ("input", "question", "query", "request", "prompt")


class UnknownRunError(OutprofileError, LookupError):
    """No tracked output is stored under this run id (never tracked, expired or deleted)."""


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


def expire_pending(memory: OutputProfileMemory, user_id: str) -> int:
    """Delete the user's pending entries older than ``memory.pending_ttl_s``; return how many.

    Example:
        ```python
        expire_pending(memory, "ana")  # 0 when nothing is stale
        ```
    """
    user = validate_user_id(user_id)
    stale = memory.store.pending_older_than(user, memory.clock() - memory.pending_ttl_s)
    if not stale:
        return 0
    removed = memory.store.delete(user, stale)
    memory._invalidate({user})
    return removed


def record(
    memory: OutputProfileMemory,
    output: Any,
    *,
    user_id: str,
    run_id: str,
    source_input: Any = None,
    task: str | None = None,
) -> ProfileEntry:
    """Store one run's output as a ``pending`` entry under ``run_id`` (expiring stale ones).

    Example:
        ```python
        record(memory, AIMessage("Hi Ana,"), user_id="ana", run_id=str(uuid.uuid4()))
        ```
    """
    text = output_text(output)
    expire_pending(memory, user_id)
    source = input_text(source_input)[: memory.max_text_chars] if source_input is not None else None
    return memory.add(
        text,
        user_id=user_id,
        signal=Signal.PENDING,
        run_id=run_id,
        source_input=source,
        task=task,
    )


def feedback(
    memory: OutputProfileMemory,
    run_id: str | uuid.UUID,
    signal: Signal | str | None = None,
    *,
    rating: float | None = None,
    edited: str | None = None,
    user_id: str | None = None,
) -> ProfileEntry:
    """Turn a tracked run's pending output into a preference signal.

    Args:
        memory: where the run was tracked (any process with the same store works).
        run_id: the run id the tracked chain ran under.
        signal: ``endorsed``, ``rejected``, ``accepted``, ``rating`` or ``edited``.
        rating: 1-5 (implies ``rating``).
        edited: the user's corrected text (implies ``edited``): it is stored as an
            ``edited`` entry with the run's input, and the pending output is removed.
        user_id: when given, the run must belong to this user.

    Returns:
        The entry as stored.

    Raises:
        UnknownRunError: no tracked output under ``run_id`` (for this user), or it expired.
        InvalidInputError: the feedback arguments do not make sense together.

    Example:
        ```python
        memory.feedback(run_id, "endorsed")
        memory.feedback(run_id, rating=4)
        memory.feedback(run_id, edited="Hi Ana, short version: yes.")
        ```
    """
    chosen = _feedback_signal(signal, rating, edited)
    run = _run_id(run_id)
    entry = memory.store.find_run(run, None if user_id is None else validate_user_id(user_id))
    if entry is None:
        raise UnknownRunError(
            f"no tracked output under run id {run!r}"
            + (f" for user {user_id!r}" if user_id is not None else "")
            + "; track the chain with memory.track(chain) and pass the same run id"
        )
    stale = entry.pending and entry.updated_at < memory.clock() - memory.pending_ttl_s
    expire_pending(memory, entry.user_id)
    if stale:
        raise UnknownRunError(
            f"the output of run {run!r} expired after pending_ttl_s={memory.pending_ttl_s:g}s "
            "without feedback and was deleted"
        )
    common: dict[str, Any] = {"user_id": entry.user_id, "run_id": run, "task": entry.task or None}
    if edited is not None:
        stored = memory.add(
            edited, signal=Signal.EDITED, source_input=entry.source_input or None, **common
        )
        if entry.pending and entry.id != stored.id:
            memory.delete(entry.id, user_id=entry.user_id)
        return stored
    return memory.add(entry.text, signal=chosen, rating=rating, **common)


def _run_id(run_id: object) -> str:
    if isinstance(run_id, uuid.UUID):
        return str(run_id)
    if isinstance(run_id, str) and run_id.strip():
        return run_id
    raise InvalidInputError(f"run_id must be a UUID or a non-empty string; got {run_id!r}")


def _feedback_signal(
    signal: Signal | str | None, rating: float | None, edited: str | None
) -> Signal:
    parsed = None if signal is None else Signal.parse(signal)
    if edited is not None:
        if parsed not in (None, Signal.EDITED) or rating is not None:
            raise InvalidInputError(
                "edited= stands alone: do not combine it with a signal or rating"
            )
        return Signal.EDITED
    if parsed is Signal.EDITED:
        raise InvalidInputError("signal='edited' needs edited='the corrected text'")
    if rating is not None:
        if parsed not in (None, Signal.RATING):
            raise InvalidInputError(f"rating= goes with signal='rating'; got {parsed.value!r}")
        return Signal.RATING
    if parsed is None:
        raise InvalidInputError(
            "give feedback: a signal ('endorsed', 'rejected', 'accepted'), rating=1..5, "
            "or edited='the corrected text'"
        )
    if parsed not in _FEEDBACK_SIGNALS or parsed is Signal.RATING:
        raise InvalidInputError(
            f"feedback signal must be endorsed, rejected or accepted (or rating=, edited=); "
            f"got {parsed.value!r}"
        )
    return parsed


class TrackedRunnable(Runnable[Any, Any]):
    """A chain whose every output is recorded as ``pending`` under its run id.

    ``user_id`` comes from ``config["configurable"]["user_id"]`` (required); the run id from
    ``config["run_id"]``, else a new UUID that also becomes the chain's trace run id.

    Example:
        ```python
        tracked = memory.track(chain)
        tracked.invoke(inputs, config={"configurable": {"user_id": "ana"}, "run_id": rid})
        memory.feedback(rid, "endorsed")
        ```
    """

    def __init__(
        self, memory: OutputProfileMemory, chain: Runnable[Any, Any], *, task: str | None = None
    ) -> None:
        if not isinstance(chain, Runnable):
            raise InvalidInputError(f"track() takes a Runnable; got {type(chain).__name__}")
        self.memory = memory
        self.chain = chain
        self.task = task
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
    def config_specs(self) -> list[Any]:
        """The chain's specs plus the required ``user_id``."""
        specs = [s for s in self.chain.config_specs if s.id != USER_ID_SPEC.id]
        return [*specs, USER_ID_SPEC]

    def _prepare(self, config: RunnableConfig | None) -> tuple[str, str, RunnableConfig]:
        config = ensure_config(config)
        user = user_id_from_config(None, config)
        run = config.get("run_id") or uuid.uuid4()
        inner: RunnableConfig = {**config, "run_id": run if isinstance(run, uuid.UUID) else None}
        return user, _run_id(run), inner

    def _record(self, output: Any, user: str, run: str, value: Any) -> None:
        record(self.memory, output, user_id=user, run_id=run, source_input=value, task=self.task)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run the chain and store its output as pending under the run id."""
        user, run, inner = self._prepare(config)
        output = self.chain.invoke(input, inner, **kwargs)
        self._record(output, user, run, input)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async :meth:`invoke`; the store write runs in a worker thread."""
        user, run, inner = self._prepare(config)
        output = await self.chain.ainvoke(input, inner, **kwargs)
        await asyncio.to_thread(self._record, output, user, run, input)
        return output

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream the chain; the whole output is stored once the stream ends."""
        user, run, inner = self._prepare(config)
        total: Any = None
        for chunk in self.chain.stream(input, inner, **kwargs):
            total = chunk if total is None else total + chunk
            yield chunk
        self._record(total, user, run, input)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        user, run, inner = self._prepare(config)
        total: Any = None
        async for chunk in self.chain.astream(input, inner, **kwargs):
            total = chunk if total is None else total + chunk
            yield chunk
        await asyncio.to_thread(self._record, total, user, run, input)


def track(
    memory: OutputProfileMemory, chain: Runnable[Any, Any], *, task: str | None = None
) -> TrackedRunnable:
    """Wrap ``chain`` so each run's output is stored as ``pending`` for later feedback.

    Example:
        ```python
        tracked = track(memory, prompt | memory.injector() | model)
        ```
    """
    return TrackedRunnable(memory, chain, task=task)
