"""One route for per-call settings, the same on every surface.

``config["configurable"]["profile_<name>"]`` sets a setting for one call and
``config["configurable"]["thread_id"]`` names the thread whose pinned block a call gets, read
by one function (``SurfaceSettings.for_call``) on the injector, the middleware, the retriever,
the LangGraph store and the tracked runnable. Each surface runs here as an app runs it: a
real LCEL chain, a ``create_agent`` graph, a ``StateGraph`` whose node searches the store,
with a fake chat model that records what it received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from langchain_outprofile import (
    CallLimits,
    InvalidInputError,
    OutputProfileMemory,
    RequestLimitError,
)
from langchain_outprofile.render import parse_block
from tests.fakes import RecordingChatModel

ANA = [
    "Short answer first, then bullets.",
    "No fluff. Sign off with -A.",
    "Use metric units and 24-hour times.",
    "Never use exclamation marks.",
]
EMAIL = ["Greet by first name in every email.", "Keep an email under five sentences."]
LATER = "Put the deadline in the subject line of an email."
"""Added after a thread's first read: a pinned thread must not show it, a new thread must."""


class GraphState(TypedDict, total=False):
    user: str
    texts: list[str]


def recall(state: GraphState, runtime: Runtime[None]) -> GraphState:
    """A node that reads the user's profile from the graph's store, as an app's node does."""
    assert runtime.store is not None
    items = runtime.store.search(("profile", state["user"]))
    return {"texts": [item.value.get("block_text", item.value["text"]) for item in items]}


def prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("human", "{q}")])


def first_block(model: RecordingChatModel) -> list[str]:
    """The entries of the profile block the model read in its latest call (with no system
    prompt of the app's, the block is the whole leading system message)."""
    return parse_block(model.received[-1][0].text)


def through_injector(memory: OutputProfileMemory, config: RunnableConfig) -> list[str]:
    model = RecordingChatModel()
    (prompt() | memory.injector() | model).invoke({"q": "hi"}, config=config)
    return first_block(model)


def through_middleware(memory: OutputProfileMemory, config: RunnableConfig) -> list[str]:
    model = RecordingChatModel()
    agent: Any = create_agent(model, [], middleware=[memory.middleware()])
    agent.invoke({"messages": [HumanMessage("hi")]}, config=config)
    return first_block(model)


def through_retriever(memory: OutputProfileMemory, config: RunnableConfig) -> list[str]:
    return [doc.page_content for doc in memory.as_retriever().invoke("hi", config=config)]


def through_store(memory: OutputProfileMemory, config: RunnableConfig) -> list[str]:
    graph = StateGraph(GraphState).add_node("recall", recall)
    graph = graph.add_edge(START, "recall").add_edge("recall", END)
    result = graph.compile(store=memory.as_store()).invoke({"user": "ana"}, config=config)
    texts: list[str] = result["texts"]
    return texts


def through_tracked(memory: OutputProfileMemory, config: RunnableConfig) -> list[str]:
    """A tracked chain that leads with the block: what its model read, and the output is
    recorded under the call's ``profile_task`` (the one setting the tracker itself uses)."""
    model = RecordingChatModel()
    run = uuid.uuid4()
    memory.track(prompt() | memory.injector() | model).invoke(
        {"q": "hi"}, config={**config, "run_id": run}
    )
    [recorded] = [r for r in memory.export("ana") if r.get("run_id") == str(run)]
    assert (recorded["task"] or None) == (config.get("configurable") or {}).get("profile_task")
    return first_block(model)


SURFACES: dict[str, Callable[[OutputProfileMemory, RunnableConfig], list[str]]] = {
    "injector": through_injector,
    "middleware": through_middleware,
    "retriever": through_retriever,
    "store": through_store,
    "tracked": through_tracked,
}


def cfg(**configurable: Any) -> RunnableConfig:
    return {"configurable": {"user_id": "ana", **configurable}}


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    for n, text in enumerate(ANA):
        ephemeral_memory.add(text, user_id="ana", created_at=1_700_000_000.0 + n)
    for n, text in enumerate(EMAIL):
        ephemeral_memory.add(text, user_id="ana", task="email", created_at=1_700_000_100.0 + n)
    return ephemeral_memory


@pytest.mark.parametrize("surface", SURFACES)
def test_the_same_config_gives_the_same_block_on_every_surface(
    filled: OutputProfileMemory, surface: str
) -> None:
    whole = filled.select("ana")
    budget = whole.tokens - 20  # no room for the whole profile: the budget must count
    expected = filled.select("ana", max_tokens=budget, task="email", thread_id="t-1")
    assert sorted(parse_block(expected.text)[:2]) == sorted(EMAIL)  # the task's lead
    assert len(expected.entries) < len(whole.entries)
    filled.add(LATER, user_id="ana", task="email")  # the thread keeps the block it started with
    config = cfg(profile_max_tokens=budget, profile_task="email", thread_id="t-1")
    assert SURFACES[surface](filled, config) == parse_block(expected.text)


@pytest.mark.parametrize("surface", SURFACES)
def test_two_threads_get_their_own_pins_on_every_surface(
    filled: OutputProfileMemory, surface: str
) -> None:
    read = SURFACES[surface]
    first = read(filled, cfg(thread_id="t-1"))
    assert sorted(first) == sorted([*ANA, *EMAIL])
    filled.add(LATER, user_id="ana", signal="endorsed")
    assert read(filled, cfg(thread_id="t-1")) == first  # pinned at the thread's first read
    fresh = read(filled, cfg(thread_id="t-2"))
    assert LATER in fresh and fresh != first
    assert read(filled, cfg(thread_id="t-1")) == first


