"""Model API: an OpenAI-compatible chat server for the embedded GGUF, run by cyllama.

cyllama ships no server that applies a model's chat template or streams (its Python server
joins messages as ``User: ...`` lines, answers whole, and checks no key), so the no-compiler
runtime serves the model with this small Starlette app, run by uvicorn in the server process
``model_server.LocalModelServer`` starts:

- ``GET /v1/models``: the one model, under its served name.
- ``POST /v1/chat/completions``: the OpenAI request (``messages``, ``max_tokens`` or
  ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``stream``,
  ``stream_options.include_usage``); streamed as server-sent events ending in
  ``data: [DONE]``, or whole, with ``usage``.

Every request must send ``Authorization: Bearer <key>`` (the key comes in ``$API_KEY``, as
llama-cpp-python's server reads it). Requests take turns on the one llama.cpp context; each
generation runs in one worker thread, and a client that leaves mid-stream frees the model.
The llama-cpp-python runtime serves with llama-cpp-python's own server instead (prompt
logprobs, ``/v1/completions``, its prompt cache), which this one does not offer.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_outprofile.gguf_chat import GgufEngine, Sampling, stream_in_one_thread

__all__ = ["create_app", "main"]


class _BadRequest(ValueError):
    """A request this server cannot answer (sent back as a 400 with the reason)."""


def create_app(engine: GgufEngine, *, model: str, api_key: str, seed: int = Sampling.seed) -> Any:
    """The Starlette app serving ``engine`` under the name ``model``, for ``api_key`` only
    (``seed``: the sampling seed of a request that gives none).

    Example:
        ```python
        import uvicorn

        from langchain_outprofile.gguf_chat import GgufEngine
        from langchain_outprofile.model_file import local_model_path

        app = create_app(GgufEngine(str(local_model_path())), model="smollm2", api_key="k")
        uvicorn.run(app, host="127.0.0.1", port=8080)
        ```
    """
    from starlette.applications import Starlette  # the local extra
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    lock = threading.Lock()  # one generation at a time in the one context
    expected = f"Bearer {api_key}".encode()

    def refused(request: Request) -> Any:  # a Response, or None for the right key
        sent = request.headers.get("authorization", "").encode()
        if secrets.compare_digest(sent, expected):
            return None
        return _error(JSONResponse, 401, "invalid or missing API key", "invalid_api_key")

    async def models(request: Request) -> Any:
        if (refusal := refused(request)) is not None:
            return refusal
        listed = {"id": model, "object": "model", "created": 0, "owned_by": "outprofile"}
        return JSONResponse({"object": "list", "data": [listed]})

    async def chat_completions(request: Request) -> Any:
        if (refusal := refused(request)) is not None:
            return refusal
        try:
            body = json.loads(await request.body())
            job = _Job.of(body, engine, seed)
        except (ValueError, _BadRequest) as error:  # JSONDecodeError is a ValueError
            return _error(JSONResponse, 400, str(error), "invalid_request_error")
        if job.stream:
            return StreamingResponse(_events(job, lock, model), media_type="text/event-stream")
        pieces: list[str] = []
        async for piece in stream_in_one_thread(lambda: job.run(lock)):
            pieces.append(piece)
        message = {"role": "assistant", "content": "".join(pieces)}
        choice = {"index": 0, "message": message, "finish_reason": job.finish}
        return JSONResponse(
            {**job.header(model, "chat.completion"), "choices": [choice], "usage": job.usage()}
        )

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _error(response: Callable[..., Any], status: int, message: str, code: str) -> Any:
    """An OpenAI-shaped error body (the ``openai`` client reads ``error.message``)."""
    return response({"error": {"message": message, "type": code, "code": code}}, status_code=status)


class _Job:
    """One chat completion request: its prompt and sampling, and how it ended."""

    def __init__(
        self,
        engine: GgufEngine,
        prompt: str,
        *,
        max_tokens: int | None,
        sampling: Sampling,
        stop: Sequence[str],
        stream: bool,
        include_usage: bool,
    ) -> None:
        self.engine = engine
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.sampling = sampling
        self.stop = stop
        self.stream = stream
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.finish = "stop"
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @classmethod
    def of(cls, body: Any, engine: GgufEngine, seed: int) -> _Job:
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("`messages` must be a non-empty list")
        chat = [_message(one) for one in messages]
        # ChatOpenAI sends its limit as max_completion_tokens (OpenAI's newer name)
        limit = body.get("max_tokens")
        if limit is None:
            limit = body.get("max_completion_tokens")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise _BadRequest("`max_tokens` must be an integer")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _BadRequest("`stop` must be a string or a list of strings")
        defaults = Sampling()
        try:
            sampling = Sampling(
                temperature=float(_given(body, "temperature", defaults.temperature)),
                top_p=float(_given(body, "top_p", defaults.top_p)),
                seed=int(_given(body, "seed", seed)),
                repeat_penalty=float(_given(body, "repeat_penalty", defaults.repeat_penalty)),
            )
        except (TypeError, ValueError):
            raise _BadRequest(
                "temperature, top_p, seed and repeat_penalty must be numbers"
            ) from None
        options = body.get("stream_options") or {}
        try:
            prompt = engine.chat_prompt(chat)
        except Exception as error:  # the template refused the messages (raise_exception)
            raise _BadRequest(f"the chat template refused the messages: {error}") from None
        return cls(
            engine,
            prompt,
            max_tokens=limit,
            sampling=sampling,
            stop=stop,
            stream=bool(body.get("stream")),
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        )

    def run(self, lock: threading.Lock) -> Iterator[str]:
        """The answer's pieces, generated holding ``lock`` (in the caller's thread)."""

        def report(finish: str, prompt_tokens: int, completion_tokens: int) -> None:
            self.finish, self.prompt_tokens, self.completion_tokens = (
                finish,
                prompt_tokens,
                completion_tokens,
            )

        with lock:
            yield from self.engine.generate(
                self.prompt,
                max_tokens=self.max_tokens,
                sampling=self.sampling,
                stop=self.stop,
                report=report,
            )

    def header(self, model: str, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": model}

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _given(body: Mapping[str, Any], name: str, default: Any) -> Any:
    value = body.get(name)
    return default if value is None else value


def _message(one: Any) -> dict[str, str]:
    """A request message as the chat template reads it: its role and its text."""
    if not isinstance(one, dict) or not isinstance(one.get("role"), str):
        raise _BadRequest("each message must be an object with a `role`")
    content = one.get("content")
    if content is None:
        content = ""
    if isinstance(content, list):  # content parts: the text ones, in order
        texts = [part.get("text", "") for part in content if isinstance(part, dict)]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise _BadRequest("message content parts must be objects with a `text`")
        content = "".join(texts)
    if not isinstance(content, str):
        raise _BadRequest("message content must be a string or a list of text parts")
    return {"role": one["role"], "content": content}


async def _events(job: _Job, lock: threading.Lock, model: str) -> AsyncIterator[str]:
    """The server-sent events of a streamed answer."""

    def event(delta: Mapping[str, str], finish: str | None, **more: Any) -> str:
        choice = {"index": 0, "delta": dict(delta), "finish_reason": finish}
        chunk = {**job.header(model, "chat.completion.chunk"), "choices": [choice], **more}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""}, None)
    async for piece in stream_in_one_thread(lambda: job.run(lock)):
        yield event({"content": piece}, None)
    yield event({}, job.finish)
    if job.include_usage:
        chunk = {**job.header(model, "chat.completion.chunk"), "choices": [], "usage": job.usage()}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a GGUF with uvicorn until interrupted (what ``LocalModelServer`` runs).

    The key comes from ``$API_KEY`` (not the command line: other users can read that).
    """
    import uvicorn  # the local extra

    parser = argparse.ArgumentParser(prog="python -m langchain_outprofile.model_api")
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--model_alias", required=True, help="the name it is served under")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n_threads", type=int, default=1)
    parser.add_argument("--n_ctx", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=Sampling().seed)
    args = parser.parse_args(argv)
    api_key = os.environ.get("API_KEY")
    if not api_key:
        print("error: set API_KEY to the key requests must send", file=sys.stderr)
        return 2
    engine = GgufEngine(args.model, n_ctx=args.n_ctx, n_threads=args.n_threads)
    app = create_app(engine, model=args.model_alias, api_key=api_key, seed=args.seed)
    # the start-up line ("Uvicorn running on ...") and one access line per request go to the
    # server's log, as llama-cpp-python's server writes them
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
