"""A block pinned per conversation thread: byte-identical for the whole thread while
feedback lands, current for a new thread, shared by every memory on the store, dropped by
``forget`` and ``delete``, and read by the injector, ``block_messages`` and the middleware."""

from __future__ import annotations

import uuid
from typing import Any

import chromadb
import pytest
from langchain.agents import create_agent
from langchain_core.prompts import ChatPromptTemplate

from langchain_outprofile import OutputProfileMemory, ReadOptions
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.store import state as state_rows
from tests.conftest import ManualClock, offline_memory, unique_name
from tests.fakes import RecordingChatModel

_memory = offline_memory


def _filled(client: chromadb.api.ClientAPI, **kwargs: Any) -> OutputProfileMemory:
    memory = _memory(client, unique_name("pins"), **kwargs)
    memory.add("Short answer first.", user_id="ana")
    return memory


def _state_rows_of(memory: OutputProfileMemory, user: str) -> list[str]:
    found = memory.store.state._collection.get(where={"user_id": user}, include=[])
    return list(found["ids"])


def test_a_thread_keeps_its_block_while_feedback_lands(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    first = memory.select("ana", thread_id="t-1").text
    blocks = [first]
    for turn in range(5):
        run = str(uuid.uuid4())
        memory.record_output(f"Answer of turn {turn}.", user_id="ana", run_id=run)
        memory.feedback(run, "endorsed")
        blocks.append(memory.select("ana", thread_id="t-1").text)
    assert blocks == [first] * 6
    current = memory.select("ana").text
    assert "Answer of turn 4." in current and current != first
    assert memory.select("ana", thread_id="t-2").text == current


def test_pinning_can_be_turned_off(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client, reads=ReadOptions(pin_threads=False))
    first = memory.select("ana", thread_id="t-1").text
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    assert memory.select("ana", thread_id="t-1").text != first
    assert not [r for r in _state_rows_of(memory, "ana") if r.startswith("p:")]


def test_every_memory_on_the_store_serves_the_same_pin(client: chromadb.api.ClientAPI) -> None:
    one = _filled(client)
    pinned = one.select("ana", thread_id="t-1").text
    one.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    other = _memory(client, one.store.collection_name)
    assert other.select("ana", thread_id="t-1").text == pinned
    assert other.select("ana", thread_id="t-9").text != pinned


def test_a_pin_expires(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _filled(client, clock=clock, reads=ReadOptions(pin_ttl_s=600))
    first = memory.select("ana", thread_id="t-1").text
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    clock.advance(601)
    later = memory.select("ana", thread_id="t-1").text
    assert later != first and "Bullets, no fluff." in later


def test_expired_pins_are_deleted_when_the_next_is_saved(client: chromadb.api.ClientAPI) -> None:
    clock = ManualClock()
    memory = _filled(client, clock=clock, reads=ReadOptions(pin_ttl_s=600))
    memory.select("ana", thread_id="t-1")
    clock.advance(601)
    memory.select("ana", thread_id="t-2")
    assert len([r for r in _state_rows_of(memory, "ana") if r.startswith("p:")]) == 1


def test_forget_drops_the_pins(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    assert "Short answer first." in memory.select("ana", thread_id="t-1").text
    memory.forget("ana")
    assert _state_rows_of(memory, "ana") == []
    assert memory.select("ana", thread_id="t-1").text == ""
    other = _memory(client, memory.store.collection_name)
    assert other.select("ana", thread_id="t-1").text == ""


def test_delete_drops_the_pins_that_quote_it(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    assert "Short answer first." in memory.select("ana", thread_id="t-1").text
    entry = next(e for e in memory.export("ana") if e["text"] == "Short answer first.")
    memory.delete(entry["id"], user_id="ana")
    assert "Short answer first." not in memory.select("ana", thread_id="t-1").text
    other = _memory(client, memory.store.collection_name)
    assert "Short answer first." not in other.select("ana", thread_id="t-1").text


def test_a_read_of_an_unknown_user_pins_nothing(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    assert memory.select("nobody", thread_id="t-1").text == ""
    assert _state_rows_of(memory, "nobody") == []


def test_pins_are_per_user(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    memory.add("Cheers, Bob", user_id="bob")
    ana = memory.select("ana", thread_id="shared-thread").text
    bob = memory.select("bob", thread_id="shared-thread").text
    assert "Cheers, Bob" in bob and "Cheers, Bob" not in ana
    assert "Short answer first." not in bob


@pytest.mark.parametrize("bad", ["", "x" * 513, "a\x00b", 1.5, b"t-1", True])
def test_a_bad_thread_id_is_refused(client: chromadb.api.ClientAPI, bad: Any) -> None:
    memory = _filled(client)
    with pytest.raises(InvalidInputError, match="thread_id"):
        memory.select("ana", thread_id=bad)


def test_the_injector_pins_by_the_configs_thread_id(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    model = RecordingChatModel()
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
    chain = prompt | memory.injector() | model
    config: Any = {"configurable": {"user_id": "ana", "thread_id": "t-1"}}
    chain.invoke({"q": "one"}, config=config)
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    chain.invoke({"q": "two"}, config=config)
    chain.invoke({"q": "three"}, config={"configurable": {"user_id": "ana", "thread_id": "t-2"}})
    first, second, third = (model.block(n) for n in range(3))
    assert first == second
    assert "Bullets, no fluff." in third and "Bullets, no fluff." not in first


def test_block_messages_pin_by_thread(client: chromadb.api.ClientAPI) -> None:
    memory = _filled(client)
    first = memory.block_messages("ana", thread_id="t-1")
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    assert memory.block_messages("ana", thread_id="t-1") == first
    assert memory.block_messages("ana") != first


def test_the_middleware_pins_by_the_configs_thread_id_alone(
    client: chromadb.api.ClientAPI,
) -> None:
    """``config["configurable"]["thread_id"]`` names the thread, as on every surface; a
    ``thread_id`` in the agent's ``runtime.context`` is the app's own and names nothing."""
    memory = _filled(client)
    model = RecordingChatModel()
    agent: Any = create_agent(
        model, [], system_prompt="Be brief.", middleware=[memory.middleware()]
    )
    thread: Any = {"configurable": {"thread_id": "t-1"}}
    agent.invoke({"messages": [("user", "one")]}, config=thread, context={"user_id": "ana"})
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    agent.invoke({"messages": [("user", "two")]}, config=thread, context={"user_id": "ana"})
    agent.invoke({"messages": [("user", "three")]}, context={"user_id": "ana", "thread_id": "t-1"})
    agent.invoke({"messages": [("user", "four")]}, context={"user_id": "ana"})
    blocks = [model.block(n) for n in range(4)]
    assert blocks[0] == blocks[1] and "Bullets, no fluff." not in blocks[0]
    assert "Bullets, no fluff." in blocks[2] and blocks[2] == blocks[3]


def _pin_rows(memory: OutputProfileMemory, user: str) -> dict[str, Any]:
    found = memory.store.state._collection.get(where={"user_id": user}, include=["metadatas"])
    return {
        id_: meta
        for id_, meta in zip(found["ids"], found["metadatas"] or [], strict=True)
        if id_.startswith("p:")
    }


def test_a_pin_left_behind_by_a_forget_serves_nothing_forgotten(
    client: chromadb.api.ClientAPI,
) -> None:
    """A reader killed between saving a pin and taking it back (a forget came between)
    leaves the pin row behind: it must serve nothing of the forgotten text, neither right
    after the forget nor once the user writes again."""
    memory = _filled(client)
    memory.add("Secret detail 4411.", user_id="ana", signal="endorsed")
    assert "Secret detail 4411." in memory.select("ana", thread_id="t-1").text
    left_behind = _pin_rows(memory, "ana")
    memory.forget("ana")
    state = memory.store.state._collection
    state.add(
        ids=list(left_behind),
        metadatas=list(left_behind.values()),
        embeddings=[[1.0]] * len(left_behind),
    )
    fresh = _memory(client, memory.store.collection_name)
    assert fresh.select("ana", thread_id="t-1").text == ""
    fresh.add("A new start.", user_id="ana")
    again = _memory(client, memory.store.collection_name)
    served = again.select("ana", thread_id="t-1").text
    assert "A new start." in served and "Secret detail 4411." not in served


def test_a_pin_stores_ids_not_texts(client: chromadb.api.ClientAPI) -> None:
    """A pin names its entries; it quotes no text and no metadata, so its row's size does
    not grow with the entries' (1.3 MB a pin with large metadata before)."""
    memory = _memory(client, unique_name("pins"))
    bulky = {f"k{i}": "v" * 500 for i in range(20)}
    for n in range(12):
        memory.add(f"Entry {n} " + "word " * 40, user_id="ana", metadata=bulky)
    text = memory.select("ana", thread_id="t-1", max_tokens=400).text
    assert "Entry" in text
    [row] = _pin_rows(memory, "ana").values()
    assert "Entry" not in row["payload"] and "vvvv" not in row["payload"]
    assert len(row["payload"]) < 2_000
    other = _memory(client, memory.store.collection_name)
    assert other.select("ana", thread_id="t-1", max_tokens=400).text == text


def test_a_users_pins_are_bounded(
    client: chromadb.api.ClientAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 pinned threads of one user were 1,002 state rows; past the bound, the pins
    expiring first go, and a thread whose pin went gets the current block."""
    monkeypatch.setattr(state_rows, "MAX_PINS_PER_USER", 5)
    clock = ManualClock()
    memory = _filled(client, clock=clock)
    first = memory.select("ana", thread_id="t-0").text
    for n in range(1, 12):
        clock.advance(1)
        memory.select("ana", thread_id=f"t-{n}")
    assert len(_pin_rows(memory, "ana")) == 5
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    assert memory.select("ana", thread_id="t-11").text == first  # still pinned
    other = _memory(client, memory.store.collection_name)
    assert "Bullets, no fluff." in other.select("ana", thread_id="t-0").text  # pin went
