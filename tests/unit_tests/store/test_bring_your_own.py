"""Bring your own Chroma: a ``langchain_chroma.Chroma`` or a chromadb collection holds the
profiles; with ``documents=True`` Chroma's own similarity search finds the entries."""

from __future__ import annotations

from typing import Any

import chromadb
import pytest
from langchain_chroma import Chroma

from langchain_outprofile import OutputProfileMemory, StyleEmbeddings
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.tokens import OFFLINE_ENCODING
from tests.conftest import unique_name


def _vectorstore(client: Any) -> Chroma:
    return Chroma(
        collection_name=unique_name("byo"), embedding_function=StyleEmbeddings(), client=client
    )


def test_a_langchain_chroma_vectorstore_holds_the_profiles() -> None:
    client = chromadb.EphemeralClient()
    vectorstore = _vectorstore(client)
    vectorstore.add_texts(["A document of the app, not of any user."], ids=["app-doc"])
    memory = OutputProfileMemory(vectorstore=vectorstore, documents=True, tokens=OFFLINE_ENCODING)
    memory.add("Short answer first, then bullets.", user_id="ana")
    memory.add("Cheers, Bob", user_id="bob")

    assert memory.store.collection_name == vectorstore._collection.name
    assert [e.text for e in memory.select("ana").entries] == ["Short answer first, then bullets."]
    found = vectorstore.similarity_search("short answer", k=5, filter={"user_id": "ana"})
    assert [d.page_content for d in found] == ["Short answer first, then bullets."]
    retriever = vectorstore.as_retriever(search_kwargs={"k": 5, "filter": {"user_id": "bob"}})
    assert [d.page_content for d in retriever.invoke("cheers")] == ["Cheers, Bob"]
    assert vectorstore.get(ids=["app-doc"])["documents"] == [
        "A document of the app, not of any user."
    ]
    assert memory.store.user_ids() == ["ana", "bob"]


def test_without_documents_chromas_search_finds_no_entry_text() -> None:
    vectorstore = _vectorstore(chromadb.EphemeralClient())
    memory = OutputProfileMemory(vectorstore=vectorstore, tokens=OFFLINE_ENCODING)
    memory.add("Short answer first, then bullets.", user_id="ana")
    rows = vectorstore.get(where={"user_id": "ana"})
    assert rows["documents"] == [None]
    assert memory.select("ana").entries


def test_a_chromadb_collection_and_its_client() -> None:
    client = chromadb.EphemeralClient()
    collection = client.create_collection(unique_name("byo"), embedding_function=None)
    memory = OutputProfileMemory(client=client, collection=collection, tokens=OFFLINE_ENCODING)
    memory.add("Short answer first.", user_id="ana")
    assert collection.count() == 1
    assert (client.get_collection(collection.name).metadata or {})["outprofile_schema"] == 2
    again = OutputProfileMemory(client=client, collection=collection, tokens=OFFLINE_ENCODING)
    assert [e.text for e in again.select("ana").entries] == ["Short answer first."]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"collection": "set below"},  # no client
        {"vectorstore": "set below", "client": "set below"},
        {"vectorstore": object()},
    ],
)
def test_contradicting_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    client = chromadb.EphemeralClient()
    resolved: dict[str, Any] = {
        "collection": client.create_collection(unique_name("byo"), embedding_function=None),
        "vectorstore": _vectorstore(client),
        "client": client,
    }
    arguments: dict[str, Any] = {
        k: resolved[k] if v == "set below" else v for k, v in kwargs.items()
    }
    with pytest.raises(InvalidInputError, match=r"vectorstore=|collection="):
        OutputProfileMemory(tokens=OFFLINE_ENCODING, **arguments)
