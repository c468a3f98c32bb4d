"""The LangGraph store under LangGraph Platform: namespace templates, user ids holding ".",
the ``@auth.on.store`` rewrite (the handler called as the server calls it) and the
``langgraph.json`` store factory. The same recipe runs in ``langgraph dev`` in
``tests/integration_tests/test_langgraph_platform.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import chromadb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langgraph.store.base import InvalidNamespaceError, SearchItem
from langgraph_sdk import Auth

from langchain_outprofile import (
    InvalidInputError,
    MissingUserIdError,
    OutputProfileMemory,
    OutputProfileStore,
    platform_store,
    user_label,
)
from langchain_outprofile.surfaces.langgraph_store import PLATFORM_NAMESPACE, user_from_label
from tests.conftest import unique_name

EMAIL = "ana@example.com"


def texts(items: list[SearchItem]) -> list[str]:
    return [item.value["text"] for item in items]


# -- user labels ------------------------------------------------------------------------------


def test_a_user_id_with_a_period_is_served_under_its_label(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    # LangGraph refuses "." in any namespace label, so an e-mail user had no namespace at all.
    ephemeral_memory.add("Short answer first, then bullets.", user_id=EMAIL)
    store = OutputProfileStore(ephemeral_memory)
    namespace = ("profile", "ana@example%2Ecom")
    assert texts(store.search(namespace)) == ["Short answer first, then bullets."]
    store.put(namespace, "tone", {"text": "Sign with a first name."})
    item = store.get(namespace, "tone")
    assert item is not None and item.namespace == namespace
    assert "Sign with a first name." in ephemeral_memory.select(EMAIL).text
    assert store.list_namespaces(prefix=namespace) == [namespace]
    assert store.search(("profile", "ana@example")) == []  # another user entirely


def test_user_label_escapes_only_what_langgraph_refuses() -> None:
    assert user_label(EMAIL) == "ana@example%2Ecom"
    assert user_label("ana") == "ana"
    assert user_label("50%off") == "50%off"  # a "%" that reads as no escape stays
    assert user_label("a%2Eb") == "a%252Eb"  # one that would read as an escape is escaped
    assert user_label("nul\x00") == "nul%00"
    with pytest.raises(InvalidInputError):
        user_label("")
    with pytest.raises(InvalidInputError):
        user_from_label(" ")


@given(st.text(min_size=1, max_size=40).filter(str.strip))
def test_user_label_is_a_label_and_undone_exactly(user: str) -> None:
    label = user_label(user)
    assert label and "." not in label and "\x00" not in label
    assert user_from_label(label) == user


@given(st.text(alphabet="%25E0a", min_size=1, max_size=12))
def test_a_label_names_at_most_one_user_and_is_that_users_label(label: str) -> None:
    # One user never has two labels, so comparing labels as text compares users.
    try:
        user = user_from_label(label)
    except InvalidInputError:
        return
    assert user_label(user) == label


def test_a_label_that_is_not_a_users_label_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="user_label"):
        user_from_label("%25")  # the user "%" has the label "%"


# -- templates --------------------------------------------------------------------------------


@pytest.fixture
def platform(ephemeral_memory: OutputProfileMemory) -> OutputProfileStore:
    return ephemeral_memory.as_store(namespace=("{user_id}", "profile"), max_tokens=300)


def test_the_template_puts_the_user_where_it_says(
    platform: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    platform.put(("ana", "profile"), "tone", {"text": "Short answer first, then bullets."})
    platform.put(("ana", "profile", "notes"), "units", {"text": "Metric units."})
    platform.put(("bob", "profile"), "tone", {"text": "Kind regards, Robert."})
    assert ephemeral_memory.select("ana").text.count("<entry") == 2
    item = platform.get(("ana", "profile", "notes"), "units")
    assert item is not None and item.namespace == ("ana", "profile", "notes")
    assert sorted(texts(platform.search(("ana", "profile")))) == [
        "Metric units.",
        "Short answer first, then bullets.",
    ]
    assert texts(platform.search(("ana",))) == texts(platform.search(("ana", "profile")))
    assert texts(platform.search(("ana", "profile", "notes"))) == ["Metric units."]
    assert platform.list_namespaces() == [
        ("ana", "profile"),
        ("ana", "profile", "notes"),
        ("bob", "profile"),
    ]
    assert platform.list_namespaces(prefix=("bob",)) == [("bob", "profile")]
    assert platform.list_namespaces(prefix=("*", "profile", "notes")) == [
        ("ana", "profile", "notes")
    ]
    assert platform.list_namespaces(max_depth=1) == [("ana",), ("bob",)]
    assert platform.list_namespaces(prefix=("ana", "memories")) == []
    assert platform.list_namespaces(prefix=("nobody",)) == []


def test_a_namespace_off_the_template_is_refused(platform: OutputProfileStore) -> None:
    with pytest.raises(MissingUserIdError):
        platform.search(())
    with pytest.raises(InvalidNamespaceError, match="profile"):
        platform.put(("ana", "memories"), "k", {"text": "x"})
    with pytest.raises(InvalidNamespaceError, match="whole template"):
        platform.get(("ana",), "k")
    with pytest.raises(InvalidNamespaceError):
        platform.put(("profile", "ana.b"), "k", {"text": "x"})  # LangGraph's own check


@pytest.mark.parametrize(
    "template",
    [
        ("profile",),
        ("{user_id}", "{user_id}"),
        ("{user_id}", "a.b"),
        ("langgraph", "{user_id}"),
        ("{user_id}", ""),
        "{user_id}",
    ],
)
def test_a_bad_template_is_refused_at_once(
    ephemeral_memory: OutputProfileMemory, template: Any
) -> None:
    with pytest.raises(InvalidInputError):
        ephemeral_memory.as_store(namespace=template)
    with pytest.raises(InvalidInputError):
        platform_store(lambda: ephemeral_memory, namespace=template)


def test_namespace_and_prefix_are_one_setting(ephemeral_memory: OutputProfileMemory) -> None:
    with pytest.raises(InvalidInputError, match="not both"):
        ephemeral_memory.as_store(namespace=("x", "{user_id}"), prefix="x")
    store = ephemeral_memory.as_store(prefix="memories")
    assert store.template.labels == ("memories", "{user_id}")


def test_listing_one_users_namespaces_reads_that_user_only(
    platform: OutputProfileStore, ephemeral_memory: OutputProfileMemory, monkeypatch: Any
) -> None:
    platform.put(("ana", "profile"), "tone", {"text": "Short answer first."})

    def every_user() -> list[str]:
        raise AssertionError("listing one user's namespaces read the list of every user")

    monkeypatch.setattr(ephemeral_memory.store, "user_ids", every_user)
    assert platform.list_namespaces(prefix=("ana",)) == [("ana", "profile")]
    assert platform.list_namespaces(prefix=("ana",), max_depth=2) == [("ana", "profile")]


# -- the @auth.on.store recipe, called as the server calls it ---------------------------------


async def scope_store(ctx: Auth.types.AuthContext, value: Any) -> None:
    """The README's handler: the caller's label goes first."""
    value["namespace"] = (user_label(ctx.user.identity), *(value.get("namespace") or ()))


def context_of(identity: str, action: Any) -> Auth.types.AuthContext:
    return Auth.types.AuthContext(
        user=_User(identity), permissions=[], resource="store", action=action
    )


class _User:
    """What the server hands a handler as ``ctx.user`` (a ``BaseUser``)."""

    def __init__(self, identity: str) -> None:
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self._identity

    @property
    def permissions(self) -> list[str]:
        return []

    def __getitem__(self, key: str) -> Any:
        return {"identity": self._identity}[key]

    def __contains__(self, key: str) -> bool:
        return key == "identity"

    def __iter__(self) -> Any:
        return iter(["identity"])


async def as_the_server(
    store: OutputProfileStore, identity: str, action: str, **request: Any
) -> Any:
    """One store request the way ``langgraph_api.api.store`` runs it: the handler rewrites the
    payload's namespace, then the rewritten payload goes to the store."""
    value = dict(request)
    await scope_store(context_of(identity, action), value)
    namespace = tuple(value["namespace"]) if value["namespace"] is not None else None
    if action == "put":
        return await store.aput(namespace, value["key"], value["value"])  # type: ignore[arg-type]
    if action == "get":
        return await store.aget(namespace, value["key"])  # type: ignore[arg-type]
    if action == "search":
        return await store.asearch(namespace)  # type: ignore[arg-type]
    assert action == "list_namespaces"
    return await store.alist_namespaces(prefix=namespace)


