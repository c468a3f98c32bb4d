"""ProfileRetriever: langchain-tests' standard retriever suite, plus the profile specifics."""

from __future__ import annotations

import functools
from typing import Any

import chromadb
import pytest
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from langchain_outprofile import InvalidInputError, OutputProfileMemory
from langchain_outprofile.errors import MissingUserIdError
from langchain_outprofile.surfaces.retriever import ProfileRetriever
from tests.conftest import unique_name

ANA = [
    "Short answer first, then bullets.",
    "Never use exclamation marks in a business email",
    "I prefer metric units and 24-hour times: 14:30, 5 km.",
    "Sign off with just -A; no 'best regards' please.",
]


@functools.cache
def seeded_memory() -> OutputProfileMemory:
    """One real in-process Chroma memory shared by the standard suite (read-only there)."""
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name()
    )
    for n, text in enumerate(ANA):
        memory.add(text, user_id="ana", created_at=1_700_000_000.0 + n)
    memory.add("Bob's text must never appear for ana.", user_id="bob")
    return memory


class TestProfileRetrieverStandard(RetrieversIntegrationTests):
    """The standard suite; ``k`` is the number-of-results argument (constructor and invoke)."""

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return ProfileRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": seeded_memory(), "user_id": "ana"}

    @property
    def retriever_query_example(self) -> str:
        return "how should I answer this email?"

    @property
    def num_results_arg_name(self) -> str:
        return "k"


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    for n, text in enumerate(ANA):
        ephemeral_memory.add(text, user_id="ana", task="email" if n == 1 else None)
    ephemeral_memory.add("Bob's text must never appear for ana.", user_id="bob", signal="endorsed")
    return ephemeral_memory


def test_documents_are_the_selection_in_block_order_with_metadata(
    filled: OutputProfileMemory,
) -> None:
    docs = filled.as_retriever(user_id="ana").invoke("anything")
    selection = filled.select("ana")
    assert [d.page_content for d in docs] == [e.text for e in selection.entries]
    assert sorted(d.page_content for d in docs) == sorted(ANA)
    first = docs[0].metadata
    assert first["id"] == selection.entries[0].id == docs[0].id
    assert first["signal"] == "authored" and first["strength"] == 1.0
    assert first["score"] == pytest.approx(selection.choice.chosen[0].score)
    assert set(first) >= {"id", "signal", "strength", "task", "score"}


def test_user_id_from_config_and_isolation(filled: OutputProfileMemory) -> None:
    retriever = filled.as_retriever()
    assert "user_id" in {s.id for s in retriever.config_specs}
    bob = retriever.invoke("q", config={"configurable": {"user_id": "bob"}})
    assert [d.page_content for d in bob] == ["Bob's text must never appear for ana."]
    ana = retriever.invoke("q", config={"configurable": {"user_id": "ana"}})
    assert "Bob's text must never appear for ana." not in {d.page_content for d in ana}
    with pytest.raises(MissingUserIdError):
        retriever.invoke("q")


async def test_async_matches_sync(filled: OutputProfileMemory) -> None:
    retriever = filled.as_retriever(user_id="ana", k=2)
    assert await retriever.ainvoke("q") == retriever.invoke("q")
    with pytest.raises(MissingUserIdError):
        await filled.as_retriever().ainvoke("q")


def test_selection_options_apply(filled: OutputProfileMemory) -> None:
    scoped = filled.as_retriever(user_id="ana", task="email", fill_from_profile=False)
    assert [d.page_content for d in scoped.invoke("q")] == [ANA[1]]
    assert [d.metadata["task"] for d in scoped.invoke("q")] == ["email"]
    small = filled.as_retriever(user_id="ana", max_tokens=90).invoke("q")
    assert 0 < len(small) < len(ANA)
    stable = filled.as_retriever(user_id="ana", order="stable").invoke("q")
    assert [d.page_content for d in stable] == ANA


def test_empty_profile_gives_no_documents(filled: OutputProfileMemory) -> None:
    assert filled.as_retriever(user_id="nobody").invoke("q") == []


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"colour": "red"}, {"user_id": ""}])
def test_bad_retriever_arguments_are_refused(
    filled: OutputProfileMemory, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        filled.as_retriever(**kwargs).invoke("q", config={"configurable": {"user_id": "ana"}})
