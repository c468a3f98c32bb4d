"""Bring your own Chroma: a ``langchain_chroma.Chroma`` or a chromadb collection holds the
profiles; with ``documents=True`` Chroma's own similarity search finds the entries."""

from __future__ import annotations

from typing import Any

import chromadb
import pytest
from langchain_chroma import Chroma

from langchain_outprofile import OutputProfileMemory, StyleEmbeddings
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.store.clients import persistent_client
from langchain_outprofile.store.repair import repair
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
    memory = OutputProfileMemory.from_vectorstore(
        vectorstore, documents=True, tokens=OFFLINE_ENCODING
    )
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
    memory = OutputProfileMemory.from_vectorstore(vectorstore, tokens=OFFLINE_ENCODING)
    memory.add("Short answer first, then bullets.", user_id="ana")
    rows = vectorstore.get(where={"user_id": "ana"})
    assert rows["documents"] == [None]
    assert memory.select("ana").entries


def test_a_chromadb_collection_and_its_client() -> None:
    client = chromadb.EphemeralClient()
    collection = client.create_collection(unique_name("byo"), embedding_function=None)
    memory = OutputProfileMemory.from_vectorstore(
        collection, client=client, tokens=OFFLINE_ENCODING
    )
    memory.add("Short answer first.", user_id="ana")
    assert collection.count() == 1
    assert (client.get_collection(collection.name).metadata or {})["outprofile_schema"] == 2
    again = OutputProfileMemory.from_vectorstore(collection, client=client, tokens=OFFLINE_ENCODING)
    assert [e.text for e in again.select("ana").entries] == ["Short answer first."]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vectorstore": "collection"},  # no client
        {"vectorstore": "vectorstore", "client": "client"},
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
        k: resolved[v] if isinstance(v, str) else v for k, v in kwargs.items()
    }
    with pytest.raises(InvalidInputError, match=r"client=|takes a langchain_chroma.Chroma"):
        OutputProfileMemory.from_vectorstore(tokens=OFFLINE_ENCODING, **arguments)


# -- a brought collection's own documents -----------------------------------------------------

_FOREIGN: dict[str, tuple[str, dict[str, Any]]] = {
    # what an app keeps in its own collection, some of it shaped like this package's rows
    "app-plain": ("A help article about ana's account.", {"user_id": "ana"}),
    "app-signals": ("Liked by ana.", {"user_id": "ana", "signals": "liked", "strength": 1.0}),
    "app-payload": ("Not JSON inside.", {"user_id": "ana", "e": "{not json", "task": "t"}),
    "app-marked": (  # even the package's mark (a boolean pending) with a junk payload
        "A todo of ana.",
        {"user_id": "ana", "pending": True, "e": '{"junk": 1}', "lg": True},
    ),
    "app-other": ("Nothing to do with users.", {"kind": "faq"}),
}


def _foreign_rows(vectorstore: Chroma) -> dict[str, Any]:
    found = vectorstore.get(ids=list(_FOREIGN), include=["documents", "metadatas"])
    return {
        id_: (doc, meta)
        for id_, doc, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    }


def test_a_brought_collections_own_documents_are_never_read_as_entries_nor_deleted(
    tmp_path: Any,
) -> None:
    """The app's documents carry ``user_id="ana"`` (and a ``signals`` key, a payload key,
    even the package's ``pending`` mark): every read of ana skips them and every delete of
    ana leaves them, count and content. Before: ``select``/``export``/``stats`` raised
    ``KeyError: 'signals'`` and ``forget("ana")`` deleted the app's documents."""
    client = chromadb.PersistentClient(str(tmp_path / "chroma"))
    vectorstore = _vectorstore(client)
    vectorstore.add_texts(
        [text for text, _ in _FOREIGN.values()],
        metadatas=[meta for _, meta in _FOREIGN.values()],
        ids=list(_FOREIGN),
    )
    before = _foreign_rows(vectorstore)
    assert len(before) == len(_FOREIGN)
    memory = OutputProfileMemory.from_vectorstore(vectorstore, tokens=OFFLINE_ENCODING)
    kept = memory.add("Short answer first.", user_id="ana")
    gone = memory.add("Bullets, no fluff.", user_id="ana")

    assert {e.text for e in memory.select("ana").entries} == {kept.text, gone.text}
    assert {r["text"] for r in memory.export("ana")} == {kept.text, gone.text}
    assert memory.stats("ana").entries == 2
    assert memory.store.count("ana") == 2
    assert memory.store.user_ids() == ["ana"]
    for foreign in _FOREIGN:  # a delete by id of the app's document is not a delete of ana's
        assert memory.delete(foreign, user_id="ana") is False
    assert memory.delete(gone.id, user_id="ana") is True
    assert [r["text"] for r in memory.export("ana")] == [kept.text]
    assert _foreign_rows(vectorstore) == before

    memory.forget("ana")  # (its count still includes a marked app row it did not delete)
    assert memory.export("ana") == [] and memory.store.user_ids() == []
    assert memory.stats("ana").entries == 0 and not memory.select("ana").entries
    assert _foreign_rows(vectorstore) == before  # every app document, as it was
    assert vectorstore._collection.count() == len(_FOREIGN)
    fresh = OutputProfileMemory.from_vectorstore(vectorstore, tokens=OFFLINE_ENCODING)
    assert fresh.export("ana") == [] and fresh.store.user_ids() == []


