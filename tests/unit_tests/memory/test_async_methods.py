"""Every public I/O method of the memory has an ``a``-prefixed twin with the same signature,
result and errors. Over a synchronous client the twin runs the same operation on a worker
thread (``tests/integration_tests/test_async_facade.py`` runs them on Chroma's async client)."""

from __future__ import annotations

import inspect
import threading
import uuid

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.errors import InvalidInputError, UnknownRunError
from tests.conftest import ManualClock, offline_memory, record_chroma_threads, unique_name

IO_METHODS = [
    "add",
    "add_many",
    "delete",
    "forget",
    "import_",
    "export",
    "stats",
    "select",
    "block_messages",
    "record_output",
    "feedback",
    "expire",
    "flush",
]


@pytest.mark.parametrize("name", IO_METHODS)
def test_every_io_method_has_an_async_twin_with_its_signature(name: str) -> None:
    sync, twin = getattr(OutputProfileMemory, name), getattr(OutputProfileMemory, f"a{name}")
    assert inspect.iscoroutinefunction(twin)
    assert inspect.signature(twin).parameters == inspect.signature(sync).parameters
    assert twin.__doc__


def _pair(client: chromadb.api.ClientAPI) -> tuple[OutputProfileMemory, OutputProfileMemory]:
    """Two memories on two collections, on one clock."""
    clock = ManualClock()
    return (
        offline_memory(client, unique_name("sync"), clock=clock),
        offline_memory(client, unique_name("async"), clock=clock),
    )


async def test_the_async_twins_give_what_the_sync_methods_give(
    client: chromadb.api.ClientAPI,
) -> None:
    sync, other = _pair(client)
    threads = record_chroma_threads(other)
    items = [{"text": f"Point {n}: digits, one ask.", "user_id": "ana"} for n in range(8)]
    assert [e.id for e in sync.add_many(items)] == [e.id for e in await other.aadd_many(items)]
    for signal in ("authored", "endorsed", "accepted", "rejected"):
        text = f"An {signal} text."
        made = sync.add(text, user_id="ana", signal=signal)
        assert made == await other.aadd(text, user_id="ana", signal=signal)
    assert (await other.aselect("ana", max_tokens=120)).text == sync.select(
        "ana", max_tokens=120
    ).text
    assert await other.ablock_messages("ana", max_tokens=120) == sync.block_messages(
        "ana", max_tokens=120
    )
    assert await other.aexport("ana") == sync.export("ana")
    assert await other.astats("ana") == sync.stats("ana")

    run = str(uuid.uuid4())
    recorded = await other.arecord_output("A tracked answer.", user_id="ana", run_id=run)
    assert recorded.pending
    assert (await other.afeedback(run, rating=5)).strength > 0
    assert (await other.aexpire("ana")).pending == 0
    entry_id = sync.export("ana")[0]["id"]
    assert await other.adelete(entry_id, user_id="ana") is sync.delete(entry_id, user_id="ana")
    assert await other.aimport_(sync.export("ana")) == len(sync.export("ana"))
    await other.aflush()
    assert await other.aforget("ana") > 0
    assert await other.aexport("ana") == []
    assert threads and threading.get_ident() not in threads  # the loop's thread never waited


async def test_the_async_twins_raise_the_same_errors(client: chromadb.api.ClientAPI) -> None:
    memory = offline_memory(client, unique_name("errors"))
    with pytest.raises(InvalidInputError):
        await memory.aadd("   ", user_id="ana")
    with pytest.raises(InvalidInputError):
        await memory.aselect("ana", max_tokens=-1)
    with pytest.raises(InvalidInputError):
        await memory.aimport_([{"text": "no user"}])
    with pytest.raises(UnknownRunError):
        await memory.afeedback(str(uuid.uuid4()), "endorsed")
    assert await memory.aexport("ana") == []
