"""track() and feedback(): outputs stored as pending by run id, then turned into signals."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ReadOptions,
    Signal,
    WriteOptions,
)
from langchain_outprofile.errors import MissingUserIdError, UnknownRunError
from langchain_outprofile.render import parse_block
from tests.conftest import ManualClock
from tests.fakes import RecordingChatModel, ToolStreamingChatModel


def cfg(user: str, run_id: uuid.UUID | None = None) -> RunnableConfig:
    config: RunnableConfig = {"configurable": {"user_id": user}}
    if run_id is not None:
        config["run_id"] = run_id
    return config


def chain_for(memory: OutputProfileMemory, model: RecordingChatModel) -> Runnable[Any, Any]:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Write emails."), ("human", "{question}")]
    )
    return prompt | memory.injector() | model


def only(memory: OutputProfileMemory, user: str) -> dict[str, Any]:
    [record] = memory.export(user)
    return record


def test_tracked_output_is_pending_under_its_run_id(memory: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    tracked = memory.track(chain_for(memory, model))
    rid = uuid.uuid4()
    reply = tracked.invoke({"question": "Lunch?"}, config=cfg("ana", rid))
    assert reply.text == "reply 1"
    record = only(memory, "ana")
    assert record["text"] == "reply 1" and record["signals"] == ["pending"]
    assert record["run_id"] == str(rid) and record["source_input"] == "Lunch?"
    assert memory.select("ana").text == ""
    assert memory.export("bob") == []


@pytest.mark.parametrize(
    ("signal", "rating", "strength"),
    [("endorsed", None, 0.8), ("accepted", None, 0.4), (None, 5, 1.0), ("rating", 3, 0.5)],
)
def test_positive_feedback_makes_the_output_part_of_the_next_block(
    ephemeral_memory: OutputProfileMemory, signal: str | None, rating: int | None, strength: float
) -> None:
    model = RecordingChatModel()
    tracked = ephemeral_memory.track(chain_for(ephemeral_memory, model))
    rid = uuid.uuid4()
    tracked.invoke({"question": "Lunch?"}, config=cfg("ana", rid))
    entry = ephemeral_memory.feedback(rid, signal, rating=rating)
    assert entry.signals == (Signal(signal or "rating"),)
    assert entry.strength == pytest.approx(strength) and entry.selectable
    tracked.invoke({"question": "Dinner?"}, config=cfg("ana"))
    assert model.received[1][0].text == "Write emails."
    assert parse_block(model.received[1][1].text) == ["reply 1"]


def test_rejected_output_is_never_selected(ephemeral_memory: OutputProfileMemory) -> None:
    tracked = ephemeral_memory.track(chain_for(ephemeral_memory, RecordingChatModel()))
    rid = uuid.uuid4()
    tracked.invoke({"question": "q"}, config=cfg("ana", rid))
    entry = ephemeral_memory.feedback(str(rid), "rejected")
    assert entry.rejected and ephemeral_memory.select("ana").text == ""
    assert only(ephemeral_memory, "ana")["signals"] == ["rejected"]


def test_edited_text_replaces_the_pending_output(ephemeral_memory: OutputProfileMemory) -> None:
    tracked = ephemeral_memory.track(chain_for(ephemeral_memory, RecordingChatModel()))
    rid = uuid.uuid4()
    tracked.invoke({"question": "Can we meet?"}, config=cfg("ana", rid))
    entry = ephemeral_memory.feedback(rid, edited="Yes. Tuesday 14:00. -A")
    record = only(ephemeral_memory, "ana")
    assert record["text"] == "Yes. Tuesday 14:00. -A" == entry.text
    assert record["signals"] == ["edited"] and record["source_input"] == "Can we meet?"
    assert record["run_id"] == str(rid)
    assert parse_block(ephemeral_memory.select("ana").text) == ["Yes. Tuesday 14:00. -A"]


def test_feedback_from_a_second_memory_on_the_same_path(tmp_path: Path) -> None:
    """The other memory's write reaches the first one's reads once its cached state is
    ``cache_ttl_s`` old (it is then revalidated by the profile version)."""
    ticks = ManualClock(0.0)
    first = OutputProfileMemory.from_path(tmp_path / "store", monotonic=ticks)
    tracked = first.track(chain_for(first, RecordingChatModel()))
    rid = uuid.uuid4()
    tracked.invoke({"question": "q"}, config=cfg("ana", rid))
    second = OutputProfileMemory.from_path(tmp_path / "store")
    assert second.feedback(rid, "endorsed", user_id="ana").selectable
    ticks.advance(first.reads.cache_ttl_s)
    assert [e.text for e in first.select("ana", max_tokens=200).entries] == ["reply 1"]


def test_feedback_from_another_process(tmp_path: Path) -> None:
    first = OutputProfileMemory.from_path(tmp_path / "store")
    rid = uuid.uuid4()
    first.track(RecordingChatModel()).invoke("q", config=cfg("ana", rid))
    script = textwrap.dedent(
        f"""
        from langchain_outprofile import OutputProfileMemory
        memory = OutputProfileMemory.from_path({str(tmp_path / "store")!r})
        print(memory.feedback({str(rid)!r}, rating=5).strength)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "1.0"
    assert [e.text for e in first.select("ana").entries] == ["reply 1"]


