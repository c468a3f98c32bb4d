"""The prompt-cache benchmark: what a leading block that holds still saves at the model.

Providers cache a prompt by its exact prefix; llama.cpp's server does the same with the KV
cache of its previous prompt (it evaluates only the tokens after the longest common prefix).
This benchmark runs one conversation thread per condition through ``ChatOpenAI`` with
streaming, against the embedded SmolLM2-135M served by llama-cpp-python on loopback
(``model_server.py``), with feedback on every turn (the turn's answer is tracked and
endorsed), and measures per turn the time to the first streamed token and the prompt tokens
the server evaluated (from its own timing lines, ``prompt eval time = ... / N tokens``):

- ``pinned``: our block, pinned to the thread (``thread_id`` in the config);
- ``unpinned``: our block, current at every turn (the endorsed answers enter it);
- ``bm25``: a query-similarity block of the same budget, retrieved per turn with BM25 over
  the user's entries against the turn's request (what a similarity memory sends);
- ``none``: no block.

Conditions run one after another (each thread's turns back to back: interleaving them would
evict each other's prefix), on one server process with one thread. Run
``python -m outprofile_lab.bench --scenario prompt-cache`` (needs the ``local`` and
``eval`` extras).
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import chromadb
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_outprofile import OutputProfileMemory, SelectionOptions
from langchain_outprofile.model_file import local_model_path
from langchain_outprofile.model_server import ServedModel, serve_local_model
from langchain_outprofile.render import render_block
from langchain_outprofile.surfaces.messages import place_block
from langchain_outprofile.tokens import TokenCounter
from outprofile_lab.bench.synthetic import queries, user_entries, user_name
from outprofile_lab.evaluation.strategies import bm25_order, pack

__all__ = ["CONDITIONS", "prompt_cache_command"]

CONDITIONS = ("unpinned", "pinned", "bm25", "none")
"""In the order they run: ``unpinned`` first, so the answers it endorses are new to the profile
(the model answers the same requests alike in every thread)."""
_SYSTEM = "You answer in one short sentence."
_PROMPT_EVAL = re.compile(r"prompt eval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) tokens")


def _evaluated_since(log: Path, offset: int) -> tuple[int | None, int]:
    """Prompt tokens the server evaluated in the requests logged after ``offset`` (None
    when it logged no timing line), and the new offset."""
    text = log.read_bytes()[offset:].decode("utf-8", "replace")
    found = _PROMPT_EVAL.findall(text)
    return (sum(int(n) for _, n in found) if found else None), offset + len(text.encode())


def _first_token_s(model: Any, messages: list[BaseMessage]) -> tuple[float, str]:
    """Seconds to the first streamed chunk with text, and the whole answer."""
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    for chunk in model.stream(messages):
        if chunk.text and first is None:
            first = time.perf_counter() - start
        parts.append(chunk.text)
    return (first if first is not None else time.perf_counter() - start), "".join(parts)


def _run_conditions(
    conditions: Iterable[str],
    answer_tokens: int,
    run: Callable[[str, ServedModel, Any], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The rows of ``run(condition, served, model)`` for each condition in turn, all on one
    llama.cpp server that logs its prompt eval counts, through one greedy streaming chat model
    warmed up first (so no condition's first request pays for loading the weights)."""
    rows: list[dict[str, Any]] = []
    timing_lines = ("--verbose", "True")  # llama.cpp logs its prompt eval counts
    with serve_local_model(n_ctx=8192, logits_all=False, extra_args=timing_lines) as served:
        model = served.chat_model(max_tokens=answer_tokens, temperature=0.0, streaming=True)
        model.invoke("Warm up.")  # loads the weights; the first condition's prompt is still cold
        for condition in conditions:
            rows += run(condition, served, model)
    return rows


def _thread(
    condition: str,
    memory: OutputProfileMemory,
    served: ServedModel,
    model: Any,
    asks: list[str],
    budget: int,
) -> list[dict[str, Any]]:
    """One conversation of ``len(asks)`` turns under ``condition``; a row per turn."""
    user, thread = user_name(0), f"{condition}-{uuid.uuid4()}"
    history: list[BaseMessage] = []
    rows: list[dict[str, Any]] = []
    injector = memory.injector()
    offset = served.log_path.stat().st_size
    previous = None
    for turn, ask in enumerate(asks):
        base = [SystemMessage(_SYSTEM), *history, HumanMessage(ask)]
        configurable: dict[str, Any] = {"user_id": user}
        if condition == "pinned":
            configurable["thread_id"] = thread
        if condition in ("pinned", "unpinned"):
            messages = injector.invoke(base, {"configurable": configurable})
        elif condition == "bm25":
            messages = place_block(base, _bm25_block(memory, user, ask, budget), "merge")
        else:
            messages = base
        ttft, answer = _first_token_s(model, messages)
        evaluated, offset = _evaluated_since(served.log_path, offset)
        run = str(uuid.uuid4())
        memory.record_output(answer or "(empty)", user_id=user, run_id=run, source_input=ask)
        memory.feedback(run, "endorsed", user_id=user)
        history += [HumanMessage(ask), AIMessage(answer)]
        system = str(messages[0].content)
        rows.append(
            {
                "condition": condition,
                "turn": turn,
                "ttft_ms": ttft * 1e3,
                "evaluated_tokens": evaluated,
                "system_changed": previous is not None and system != previous,
                "answer": answer,
            }
        )
        previous = system
        print(
            f"{condition:>9} turn {turn:>2}: first token {ttft * 1e3:7.1f} ms, "
            f"evaluated {evaluated} prompt tokens",
            flush=True,
        )
    return rows


