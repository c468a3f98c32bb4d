"""Per-call settings of the injector and retriever in real chains: what the model receives.

Budget, task, placement and every selection option change per call through the
``profile_<name>`` config keys (given to ``invoke`` or by ``with_config``), the one route
(``test_one_route.py`` holds it to every surface); unknown config keys are ignored.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableConfig

from langchain_outprofile import InvalidInputError, OutputProfileMemory, SelectionOptions
from langchain_outprofile.render import parse_block
from langchain_outprofile.surfaces._common import (
    DEFAULT_CALL_SETTINGS,
    PLACEMENTS,
    SETTING_NAMES,
    CallLimits,
    setting_specs,
)
from langchain_outprofile.surfaces.injector import ProfileInjector
from tests.fakes import RecordingChatModel

SYSTEM = "You write emails."
ANA = ["Short answer first, then bullets.", "No fluff. Sign off with -A.", "Use metric units."]
EMAIL = "Greet by first name in every email."


def cfg(user: str = "ana", **configurable: Any) -> RunnableConfig:
    return {"configurable": {"user_id": user, **configurable}}


def prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{q}")])


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    for n, text in enumerate(ANA):
        ephemeral_memory.add(text, user_id="ana", created_at=1_700_000_000.0 + n)
    ephemeral_memory.add(EMAIL, user_id="ana", task="email", created_at=1_700_000_100.0)
    return ephemeral_memory


def small_budget(memory: OutputProfileMemory) -> int:
    """A budget with no room for the last entry of ana's whole block."""
    return memory.select("ana").tokens - 5


def block_text(received: list[BaseMessage]) -> str:
    """The text of the block's message: the one that starts with ``<user_profile>``."""
    [text] = [m.text for m in received if m.text.startswith("<user_profile>")]
    return text


def entries(received: list[BaseMessage]) -> list[str]:
    """The profile entries the model read, wherever the placement put the block."""
    return parse_block(block_text(received))


