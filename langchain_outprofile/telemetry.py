"""Telemetry: OpenTelemetry spans for memory operations, per the GenAI memory conventions.

One span per memory operation (``search_memory``, ``upsert_memory``, ``update_memory``,
``delete_memory``), named after the operation, of kind ``CLIENT``, carrying the store
(``gen_ai.memory.store.id``: the Chroma collection), the user (``enduser.id``), the record id
when the operation is about one record, and how many records it returned or touched. An
entry's text (``gen_ai.memory.records``) and a read's query (``gen_ai.memory.query.text``)
are recorded only when the caller opts in, as the conventions require: ``capture_content=
True``, or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` set to ``true``,
``span_only`` or ``span_and_event`` (the values OpenTelemetry's GenAI instrumentations read).

Only ``opentelemetry-api`` is needed: without an SDK no span is started at all, and nothing
about a result is computed for a span that does not record (sampled out).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Literal

from opentelemetry import trace

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.types import ProfileEntry, signal_for

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "ENDUSER_ID",
    "ERROR_TYPE",
    "GEN_AI_MEMORY_QUERY_TEXT",
    "GEN_AI_MEMORY_RECORDS",
    "GEN_AI_MEMORY_RECORD_COUNT",
    "GEN_AI_MEMORY_RECORD_ID",
    "GEN_AI_MEMORY_STORE_ID",
    "GEN_AI_OPERATION_NAME",
    "OUTPROFILE_RUN_ID",
    "OUTPROFILE_SIGNAL",
    "MemoryTelemetry",
    "Operation",
    "OperationSpan",
    "capture_content_from_env",
    "signal_name",
]

# The conventions' names, spelled here: ``opentelemetry-semantic-conventions`` (0.66b2) has
# no ``gen_ai.memory.*`` constants yet, and the package depends on the API alone.
# Source: open-telemetry/semantic-conventions-genai, docs/gen-ai/gen-ai-spans.md, "Memory".
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_MEMORY_STORE_ID: Final = "gen_ai.memory.store.id"
GEN_AI_MEMORY_RECORD_ID: Final = "gen_ai.memory.record.id"
GEN_AI_MEMORY_RECORD_COUNT: Final = "gen_ai.memory.record.count"
GEN_AI_MEMORY_QUERY_TEXT: Final = "gen_ai.memory.query.text"  # opt-in: content
GEN_AI_MEMORY_RECORDS: Final = "gen_ai.memory.records"  # opt-in: content
ERROR_TYPE: Final = "error.type"
ENDUSER_ID: Final = "enduser.id"
# Ids of this package the conventions have no name for (a tracked run; the signal given).
OUTPROFILE_RUN_ID: Final = "outprofile.run.id"
OUTPROFILE_SIGNAL: Final = "outprofile.signal"

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_VALUES = frozenset({"true", "1", "yes", "span_only", "span_and_event"})

Operation = Literal["search_memory", "upsert_memory", "update_memory", "delete_memory"]
"""The conventions' memory operations this package performs: a read searches; ``add`` and
a tracked run's output create or merge records without the caller choosing which (upsert);
feedback modifies the known record of a run (update); delete, forget and expiry delete."""

_SCOPE = "langchain_outprofile"


def _package_version() -> str | None:
    try:
        return version("langchain-outprofile")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return None


def capture_content_from_env() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in to content.

    Example:
        ```python
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
        capture_content_from_env()  # True
        ```
    """
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_VALUES


def signal_name(signal: object, rating: object = None) -> str | None:
    """The name of the signal an add means (as :func:`signal_for` reads its arguments), or
    None when they mean none: a span records a signal's name, never arbitrary caller text,
    and a refused argument is refused inside the span, not here.

    Example:
        ```python
        signal_name("Endorsed"), signal_name(None, 5), signal_name("yes!")
        # ('endorsed', 'rating', None)
        ```
    """
    try:
        return signal_for(signal, rating).value  # type: ignore[arg-type]
    except InvalidInputError:
        return None


@dataclass
class OperationSpan:
    """The span of one running operation: what the operation learned, added as it ends.

    Every method is a no-op on a span that does not record (no SDK, or sampled out), so a
    result is never turned into attributes for nothing.
    """

    span: trace.Span
    capture_content: bool

    def counted(self, count: int) -> None:
        """Records the operation returned (a read) or touched (a write or delete)."""
        if self.span.is_recording():
            self.span.set_attribute(GEN_AI_MEMORY_RECORD_COUNT, count)

    def about(self, *, record_id: str | None = None, user_id: str | None = None) -> None:
        """The one record, and the one user, the operation turned out to be about."""
        if not self.span.is_recording():
            return
        if record_id is not None:
            self.span.set_attribute(GEN_AI_MEMORY_RECORD_ID, record_id)
        if user_id is not None:
            self.span.set_attribute(ENDUSER_ID, user_id)

    def entry(self, entry: ProfileEntry) -> None:
        """The one entry returned or stored."""
        self.entries([entry])

    def entries(self, entries: Sequence[ProfileEntry]) -> None:
        """The entries a write stored: their count; the id and the user when there is one
        of each; their texts only with content capture on."""
        self._described(entries, one_record=len(entries) == 1)

    def returned(self, entries: Sequence[ProfileEntry]) -> None:
        """The entries a read returned: their count (a search is about no one record, even
        when it finds one); their texts only with content capture on."""
        self._described(entries, one_record=False)

    def _described(self, entries: Sequence[ProfileEntry], *, one_record: bool) -> None:
        if not self.span.is_recording():
            return
        self.counted(len(entries))
        users = {e.user_id for e in entries}
        self.about(
            record_id=entries[0].id if one_record else None,
            user_id=next(iter(users)) if len(users) == 1 else None,
        )
        if self.capture_content:
            self.span.set_attribute(GEN_AI_MEMORY_RECORDS, _records_json(entries))