def _bm25_block(memory: OutputProfileMemory, user: str, ask: str, budget: int) -> str:
    """The user's selectable entries most similar to ``ask`` (BM25), packed to ``budget``."""
    entries = [e for e in memory.store.load(user, with_vectors=False).entries if e.selectable]
    chosen = pack(memory, bm25_order(entries, ask), budget)
    return render_block(chosen, "output", memory.template)


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per condition: median and slowest time to first token after the first turn, and the
    median prompt tokens evaluated after the first turn."""
    summary: dict[str, dict[str, float]] = {}
    for condition in CONDITIONS:
        later = [r for r in rows if r["condition"] == condition and r["turn"] > 0]
        if not later:
            continue
        ttft = [r["ttft_ms"] for r in later]
        evaluated = [r["evaluated_tokens"] for r in later if r["evaluated_tokens"] is not None]
        summary[condition] = {
            "ttft_median_ms": statistics.median(ttft),
            "ttft_max_ms": max(ttft),
            "evaluated_median": statistics.median(evaluated) if evaluated else float("nan"),
            "first_turn_ttft_ms": next(
                r["ttft_ms"] for r in rows if r["condition"] == condition and r["turn"] == 0
            ),
        }
    return summary


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ttft, evaluated) = plt.subplots(1, 2, figsize=(11, 4))
    for condition in CONDITIONS:
        mine = [r for r in rows if r["condition"] == condition]
        turns = [r["turn"] for r in mine]
        ttft.plot(turns, [r["ttft_ms"] for r in mine], marker="o", label=condition)
        evaluated.plot(
            turns, [r["evaluated_tokens"] or 0 for r in mine], marker="o", label=condition
        )
    ttft.set(xlabel="turn", ylabel="time to first token (ms)", yscale="log")
    evaluated.set(xlabel="turn", ylabel="prompt tokens the server evaluated", yscale="symlog")
    ttft.legend()
    figure.suptitle("A 20-turn thread through ChatOpenAI, SmolLM2-135M on llama.cpp's server")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def prompt_cache_command(
    *,
    turns: int = 20,
    block_tokens: int = 900,
    entries: int = 300,
    answer_tokens: int = 24,
    seed: int = 0,
    plot: Path | None = None,
    clock: Callable[[], float] = time.time,
    conditions: tuple[str, ...] = CONDITIONS,
) -> dict[str, Any]:
    """Run the four threads (see the module docstring) and return every turn and a summary.

    Example:
        ```python
        report = prompt_cache_command(turns=5, block_tokens=300, entries=60)
        report["summary"]["pinned"]["ttft_median_ms"]
        ```
    """
    counter = TokenCounter.of(local_model_path())
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=f"prompt-cache-{time.time_ns()}",
        tokens=counter,
        options=SelectionOptions(max_tokens=block_tokens),
        clock=clock,
    )
    memory.add_many(list(user_entries(0, entries, seed=seed, now=clock())))
    asks = queries(turns, seed=seed)
    rows = _run_conditions(
        conditions,
        answer_tokens,
        lambda condition, served, model: _thread(
            condition, memory, served, model, asks, block_tokens
        ),
    )
    summary = _summary(rows)
    targets = {}
    if {"pinned", "none", "bm25"} <= set(summary):
        pinned, none, bm25 = summary["pinned"], summary["none"], summary["bm25"]
        targets = {
            "pinned_max_over_none_median": pinned["ttft_max_ms"] / none["ttft_median_ms"],
            "bm25_median_over_pinned_median": bm25["ttft_median_ms"] / pinned["ttft_median_ms"],
        }
    if plot is not None:
        _plot(rows, plot)
    return {
        "rows": rows,
        "summary": summary,
        "targets": targets,
        "settings": {
            "turns": turns,
            "block_tokens": block_tokens,
            "entries": entries,
            "answer_tokens": answer_tokens,
            "seed": seed,
            "counter": counter.name,
        },
    }
