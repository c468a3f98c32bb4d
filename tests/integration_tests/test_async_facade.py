"""The async facade on a real ``chroma run`` server through ``chromadb.AsyncHttpClient``.

The event loop must never block: every operation awaits Chroma's own coroutines (no worker
thread: the loop's executor refuses work here), and a heartbeat task, which runs whenever the
operation waits for the server, keeps ticking through 1,000 operations. The async memory and a
synchronous one given the same calls build the same blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import chromadb
import pytest
from langchain_core.messages import SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from langchain_outprofile import OutputProfileMemory, ReadOptions
from langchain_outprofile.errors import AsyncClientError, InvalidInputError
from tests.conftest import ManualClock, unique_name, watch_collections
from tests.fakes import RecordingChatModel

pytestmark = pytest.mark.integration


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, noting every function handed to it: ``asyncio.to_thread``
    and ``run_in_executor(None, ...)`` go through it. What this package hands it is the
    failure (Chroma's own client may resolve a host name there)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        inner = args[0] if args else fn  # to_thread submits context.run(func, ...)
        self.submitted.append(f"{getattr(inner, '__module__', '')}.{inner!r}")
        return super().submit(fn, *args, **kwargs)

    @property
    def refused(self) -> list[str]:
        """What this package handed to a worker thread."""
        return [name for name in self.submitted if "langchain_outprofile" in name]


class _Heartbeat:
    """A task that ticks every millisecond the loop lets it; notes its longest wait."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest_gap = 0.0
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.ticks += 1
            self.longest_gap = max(self.longest_gap, now - last)
            last = now

    def stop(self) -> None:
        self._stop = True


class _Watched:
    """Awaits a coroutine, counting the times it gave the event loop back (suspended)."""

    def __init__(self, coroutine: Any) -> None:
        self.coroutine = coroutine
        self.suspensions = 0

    def __await__(self) -> Any:
        steps = self.coroutine.__await__()
        sent: Any = None
        while True:
            try:
                yielded = steps.send(sent)
            except StopIteration as done:
                return done.value
            self.suspensions += 1
            sent = yield yielded


@pytest.fixture
async def async_client(chroma_server: tuple[str, int]) -> AsyncIterator[Any]:
    host, port = chroma_server
    yield await chromadb.AsyncHttpClient(host=host, port=port)


@pytest.fixture
async def no_threads() -> _NoThreads:
    refusing = _NoThreads()
    asyncio.get_running_loop().set_default_executor(refusing)
    return refusing


def _memories(client: Any, sync_client: Any, **settings: Any) -> tuple[Any, Any]:
    name = unique_name("async")
    clock = ManualClock()
    common = {"collection_name": name, "tokens": "gpt-4o", "clock": clock, **settings}
    return (
        OutputProfileMemory.from_client(client, **common),
        OutputProfileMemory.from_client(sync_client, **common),
    )


