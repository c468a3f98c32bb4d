"""Gold-output NLL: the embedded SmolLM2 through llama-cpp-python, and an OpenAI-compatible
server (a loopback HTTP server written here that records each request)."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest
import pytest_socket

from outprofile_lab.evaluation.scoring import (
    LlamaScorer,
    ModelUnavailableError,
    OpenAIScorer,
    _nll,
    format_chatml,
)

llama_cpp = pytest.importorskip("llama_cpp", reason="the local extra (llama-cpp-python) is absent")

MESSAGES = [("system", "You are a helpful assistant."), ("user", "Say hello to the harbour.")]
OTHER = [("system", "Reply in French."), ("user", "Say hello to the harbour.")]


@pytest.fixture(scope="module")
def scorer() -> LlamaScorer:
    return LlamaScorer(n_ctx=512)


def _reference(scorer: LlamaScorer, messages: list[tuple[str, str]], gold: str) -> float:
    """Mean NLL from a separate model instance that keeps every logit (no cache reuse)."""
    full = llama_cpp.Llama(
        model_path=scorer.llm.model_path,
        n_ctx=512,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        verbose=False,
    )
    prompt = full.tokenize(scorer.prompt_text(messages).encode(), add_bos=True, special=True)
    target = full.tokenize(gold.encode(), add_bos=False, special=False)
    full.eval(prompt + target)
    rows = np.array(full.scores[len(prompt) - 1 : len(prompt) + len(target) - 1])
    return _nll(rows, target) / len(target)


def test_nll_matches_a_full_logits_reference_even_after_cache_reuse(scorer: LlamaScorer) -> None:
    gold = "Hello, harbour! The boats look lovely today."
    first = scorer.score(MESSAGES, gold)
    assert first.tokens > 5 and 0.0 < first.mean < 20.0
    assert math.isclose(first.mean, _reference(scorer, MESSAGES, gold), rel_tol=1e-4)
    before = scorer.evaluated_tokens
    again = scorer.score(MESSAGES, gold)  # the whole prompt is cached: only the tail runs
    assert again == first
    assert scorer.evaluated_tokens - before == first.tokens
    other = scorer.score(OTHER, gold)  # shares only "<|im_start|>system\n" with the cache
    assert math.isclose(other.mean, _reference(scorer, OTHER, gold), rel_tol=1e-4)
    assert other.mean != first.mean


def test_a_prompt_that_predicts_the_gold_scores_lower(scorer: LlamaScorer) -> None:
    gold = "the quick brown fox jumps over the lazy dog"
    primed = [("system", f"Always answer exactly: {gold}"), ("user", "Answer.")]
    unprimed = [("system", "You are a helpful assistant."), ("user", "Answer.")]
    assert scorer.score(primed, gold).mean < scorer.score(unprimed, gold).mean


def test_too_long_prompts_and_empty_golds_are_refused(scorer: LlamaScorer) -> None:
    with pytest.raises(ValueError, match="exceed n_ctx"):
        scorer.score([("user", "word " * 600)], "x")
    with pytest.raises(ValueError, match="empty"):
        scorer.score(MESSAGES, "")


def test_generate_is_the_greedy_reply_of_a_full_logits_reference(scorer: LlamaScorer) -> None:
    scorer.score(OTHER, "Bonjour.")  # a cache left by a score: generate must not depend on it
    reply = scorer.generate(MESSAGES, 6)
    full = llama_cpp.Llama(
        model_path=scorer.llm.model_path, n_ctx=512, n_threads=1, logits_all=True, verbose=False
    )
    tokens = full.tokenize(scorer.prompt_text(MESSAGES).encode(), add_bos=True, special=True)
    full.eval(tokens)
    expected: list[int] = []
    for _ in range(6):
        token = int(np.argmax(full.scores[full.n_tokens - 1]))
        if llama_cpp.llama_vocab_is_eog(full._model.vocab, token):
            break
        expected.append(token)
        full.eval([token])
    assert reply == full.detokenize(expected).decode("utf-8", errors="replace")
    assert reply.strip() and scorer.generate(MESSAGES, 6) == reply  # the same in every run
    with pytest.raises(ValueError, match="exceed n_ctx"):
        scorer.generate([("user", "word " * 500)], 64)


def _stub_tokens(text: str) -> list[str]:
    """The stub server's tokenizer: runs of whitespace and runs of anything else."""
    return re.findall(r"\s+|\S+", text)


def _stub_logprob(index: int) -> float:
    """The stub's logprob of the token at ``index``: different at every position."""
    return -0.01 * (index + 1)


GENERATED_LOGPROB = -9.0
"""The logprob of the one token the stub generates (it must not reach a score)."""