async def test_the_auth_rewrite_keeps_each_caller_in_their_profile(
    platform: OutputProfileStore, ephemeral_memory: OutputProfileMemory
) -> None:
    bob = "bob@example.com"
    await as_the_server(
        platform, EMAIL, "put", namespace=("profile",), key="k", value={"text": "Ana's tone."}
    )
    await as_the_server(
        platform, bob, "put", namespace=("profile",), key="k", value={"text": "Bob's tone."}
    )
    got = await as_the_server(platform, EMAIL, "get", namespace=("profile",), key="k")
    assert got.value["text"] == "Ana's tone." and got.namespace == ("ana@example%2Ecom", "profile")
    found = await as_the_server(platform, bob, "search", namespace=("profile",))
    assert texts(found) == ["Bob's tone."]
    assert await as_the_server(platform, bob, "list_namespaces", namespace=None) == [
        ("bob@example%2Ecom", "profile")
    ]
    # A caller naming another user's label only reaches a namespace under their own.
    with pytest.raises(InvalidNamespaceError):
        await as_the_server(
            platform, bob, "get", namespace=("ana@example%2Ecom", "profile"), key="k"
        )
    assert ephemeral_memory.select(EMAIL).text.count("Bob") == 0


# -- the langgraph.json factory -----------------------------------------------------------------