@pytest.mark.parametrize(
    "rounds",  # five operations a round
    [pytest.param(50, id="250-ops"), pytest.param(200, id="1000-ops", marks=pytest.mark.slow)],
)
async def test_async_operations_never_block_the_loop(
    async_client: Any, no_threads: _NoThreads, rounds: int
) -> None:
    memory = OutputProfileMemory.from_client(
        async_client, collection_name=unique_name("beat"), reads=ReadOptions(cache_ttl_s=0)
    )
    await memory.aadd("Warm up.", user_id="u0")  # opens the collections
    calls: list[_Watched] = []

    def watch(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        async def watched(*args: Any, **kwargs: Any) -> Any:  # each call: one request
            request = _Watched(call(*args, **kwargs))
            calls.append(request)
            return await request

        return watched

    watch_collections(memory, watch)
    beat = _Heartbeat()
    beating = asyncio.create_task(beat.run())
    operations = 0
    try:
        for n in range(rounds):
            user = f"u{n % 7}"
            run = str(uuid.uuid4())
            await memory.aadd(f"Note {n}: short answer first.", user_id=user)
            await memory.aselect(user, max_tokens=120)
            await memory.aselect(user, max_tokens=120, thread_id=f"t{n % 3}")
            await memory.arecord_output(f"Draft {n}.", user_id=user, run_id=run)
            await memory.afeedback(run, "endorsed" if n % 2 else "rejected")
            operations += 5
    finally:
        beat.stop()
        await beating
    await memory.aflush()

    assert operations == 5 * rounds
    assert no_threads.refused == []  # no work of this package went to a thread
    assert len(calls) >= operations  # every operation asked the server
    # every request gave the loop back while it waited for the server (a blocking client
    # returns without ever yielding), and the heartbeat got its turns meanwhile
    assert [c for c in calls if c.suspensions == 0] == []
    assert beat.ticks > 0
    print(
        f"\n{operations} ops, {len(calls)} requests, {beat.ticks} heartbeats, "
        f"longest heartbeat gap {beat.longest_gap * 1000:.1f} ms"
    )


async def test_async_and_sync_memories_build_the_same_blocks(
    async_client: Any, chroma_server: tuple[str, int], no_threads: _NoThreads
) -> None:
    host, port = chroma_server
    sync_client = chromadb.HttpClient(host=host, port=port)
    amem, smem = _memories(async_client, sync_client)
    texts = [f"Point {n}: numbers as digits, one ask per email." for n in range(12)]
    await amem.aadd_many([{"text": t, "user_id": "ana", "task": "email"} for t in texts])
    await amem.aadd("Sign off with -A.", user_id="ana", signal="endorsed")
    await amem.aadd("Dates as Tue 14 May.", user_id="ana", signal="accepted")
    await amem.aadd("Dear Sir or Madam,", user_id="ana", signal="rejected")
    await amem.aadd("Bob writes long.", user_id="bob")

    for options in ({"max_tokens": 90}, {"max_tokens": 300, "task": "email"}):
        got = await amem.aselect("ana", **options)
        want = smem.select("ana", **options)
        assert got.text == want.text and got.text
        assert "Dear Sir" not in got.text and "Bob" not in got.text
    assert await amem.aexport("ana") == smem.export("ana")
    assert await amem.astats("ana") == smem.stats("ana")
    messages = await amem.ablock_messages("ana", max_tokens=90)
    assert messages == [SystemMessage(content=smem.select("ana", max_tokens=90).text)]

    entry_id = (await amem.aexport("ana"))[0]["id"]
    assert await amem.adelete(entry_id, user_id="ana") is True
    assert await amem.adelete(entry_id, user_id="ana") is False
    assert entry_id not in {r["id"] for r in smem.export("ana")}
    assert await amem.aimport_(smem.export("bob")) == 1
    assert await amem.aforget("bob") == 1
    assert smem.export("bob") == []
    assert no_threads.refused == []


async def test_a_pinned_thread_and_feedback_work_on_the_async_path(
    async_client: Any, no_threads: _NoThreads
) -> None:
    memory = OutputProfileMemory.from_client(async_client, collection_name=unique_name("pin"))
    await memory.aadd("First note.", user_id="ana")
    pinned = await memory.aselect("ana", thread_id="t-1")
    run = str(uuid.uuid4())
    await memory.arecord_output("A tracked answer.", user_id="ana", run_id=run)
    await memory.afeedback(run, edited="The edited answer.")
    assert (await memory.aselect("ana", thread_id="t-1")).text == pinned.text
    fresh = await memory.aselect("ana", thread_id="t-2")
    assert "The edited answer." in fresh.text
    assert (await memory.aexpire("ana")).pending == 0
    await memory.aflush()
    assert no_threads.refused == []


async def test_sync_methods_of_an_async_memory_fail_clearly_and_change_nothing(
    async_client: Any,
) -> None:
    memory = OutputProfileMemory.from_client(async_client, collection_name=unique_name("sync"))
    await memory.aadd("Kept.", user_id="ana")
    with pytest.raises(AsyncClientError, match="a-prefixed"):
        memory.add("Not stored.", user_id="ana")
    with pytest.raises(AsyncClientError):
        memory.select("ana")
    with pytest.raises(AsyncClientError):
        memory.forget("ana")
    assert [r["text"] for r in await memory.aexport("ana")] == ["Kept."]


async def test_bad_input_on_the_async_path_raises_the_same_errors(async_client: Any) -> None:
    memory = OutputProfileMemory.from_client(async_client, collection_name="x")  # too short a name
    with pytest.raises(InvalidInputError, match="collection_name"):
        await memory.aadd("Hi.", user_id="ana")
    good = OutputProfileMemory.from_client(async_client, collection_name=unique_name("bad"))
    with pytest.raises(InvalidInputError):
        await good.aadd("", user_id="ana")
    with pytest.raises(InvalidInputError):
        await good.aselect("", max_tokens=100)
    with pytest.raises(InvalidInputError):
        await good.aadd_many([{"text": "ok", "user_id": "ana"}, {"text": "no user"}])
    assert await good.aexport("ana") == []


class _State(TypedDict):
    question: str
    block: str


async def test_the_surfaces_run_natively_over_an_async_memory(
    async_client: Any, no_threads: _NoThreads
) -> None:
    memory = OutputProfileMemory.from_client(async_client, collection_name=unique_name("surf"))
    await memory.aadd("Short answer first, then bullets.", user_id="ana")
    await memory.aadd("Bob's own style.", user_id="bob")
    config = {"configurable": {"user_id": "ana"}}

    model = RecordingChatModel()
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
    chain = prompt | memory.injector() | model
    await chain.ainvoke({"q": "hi"}, config=config)  # type: ignore[arg-type]
    assert model.received[-1][0].text == "Be brief."
    assert model.received[-1][1].text.startswith("<user_profile>")
    assert "Short answer first" in model.received[-1][1].text
    assert "Bob" not in model.received[-1][1].text

    documents = await memory.as_retriever().ainvoke("any", config=config)  # type: ignore[arg-type]
    assert [d.page_content for d in documents] == ["Short answer first, then bullets."]

    tracked = memory.track(prompt | model)
    run = uuid.uuid4()
    await tracked.ainvoke({"q": "x"}, config={**config, "run_id": run})  # type: ignore[arg-type]
    await memory.afeedback(run, "endorsed")
    assert len(await memory.aexport("ana")) == 2

    store = memory.as_store()

    async def read_profile(state: _State, runtime: Runtime[None]) -> dict[str, str]:
        assert runtime.store is not None
        found = await runtime.store.asearch(("profile", "ana"))
        await runtime.store.aput(("profile", "ana"), "tone", {"text": "Plain words."})
        return {"block": " | ".join(item.value["text"] for item in found)}

    graph = StateGraph(_State).add_node("read", read_profile)
    graph.add_edge(START, "read")
    out = await graph.compile(store=store).ainvoke({"question": "q", "block": ""})
    assert "Short answer first" in out["block"] and "Bob" not in out["block"]
    assert (await store.aget(("profile", "ana"), "tone")) is not None
    assert no_threads.refused == []