class _Recorder(BaseHTTPRequestHandler):
    """A completions endpoint that echoes the prompt (tokens: :func:`_stub_tokens`, logprobs:
    :func:`_stub_logprob`, the first ``None``) followed by one generated token, as
    llama-cpp-python does with ``echo`` and ``max_tokens=1``; built with ``logprobs=False`` it
    returns no logprobs, with ``usage=False`` no token usage."""

    requests: list[dict[str, Any]]
    with_logprobs: bool
    with_usage: bool

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        prompt = body["prompt"]
        tokens = [*_stub_tokens(prompt), " Sure"]
        offsets = [len("".join(tokens[:i])) for i in range(len(tokens))]
        values = [None] + [_stub_logprob(i) for i in range(1, len(tokens) - 1)]
        logprobs = {
            "tokens": tokens,
            "token_logprobs": [*values, GENERATED_LOGPROB],
            "text_offset": offsets,
            "top_logprobs": None,
        }
        choice = {
            "index": 0,
            "text": prompt + " Sure",
            "finish_reason": "length",
            "logprobs": logprobs if self.with_logprobs else None,
        }
        completion: dict[str, Any] = {
            "id": "c1",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": [choice],
        }
        if self.with_usage:
            completion["usage"] = {
                "prompt_tokens": len(tokens) - 1,
                "completion_tokens": 1,
                "total_tokens": len(tokens),
            }
        payload = json.dumps(completion).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return


def _server(
    with_logprobs: bool = True, with_usage: bool = True
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    requests: list[dict[str, Any]] = []
    handler = type(
        "H",
        (_Recorder,),
        {"requests": requests, "with_logprobs": with_logprobs, "with_usage": with_usage},
    )
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def logprob_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _server()


@pytest.fixture
def plain_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _server(with_logprobs=False)


@pytest.fixture
def usageless_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _server(with_usage=False)


@pytest.mark.enable_socket
def test_openai_backend_sums_the_gold_tokens_found_by_count(
    logprob_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, requests = logprob_server
    gold = "hello there harbour"
    score = OpenAIScorer(base_url=url, model="smollm2", api_key="k").score(MESSAGES, gold)
    prompt = format_chatml(MESSAGES)
    assert [r["body"]["prompt"] for r in requests] == [prompt, prompt + gold]
    for request in requests:
        body = request["body"]
        assert request["path"] == "/v1/completions" and body["model"] == "smollm2"
        assert body["echo"] is True and body["max_tokens"] == 1 and body["temperature"] == 0
        assert body["logprobs"] == 0 and request["auth"] == "Bearer k"
    # the gold is the last 5 stub tokens: "hello", " ", "there", " ", "harbour"
    n = len(_stub_tokens(prompt))
    assert score.tokens == 5
    assert math.isclose(score.nll, -sum(_stub_logprob(i) for i in range(n, n + 5)))
    assert score.nll < -GENERATED_LOGPROB  # the generated token is left out


@pytest.mark.enable_socket
def test_openai_backend_echoes_a_repeated_prompt_once(
    logprob_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, requests = logprob_server
    scorer = OpenAIScorer(base_url=url, model="smollm2")
    first = scorer.score(MESSAGES, "hello")
    second = scorer.score(MESSAGES, "hello there")
    assert len(requests) == 3  # the prompt alone once, then each prompt + gold
    assert first.tokens == 1 and second.tokens == 3
    n = len(_stub_tokens(format_chatml(MESSAGES)))
    assert math.isclose(first.nll, -_stub_logprob(n))
    assert math.isclose(second.nll, -sum(_stub_logprob(i) for i in range(n, n + 3)))


@pytest.mark.enable_socket
def test_openai_backend_refuses_a_gold_that_merges_with_the_prompt(
    logprob_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = logprob_server
    scorer = OpenAIScorer(base_url=url, model="smollm2")
    with pytest.raises(ValueError, match="merges with the prompt"):
        scorer.score(MESSAGES, "\nhello")  # the prompt's last "\n" and this one: one token
    with pytest.raises(ValueError, match="empty"):
        scorer.score(MESSAGES, "")


@pytest.mark.enable_socket
def test_openai_backend_reads_the_key_from_the_environment(
    logprob_server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, requests = logprob_server
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    OpenAIScorer(base_url=url, model="m").score(MESSAGES, "hi")
    assert {r["auth"] for r in requests} == {"Bearer from-env"}


@pytest.mark.enable_socket
def test_openai_backend_without_prompt_logprobs_says_so(
    plain_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = plain_server
    with pytest.raises(ModelUnavailableError, match="echo with logprobs"):
        OpenAIScorer(base_url=url, model="m").score(MESSAGES, "hi")


@pytest.mark.enable_socket
def test_openai_backend_without_token_usage_says_so(
    usageless_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = usageless_server
    with pytest.raises(ModelUnavailableError, match="no token usage"):
        OpenAIScorer(base_url=url, model="m").score(MESSAGES, "hi")