async def test_the_factory_opens_a_store_off_the_loop_and_flushes_on_exit(
    ephemeral_memory: OutputProfileMemory,
) -> None:
    opened_on: list[int] = []
    flushed: list[bool] = []

    def build() -> OutputProfileMemory:
        opened_on.append(threading.get_ident())  # opening Chroma touches the disk
        return ephemeral_memory

    original = ephemeral_memory.aflush

    async def aflush() -> None:
        flushed.append(True)
        await original()

    ephemeral_memory.aflush = aflush  # type: ignore[method-assign]
    factory = platform_store(build, max_tokens=200)
    async with factory() as store:
        assert isinstance(store, OutputProfileStore)
        assert store.template.labels == PLATFORM_NAMESPACE
        assert store.options.max_tokens == 200
        await store.aput((user_label(EMAIL), "profile"), "k", {"text": "Short answers."})
        assert flushed == []
    assert opened_on and opened_on[0] != threading.get_ident()
    assert flushed == [True]
    assert "Short answers." in ephemeral_memory.select(EMAIL).text


async def test_the_factory_takes_an_async_builder(ephemeral_memory: OutputProfileMemory) -> None:
    async def build() -> OutputProfileMemory:
        return ephemeral_memory

    async with platform_store(build, namespace=("profile", "{user_id}"))() as store:
        await store.aput(("profile", "ana"), "k", {"text": "Short answers."})
        assert texts(await store.asearch(("profile", "ana"))) == ["Short answers."]


def test_a_listing_leaves_out_a_stored_id_that_cannot_be_a_label(
    platform: OutputProfileStore, ephemeral_memory: OutputProfileMemory, monkeypatch: Any
) -> None:
    platform.put(("ana", "profile"), "tone", {"text": "Short answer first."})
    listed = ephemeral_memory.store.user_ids()
    # a row written outside the package (a brought collection) may name an id no write takes
    monkeypatch.setattr(ephemeral_memory.store, "user_ids", lambda: ["   ", *listed])
    assert platform.list_namespaces() == [("ana", "profile")]


@pytest.mark.integration
async def test_the_factory_serves_an_async_chroma_client_natively(
    chroma_server: tuple[str, int],
) -> None:
    host, port = chroma_server
    ana = (user_label(EMAIL), "profile")

    async def build() -> OutputProfileMemory:  # an async client must be made in the loop
        client = await chromadb.AsyncHttpClient(host=host, port=port)
        return OutputProfileMemory.from_client(client, collection_name=unique_name("platform"))

    async with platform_store(build)() as store:
        assert getattr(store.memory.store, "is_async", False)  # abatch awaits Chroma itself
        await store.aput(ana, "k", {"text": "Short answers."})
        assert texts(await store.asearch(ana)) == ["Short answers."]
        assert await store.alist_namespaces(prefix=ana[:1]) == [ana]


@pytest.mark.integration
async def test_a_store_over_a_fresh_async_memory_opens_it_on_first_use(
    chroma_server: tuple[str, int],
) -> None:
    host, port = chroma_server
    client = await chromadb.AsyncHttpClient(host=host, port=port)
    memory = OutputProfileMemory.from_client(client, collection_name=unique_name("fresh"))
    store = memory.as_store()  # nothing has opened the memory's collections yet
    await store.aput(("profile", "ana"), "k", {"text": "Short answers."})
    assert texts(await store.asearch(("profile", "ana"))) == ["Short answers."]
    fresh = OutputProfileMemory.from_client(client, collection_name=unique_name("fresh"))
    assert await fresh.as_store().alist_namespaces() == []
