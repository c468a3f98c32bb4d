"""The injector in real LCEL chains: what exactly the model receives."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_outprofile import InvalidInputError, OutprofileError, OutputProfileMemory
from langchain_outprofile.errors import MissingUserIdError
from langchain_outprofile.render import parse_block
from langchain_outprofile.surfaces._common import USER_ID_SPEC
from langchain_outprofile.surfaces.injector import ProfileInjector
from langchain_outprofile.surfaces.messages import place_block
from tests.conftest import record_chroma_threads
from tests.fakes import RecordingChatModel

SYSTEM = "You answer questions about {topic}."
ANA = ["Short answer first, then bullets.", "No fluff. Sign off with -A.", "Use metric units."]
BOB = ["Dear colleague, thank you for writing.", "Kind regards, Robert."]


def cfg(user: str, **extra: Any) -> RunnableConfig:
    return {"configurable": {"user_id": user}, **extra}  # type: ignore[typeddict-item]


def prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    for text in ANA:
        ephemeral_memory.add(text, user_id="ana")
    for text in BOB:
        ephemeral_memory.add(text, user_id="bob", signal="endorsed")
    return ephemeral_memory


def block_of(memory: OutputProfileMemory, user: str) -> str:
    text = memory.select(user).text
    assert text, "the fixture gives this user a non-empty profile"
    return text


def test_the_system_prompt_leads_intact_and_the_block_follows_as_its_own_message(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    reply = chain.invoke({"topic": "cars", "question": "Which?"}, config=cfg("ana"))
    assert isinstance(reply, AIMessage)
    [received] = model.received
    block = block_of(filled, "ana")
    assert [type(m) for m in received] == [SystemMessage, SystemMessage, HumanMessage]
    assert received[0].content == "You answer questions about cars."
    assert received[1].content == block
    assert received[1].text.startswith("<user_profile>")
    assert received[2].content == "Which?"
    assert sorted(parse_block(received[1].text)) == sorted(ANA)


def test_without_a_system_message_the_block_becomes_one_at_index_0(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | filled.injector() | model
    chain.invoke({"q": "hello"}, config=cfg("bob"))
    assert model.received[0] == [
        SystemMessage(content=block_of(filled, "bob")),
        HumanMessage(content="hello"),
    ]


def test_separate_placement_adds_its_own_system_message_first(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector(placement="separate") | model
    chain.invoke({"topic": "tea", "question": "Green?"}, config=cfg("ana"))
    assert model.texts(0) == [block_of(filled, "ana"), "You answer questions about tea.", "Green?"]
    assert all(isinstance(m, SystemMessage) for m in model.received[0][:2])


def test_a_later_system_message_does_not_push_the_block_down(
    filled: OutputProfileMemory,
) -> None:
    messages: list[BaseMessage] = [HumanMessage("hi"), SystemMessage("late system")]
    out = filled.injector(user_id="ana").invoke(messages)
    assert out[0] == SystemMessage(content=block_of(filled, "ana"))
    assert out[1:] == messages


def test_users_never_see_each_others_entries(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    chain.invoke({"topic": "x", "question": "q"}, config=cfg("ana"))
    chain.invoke({"topic": "x", "question": "q"}, config=cfg("bob"))
    ana_text, bob_text = ("\n".join(model.texts(i)) for i in (0, 1))
    assert all(t in ana_text for t in ANA) and not any(t in ana_text for t in BOB)
    assert all(t in bob_text for t in BOB) and not any(t in bob_text for t in ANA)


async def test_async_paths_give_the_same_messages(filled: OutputProfileMemory) -> None:
    sync_model, async_model = RecordingChatModel(), RecordingChatModel()
    inputs = {"topic": "maps", "question": "Where?"}
    (prompt() | filled.injector() | sync_model).invoke(inputs, config=cfg("ana"))
    (await (prompt() | filled.injector() | async_model).ainvoke(inputs, config=cfg("ana")))
    assert async_model.received == sync_model.received
    chunks = [
        c
        async for c in (prompt() | filled.injector() | async_model).astream(
            inputs, config=cfg("ana")
        )
    ]
    assert "".join(c.text for c in chunks) == "reply 2"
    assert async_model.received[1] == sync_model.received[0]


async def test_async_reads_the_store_off_the_event_loop(filled: OutputProfileMemory) -> None:
    """With a synchronous Chroma client every Chroma call of an async read runs on a worker
    thread, never on the event loop's."""
    threads = record_chroma_threads(filled)
    out = await filled.injector().ainvoke("hi", config=cfg("ana"))
    assert out[0].text.startswith("<user_profile>")
    assert threads and threading.get_ident() not in threads