def test_config_keys_change_the_block_per_call(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    chain.invoke({"q": "hi"}, config=cfg())
    chain.invoke(
        {"q": "hi"},
        config=cfg(profile_task="email", profile_fill_from_profile=False),
    )
    budget = small_budget(filled)
    chain.invoke({"q": "hi"}, config=cfg(profile_max_tokens=budget))
    chain.invoke({"q": "hi"}, config=cfg(profile_placement="separate"))
    full, scoped, small, separate = model.received
    assert sorted(entries(full)) == sorted([*ANA, EMAIL])
    assert entries(scoped) == [EMAIL]
    assert filled.counter.count(block_text(small)) <= budget
    assert 0 < len(entries(small)) < len(ANA) + 1
    assert [type(m) for m in full] == [SystemMessage, SystemMessage, HumanMessage]
    assert [type(m) for m in separate] == [SystemMessage, SystemMessage, HumanMessage]
    assert full[0].text == SYSTEM and full[1].text == block_text(full)  # the default
    assert separate[1].text == SYSTEM and separate[0].text == block_text(separate)
    chain.invoke({"q": "hi"}, config=cfg())  # the next call is back to the injector's own
    assert model.received[-1] == full


def test_with_config_carries_the_keys_and_unknown_keys_are_ignored(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    chain = (prompt() | filled.injector() | model).with_config(
        configurable={"profile_order": "stable", "profile_colour": "red", "temperature": 0.1}
    )
    chain.invoke({"q": "hi"}, config=cfg())
    assert entries(model.received[0]) == [*ANA, EMAIL]  # oldest first
    assert entries(model.received[0]) != parse_block(filled.select("ana").text)


def test_config_specs_declare_every_setting_beside_user_id(filled: OutputProfileMemory) -> None:
    every = CallLimits(settable=frozenset(SETTING_NAMES))
    chain = prompt() | filled.injector(limits=every) | RecordingChatModel()
    ids = {spec.id for spec in chain.config_specs}
    assert ids == {"user_id", *(f"profile_{name}" for name in SETTING_NAMES)}
    assert {f"profile_{f.name}" for f in fields(SelectionOptions)} < ids
    schema = chain.config_schema().model_json_schema()
    properties = schema["$defs"]["Configurable"]["properties"]
    assert properties["profile_placement"]["anyOf"][0]["enum"] == list(PLACEMENTS)
    assert properties["profile_max_tokens"]["default"] is None


def test_by_default_only_the_settings_a_call_may_change_are_declared(
    filled: OutputProfileMemory,
) -> None:
    ids = {spec.id for spec in filled.injector().config_specs}
    assert ids == {"user_id", *(f"profile_{name}" for name in DEFAULT_CALL_SETTINGS)}


def test_config_keys_win_over_the_injectors_own_settings(filled: OutputProfileMemory) -> None:
    injector = filled.injector(task="nothing-here", fill_from_profile=False)
    assert filled.injector(user_id="ana").invoke("hi") != injector.invoke("hi", config=cfg())
    assert injector.invoke("hi", config=cfg()) == [HumanMessage("hi")]  # empty scope
    from_config = injector.invoke("hi", config=cfg(profile_task="email"))
    assert parse_block(from_config[0].text) == [EMAIL]


def test_bad_per_call_values_are_typed_errors_and_the_model_is_not_called(
    filled: OutputProfileMemory,
) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    with pytest.raises(InvalidInputError, match="profile_max_tokens"):
        chain.invoke({"q": "hi"}, config=cfg(profile_max_tokens=0))
    with pytest.raises(InvalidInputError, match="placement"):
        chain.invoke({"q": "hi"}, config=cfg(profile_placement="top"))
    with pytest.raises(InvalidInputError, match="colour"):
        filled.injector().invoke("hi", config=cfg(), colour="red")
    with pytest.raises(InvalidInputError, match="user_id"):
        filled.injector().invoke("hi", config=cfg(), user_id="bob")  # the user is config's
    assert model.received == []


async def test_async_batch_and_stream_read_each_calls_config(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    chain = prompt() | filled.injector() | model
    await chain.ainvoke(
        {"q": "a"}, config=cfg(profile_task="email", profile_fill_from_profile=False)
    )
    await chain.abatch(
        [{"q": "b"}, {"q": "c"}],
        config=[cfg(profile_order="stable"), cfg(profile_max_tokens=small_budget(filled))],
    )
    chunks = [c async for c in chain.astream({"q": "d"}, config=cfg(profile_placement="separate"))]
    assert chunks
    by_question = {str(m[-1].text): m for m in model.received}
    assert entries(by_question["a"]) == [EMAIL]
    assert entries(by_question["b"]) == [*ANA, EMAIL]
    assert 0 < len(entries(by_question["c"])) < len(ANA) + 1
    assert by_question["d"][1].text == SYSTEM
    sync_model = RecordingChatModel()
    (prompt() | filled.injector() | sync_model).batch(
        [{"q": "b"}], config=[cfg(profile_order="stable")]
    )
    assert sync_model.received[0] == by_question["b"]


def test_every_selection_option_is_a_config_key() -> None:
    """Every SelectionOptions field can be declared as a ``profile_<name>`` key."""
    options = {f.name for f in fields(SelectionOptions)}
    assert options | {"placement"} == set(SETTING_NAMES)
    assert {s.id for s in setting_specs()} == {f"profile_{n}" for n in SETTING_NAMES}


def test_construction_still_validates(filled: OutputProfileMemory) -> None:
    with pytest.raises(InvalidInputError, match="colour"):
        ProfileInjector(filled, colour="red")
    with pytest.raises(InvalidInputError):
        ProfileInjector(filled, order="sideways")
    injector = ProfileInjector(memory=filled, order="stable", max_tokens=300)
    assert injector.settings.options.order == "stable"
    assert injector.settings.options.max_tokens == 300


def test_retriever_reads_the_option_keys(filled: OutputProfileMemory) -> None:
    retriever = filled.as_retriever(user_id="ana")
    ids = {spec.id for spec in retriever.config_specs}
    assert "profile_task" in ids and "profile_placement" not in ids and "user_id" not in ids
    docs = retriever.invoke(
        "q", config={"configurable": {"profile_task": "email", "profile_fill_from_profile": False}}
    )
    assert [d.page_content for d in docs] == [EMAIL]
    stable = retriever.invoke("q", config={"configurable": {"profile_order": "stable"}})
    assert [d.page_content for d in stable] == [*ANA, EMAIL]
    assert len(retriever.invoke("q")) == len(ANA) + 1
    with pytest.raises(InvalidInputError, match="profile_pool_size"):
        retriever.invoke("q", config={"configurable": {"profile_pool_size": -1}})


async def test_retriever_configurable_fields(filled: OutputProfileMemory) -> None:
    """Kept on the retriever: its fields are a ``BaseRetriever``'s (see its docstring)."""
    retriever = filled.as_retriever(user_id="ana").configurable_fields(
        k=ConfigurableField(id="top_k"), task=ConfigurableField(id="scope")
    )
    assert len(await retriever.ainvoke("q", config={"configurable": {"top_k": 2}})) == 2
    docs = await retriever.ainvoke("q", config={"configurable": {"scope": "email"}})
    assert docs[0].page_content == EMAIL
