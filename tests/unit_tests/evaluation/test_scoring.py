"""Gold-output NLL: the embedded SmolLM2 through llama-cpp-python, and an OpenAI-compatible
server (a loopback HTTP server written here that records each request)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest
import pytest_socket

from langchain_outprofile.evaluation.scoring import (
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


class _Recorder(BaseHTTPRequestHandler):
    """A completions endpoint that echoes the prompt as one token per word, logprob -0.5 each
    (or no logprobs at all when the server was built with ``logprobs=False``)."""

    requests: list[dict[str, Any]]
    with_logprobs: bool

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "body": body})
        prompt = body["prompt"]
        offsets, tokens, start = [], [], 0
        for word in prompt.split(" "):
            offsets.append(start)
            tokens.append(word)
            start += len(word) + 1
        logprobs = {
            "tokens": tokens,
            "token_logprobs": [None] + [-0.5] * (len(tokens) - 1),
            "text_offset": offsets,
            "top_logprobs": None,
        }
        choice = {
            "index": 0,
            "text": prompt,
            "finish_reason": "length",
            "logprobs": logprobs if self.with_logprobs else None,
        }
        payload = json.dumps(
            {
                "id": "c1",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return


def _server(with_logprobs: bool) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    requests: list[dict[str, Any]] = []
    handler = type("H", (_Recorder,), {"requests": requests, "with_logprobs": with_logprobs})
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
    yield from _server(with_logprobs=True)


@pytest.fixture
def plain_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _server(with_logprobs=False)


@pytest.mark.enable_socket
def test_openai_backend_sums_the_gold_spans_echoed_logprobs(
    logprob_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, requests = logprob_server
    gold = "hello there harbour"
    score = OpenAIScorer(base_url=url, model="smollm2").score(MESSAGES, gold)
    (request,) = requests
    body = request["body"]
    assert request["path"] == "/v1/completions"
    assert body["prompt"] == format_chatml(MESSAGES) + gold
    assert body["echo"] is True and body["max_tokens"] == 0 and body["model"] == "smollm2"
    # words starting at or after the gold's first character: "there", "harbour" (the first gold
    # word is glued to the prompt's last line by the word split) -> 2 tokens at -0.5 each
    gold_words = [w for w in body["prompt"][len(format_chatml(MESSAGES)) :].split(" ")][1:]
    assert score.tokens == len(gold_words) and math.isclose(score.nll, 0.5 * len(gold_words))


@pytest.mark.enable_socket
def test_openai_backend_without_prompt_logprobs_says_so(
    plain_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = plain_server
    with pytest.raises(ModelUnavailableError, match="echo with logprobs"):
        OpenAIScorer(base_url=url, model="m").score(MESSAGES, "hi")
