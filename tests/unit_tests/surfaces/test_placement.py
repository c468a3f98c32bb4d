"""Where the block goes: every placement's messages, the cache breakpoint, and what
ChatAnthropic would send (its request payload, built offline)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig

from langchain_outprofile import InvalidInputError, OutputProfileMemory
from langchain_outprofile.surfaces._common import PLACEMENTS, setting_specs
from langchain_outprofile.surfaces.messages import (
    CACHE_CONTROL,
    place_block,
    with_cache_breakpoint,
)
from tests.fakes import RecordingChatModel

STATIC = "You are the support assistant of a shop. Answer briefly."
TOOLS = "Tools: look up an order by its number."
BLOCK = "<user_profile>\nShort answer first.\n</user_profile>"
ANA = ["Short answer first, then bullets.", "No fluff. Sign off with -A."]
MARK = {"cache_control": {"type": "ephemeral"}}


def texts(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(m.type, m.text) for m in messages]


def cfg(user: str, **configurable: Any) -> RunnableConfig:
    return {"configurable": {"user_id": user, **configurable}}


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    for text in ANA:
        ephemeral_memory.add(text, user_id="ana")
    return ephemeral_memory


# -- place_block: order and content of every placement ------------------------------------


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        ("merge", [("system", f"{BLOCK}\n\n{STATIC}"), ("human", "hi")]),
        ("separate", [("system", BLOCK), ("system", STATIC), ("human", "hi")]),
        ("after_system", [("system", STATIC), ("system", BLOCK), ("human", "hi")]),
    ],
)
def test_each_placement_with_one_leading_system_message(
    placement: Any, expected: list[tuple[str, str]]
) -> None:
    messages: list[BaseMessage] = [SystemMessage(STATIC), HumanMessage("hi")]
    assert texts(place_block(messages, BLOCK, placement)) == expected


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_without_a_system_message_every_placement_puts_the_block_first(placement: Any) -> None:
    messages: list[BaseMessage] = [HumanMessage("hi"), AIMessage("yes"), HumanMessage("and?")]
    placed = place_block(messages, BLOCK, placement)
    assert placed == [SystemMessage(BLOCK), *messages]


def test_after_system_follows_the_whole_leading_run_of_system_messages() -> None:
    later = SystemMessage("late note")
    messages: list[BaseMessage] = [
        SystemMessage(STATIC),
        SystemMessage(TOOLS),
        HumanMessage("hi"),
        later,
    ]
    placed = place_block(messages, BLOCK, "after_system")
    assert texts(placed) == [
        ("system", STATIC),
        ("system", TOOLS),
        ("system", BLOCK),
        ("human", "hi"),
        ("system", "late note"),
    ]
    assert placed[0] is messages[0] and placed[-1] is later  # unmarked: the same objects


def test_merge_and_separate_still_lead_before_several_system_messages() -> None:
    messages: list[BaseMessage] = [SystemMessage(STATIC), SystemMessage(TOOLS), HumanMessage("hi")]
    assert texts(place_block(messages, BLOCK, "merge"))[:2] == [
        ("system", f"{BLOCK}\n\n{STATIC}"),
        ("system", TOOLS),
    ]
    assert texts(place_block(messages, BLOCK, "separate"))[:3] == [
        ("system", BLOCK),
        ("system", STATIC),
        ("system", TOOLS),
    ]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_an_empty_block_changes_and_marks_nothing(placement: Any) -> None:
    messages: list[BaseMessage] = [SystemMessage(STATIC), HumanMessage("hi")]
    assert place_block(messages, "", placement, cache_breakpoint=True) == messages


# -- the cache breakpoint ------------------------------------------------------------------


def test_the_breakpoint_marks_the_last_prefix_message_only_and_copies_it() -> None:
    messages: list[BaseMessage] = [SystemMessage(STATIC), SystemMessage(TOOLS), HumanMessage("hi")]
    placed = place_block(messages, BLOCK, "after_system", cache_breakpoint=True)
    assert placed[0].content == STATIC
    assert placed[1].content == [{"type": "text", "text": TOOLS, **MARK}]
    assert placed[2] == SystemMessage(BLOCK) and placed[3] == messages[2]
    assert messages[1].content == TOOLS, "the caller's message is not changed"


def test_a_list_content_gets_the_marker_on_its_last_non_empty_block() -> None:
    content: list[Any] = [
        {"type": "text", "text": STATIC},
        "plain string block",
        {"type": "text", "text": ""},
    ]
    [marked] = with_cache_breakpoint([SystemMessage(content=content)])
    assert marked.content == [
        {"type": "text", "text": STATIC},
        {"type": "text", "text": "plain string block", **MARK},
        {"type": "text", "text": ""},
    ]
    assert "cache_control" not in content[0] and content[1] == "plain string block"


def test_an_empty_last_system_message_passes_the_marker_to_the_one_before() -> None:
    prefix: list[BaseMessage] = [SystemMessage(STATIC), SystemMessage("")]
    marked = with_cache_breakpoint(prefix)
    assert marked[0].content == [{"type": "text", "text": STATIC, **MARK}]
    assert marked[1].content == ""
    assert with_cache_breakpoint([SystemMessage("")]) == [SystemMessage("")]


def test_without_a_prefix_nothing_is_marked() -> None:
    placed = place_block([HumanMessage("hi")], BLOCK, "after_system", cache_breakpoint=True)
    assert placed == [SystemMessage(BLOCK), HumanMessage("hi")]


def test_every_marker_is_a_fresh_dict() -> None:
    first = with_cache_breakpoint([SystemMessage(STATIC)])[0].content[0]
    second = with_cache_breakpoint([SystemMessage(STATIC)])[0].content[0]
    assert isinstance(first, dict) and isinstance(second, dict)
    first["cache_control"]["ttl"] = "1h"
    assert second["cache_control"] == CACHE_CONTROL == {"type": "ephemeral"}


# -- settings: where after_system and the breakpoint are accepted --------------------------


def test_the_config_key_declares_and_accepts_after_system(filled: OutputProfileMemory) -> None:
    [spec] = setting_specs(["placement"])
    assert "after_system" in str(spec.annotation)
    model = RecordingChatModel()
    prompt = ChatPromptTemplate.from_messages([("system", STATIC), ("human", "{q}")])
    chain = prompt | filled.injector(placement="merge") | model  # not the default: the key acts
    chain.invoke({"q": "hi"}, config=cfg("ana", profile_placement="after_system"))
    chain.invoke({"q": "hi"}, config=cfg("ana"))
    block = filled.select("ana").text
    assert texts(model.received[0]) == [("system", STATIC), ("system", block), ("human", "hi")]
    assert texts(model.received[1]) == [("system", f"{block}\n\n{STATIC}"), ("human", "hi")]


def test_a_breakpoint_without_after_system_is_refused(filled: OutputProfileMemory) -> None:
    for placement in ("merge", "separate"):
        with pytest.raises(InvalidInputError, match="after_system"):
            filled.injector(placement=placement, cache_breakpoint=True)
    with pytest.raises(InvalidInputError, match="cache_breakpoint"):
        filled.injector(placement="after_system", cache_breakpoint="yes")
    injector = filled.injector(placement="after_system", cache_breakpoint=True)
    with pytest.raises(InvalidInputError, match="after_system"):
        injector.invoke([HumanMessage("hi")], cfg("ana", profile_placement="merge"))


def test_an_unknown_placement_names_every_choice(filled: OutputProfileMemory) -> None:
    with pytest.raises(InvalidInputError, match="'merge', 'separate', 'after_system'"):
        filled.injector(placement="after-system")


# -- the injector in a chain ---------------------------------------------------------------


def test_injector_after_system_keeps_the_app_prompt_first(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    prompt = ChatPromptTemplate.from_messages(
        [("system", STATIC), ("system", TOOLS), ("human", "{q}")]
    )
    chain = prompt | filled.injector(placement="after_system", cache_breakpoint=True) | model
    chain.invoke({"q": "Where is my order?"}, config=cfg("ana", thread_id="t-1"))
    chain.invoke({"q": "And now?"}, config=cfg("ana", thread_id="t-1"))
    block = filled.select("ana", thread_id="t-1").text
    first, second = model.received
    assert first[0].content == STATIC
    assert first[1].content == [{"type": "text", "text": TOOLS, **MARK}]
    assert first[2] == SystemMessage(block) and first[3].text == "Where is my order?"
    assert second[:3] == first[:3], "a pinned thread sends the same prefix and block"


async def test_injector_async_gives_the_same_messages(filled: OutputProfileMemory) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", STATIC), ("human", "{q}")])
    sync_model, async_model = RecordingChatModel(), RecordingChatModel()
    injector = filled.injector(placement="after_system", cache_breakpoint=True)
    (prompt | injector | sync_model).invoke({"q": "hi"}, config=cfg("ana"))
    await (prompt | injector | async_model).ainvoke({"q": "hi"}, config=cfg("ana"))
    assert async_model.received == sync_model.received
    assert sync_model.received[0][1] == SystemMessage(filled.select("ana").text)


def test_block_messages_go_after_the_system_prompt_through_a_placeholder(
    filled: OutputProfileMemory,
) -> None:
    """``block_messages`` has no placement: the app places the placeholder."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", STATIC), MessagesPlaceholder("profile", optional=True), ("human", "{q}")]
    )
    value = prompt.invoke({"profile": filled.block_messages("ana"), "q": "hi"})
    block = filled.select("ana").text
    assert texts(value.to_messages()) == [("system", STATIC), ("system", block), ("human", "hi")]


