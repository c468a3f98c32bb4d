"""The shared-prefix benchmark: what the block's placement costs at the model, across users.

Providers cache a prompt by its exact prefix, and an app's static system prompt is a prefix
all its users share. With the block first (``merge``, the default) every user's prompt
starts with that user's own block, so the static prompt after it is never reused from one
user to the next; with ``after_system`` the static prompt leads and the block follows it.

llama-cpp-python's OpenAI-compatible server keeps one KV cache (its ``Llama`` object's):
a request evaluates only the tokens after the longest common prefix with the *previous*
request (``Llama.generate``: "N prefix-match hit, remaining M prompt tokens to eval").
Here ``users`` users take turns, round robin, each on its own pinned thread (``thread_id``
in the config), all sharing one static system prompt of about 1,000 tokens of the served
model (:data:`STATIC_PROMPT`), so every request follows another user's:

- ``leading``: ``memory.injector()`` (placement ``merge``): the block, then the static
  prompt; the common prefix with the previous user's request is the block's frame header;
- ``after_system``: ``memory.injector(placement="after_system")``: the static prompt, then
  the block as its own system message; the static prompt is reused.

Per turn: the prompt tokens the server evaluated (from its timing line, ``prompt eval time
= ... / N tokens``; deterministic for a given model, prompts and order), the prefix it
reused, and the time to the first streamed token (load-dependent). Answers are not tracked
(a pinned thread's block does not change within the thread either way). Run
``python -m outprofile_lab.bench --scenario shared-prefix`` (``local`` and ``eval``
extras).
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chromadb
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_outprofile import OutputProfileMemory, SelectionOptions
from langchain_outprofile.model_file import local_model_path
from langchain_outprofile.model_server import ServedModel
from langchain_outprofile.surfaces._common import Placement
from langchain_outprofile.tokens import TokenCounter
from outprofile_lab.bench.prompt_cache import _evaluated_since, _first_token_s, _run_conditions
from outprofile_lab.bench.synthetic import queries, user_entries, user_name
from outprofile_lab.evaluation.prefix import SHARED_PROMPT

__all__ = ["CONDITIONS", "STATIC_PROMPT", "reused_since", "shared_prefix_command"]

CONDITIONS: dict[str, Placement] = {"leading": "merge", "after_system": "after_system"}
"""Each condition's placement: ``leading`` is today's default."""

_PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit")

STATIC_PROMPT = SHARED_PROMPT
"""An app's static system prompt, the same for every user: 1,006 tokens of the served
SmolLM2 (``evaluation/prefix.py``, shared with the quality runs)."""


def reused_since(log: Path, offset: int) -> int | None:
    """Prompt tokens the server reused from its KV cache in the requests logged after
    ``offset`` (None when it logged no prefix-match line: nothing was reused)."""
    text = log.read_bytes()[offset:].decode("utf-8", "replace")
    found = _PREFIX_HIT.findall(text)
    return sum(int(n) for n in found) if found else None


def _memory(
    users: int, entries: int, block_tokens: int, seed: int, clock: Callable[[], float]
) -> OutputProfileMemory:
    """An in-memory store with ``users`` synthetic users of ``entries`` entries each."""
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=f"shared-prefix-{time.time_ns()}",
        tokens=TokenCounter.of(local_model_path()),
        options=SelectionOptions(max_tokens=block_tokens),
        clock=clock,
    )
    for user in range(users):
        memory.add_many(list(user_entries(user, entries, seed=seed, now=clock())))
    return memory


def _condition(
    condition: str,
    memory: OutputProfileMemory,
    served: ServedModel,
    model: Any,
    asks: list[str],
    users: int,
) -> list[dict[str, Any]]:
    """``users`` users taking turns, ``len(asks)`` turns each, under ``condition``."""
    injector = memory.injector(placement=CONDITIONS[condition])
    threads = {u: f"{condition}-{u}-{uuid.uuid4()}" for u in range(users)}
    history: dict[int, list[BaseMessage]] = {u: [] for u in range(users)}
    rows: list[dict[str, Any]] = []
    for turn, ask in enumerate(asks):
        for user in range(users):
            base = [SystemMessage(STATIC_PROMPT), *history[user], HumanMessage(ask)]
            config: Any = {"configurable": {"user_id": user_name(user), "thread_id": threads[user]}}
            messages = injector.invoke(base, config)
            offset = served.log_path.stat().st_size
            ttft, answer = _first_token_s(model, messages)
            evaluated, _ = _evaluated_since(served.log_path, offset)
            reused = reused_since(served.log_path, offset) or 0
            history[user] += [HumanMessage(ask), AIMessage(answer)]
            rows.append(
                {
                    "condition": condition,
                    "turn": turn,
                    "user": user,
                    "ttft_ms": ttft * 1e3,
                    "evaluated_tokens": evaluated,
                    "reused_tokens": reused,
                }
            )
            print(
                f"{condition:>12} turn {turn} user {user}: first token {ttft * 1e3:8.1f} ms, "
                f"evaluated {evaluated} prompt tokens, reused {reused}",
                flush=True,
            )
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per condition, over every request but its first (which follows the other condition's
    last, or the warm-up): median and total prompt tokens evaluated, median reused, median
    and slowest time to first token."""
    summary: dict[str, dict[str, float]] = {}
    for condition in CONDITIONS:
        mine = [r for r in rows if r["condition"] == condition][1:]
        if not mine:
            continue
        evaluated = [r["evaluated_tokens"] or 0 for r in mine]
        ttft = [r["ttft_ms"] for r in mine]
        summary[condition] = {
            "requests": len(mine),
            "evaluated_median": statistics.median(evaluated),
            "evaluated_total": sum(evaluated),
            "reused_median": statistics.median(r["reused_tokens"] for r in mine),
            "ttft_median_ms": statistics.median(ttft),
            "ttft_max_ms": max(ttft),
        }
    return summary


def shared_prefix_command(
    *,
    users: int = 8,
    turns: int = 3,
    block_tokens: int = 200,
    entries: int = 60,
    answer_tokens: int = 16,
    seed: int = 0,
    clock: Callable[[], float] = time.time,
    conditions: tuple[str, ...] = tuple(CONDITIONS),
) -> dict[str, Any]:
    """Run every condition (see the module docstring); return each request and a summary.

    Example:
        ```python
        report = shared_prefix_command(users=8, turns=3, block_tokens=200)
        report["summary"]["after_system"]["evaluated_median"]
        ```
    """
    counter = TokenCounter.of(local_model_path())
    memory = _memory(users, entries, block_tokens, seed, clock)
    asks = queries(turns, seed=seed)
    rows = _run_conditions(
        conditions,
        answer_tokens,
        lambda condition, served, model: _condition(condition, memory, served, model, asks, users),
    )
    blocks = [memory.select(user_name(u)).text for u in range(users)]
    return {
        "rows": rows,
        "summary": _summary(rows),
        "settings": {
            "users": users,
            "turns": turns,
            "block_tokens": block_tokens,
            "entries": entries,
            "answer_tokens": answer_tokens,
            "seed": seed,
            "counter": counter.name,
            "static_prompt_tokens": counter.count(STATIC_PROMPT),
            "block_tokens_measured": [counter.count(b) for b in blocks],
        },
    }
