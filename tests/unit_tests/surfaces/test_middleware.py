"""The middleware in real ``create_agent`` graphs: what exactly the model receives."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from langchain_outprofile import InvalidInputError, OutputProfileMemory
from langchain_outprofile.errors import MissingUserIdError
from langchain_outprofile.render import parse_block
from tests.conftest import record_chroma_threads
from tests.fakes import RecordingChatModel

SYSTEM = "You are a travel assistant."
ANA = ["Short answer first, then bullets.", "No fluff. Sign off with -A."]
BOB = ["Dear colleague, thank you for writing.", "Kind regards, Robert."]


@dataclass
class Context:
    user_id: str


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    for text in ANA:
        ephemeral_memory.add(text, user_id="ana")
    for text in BOB:
        ephemeral_memory.add(text, user_id="bob", signal="endorsed")
    return ephemeral_memory


def agent_for(memory: OutputProfileMemory, model: RecordingChatModel, **kwargs: Any) -> Any:
    kwargs.setdefault("system_prompt", SYSTEM)
    return create_agent(
        model, [weather], middleware=[memory.middleware()], context_schema=Context, **kwargs
    )


def ask(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


def test_the_agent_system_prompt_leads_intact_and_the_block_follows(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    result = agent_for(filled, model).invoke(ask("Rome?"), context=Context(user_id="ana"))
    [received] = model.received
    block = filled.select("ana").text
    assert received[0] == SystemMessage(content=SYSTEM)
    assert received[1] == SystemMessage(content=block)
    assert received[2:] == [HumanMessage("Rome?", id=received[2].id)]
    assert sorted(parse_block(received[1].text)) == sorted(ANA)
    assert model.bound_tools and result["messages"][-1].text == "reply 1"


def test_block_is_not_written_into_state_or_the_checkpointer(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    agent = agent_for(filled, model, checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t1"}}
    agent.invoke(ask("one"), config=config, context=Context(user_id="ana"))
    agent.invoke(ask("two"), config=config, context=Context(user_id="ana"))
    state = agent.get_state(config).values["messages"]
    assert not any("<user_profile>" in m.text for m in state)
    second = model.received[1]
    assert sum("<user_profile>" in m.text for m in second) == 1
    block = filled.select("ana").text
    assert [m.text for m in second] == [SYSTEM, block, "one", "reply 1", "two"]


def test_without_an_agent_system_prompt_the_block_is_the_system_message(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    agent: Any = create_agent(model, [], middleware=[filled.middleware()], context_schema=Context)
    agent.invoke(ask("hi"), context=Context(user_id="bob"))
    assert model.received[0][0] == SystemMessage(content=filled.select("bob").text)


def test_separate_placement_puts_its_own_system_message_first(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    agent: Any = create_agent(
        model, [], system_prompt=SYSTEM, middleware=[filled.middleware(placement="separate")]
    )
    agent.invoke(ask("hi"), config={"configurable": {"user_id": "ana"}})
    assert model.texts(0) == [filled.select("ana").text, SYSTEM, "hi"]


def test_users_never_see_each_others_entries(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    agent = agent_for(filled, model)
    agent.invoke(ask("q"), context=Context(user_id="ana"))
    agent.invoke(ask("q"), context=Context(user_id="bob"))
    ana, bob = (model.received[i][1].text for i in (0, 1))
    assert all(t in ana for t in ANA) and not any(t in ana for t in BOB)
    assert all(t in bob for t in BOB) and not any(t in bob for t in ANA)


def test_every_model_call_of_a_tool_loop_gets_the_block(filled: OutputProfileMemory) -> None:
    call = AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "c1"}])
    model = RecordingChatModel(messages=iter([call, AIMessage("Sunny.")]))
    result = agent_for(filled, model).invoke(ask("Oslo?"), context=Context(user_id="ana"))
    assert len(model.received) == 2
    block = filled.select("ana").text
    assert all(r[:2] == [SystemMessage(SYSTEM), SystemMessage(block)] for r in model.received)
    assert isinstance(model.received[1][-1], ToolMessage)
    assert result["messages"][-1].text == "Sunny."


async def test_async_agent_gives_the_same_messages(filled: OutputProfileMemory) -> None:
    sync_model, async_model = RecordingChatModel(), RecordingChatModel()
    agent_for(filled, sync_model).invoke(ask("Paris?"), context=Context(user_id="bob"))
    await agent_for(filled, async_model).ainvoke(ask("Paris?"), context=Context(user_id="bob"))
    strip = [[(type(m), m.text) for m in call] for call in sync_model.received]
    assert [[(type(m), m.text) for m in call] for call in async_model.received] == strip
    assert async_model.received[0][0] == SystemMessage(SYSTEM)
    assert async_model.received[0][1].text.startswith("<user_profile>")


def test_user_id_from_a_dict_context_or_the_config(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    agent: Any = create_agent(model, [], system_prompt=SYSTEM, middleware=[filled.middleware()])
    agent.invoke(ask("a"), context={"user_id": "ana"})
    agent.invoke(ask("b"), config={"configurable": {"user_id": "bob"}})
    assert sorted(parse_block(model.received[0][1].text)) == sorted(ANA)
    assert sorted(parse_block(model.received[1][1].text)) == sorted(BOB)


def test_missing_user_id_is_a_clear_error_and_the_model_is_not_called(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    agent: Any = create_agent(model, [], system_prompt=SYSTEM, middleware=[filled.middleware()])
    with pytest.raises(MissingUserIdError, match="context"):
        agent.invoke(ask("hi"))
    assert model.received == []


def test_empty_profile_leaves_the_request_unchanged(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    agent_for(filled, model).invoke(ask("hi"), context=Context(user_id="nobody"))
    assert model.texts(0) == [SYSTEM, "hi"]


def test_selection_options_reach_the_agent(filled: OutputProfileMemory) -> None:
    filled.add("Email habit: greet by first name.", user_id="ana", task="email")
    model = RecordingChatModel()
    middleware = filled.middleware(task="email", fill_from_profile=False, max_tokens=120)
    agent: Any = create_agent(model, [], system_prompt=SYSTEM, middleware=[middleware])
    agent.invoke(ask("hi"), context={"user_id": "ana"})
    assert model.received[0][0] == SystemMessage(SYSTEM)
    assert parse_block(model.received[0][1].text) == ["Email habit: greet by first name."]
    assert filled.counter.count(model.received[0][1].text) <= 120


def test_content_block_system_prompt_keeps_its_blocks(filled: OutputProfileMemory) -> None:
    blocks: list[str | dict[str, Any]] = [
        {"type": "text", "text": "Part one."},
        {"type": "text", "text": "Part two."},
    ]
    model = RecordingChatModel()
    for placement in ("merge", "after_system"):
        middleware = filled.middleware(placement=placement)
        agent: Any = create_agent(
            model, [], system_prompt=SystemMessage(content=blocks), middleware=[middleware]
        )
        agent.invoke(ask("hi"), context={"user_id": "ana"})
    merged, after = model.received
    assert merged[0].content[1:] == blocks
    assert merged[0].text.startswith(filled.select("ana").text)
    assert after[0] == SystemMessage(content=blocks)
    assert after[1] == SystemMessage(filled.select("ana").text)


def test_streaming_agent_gets_the_same_request(filled: OutputProfileMemory) -> None:
    streamed, invoked = RecordingChatModel(), RecordingChatModel()
    list(agent_for(filled, streamed).stream(ask("Rome?"), context=Context(user_id="ana")))
    agent_for(filled, invoked).invoke(ask("Rome?"), context=Context(user_id="ana"))
    assert [m.text for m in streamed.received[0]] == [m.text for m in invoked.received[0]]


async def test_async_middleware_reads_the_store_off_the_event_loop(
    filled: OutputProfileMemory,
) -> None:
    threads = record_chroma_threads(filled)
    model = RecordingChatModel()
    await agent_for(filled, model).ainvoke(ask("hi"), context=Context(user_id="ana"))
    assert threads and threading.get_ident() not in threads
    assert model.received[0][1].text.startswith("<user_profile>")


PERSONAL = [
    "Short answer first, then bullets.",
    "No fluff. Sign off with -A.",
    "Numbers as digits, dates as Tue 14 May.",
    "One question per email, at the end.",
]
TEAM = [
    "Acme voice: we, not I; plain words; no exclamation marks.",
    "Acme signs every client email with the support line, 555-0100.",
    "Acme never promises dates; it says 'we aim for'.",
]


def test_two_memories_give_one_agent_each_its_own_block(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    personal = ephemeral_memory  # ana's own outputs, read per call from the context
    team = OutputProfileMemory.from_client(
        personal.store.client, collection_name=f"{personal.store.collection_name}-team"
    )
    for text in PERSONAL:
        personal.add(text, user_id="ana", signal="endorsed")
    for text in TEAM:
        team.add(text, user_id="acme", signal="endorsed")
    personal_selection = personal.select("ana", max_tokens=70)
    team_selection = team.select("acme", max_tokens=90)
    # each budget binds: some entries but not all fit, and the other budget would differ
    assert 0 < len(personal_selection.entries) < len(PERSONAL)
    assert 0 < len(team_selection.entries) < len(TEAM)
    assert personal_selection.text != personal.select("ana", max_tokens=90).text
    assert team_selection.text != team.select("acme", max_tokens=70).text
    assert not team.select("ana").entries and not personal.select("acme").entries
    personal_block, team_block = personal_selection.text, team_selection.text
    first = personal.middleware(max_tokens=70)
    second = team.middleware(user_id="acme", max_tokens=90)

    def texts_seen(middleware: list[Any]) -> list[str]:
        model = RecordingChatModel()
        agent: Any = create_agent(
            model, [], system_prompt=SYSTEM, middleware=middleware, context_schema=Context
        )
        agent.invoke(ask("Lunch Tuesday?"), context=Context(user_id="ana"))
        [received] = model.received
        assert [type(m) for m in received] == [SystemMessage] * 3 + [HumanMessage]
        return [m.text for m in received]

    # middleware=[A, B]: A wraps B, so A adds its block first and B, nearer the model, then
    # puts its own after every leading system message, A's block included: the agent's
    # system prompt, then A's block, then B's. Each block is exactly what its memory selects.
    lunch = "Lunch Tuesday?"
    assert texts_seen([first, second]) == [SYSTEM, personal_block, team_block, lunch]
    assert texts_seen([second, first]) == [SYSTEM, team_block, personal_block, lunch]


def test_after_system_puts_the_block_after_the_agent_system_prompt(
    filled: OutputProfileMemory,
) -> None:
    call = AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "c1"}])
    model = RecordingChatModel(messages=iter([call, AIMessage("Sunny.")]))
    agent: Any = create_agent(
        model,
        [weather],
        system_prompt=SYSTEM,
        middleware=[filled.middleware(placement="after_system")],
        context_schema=Context,
    )
    agent.invoke(ask("Oslo?"), context=Context(user_id="ana"))
    block = filled.select("ana").text
    for received in model.received:  # every model call of the tool loop
        assert received[0] == SystemMessage(SYSTEM)
        assert received[1] == SystemMessage(block)
        assert received[2].text == "Oslo?"
    assert isinstance(model.received[1][-1], ToolMessage)


def test_after_system_with_a_breakpoint_marks_the_agent_system_prompt(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    middleware = filled.middleware(placement="after_system", cache_breakpoint=True)
    agent: Any = create_agent(model, [], system_prompt=SYSTEM, middleware=[middleware])
    agent.invoke(ask("hi"), config={"configurable": {"user_id": "ana"}})
    [received] = model.received
    marker = {"type": "ephemeral"}
    assert received[0].content == [{"type": "text", "text": SYSTEM, "cache_control": marker}]
    assert received[1] == SystemMessage(filled.select("ana").text)
    assert received[2].text == "hi"


def test_after_system_follows_system_messages_leading_the_request(
    filled: OutputProfileMemory,
) -> None:
    """System messages at the start of the graph's messages are part of the prefix too."""
    model = RecordingChatModel()
    agent: Any = create_agent(
        model, [], system_prompt=SYSTEM, middleware=[filled.middleware(placement="after_system")]
    )
    note = SystemMessage("Tools: none today.")
    agent.invoke({"messages": [note, HumanMessage("hi")]}, context={"user_id": "ana"})
    assert model.texts(0) == [SYSTEM, note.text, filled.select("ana").text, "hi"]


