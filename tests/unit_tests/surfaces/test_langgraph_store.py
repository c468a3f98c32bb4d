"""OutputProfileStore: the memory as a LangGraph BaseStore, on real Chroma and in real graphs.

LangGraph ships no store conformance suite (``langgraph-checkpoint-conformance`` covers
checkpointers only), so the BaseStore contract is checked here operation by operation:
Item and SearchItem shapes, ``batch`` results in op order, deletes with ``value=None``,
namespace validation and listing, the async forms. Then the store runs inside a compiled
``StateGraph``, under ``create_agent``, and behind LangMem's manage-memory tool.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import chromadb
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
)

from langchain_outprofile import (
    InvalidInputError,
    MissingUserIdError,
    OutputProfileMemory,
    OutputProfileStore,
)
from langchain_outprofile.render import parse_block
from langchain_outprofile.surfaces.langgraph_store import KEY_METADATA
from tests.conftest import ManualClock, offline_memory, unique_name
from tests.fakes import RecordingChatModel

ANA = ("profile", "ana")
BOB = ("profile", "bob")
TEXTS = {
    "units": "Use metric units: 5 km, 20 degrees Celsius.",
    "greeting": "Dear colleague, thank you for your kind letter.",
    "shape": "Short answer first, then bullets.",
}


@pytest.fixture
def store(ephemeral_memory: OutputProfileMemory) -> OutputProfileStore:
    return OutputProfileStore(ephemeral_memory)


@pytest.fixture
def filled(store: OutputProfileStore) -> OutputProfileStore:
    for key, text in TEXTS.items():
        store.put(ANA, key, {"text": text})
    store.put(BOB, "bob-1", {"text": "Kind regards, Robert.", "signal": "endorsed"})
    return store


def keys(items: list[SearchItem]) -> list[str]:
    return [item.key for item in items]


# -- get / put / delete -------------------------------------------------------------------


def test_put_then_get_on_every_chroma_mode(memory: OutputProfileMemory) -> None:
    store = OutputProfileStore(memory)
    store.put(ANA, "style", {"text": "Short answers.", "task": "email", "metadata": {"n": 1}})
    item = store.get(ANA, "style")
    assert isinstance(item, Item) and not isinstance(item, SearchItem)
    assert (item.namespace, item.key) == (ANA, "style")
    assert item.value["text"] == "Short answers."
    assert item.value["task"] == "email" and item.value["metadata"] == {"n": 1}
    assert item.value["signal"] == "authored" and item.value["strength"] == 1.0
    assert isinstance(item.created_at, datetime) and item.created_at.tzinfo is not None
    [stored] = memory.export("ana")
    assert stored["text"] == "Short answers." and stored["id"] == item.value["id"]
    assert stored["metadata"] == {"n": 1, KEY_METADATA: "style"}
    assert store.get(ANA, "missing") is None
    assert store.get(BOB, "style") is None  # another user's namespace holds nothing


def test_a_put_sets_the_entry_and_a_new_text_replaces_the_old(
    store: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    store.put(ANA, "k", {"text": "First version.", "signal": "endorsed"})
    first = store.get(ANA, "k")
    assert first is not None and first.value["strength"] == pytest.approx(0.8)
    store.put(ANA, "k", {"text": "First version.", "signal": "endorsed"})
    again = store.get(ANA, "k")
    assert again is not None
    assert again.value["signals"] == ["endorsed"] and again.value["strength"] == 0.8  # set
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    store.put(ANA, "k", {"text": "Second version."})
    assert [e["text"] for e in ephemeral_memory.export("ana")] == ["Second version."]
    latest = store.get(ANA, "k")
    assert latest is not None and latest.value["text"] == "Second version."


def test_value_none_and_delete_remove_the_entry(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    filled.put(ANA, "units", None)  # type: ignore[arg-type]
    filled.delete(ANA, "greeting")
    filled.delete(ANA, "never-there")
    assert filled.get(ANA, "units") is None and filled.get(ANA, "greeting") is None
    assert [e["text"] for e in ephemeral_memory.export("ana")] == [TEXTS["shape"]]
    assert len(ephemeral_memory.export("bob")) == 1


def test_a_returned_value_can_be_put_back_changed(filled: OutputProfileStore) -> None:
    filled.put(ANA, "rated", {"text": "Rated five stars.", "rating": 5})
    item = filled.get(ANA, "rated")
    assert item is not None and item.value["signal"] == "rating"
    filled.put(ANA, "rated", {**item.value, "task": "email"})
    changed = filled.get(ANA, "rated")
    assert changed is not None
    assert {k: v for k, v in changed.value.items() if k != "task"} == {
        k: v for k, v in item.value.items() if k != "task"
    }
    assert changed.value["task"] == "email" and changed.created_at == item.created_at
    filled.put(ANA, "rated", {**item.value, "signal": "rejected"})
    rejected = filled.get(ANA, "rated")
    assert rejected is not None and rejected.value["strength"] == 0.0
    assert "rated" not in keys(filled.search(ANA))


def test_content_is_text_and_bad_values_store_nothing(
    store: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    store.put(ANA, "m", {"content": "Written by LangMem's tool."})
    item = store.get(ANA, "m")
    assert item is not None and item.value["text"] == "Written by LangMem's tool."
    bad: list[dict[str, Any]] = [
        {"text": "x", "colour": "red"},
        {"content": {"kind": "structured"}},
        {"text": "a", "content": "b"},
        {"signal": "endorsed"},
        {"text": "x", "metadata": {KEY_METADATA: "forged"}},
        {"text": "x", "metadata": {"nested": {"no": 1}}},
        {"text": "x", "rating": 5, "strength": 0.5},
        {"text": "x", "signal": "loved"},
        {"text": "   "},
    ]
    for value in bad:
        with pytest.raises(InvalidInputError):
            store.put(ANA, "bad", value)
    with pytest.raises(InvalidInputError):
        store.batch([PutOp(ANA, "ok", {"text": "Fine."}), PutOp(ANA, "bad", {"text": 3})])
    assert [e["text"] for e in ephemeral_memory.export("ana")] == ["Written by LangMem's tool."]


def test_entries_written_by_the_memory_are_items_keyed_by_entry_id(
    store: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    entry = ephemeral_memory.add("Added without the store.", user_id="ana")
    item = store.get(ANA, entry.id)
    assert item is not None and item.value["text"] == "Added without the store."
    assert keys(store.search(ANA)) == [entry.id]
    store.put(ANA, "named", {"text": "Added without the store."})  # one text is one entry
    assert store.get(ANA, entry.id) is None
    moved = store.get(ANA, "named")
    assert moved is not None and moved.value["id"] == entry.id
    assert len(ephemeral_memory.export("ana")) == 1


def test_concurrent_puts_to_one_key_leave_one_entry(
    store: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    def writer(name: str) -> None:
        for n in range(8):
            store.put(ANA, "k", {"text": f"Version {n} from {name}."})

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claiming = [e for e in ephemeral_memory.export("ana") if e["metadata"][KEY_METADATA] == "k"]
    item = store.get(ANA, "k")
    assert len(claiming) == 1 and item is not None
    assert item.value["text"] == claiming[0]["text"]


def test_the_stores_default_signal_and_typed_keys(ephemeral_memory: OutputProfileMemory) -> None:
    store = OutputProfileStore(ephemeral_memory, signal="endorsed")
    store.put(ANA, "note", {"text": "An agent's note about ana."})
    store.put(ANA, "own", {"text": "Ana wrote this.", "signal": "authored"})
    note, own = store.get(ANA, "note"), store.get(ANA, "own")
    assert note is not None and note.value["signal"] == "endorsed"
    assert own is not None and own.value["signal"] == "authored"
    with pytest.raises(InvalidInputError, match="key"):
        store.batch([PutOp(ANA, 7, {"text": "x"})])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        OutputProfileStore(ephemeral_memory, signal="loved")


def test_a_puts_ttl_is_minutes_and_an_expired_item_is_never_read() -> None:
    clock = ManualClock()
    memory = offline_memory(chromadb.EphemeralClient(), unique_name("ttl"), clock=clock)
    store = OutputProfileStore(memory)
    assert store.supports_ttl is True
    store.put(ANA, "short", {"text": "Gone in five minutes."}, ttl=5)
    store.batch([PutOp(ANA, "batched", {"text": "Batched, five minutes too."}, ttl=5.0)])
    store.put(ANA, "day", {"text": "Kept for a day."}, ttl=24 * 60)
    store.put(BOB, "bob", {"text": "Bob keeps his forever."})
    clock.advance(5 * 60 - 1)
    assert store.get(ANA, "short") is not None
    assert set(keys(store.search(ANA))) == {"short", "batched", "day"}
    clock.advance(1)  # exactly five minutes: expired (expires_at <= now)
    assert store.get(ANA, "short") is None
    assert store.get(ANA, "batched") is None
    assert keys(store.search(ANA)) == ["day"]
    assert ANA in store.list_namespaces()
    assert memory.expire().by_user == {"ana": 2}
    clock.advance(86_400)
    assert store.get(ANA, "day") is None and store.list_namespaces() == [BOB]
    assert store.get(BOB, "bob") is not None


def test_a_put_without_a_ttl_replaces_the_items_expiry_as_langgraph_does() -> None:
    clock = ManualClock()
    memory = offline_memory(chromadb.EphemeralClient(), unique_name("ttl"), clock=clock)
    store = OutputProfileStore(memory)
    store.put(ANA, "k", {"text": "Short-lived at first."}, ttl=1)
    store.put(ANA, "k", {"text": "Short-lived at first."})  # the put sets the item anew
    clock.advance(3600)
    assert store.get(ANA, "k") is not None
    store.put(ANA, "k", {"text": "Short-lived at first."}, ttl=1)
    clock.advance(59)
    store.get(ANA, "k", refresh_ttl=True)  # a read never writes: no refresh
    clock.advance(1)
    assert store.get(ANA, "k") is None


def test_ttl_config_gives_a_default_and_refuses_what_it_cannot_do() -> None:
    clock = ManualClock()
    memory = offline_memory(chromadb.EphemeralClient(), unique_name("ttl"), clock=clock)
    store = OutputProfileStore(memory, ttl={"default_ttl": 1.0, "refresh_on_read": False})
    assert store.ttl_config == {"default_ttl": 1.0, "refresh_on_read": False}
    store.put(ANA, "default", {"text": "Expires after the default minute."})
    store.put(ANA, "own", {"text": "Expires after its own ten minutes."}, ttl=10)
    clock.advance(60)
    assert store.get(ANA, "default") is None and store.get(ANA, "own") is not None
    for bad in ({"refresh_on_read": True}, {"default_ttl": -1}, {"default_ttl": float("nan")}):
        with pytest.raises(InvalidInputError):
            OutputProfileStore(memory, ttl=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="refresh_on_read"):
        OutputProfileStore(memory, ttl={"refresh_on_read": True})
    for ttl in (0, -5, float("nan"), float("inf"), "5"):
        with pytest.raises(InvalidInputError, match="minutes"):
            store.batch([PutOp(ANA, "bad", {"text": "Never stored."}, ttl=ttl)])  # type: ignore[arg-type]
    assert store.get(ANA, "bad") is None


# -- search -------------------------------------------------------------------------------


def test_search_is_the_query_free_selection_in_block_order(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    selection = ephemeral_memory.select("ana")
    items = filled.search(ANA)
    assert all(isinstance(item, SearchItem) for item in items)
    assert [i.value["text"] for i in items] == [e.text for e in selection.entries]
    assert [i.value["text"] for i in items] == parse_block(selection.text)
    assert [i.score for i in items] == pytest.approx([c.score for c in selection.choice.chosen])
    assert {i.namespace for i in items} == {ANA}
    assert filled.search(ANA, query="metric units km") == items  # relevance_weight is 0
    assert keys(filled.search(ANA, limit=2)) == keys(items)[:2]
    assert keys(filled.search(ANA, offset=1, limit=1)) == keys(items)[1:2]
    assert keys(filled.search(BOB)) == ["bob-1"]


def test_search_follows_the_stores_selection_options(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    budget = ephemeral_memory.select("ana").tokens - 5  # no room for the last entry
    small = OutputProfileStore(ephemeral_memory, max_tokens=budget)
    assert 0 < len(small.search(ANA)) < len(TEXTS)
    relevant = OutputProfileStore(ephemeral_memory, relevance_weight=1.0)
    assert keys(relevant.search(ANA, query="metric units km Celsius"))[0] == "units"
    assert keys(relevant.search(ANA, query="Dear colleague, thank you"))[0] == "greeting"


def test_search_filters_compare_value_fields(filled: OutputProfileStore) -> None:
    filled.put(ANA, "email", {"text": "Greet by first name.", "task": "email"})
    filled.put(ANA, "meta", {"text": "Numbers as digits.", "metadata": {"level": 3}})
    assert keys(filled.search(ANA, filter={"task": "email"})) == ["email"]
    assert keys(filled.search(ANA, filter={"metadata": {"level": 3}})) == ["meta"]
    assert keys(filled.search(ANA, filter={"metadata": {"level": {"$gte": 2}}})) == ["meta"]
    assert "email" not in keys(filled.search(ANA, filter={"task": {"$ne": "email"}}))
    assert filled.search(ANA, filter={"strength": {"$lt": 0.5}}) == []
    with pytest.raises(InvalidInputError, match="operator"):
        filled.search(ANA, filter={"task": {"$like": "e%"}})


def test_a_cut_entry_keeps_its_stored_text(ephemeral_memory: OutputProfileMemory) -> None:
    long = " ".join(f"Sentence number {n} says a little more." for n in range(60))
    store = OutputProfileStore(ephemeral_memory, max_entry_tokens=30)
    store.put(ANA, "long", {"text": long})
    [item] = store.search(ANA)
    assert item.value["text"] == long
    assert long.startswith(item.value["block_text"]) and len(item.value["block_text"]) < len(long)
    assert "block_text" not in (store.get(ANA, "long") or item).value


# -- namespaces ---------------------------------------------------------------------------


def test_every_operation_needs_a_user_and_the_prefix(filled: OutputProfileStore) -> None:
    with pytest.raises(MissingUserIdError):
        filled.search(("profile",))
    with pytest.raises(MissingUserIdError):
        filled.search(())
    with pytest.raises(MissingUserIdError):
        filled.get(("profile",), "units")
    with pytest.raises(MissingUserIdError):
        filled.put(("profile",), "k", {"text": "x"})
    with pytest.raises(InvalidNamespaceError, match="profile"):
        filled.get(("memories", "ana"), "units")
    with pytest.raises(InvalidNamespaceError):
        filled.batch([GetOp(("profile", "a.b"), "k")])
    with pytest.raises(InvalidNamespaceError):
        filled.put(("langgraph", "ana"), "k", {"text": "x"})
    with pytest.raises(InvalidInputError):
        OutputProfileStore(filled.memory, prefix="a.b")


def test_labels_below_the_user_scope_keys_and_search(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    notes = (*ANA, "notes")
    filled.put(notes, "units", {"text": "Prefers tables over prose."})
    item = filled.get(notes, "units")
    assert item is not None and item.namespace == notes
    assert filled.get(ANA, "units") is not None  # the same key in (profile, ana) is another
    assert keys(filled.search(notes)) == ["units"]
    assert [i.namespace for i in filled.search(notes)] == [notes]
    assert notes in {i.namespace for i in filled.search(ANA)}
    assert len(ephemeral_memory.export("ana")) == len(TEXTS) + 1


def test_list_namespaces(filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory) -> None:
    filled.put((*ANA, "notes", "work"), "n", {"text": "Work notes in bullets."})
    ephemeral_memory.add("A user id with a period.", user_id="ana.smith")
    smith = ("profile", "ana%2Esmith")  # user_label("ana.smith"): a label may not hold "."
    everything = [ANA, (*ANA, "notes", "work"), smith, BOB]
    assert filled.list_namespaces() == everything
    assert filled.list_namespaces(max_depth=2) == [ANA, smith, BOB]
    assert filled.list_namespaces(max_depth=3) == [ANA, (*ANA, "notes"), smith, BOB]
    assert filled.list_namespaces(prefix=ANA) == [ANA, (*ANA, "notes", "work")]
    assert filled.list_namespaces(prefix=("profile", "*", "notes")) == [(*ANA, "notes", "work")]
    assert filled.list_namespaces(suffix=("work",)) == [(*ANA, "notes", "work")]
    assert filled.list_namespaces(suffix=("bob",), max_depth=2) == [BOB]
    assert filled.list_namespaces(prefix=("memories",)) == []
    assert filled.list_namespaces(limit=1, offset=1) == [(*ANA, "notes", "work")]


def test_a_page_of_namespaces_reads_only_the_users_up_to_it(
    store: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    """A depth and a limit of 10 used to read every user's entries (10,000 users:
    189.6 s). A page of sorted namespaces needs the users up to it, and the users are listed
    from their version rows (two reads per page of them, not one per user)."""
    users = [f"u{n:03d}" for n in range(40)]
    for user in users:
        store.put(("profile", user, "notes"), "n", {"text": f"Notes of {user}."})
    loaded: list[str] = []
    load = ephemeral_memory.store.load

    def counted(user_id: str, **options: Any) -> Any:
        loaded.append(user_id)
        return load(user_id, **options)

    ephemeral_memory.store.load = counted  # type: ignore[method-assign]
    page = store.list_namespaces(max_depth=3, limit=3, offset=2)
    assert page == [("profile", u, "notes") for u in users[2:5]]
    assert loaded == users[:5]
    assert store.list_namespaces(max_depth=3, limit=100)[-1] == ("profile", "u039", "notes")
    assert store.list_namespaces(max_depth=1) == [("profile",)]  # every user collapses


# -- batch and async ----------------------------------------------------------------------


def test_batch_runs_in_order_and_returns_one_result_per_op(filled: OutputProfileStore) -> None:
    results = filled.batch(
        [
            PutOp(ANA, "new", {"text": "Written in this batch."}),
            GetOp(ANA, "new"),
            SearchOp(ANA, limit=100),
            PutOp(ANA, "new", None),
            GetOp(ANA, "new"),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", BOB),)),
        ]
    )
    assert len(results) == 6 and results[0] is None and results[3] is None
    written = results[1]
    assert isinstance(written, Item) and written.value["text"] == "Written in this batch."
    searched = results[2]
    assert isinstance(searched, list)
    assert "new" in [i.key for i in searched if isinstance(i, SearchItem)]
    assert results[4] is None
    assert results[5] == [BOB]


async def test_async_operations_match_the_sync_ones(filled: OutputProfileStore) -> None:
    await filled.aput(ANA, "async", {"text": "Written asynchronously."})
    item = await filled.aget(ANA, "async")
    assert item is not None and item == filled.get(ANA, "async")
    assert keys(await filled.asearch(ANA)) == keys(filled.search(ANA))
    assert await filled.alist_namespaces() == filled.list_namespaces()
    await filled.adelete(ANA, "async")
    assert await filled.aget(ANA, "async") is None
    results = await filled.abatch([GetOp(ANA, "units"), GetOp(BOB, "bob-1")])
    assert [r.key for r in results if isinstance(r, Item)] == ["units", "bob-1"]
    both = await asyncio.gather(filled.asearch(ANA), filled.asearch(BOB))
    assert keys(both[1]) == ["bob-1"] and "bob-1" not in keys(both[0])


# -- in graphs ----------------------------------------------------------------------------


class State(TypedDict, total=False):
    note: str
    profile: list[str]


@dataclass
class Context:
    user_id: str


def remember(state: State, runtime: Runtime[Context]) -> State:
    assert runtime.store is not None
    namespace = ("profile", runtime.context.user_id)
    runtime.store.put(namespace, "note", {"text": state["note"], "signal": "endorsed"})
    return {}


def recall(state: State, runtime: Runtime[Context]) -> State:
    assert runtime.store is not None
    items = runtime.store.search(("profile", runtime.context.user_id))
    return {"profile": [item.value["text"] for item in items]}


def profile_graph(store: BaseStore) -> Any:
    graph = StateGraph(State, context_schema=Context)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph.compile(store=store)


def test_a_state_graph_writes_and_reads_each_users_profile(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    graph = profile_graph(filled)
    ana = graph.invoke({"note": "Answer in Spanish."}, context=Context(user_id="ana"))
    bob = graph.invoke({"note": "Answer in German."}, context=Context(user_id="bob"))
    assert "Answer in Spanish." in ana["profile"] and "Answer in German." not in ana["profile"]
    assert sorted(bob["profile"]) == sorted(["Answer in German.", "Kind regards, Robert."])
    selection = ephemeral_memory.select("ana")
    assert ana["profile"] == [e.text for e in selection.entries]


async def test_a_state_graph_runs_the_store_asynchronously(filled: OutputProfileStore) -> None:
    graph = profile_graph(filled)
    result = await graph.ainvoke({"note": "Use tables."}, context=Context(user_id="cleo"))
    assert result["profile"] == ["Use tables."]
    item = await filled.aget(("profile", "cleo"), "note")
    assert item is not None and item.value["signal"] == "endorsed"


def test_writes_through_the_store_reach_the_agents_model(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    """Writes through the store reach the profile block the middleware gives the model."""
    memory = ephemeral_memory
    model = RecordingChatModel()
    agent = create_agent(model, [], middleware=[memory.middleware()], store=filled)
    filled.put(ANA, "fresh", {"text": "Always end with a question."})
    agent.invoke({"messages": [HumanMessage("hi")]}, config={"configurable": {"user_id": "ana"}})
    assert "Always end with a question." in parse_block(model.received[0][0].text)


needs_langmem = pytest.mark.skipif(
    importlib.util.find_spec("langmem") is None, reason="LangMem is not installed"
)


@needs_langmem
def test_langmem_manage_memory_tool_writes_the_profile(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    from langmem import create_manage_memory_tool, create_search_memory_tool

    namespace = ("profile", "{langgraph_user_id}")
    manage = create_manage_memory_tool(namespace=namespace)  # finds the graph's store

    def call(name: str, args: dict[str, Any], n: int) -> AIMessage:
        return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"c{n}"}])

    text = "Prefers answers under 50 words."
    model = RecordingChatModel(
        messages=iter([call(manage.name, {"content": text}, 1), AIMessage("Noted.")])
    )
    memory = ephemeral_memory
    agent = create_agent(model, [manage], middleware=[memory.middleware()], store=filled)
    config: RunnableConfig = {"configurable": {"langgraph_user_id": "ana", "user_id": "ana"}}
    agent.invoke({"messages": [HumanMessage("Keep it short.")]}, config=config)
    [created] = [e for e in memory.export("ana") if e["text"] == text]
    key = str(created["metadata"][KEY_METADATA])
    assert filled.get(ANA, key) is not None and memory.export("bob")[0]["text"] != text

    search = create_search_memory_tool(namespace=namespace, store=filled)
    found = search.invoke({"query": "short"}, config=config)
    assert text in str(found) and TEXTS["units"] in str(found)  # the selection, block order

    manage = create_manage_memory_tool(namespace=namespace, store=filled)
    update = {"content": "Prefers answers under 30 words.", "action": "update", "id": key}
    manage.invoke(update, config)
    updated = filled.get(ANA, key)
    assert updated is not None and updated.value["text"] == "Prefers answers under 30 words."
    assert text not in [e["text"] for e in memory.export("ana")]
    manage.invoke({"action": "delete", "id": key}, config)
    assert filled.get(ANA, key) is None
    assert sorted(e["text"] for e in memory.export("ana")) == sorted(TEXTS.values())


@needs_langmem
async def test_langmem_tool_async_path(filled: OutputProfileStore) -> None:
    from langmem import create_manage_memory_tool

    manage = create_manage_memory_tool(namespace=("profile", "{langgraph_user_id}"), store=filled)
    config: RunnableConfig = {"configurable": {"langgraph_user_id": "dora"}}
    reply = await manage.ainvoke({"content": "Dora signs with -D."}, config)
    assert "created" in str(reply)
    [item] = await filled.asearch(("profile", "dora"))
    assert item.value["text"] == "Dora signs with -D."


def test_the_memory_gives_itself_as_a_store(ephemeral_memory: OutputProfileMemory) -> None:
    store = ephemeral_memory.as_store(max_tokens=300)
    store.put(("profile", "ana"), "tone", {"text": "Short answer first."})
    (item,) = store.search(("profile", "ana"))
    assert item.key == "tone" and item.value["text"] == "Short answer first."
    assert ephemeral_memory.select("ana").entries[0].text == "Short answer first."


class Answered(TypedDict, total=False):
    question: str
    answer: str


def test_a_tracked_graph_credits_only_what_its_store_search_returned(
    filled: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    def answer(state: Answered, runtime: Runtime[Context]) -> Answered:
        assert runtime.store is not None
        items = runtime.store.search(("profile", runtime.context.user_id), limit=1)
        return {"answer": items[0].value["text"]}

    graph = StateGraph(Answered, context_schema=Context)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    tracked = ephemeral_memory.track(graph.compile(store=filled))
    run = uuid.uuid4()
    config: Any = {"configurable": {"user_id": "ana"}, "run_id": run}
    result = tracked.invoke({"question": "Lunch?"}, config, context=Context(user_id="ana"))
    ephemeral_memory.feedback(run, "rejected")
    credits = {r["text"]: r.get("debited", 0) for r in ephemeral_memory.export("ana")}
    assert credits == {text: int(text == result["answer"]) for text in TEXTS.values()}