def test_batch_and_stream_give_each_user_their_block(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    inputs = [{"topic": "a", "question": "1"}, {"topic": "b", "question": "2"}]
    replies = chain.batch(inputs, config=[cfg("ana"), cfg("bob")])
    assert len(replies) == 2
    by_question: dict[str, list[str]] = {
        str(m[-1].text): [str(x.text) for x in m] for m in model.received
    }
    assert by_question["1"] == ["You answer questions about a.", block_of(filled, "ana"), "1"]
    assert by_question["2"] == ["You answer questions about b.", block_of(filled, "bob"), "2"]
    chunks = list(chain.stream({"topic": "c", "question": "3"}, config=cfg("bob")))
    assert chunks and model.texts(-1) == [
        "You answer questions about c.",
        block_of(filled, "bob"),
        "3",
    ]


async def test_abatch_matches_batch(filled: OutputProfileMemory) -> None:
    sync_model, async_model = RecordingChatModel(), RecordingChatModel()
    inputs = [{"topic": "a", "question": "1"}, {"topic": "b", "question": "2"}]
    configs = [cfg("ana"), cfg("bob")]
    (prompt() | filled.injector() | sync_model).batch(inputs, config=configs)
    await (prompt() | filled.injector() | async_model).abatch(inputs, config=configs)

    def by_question(model: RecordingChatModel) -> dict[str, list[BaseMessage]]:
        return {m[-1].text: m for m in model.received}

    assert by_question(async_model) == by_question(sync_model)


def test_missing_user_id_is_a_clear_error_and_the_model_is_not_called(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    with pytest.raises(MissingUserIdError, match="user_id"):
        chain.invoke({"topic": "x", "question": "q"})
    with pytest.raises(OutprofileError):
        chain.invoke({"topic": "x", "question": "q"}, config={"configurable": {"user_id": ""}})
    assert model.received == []


async def test_missing_user_id_fails_on_the_async_path_too(filled: OutputProfileMemory) -> None:
    with pytest.raises(MissingUserIdError):
        await filled.injector().ainvoke("hi")


def test_empty_profile_injects_nothing(filled: OutputProfileMemory) -> None:
    filled.add("Awaiting feedback.", user_id="cleo", signal="pending")
    filled.add("Rejected text.", user_id="cleo", signal="rejected")
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    chain.invoke({"topic": "x", "question": "q"}, config=cfg("cleo"))
    chain.invoke({"topic": "x", "question": "q"}, config=cfg("nobody"))
    expected = [SystemMessage("You answer questions about x."), HumanMessage("q")]
    assert model.received == [expected, expected]


@pytest.mark.parametrize(
    "value",
    [
        "plain question",
        [("system", "Sys."), ("human", "plain question")],
        [{"role": "system", "content": "Sys."}, {"role": "user", "content": "plain question"}],
        [SystemMessage("Sys."), HumanMessage("plain question")],
    ],
)
def test_accepts_everything_a_chat_model_accepts(filled: OutputProfileMemory, value: Any) -> None:
    out = filled.injector().invoke(value, config=cfg("ana"))
    block = SystemMessage(block_of(filled, "ana"))
    if isinstance(value, str):
        assert out == [block, HumanMessage("plain question")]
    else:
        assert out == [SystemMessage("Sys."), block, HumanMessage("plain question")]


def test_prompt_value_input(filled: OutputProfileMemory) -> None:
    value = prompt().invoke({"topic": "x", "question": "q"})
    out = filled.injector().invoke(value, config=cfg("bob"))
    assert out == [
        SystemMessage("You answer questions about x."),
        SystemMessage(block_of(filled, "bob")),
        HumanMessage("q"),
    ]


@pytest.mark.parametrize("bad", [42, None, [("nonsense-role", "x")]])
def test_bad_input_is_a_typed_error(filled: OutputProfileMemory, bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        filled.injector().invoke(bad, config=cfg("ana"))


def test_content_block_system_message_keeps_its_blocks(filled: OutputProfileMemory) -> None:
    blocks = [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]
    system = SystemMessage(content=list[str | dict[Any, Any]](blocks))
    merged = filled.injector(user_id="ana", placement="merge").invoke([system, HumanMessage("q")])
    assert merged[0].content[1:] == blocks
    assert merged[0].text.startswith(block_of(filled, "ana"))
    out = filled.injector(user_id="ana").invoke([system, HumanMessage("q")])  # the default
    assert out == [system, SystemMessage(block_of(filled, "ana")), HumanMessage("q")]


def test_user_id_is_declared_in_config_specs(filled: OutputProfileMemory) -> None:
    chain = prompt() | filled.injector() | RecordingChatModel()
    assert "user_id" in {spec.id for spec in chain.config_specs}
    fixed = {spec.id for spec in filled.injector(user_id="ana").config_specs}
    assert "user_id" not in fixed and "profile_max_tokens" in fixed


def test_explicit_user_id_wins_over_config(filled: OutputProfileMemory) -> None:
    out = filled.injector(user_id="bob").invoke("q", config=cfg("ana"))
    assert sorted(parse_block(out[0].text)) == sorted(BOB)


def test_selection_options_reach_the_block(filled: OutputProfileMemory) -> None:
    filled.add("An email-only habit: greet by first name.", user_id="ana", task="email")
    small = filled.injector(max_tokens=80).invoke("q", config=cfg("ana"))[0].text
    assert filled.counter.count(small) <= 80
    assert len(parse_block(small)) < len(ANA) + 1
    scoped = filled.injector(task="email", fill_from_profile=False).invoke("q", config=cfg("ana"))
    assert parse_block(scoped[0].text) == ["An email-only habit: greet by first name."]
    stable = filled.injector(order="stable").invoke("q", config=cfg("ana"))[0].text
    assert parse_block(stable)[: len(ANA)] == ANA


@pytest.mark.parametrize(
    "kwargs", [{"placement": "top"}, {"colour": "red"}, {"max_tokens": 0}, {"user_id": ""}]
)
def test_bad_injector_options_fail_at_construction(
    filled: OutputProfileMemory, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        filled.injector(**kwargs)


def test_block_messages_fill_a_messages_placeholder(filled: OutputProfileMemory) -> None:
    template = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("profile", optional=True), ("system", "Sys."), ("human", "{q}")]
    )
    model = RecordingChatModel()
    (template | model).invoke({"profile": filled.block_messages("ana"), "q": "hi"})
    (template | model).invoke({"profile": filled.block_messages("nobody"), "q": "hi"})
    assert model.texts(0) == [block_of(filled, "ana"), "Sys.", "hi"]
    assert model.texts(1) == ["Sys.", "hi"]


def test_place_block_leaves_the_input_list_alone() -> None:
    messages: list[BaseMessage] = [SystemMessage("s"), HumanMessage("h")]
    placed = place_block(messages, "BLOCK")
    assert messages == [SystemMessage("s"), HumanMessage("h")]
    assert placed == [SystemMessage("s"), SystemMessage("BLOCK"), HumanMessage("h")]
    assert place_block(messages, "") == messages


def test_injector_is_a_runnable_in_parallel_event_loops(filled: OutputProfileMemory) -> None:
    injector: ProfileInjector = filled.injector()

    async def both() -> list[list[BaseMessage]]:
        return list(
            await asyncio.gather(
                injector.ainvoke("a", config=cfg("ana")), injector.ainvoke("b", config=cfg("bob"))
            )
        )

    ana, bob = asyncio.run(both())
    assert sorted(parse_block(ana[0].text)) == sorted(ANA)
    assert sorted(parse_block(bob[0].text)) == sorted(BOB)


class ListHistory(BaseChatMessageHistory):
    """A plain in-process chat history for the RunnableWithMessageHistory test."""

    def __init__(self) -> None:
        self.messages: list[BaseMessage] = []

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.messages.extend(messages)

    def clear(self) -> None:
        self.messages = []


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_shares_user_id_with_runnable_with_message_history(filled: OutputProfileMemory) -> None:
    histories: dict[tuple[str, str], ListHistory] = {}

    def history(user_id: str, conversation_id: str) -> ListHistory:
        return histories.setdefault((user_id, conversation_id), ListHistory())

    template = ChatPromptTemplate.from_messages(
        [("system", "Sys."), MessagesPlaceholder("history"), ("human", "{q}")]
    )
    model = RecordingChatModel()
    chain = RunnableWithMessageHistory(
        template | filled.injector() | model,
        history,
        input_messages_key="q",
        history_messages_key="history",
        history_factory_config=[
            USER_ID_SPEC,
            ConfigurableFieldSpec(id="conversation_id", annotation=str, default="", is_shared=True),
        ],
    )
    config: Any = {"configurable": {"user_id": "ana", "conversation_id": "c1"}}
    chain.invoke({"q": "hi"}, config=config)
    chain.invoke({"q": "again"}, config=config)
    assert model.texts(1) == ["Sys.", block_of(filled, "ana"), "hi", "reply 1", "again"]
    assert not any("<user_profile>" in m.text for m in histories[("ana", "c1")].messages)