def _refusal() -> str:
    """The error every surface gives a call that changes ``mmr_lambda`` under the default
    limits: the one check of :class:`CallLimits`, word for word."""
    with pytest.raises(RequestLimitError) as raised:
        CallLimits().check_names(["mmr_lambda"], "profile_")
    return str(raised.value)


REFUSERS: dict[str, Callable[[OutputProfileMemory, RecordingChatModel, RunnableConfig], Any]] = {
    "injector": lambda m, model, c: (prompt() | m.injector() | model).invoke({"q": "hi"}, c),
    "middleware": lambda m, model, c: create_agent(model, [], middleware=[m.middleware()]).invoke(
        {"messages": [HumanMessage("hi")]}, config=c
    ),
    "retriever": lambda m, model, c: m.as_retriever().invoke("hi", config=c),
    "store": lambda m, model, c: through_store(m, c),
    # no surface inside the tracked chain: the refusal is the tracker's own
    "tracked": lambda m, model, c: m.track(prompt() | model).invoke({"q": "hi"}, config=c),
}


@pytest.mark.parametrize("surface", REFUSERS)
def test_a_setting_outside_the_allow_list_is_refused_alike_on_every_surface(
    filled: OutputProfileMemory, surface: str
) -> None:
    before = filled.export("ana")
    model = RecordingChatModel()
    with pytest.raises(RequestLimitError) as raised:
        REFUSERS[surface](filled, model, cfg(profile_mmr_lambda=0.5, thread_id="t-1"))
    assert str(raised.value) == _refusal()
    assert model.received == []  # refused before any model call
    assert filled.export("ana") == before  # and before anything is written


def test_an_app_widens_the_allow_list_on_each_surface_it_builds(
    filled: OutputProfileMemory,
) -> None:
    wider = CallLimits(settable=frozenset({"mmr_lambda", "task"}))
    config = cfg(profile_mmr_lambda=0.5)
    expected = [e.text for e in filled.select("ana", mmr_lambda=0.5).entries]
    model = RecordingChatModel()
    create_agent(model, [], middleware=[filled.middleware(limits=wider)]).invoke(
        {"messages": [HumanMessage("hi")]}, config=config
    )
    assert first_block(model) == expected
    docs = filled.as_retriever(limits=wider).invoke("hi", config=config)
    assert [d.page_content for d in docs] == expected
    tracked = filled.track(prompt() | filled.injector(limits=wider) | model, limits=wider)
    tracked.invoke({"q": "hi"}, config=config)
    assert first_block(model) == expected


def test_the_injector_takes_no_settings_but_the_config_keys(filled: OutputProfileMemory) -> None:
    """Keyword arguments of ``invoke`` (and so ``bind``) were a second route: refused with
    the key to use, never silently dropped."""
    model = RecordingChatModel()
    with pytest.raises(InvalidInputError, match=r"profile_task"):
        filled.injector().invoke("hi", config=cfg(), task="email")
    with pytest.raises(InvalidInputError, match=r"profile_max_tokens"):
        (prompt() | filled.injector().bind(max_tokens=50) | model).invoke({"q": "hi"}, cfg())
    assert model.received == []
    assert not hasattr(filled.injector(), "configurable_fields")


def test_the_retriever_takes_k_but_no_setting_as_a_keyword(filled: OutputProfileMemory) -> None:
    retriever = filled.as_retriever()
    assert len(retriever.invoke("hi", config=cfg(), k=2)) == 2
    with pytest.raises(InvalidInputError, match=r"profile_task"):
        retriever.invoke("hi", config=cfg(), task="email")


def test_the_middleware_sets_placement_per_call(filled: OutputProfileMemory) -> None:
    model = RecordingChatModel()
    agent: Any = create_agent(
        model, [], system_prompt="You are terse.", middleware=[filled.middleware()]
    )
    agent.invoke({"messages": [HumanMessage("hi")]}, config=cfg(profile_placement="merge"))
    agent.invoke({"messages": [HumanMessage("hi")]}, config=cfg())  # the default: after_system
    block = filled.select("ana").text
    assert model.texts(0) == [f"{block}\n\nYou are terse.", "hi"]
    assert model.texts(1) == ["You are terse.", block, "hi"]


async def test_the_store_reads_the_config_of_an_async_run(filled: OutputProfileMemory) -> None:
    async def arecall(state: GraphState, runtime: Runtime[None]) -> GraphState:
        assert runtime.store is not None
        items = await runtime.store.asearch(("profile", state["user"]))
        return {"texts": [item.value["text"] for item in items]}

    graph = StateGraph(GraphState).add_node("recall", arecall)
    graph = graph.add_edge(START, "recall").add_edge("recall", END)
    compiled = graph.compile(store=filled.as_store())
    config = cfg(profile_task="email", profile_fill_from_profile=False)
    result = await compiled.ainvoke({"user": "ana"}, config=config)
    assert sorted(result["texts"]) == sorted(EMAIL)
    outside = [item.value["text"] for item in await filled.as_store().asearch(("profile", "ana"))]
    assert sorted(outside) == sorted([*ANA, *EMAIL])  # outside a run: the store's own settings