def _records_json(entries: Sequence[ProfileEntry]) -> str:
    """``gen_ai.memory.records`` as the conventions' JSON schema has it (an array of
    ``{content, id, metadata}``), as a JSON string: the conventions allow one on spans, and
    every SDK and exporter keeps a string (older ones drop structured values)."""
    return json.dumps(
        [
            {
                "content": e.text,
                "id": e.id,
                "metadata": {"signal": e.signal.value, "strength": e.strength, "task": e.task},
            }
            for e in entries
        ],
        ensure_ascii=False,
    )


class MemoryTelemetry:
    """Starts the spans of one memory's operations.

    Args:
        store_id: ``gen_ai.memory.store.id``: the Chroma collection holding every user.
        tracer_provider: where spans go (default: the global provider, a no-op until an SDK
            sets one).
        capture_content: record entry texts and queries (default: what
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says, read once here).

    Example:
        ```python
        telemetry = MemoryTelemetry("outprofile")
        with telemetry.span("delete_memory", user_id="ana") as span:
            span.counted(3)
        ```
    """

    def __init__(
        self,
        store_id: str,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        capture_content: bool | None = None,
    ) -> None:
        self.store_id = store_id
        self.capture_content = (
            capture_content_from_env() if capture_content is None else capture_content
        )
        self._provider = tracer_provider
        self._tracer = trace.get_tracer(_SCOPE, _package_version(), tracer_provider=tracer_provider)

    def active(self) -> bool:
        """Whether a span could record: not when no SDK provider is set anywhere. A no-op
        span still costs a context switch (about 10 us, as much as a cached read), so
        without an SDK none is started; the global provider is asked on every call, since
        an app may set it after building the memory.

        Example:
            ```python
            MemoryTelemetry("outprofile").active()  # False until an SDK provider is set
            ```
        """
        provider = self._provider or trace.get_tracer_provider()
        return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)

    @contextmanager
    def span(
        self,
        operation: Operation,
        *,
        user_id: object = None,
        record_id: object = None,
        run_id: object = None,
        signal: str | None = None,
        query: str | None = None,
    ) -> Iterator[OperationSpan]:
        """A current span for ``operation``, ended (with ``error.type`` and an error status
        on an exception, which propagates) as the block exits.

        ``user_id``, ``record_id`` and ``run_id`` are recorded only when they are strings:
        they come straight from the caller, before validation, so that the span covers a
        refused call too.
        """
        if not self.active():
            yield OperationSpan(trace.INVALID_SPAN, capture_content=False)
            return
        attributes: dict[str, str] = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_MEMORY_STORE_ID: self.store_id,
        }
        if isinstance(user_id, str):
            attributes[ENDUSER_ID] = user_id
        if isinstance(record_id, str):
            attributes[GEN_AI_MEMORY_RECORD_ID] = record_id
        if isinstance(run_id, str):
            attributes[OUTPROFILE_RUN_ID] = run_id
        if signal is not None:
            attributes[OUTPROFILE_SIGNAL] = signal
        if query is not None and self.capture_content:
            attributes[GEN_AI_MEMORY_QUERY_TEXT] = query
        # the conventions name the span after the operation alone: store and user ids are
        # attributes, so the span name keeps a low cardinality. Exceptions are recorded
        # here, not by the SDK: its record quotes the message, and a message may quote an
        # entry's text (a refused text's first characters).
        with self._tracer.start_as_current_span(
            operation,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield OperationSpan(span, self.capture_content)
            except BaseException as error:
                self._failed(span, error)
                raise

    def _failed(self, span: trace.Span, error: BaseException) -> None:
        """``error.type`` (the conventions' low-cardinality name of what failed: the
        exception class), an error status and an exception event; the message only with
        content capture on."""
        name = type(error).__qualname__
        span.set_attribute(ERROR_TYPE, name)
        if self.capture_content:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, f"{name}: {error}")
        else:
            span.add_event("exception", {"exception.type": _full_name(error)})
            span.set_status(trace.StatusCode.ERROR, name)


def _full_name(error: BaseException) -> str:
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