# -- what ChatAnthropic would send (no network) ---------------------------------------------


def test_chat_anthropic_sends_the_marked_prefix_then_the_block_in_its_system_field(
    filled: OutputProfileMemory,
) -> None:
    anthropic = pytest.importorskip("langchain_anthropic")
    model = anthropic.ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-offline-test")
    prompt = ChatPromptTemplate.from_messages([("system", STATIC), ("human", "{q}")])
    injector = filled.injector(placement="after_system", cache_breakpoint=True)
    messages = (prompt | injector).invoke({"q": "hi"}, config=cfg("ana"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a system message hoisted out of place
        payload = model._get_request_payload(messages)
    block = filled.select("ana").text
    assert payload["system"] == [
        {"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": block},
    ]
    assert payload["messages"] == [{"role": "user", "content": "hi"}]


def test_chat_anthropic_without_the_breakpoint_marks_nothing(
    filled: OutputProfileMemory,
) -> None:
    anthropic = pytest.importorskip("langchain_anthropic")
    model = anthropic.ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-offline-test")
    prompt = ChatPromptTemplate.from_messages([("system", STATIC), ("human", "{q}")])
    messages = (prompt | filled.injector(placement="after_system")).invoke(
        {"q": "hi"}, config=cfg("ana")
    )
    payload = model._get_request_payload(messages)
    assert payload["system"] == [
        {"type": "text", "text": STATIC},
        {"type": "text", "text": filled.select("ana").text},
    ]
    assert "cache_control" not in str(payload)