def test_documents_added_later_to_the_packages_own_collection_are_left_alone(
    tmp_path: Any,
) -> None:
    """A collection this package created reads without the server-side filter (it costs);
    documents the app adds to it afterwards are still skipped by every read and left by
    every delete (each row is checked before it is read as an entry or deleted)."""
    client = chromadb.PersistentClient(str(tmp_path / "chroma"))
    memory = OutputProfileMemory.from_client(
        client, collection_name="ours", tokens=OFFLINE_ENCODING
    )
    memory.add("Short answer first.", user_id="ana")
    vectorstore = Chroma(
        collection_name="ours", embedding_function=StyleEmbeddings(), client=client
    )
    vectorstore.add_texts(
        [text for text, _ in _FOREIGN.values()],
        metadatas=[meta for _, meta in _FOREIGN.values()],
        ids=list(_FOREIGN),
    )
    before = _foreign_rows(vectorstore)

    assert [r["text"] for r in memory.export("ana")] == ["Short answer first."]
    assert memory.stats("ana").entries == 1 and memory.store.count("ana") == 1
    assert [e.text for e in memory.select("ana").entries] == ["Short answer first."]
    memory.forget("ana")
    assert memory.export("ana") == [] and memory.store.user_ids() == []
    assert _foreign_rows(vectorstore) == before


def test_a_repair_of_a_brought_collection_writes_the_apps_documents_back(tmp_path: Any) -> None:
    """A repair rebuilds the collection; the app's documents come back as they were (their
    vectors computed again by the embedder the vectorstore and the memory share), so
    Chroma's own search still finds them. Before: they were left out of the rebuild."""
    path = tmp_path / "chroma"
    client = persistent_client(path)  # the settings repair(path) opens it with
    vectorstore = _vectorstore(client)
    name = vectorstore._collection.name
    vectorstore.add_texts(
        [text for text, _ in _FOREIGN.values()],
        metadatas=[meta for _, meta in _FOREIGN.values()],
        ids=list(_FOREIGN),
    )
    memory = OutputProfileMemory.from_vectorstore(vectorstore, tokens=OFFLINE_ENCODING)
    memory.add("Short answer first.", user_id="ana")
    memory.add("Bullets, no fluff.", user_id="ana", signal="rejected")
    before, entries = _foreign_rows(vectorstore), memory.export("ana")
    settings = client.get_collection(name).metadata

    report = repair(path, name, force=True)

    assert report.repaired and report.entries == 2 and report.unreadable == len(_FOREIGN)
    again = Chroma(
        collection_name=name,
        embedding_function=StyleEmbeddings(),
        client=client,
    )
    assert _foreign_rows(again) == before
    assert client.get_collection(name).metadata == settings  # the app's index settings too
    found = again.similarity_search("help article account", k=1, filter={"kind": "faq"})
    assert [d.page_content for d in found] == ["Nothing to do with users."]
    repaired = OutputProfileMemory.from_vectorstore(again, tokens=OFFLINE_ENCODING)
    assert repaired.export("ana") == entries
    assert not repair(path, name).damaged  # healthy, and its check reads the app's rows