def test_unknown_or_foreign_run_ids_are_clear_errors(memory: OutputProfileMemory) -> None:
    tracked = memory.track(RecordingChatModel())
    rid = uuid.uuid4()
    tracked.invoke("q", config=cfg("ana", rid))
    before = memory.export("ana")
    with pytest.raises(UnknownRunError, match="no tracked output"):
        memory.feedback(uuid.uuid4(), "endorsed")
    with pytest.raises(UnknownRunError, match="bob"):
        memory.feedback(rid, "endorsed", user_id="bob")
    assert memory.export("ana") == before and memory.export("bob") == []


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        (("pending",), {}),
        (("authored",), {}),
        (("nonsense",), {}),
        (("edited",), {}),
        (("endorsed",), {"rating": 4}),
        ((), {"rating": 7}),
        ((), {"edited": "x", "rating": 4}),
        ((), {"edited": "   "}),
    ],
)
def test_bad_feedback_is_refused_and_nothing_changes(
    ephemeral_memory: OutputProfileMemory, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    rid = uuid.uuid4()
    ephemeral_memory.track(RecordingChatModel()).invoke("q", config=cfg("ana", rid))
    before = ephemeral_memory.export("ana")
    with pytest.raises(InvalidInputError):
        ephemeral_memory.feedback(rid, *args, **kwargs)
    assert ephemeral_memory.export("ana") == before


def test_missing_user_id_fails_before_the_chain_runs(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    with pytest.raises(MissingUserIdError):
        ephemeral_memory.track(model).invoke("q", config={"run_id": uuid.uuid4()})
    assert model.received == []


def test_without_a_run_id_the_trace_run_id_is_stored(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    tracked = ephemeral_memory.track(RecordingChatModel())
    with collect_runs() as runs:
        tracked.invoke("q", config=cfg("ana"))
    [run] = runs.traced_runs
    assert only(ephemeral_memory, "ana")["run_id"] == str(run.id)
    assert ephemeral_memory.feedback(run.id, "accepted").selectable


async def test_async_and_streaming_runs_are_tracked(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    tracked = ephemeral_memory.track(chain_for(ephemeral_memory, model))
    ids = [uuid.uuid4() for _ in range(4)]
    await tracked.ainvoke({"question": "a"}, config=cfg("ana", ids[0]))
    chunks = [c async for c in tracked.astream({"question": "b"}, config=cfg("ana", ids[1]))]
    assert len(chunks) > 1
    list(tracked.stream({"question": "c"}, config=cfg("ana", ids[2])))
    tracked.batch([{"question": "d"}], config=[cfg("ana", ids[3])])
    by_run = {r["run_id"]: (r["text"], r["source_input"]) for r in ephemeral_memory.export("ana")}
    assert by_run == {
        str(ids[0]): ("reply 1", "a"),
        str(ids[1]): ("reply 2", "b"),
        str(ids[2]): ("reply 3", "c"),
        str(ids[3]): ("reply 4", "d"),
    }


def test_agent_runs_are_tracked_by_their_last_answer(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    agent = create_agent(RecordingChatModel(), [], middleware=[ephemeral_memory.middleware()])
    rid = uuid.uuid4()
    ephemeral_memory.track(agent).invoke(
        {"messages": [HumanMessage("Plan my day")]}, config=cfg("ana", rid)
    )
    record = only(ephemeral_memory, "ana")
    assert (record["text"], record["source_input"]) == ("reply 1", "Plan my day")


def test_output_without_text_is_a_typed_error(ephemeral_memory: OutputProfileMemory) -> None:
    tracked = ephemeral_memory.track(RunnableLambda(lambda _: 42))
    with pytest.raises(InvalidInputError, match="track"):
        tracked.invoke("q", config=cfg("ana"))
    assert ephemeral_memory.export("ana") == []


def _with_clock(
    memory: OutputProfileMemory, clock: ManualClock, **settings: Any
) -> OutputProfileMemory:
    """A memory on ``memory``'s collection whose time is ``clock``, pending for 60 s."""
    return OutputProfileMemory.from_client(
        memory.store.client,
        collection_name=memory.store.collection_name,
        clock=clock,
        writes=WriteOptions(pending_ttl_s=60),
        **settings,
    )


def test_pending_outputs_expire(ephemeral_memory: OutputProfileMemory) -> None:
    clock = ManualClock(1_700_000_000.0)
    memory = _with_clock(ephemeral_memory, clock)
    tracked = memory.track(RecordingChatModel())
    old, new, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tracked.invoke("q1", config=cfg("ana", old))
    tracked.invoke("q1", config=cfg("bob", bob))
    clock.advance(61)
    tracked.invoke("q2", config=cfg("ana", new))  # the next track of ana marks the old one
    memory.flush()
    assert memory.feedback(bob, "endorsed").selectable  # stale by this clock, not yet seen
    clock.advance(61)
    tracked.invoke("q3", config=cfg("ana"))  # a ttl after it was seen stale: it goes
    memory.flush()
    assert str(old) not in [r["run_id"] for r in memory.export("ana")]
    assert len(memory.export("ana")) == 2
    clock.advance(61)
    assert memory.expire("ana").pending == 1  # "new", marked by the last run; q3 is marked
    clock.advance(61)
    assert memory.expire("ana").pending == 1
    assert memory.expire("ana").pending == 0


def test_expire_of_every_user_removes_each_users_stale_outputs_and_expired_entries(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    clock = ManualClock(1_700_000_000.0)
    memory = _with_clock(ephemeral_memory, clock)
    for user in ("ana", "bob", "cy"):
        memory.record_output(f"An answer for {user}.", user_id=user, run_id=str(uuid.uuid4()))
    memory.add("Kept a minute.", user_id="cy", ttl_s=30)
    memory.add("Kept for good.", user_id="cy")
    clock.advance(61)
    seen = memory.expire()  # the outputs are seen stale (kept one more ttl); cy's entry goes
    assert (seen.entries, seen.pending, seen.by_user) == (1, 0, {"cy": 1})
    clock.advance(61)
    gone = memory.expire()
    assert (gone.entries, gone.pending, int(gone)) == (0, 3, 3)
    assert gone.by_user == {"ana": 1, "bob": 1, "cy": 1}
    assert [e["text"] for e in memory.export("cy")] == ["Kept for good."]
    assert memory.export("ana") == memory.export("bob") == []


def test_feedback_on_an_expired_output_is_a_clear_error(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    clock = ManualClock(1_700_000_000.0)
    memory = _with_clock(ephemeral_memory, clock)
    rid = uuid.uuid4()
    memory.track(RecordingChatModel()).invoke("q", config=cfg("bob", rid))
    clock.advance(61)
    assert memory.expire("bob").pending == 0
    clock.advance(61)
    with pytest.raises(UnknownRunError, match="expired"):
        memory.feedback(rid, "endorsed")
    assert memory.export("bob") == []


def test_a_slow_clock_loses_no_pending_output_to_a_healthy_worker(tmp_path: Path) -> None:
    """A worker whose clock is 8 days slow records outputs; a healthy worker's next
    tracked run used to delete all of them as stale (10 of 10 lost, feedback then raised
    UnknownRunError). Now a healthy worker keeps them for ``pending_ttl_s`` of its own
    time after it first saw them stale."""
    healthy_now = 1_800_000_000.0
    slow = OutputProfileMemory.from_path(
        tmp_path / "s", clock=ManualClock(healthy_now - 8 * 86_400)
    )
    healthy = OutputProfileMemory.from_path(tmp_path / "s", clock=ManualClock(healthy_now))
    runs = [uuid.uuid4() for _ in range(10)]
    for n, rid in enumerate(runs):
        slow.record_output(f"answer {n}", user_id="ana", run_id=str(rid))
    healthy.record_output("healthy answer", user_id="ana", run_id=str(uuid.uuid4()))
    healthy.flush()
    assert healthy.expire("ana").pending == 0
    for rid in runs:
        assert healthy.feedback(rid, "endorsed", user_id="ana").selectable


def test_a_read_never_deletes_and_the_next_write_expires_stale_pending_outputs(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    clock = ManualClock(1_700_000_000.0)
    memory = _with_clock(ephemeral_memory, clock, reads=ReadOptions(cache_ttl_s=0))
    memory.add("Kept: authored long ago.", user_id="ana")
    memory.track(RecordingChatModel()).invoke("q", config=cfg("ana"))
    memory.select("ana")
    assert memory.stats("ana").pending == 1
    clock.advance(61)
    assert [e.text for e in memory.select("ana").entries] == ["Kept: authored long ago."]
    assert memory.stats("ana").pending == 1, "a read must not write (delete) anything"
    memory.track(RecordingChatModel()).invoke("q2", config=cfg("ana"))  # the next write
    memory.flush()
    assert memory.stats("ana").entries == 2  # the stale output is marked, kept one more ttl
    clock.advance(61)
    memory.expire("ana")  # the first output went; the second is marked
    assert memory.stats("ana").entries == 2
    clock.advance(61)
    assert memory.expire("ana").pending == 1 and memory.stats("ana").entries == 1


def test_feedback_just_in_time_is_kept(ephemeral_memory: OutputProfileMemory) -> None:
    clock = ManualClock(1_700_000_000.0)
    memory = _with_clock(ephemeral_memory, clock)
    rid = uuid.uuid4()
    memory.track(RecordingChatModel()).invoke("q", config=cfg("ana", rid))
    clock.advance(59)
    assert memory.feedback(rid, "endorsed").selectable
    clock.advance(1_000)
    assert memory.expire("ana").pending == 0  # endorsed entries never expire


def test_tracking_a_known_endorsed_text_keeps_it_selectable(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    ephemeral_memory.add("reply 1", user_id="ana", signal="endorsed")
    ephemeral_memory.track(RecordingChatModel()).invoke("q", config=cfg("ana"))
    assert [e.text for e in ephemeral_memory.select("ana").entries] == ["reply 1"]


def test_tracked_task_is_kept_through_feedback(ephemeral_memory: OutputProfileMemory) -> None:
    rid = uuid.uuid4()
    tracked = ephemeral_memory.track(RecordingChatModel(), task="email")
    tracked.invoke("Reply to Tom", config=cfg("ana", rid))
    assert ephemeral_memory.feedback(rid, edited="Hi Tom, yes. -A").task == "email"
    assert [e.task for e in ephemeral_memory.select("ana", task="email").entries] == ["email"]


# Streaming: what a tracked stream stores is the run's whole output, whatever the chunks are.

ANSWER = "Sure: Tuesday at ten works. -A"


def ask(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


def stream_kwargs(stream_mode: str | list[str] | None) -> dict[str, Any]:
    return {} if stream_mode is None else {"stream_mode": stream_mode}


def assert_tracked_then_selected(
    memory: OutputProfileMemory, agent: Any, model: RecordingChatModel, rid: uuid.UUID
) -> None:
    """The run's pending output is the model's final answer; endorsed, it leads the next call."""
    record = only(memory, "ana")
    assert (record["text"], record["signals"], record["run_id"]) == (ANSWER, ["pending"], str(rid))
    entry = memory.feedback(rid, "endorsed")
    assert entry.text == ANSWER and entry.selectable
    calls = len(model.received)
    agent.invoke(ask("And Friday?"), config=cfg("ana"))
    assert parse_block(model.received[calls][0].text) == [ANSWER]


# None is the agent's default stream mode ("updates": one {node: update} per step); "custom"
# yields nothing at all for this agent, so only the run's own output can tell the answer
STREAM_MODES = [None, "values", "messages", "updates", ["updates", "messages"], "custom"]


@pytest.mark.parametrize("stream_mode", STREAM_MODES, ids=str)
def test_a_streamed_agent_run_is_tracked_by_its_final_answer(
    ephemeral_memory: OutputProfileMemory, stream_mode: str | list[str] | None
) -> None:
    model = RecordingChatModel(messages=iter([AIMessage(ANSWER), AIMessage("Noted.")]))
    agent = create_agent(model, [], middleware=[ephemeral_memory.middleware()])
    rid = uuid.uuid4()
    tracked = ephemeral_memory.track(agent)
    list(tracked.stream(ask("Tuesday?"), config=cfg("ana", rid), **stream_kwargs(stream_mode)))
    assert only(ephemeral_memory, "ana")["source_input"] == "Tuesday?"
    assert_tracked_then_selected(ephemeral_memory, agent, model, rid)


@pytest.mark.parametrize("stream_mode", [None, "values", "messages"], ids=str)
async def test_an_async_streamed_agent_run_is_tracked_by_its_final_answer(
    ephemeral_memory: OutputProfileMemory, stream_mode: str | None
) -> None:
    model = RecordingChatModel(messages=iter([AIMessage(ANSWER), AIMessage("Noted.")]))
    agent = create_agent(model, [], middleware=[ephemeral_memory.middleware()])
    rid = uuid.uuid4()
    tracked = ephemeral_memory.track(agent)
    stream = tracked.astream(ask("Tuesday?"), config=cfg("ana", rid), **stream_kwargs(stream_mode))
    assert [chunk async for chunk in stream]
    assert_tracked_then_selected(ephemeral_memory, agent, model, rid)


@tool
def calendar(day: str) -> str:
    """Free slots on a day."""
    return f"{day}: free at ten."


@pytest.mark.parametrize("stream_mode", [None, "values", "messages"], ids=str)
def test_a_streamed_tool_loop_is_tracked_by_the_last_answer_only(
    ephemeral_memory: OutputProfileMemory, stream_mode: str | None
) -> None:
    call = AIMessage(
        "Checking.", tool_calls=[{"name": "calendar", "args": {"day": "Tuesday"}, "id": "c1"}]
    )
    model = ToolStreamingChatModel(messages=iter([call, AIMessage(ANSWER), AIMessage("Ok.")]))
    agent = create_agent(model, [calendar], middleware=[ephemeral_memory.middleware()])
    rid = uuid.uuid4()
    tracked = ephemeral_memory.track(agent)
    list(tracked.stream(ask("Tuesday?"), config=cfg("ana", rid), **stream_kwargs(stream_mode)))
    assert isinstance(model.received[1][-1], ToolMessage)  # the tool ran between the calls
    assert_tracked_then_selected(ephemeral_memory, agent, model, rid)


def lcel_chains(
    memory: OutputProfileMemory, model: RecordingChatModel
) -> dict[str, tuple[Runnable[Any, Any], Any]]:
    return {
        "prompt|model": (chain_for(memory, model), {"question": "q"}),
        "prompt|model|str": (chain_for(memory, model) | StrOutputParser(), {"question": "q"}),
        "parallel": (RunnableParallel(answer=chain_for(memory, model)), {"question": "q"}),
        "model": (model, "q"),
    }


@pytest.mark.parametrize("shape", ["prompt|model", "prompt|model|str", "parallel", "model"])
async def test_streamed_lcel_chunks_are_concatenated(
    ephemeral_memory: OutputProfileMemory, shape: str
) -> None:
    model = RecordingChatModel(messages=iter(["Hi Ana, yes.", "See you then. -A"]))
    chain, value = lcel_chains(ephemeral_memory, model)[shape]
    tracked = ephemeral_memory.track(chain)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert len(list(tracked.stream(value, config=cfg("ana", first)))) > 1
    assert len([c async for c in tracked.astream(value, config=cfg("ana", second))]) > 1
    by_run = {r["run_id"]: r["text"] for r in ephemeral_memory.export("ana")}
    assert by_run == {str(first): "Hi Ana, yes.", str(second): "See you then. -A"}


class ModelStarts(BaseCallbackHandler):
    """A caller's own callback handler: counts chat model calls (steps of the chain)."""

    def __init__(self) -> None:
        self.calls = 0

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.calls += 1


@pytest.mark.parametrize("as_manager", [False, True], ids=["list", "manager"])
def test_a_tracked_stream_keeps_the_callers_callbacks_and_trace_run_id(
    ephemeral_memory: OutputProfileMemory, as_manager: bool
) -> None:
    model = RecordingChatModel(messages=iter([AIMessage(ANSWER)]))
    agent = create_agent(model, [], middleware=[ephemeral_memory.middleware()])
    seen = ModelStarts()
    callbacks: Any = CallbackManager([seen], inheritable_handlers=[seen]) if as_manager else [seen]
    config = cfg("ana")
    config["callbacks"] = callbacks
    with collect_runs() as runs:
        list(ephemeral_memory.track(agent).stream(ask("Tuesday?"), config=config))
    assert seen.calls == 1  # the caller's handler still reaches the chain's steps
    [run] = [r for r in runs.traced_runs if r.name == agent.get_name()]  # the graph's run
    record = only(ephemeral_memory, "ana")
    assert (record["text"], record["run_id"]) == (ANSWER, str(run.id))


def test_feedback_given_again_word_for_word_counts_once(memory: OutputProfileMemory) -> None:
    """A client that retries (or a user who clicks twice) sends the same feedback again; it
    is the same event of the log, so the entry's strength does not grow. Different feedback
    on the same run does count."""
    run = str(uuid.uuid4())
    memory.record_output("Short answer first.", user_id="ana", run_id=run)
    assert memory.feedback(run, "accepted").strength == pytest.approx(0.4)
    assert memory.feedback(run, "accepted").strength == pytest.approx(0.4)
    [stored] = memory.export("ana")
    assert stored["signals"] == ["accepted"] and stored["strength"] == pytest.approx(0.4)
    assert memory.feedback(run, "endorsed").strength == pytest.approx(1 - 0.6 * 0.2)
    assert memory.export("ana")[0]["strength"] == pytest.approx(0.88)


def test_an_edit_supersedes_what_the_run_said_before(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    """pending -> endorsed -> edited: the endorsed original leaves the profile (the user
    said "not this, this"); a second edit replaces the first."""
    memory = ephemeral_memory
    tracked = memory.track(chain_for(memory, RecordingChatModel()))
    rid = uuid.uuid4()
    tracked.invoke({"question": "Can we meet?"}, config=cfg("ana", rid))
    memory.feedback(rid, "endorsed")
    assert parse_block(memory.select("ana").text) == ["reply 1"]
    memory.feedback(rid, edited="Yes. Tuesday.")
    assert parse_block(memory.select("ana").text) == ["Yes. Tuesday."]
    memory.feedback(rid, edited="Yes. Tuesday 14:00.")
    assert parse_block(memory.select("ana").text) == ["Yes. Tuesday 14:00."]
    assert [r["text"] for r in memory.export("ana")] == ["Yes. Tuesday 14:00."]
    memory.feedback(rid, edited="Yes. Tuesday 14:00.")  # replayed: counts once
    [record] = memory.export("ana")
    assert record["signals"] == ["edited"] and record["strength"] == pytest.approx(1.0)


def test_an_edit_leaves_what_other_runs_or_the_user_said_of_the_same_text(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    memory = ephemeral_memory
    memory.add("reply 1", user_id="ana")  # the user wrote the very text the model answers
    tracked = memory.track(chain_for(memory, RecordingChatModel()))
    rid = uuid.uuid4()
    tracked.invoke({"question": "q"}, config=cfg("ana", rid))
    memory.feedback(rid, "endorsed")
    memory.feedback(rid, edited="Mine.")
    texts = {r["text"]: r for r in memory.export("ana")}
    assert set(texts) == {"reply 1", "Mine."}
    assert texts["reply 1"]["signals"] == ["authored"]
    assert texts["reply 1"]["strength"] == pytest.approx(1.0)