def test_after_system_without_a_system_prompt_makes_the_block_the_system_message(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    middleware = filled.middleware(placement="after_system", cache_breakpoint=True)
    agent: Any = create_agent(model, [], middleware=[middleware])
    agent.invoke(ask("hi"), context={"user_id": "bob"})
    assert model.received[0][0] == SystemMessage(filled.select("bob").text)
    assert model.texts(0) == [filled.select("bob").text, "hi"]


async def test_after_system_async_agent_gives_the_same_messages(
    filled: OutputProfileMemory,
) -> None:
    sync_model, async_model = RecordingChatModel(), RecordingChatModel()
    for model in (sync_model, async_model):
        middleware = filled.middleware(placement="after_system", cache_breakpoint=True)
        agent: Any = create_agent(model, [], system_prompt=SYSTEM, middleware=[middleware])
        if model is sync_model:
            agent.invoke(ask("hi"), context={"user_id": "ana"})
        else:
            await agent.ainvoke(ask("hi"), context={"user_id": "ana"})
    strip = [[(type(m), m.content) for m in call] for call in sync_model.received]
    assert [[(type(m), m.content) for m in call] for call in async_model.received] == strip
    assert sync_model.received[0][1] == SystemMessage(filled.select("ana").text)


def test_a_middleware_breakpoint_without_after_system_is_refused(
    filled: OutputProfileMemory,
) -> None:
    for placement in ("merge", "separate"):
        with pytest.raises(InvalidInputError, match="after_system"):
            filled.middleware(placement=placement, cache_breakpoint=True)
