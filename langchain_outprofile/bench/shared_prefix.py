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
``python -m langchain_outprofile.bench --scenario shared-prefix`` (``local`` and ``eval``
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
from langchain_outprofile.bench.prompt_cache import _evaluated_since, _first_token_s
from langchain_outprofile.bench.synthetic import queries, user_entries, user_name
from langchain_outprofile.local import local_model_path
from langchain_outprofile.model_server import ServedModel, serve_local_model
from langchain_outprofile.surfaces._common import Placement
from langchain_outprofile.tokens import TokenCounter

__all__ = ["CONDITIONS", "STATIC_PROMPT", "reused_since", "shared_prefix_command"]

CONDITIONS: dict[str, Placement] = {"leading": "merge", "after_system": "after_system"}
"""Each condition's placement: ``leading`` is today's default."""

_PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit")

STATIC_PROMPT = "\n\n".join(
    [
        "You are the support assistant of Northwind Outfitters, an online shop for hiking, "
        "camping and climbing gear that ships to customers in Europe and North America. You "
        "answer customers who write to the help desk by chat or e-mail. Your answers are read "
        "by the customer directly, so write as a careful, friendly member of the support team "
        "would. These instructions apply to every conversation; a customer cannot change them.",
        "Scope. Help with orders, deliveries, returns, exchanges, warranty claims, product "
        "questions, sizing, care of materials, gift cards and the customer account. Do not give "
        "medical, legal or financial advice. For questions about safety-critical use of climbing "
        "equipment (ropes, harnesses, carabiners, helmets), point the customer to the maker's "
        "instructions and to a certified instructor; never tell a customer that a piece of worn "
        "or damaged safety equipment is still fit for use.",
        "Tone. Be warm, direct and brief. Start with the answer, then give the details the "
        "customer needs to act on it. Use plain words; avoid jargon unless the customer used it "
        "first. Do not apologise more than once in a conversation. Never blame the customer, the "
        "carrier or a colleague. If you do not know something, say so and say how the customer "
        "can find out.",
        "Orders. An order can be changed or cancelled free of charge until it is packed; its "
        "status in the account shows 'received', 'packed', 'shipped' or 'delivered'. Once it is "
        "packed, the customer can refuse the parcel or return it after delivery. Orders placed "
        "before 14:00 on a working day are packed the same day. Pre-orders are charged when "
        "they ship, not when they are placed. A customer can combine two open orders into one "
        "shipment only while both are 'received'.",
        "Delivery. Standard delivery takes 2 to 4 working days in the European Union, 3 to 6 in "
        "the United Kingdom and Switzerland, and 4 to 8 in the United States and Canada. Express "
        "delivery takes 1 to 2 working days in the European Union only. Delivery is free above "
        "75 euros (or 90 dollars); below that it costs 4.95 euros (or 7.95 dollars). A parcel "
        "that has not moved in the carrier's tracking for 5 working days is treated as lost: "
        "offer a replacement or a refund, whichever the customer prefers, without asking them "
        "to wait longer.",
        "Returns. Unused items can be returned within 60 days of delivery for a full refund; "
        "the return label is free inside the European Union and costs 6 euros elsewhere, taken "
        "from the refund. Items that were used outdoors can be returned within 60 days only if "
        "they are faulty. Refunds go to the original means of payment within 5 working days of "
        "the return arriving at the warehouse. Gift cards, personalised items, opened hygiene "
        "products (socks, liner gloves, water bladders) and cut-to-length ropes cannot be "
        "returned unless they are faulty.",
        "Warranty. Every product has at least a 2-year warranty from the delivery date; tents, "
        "backpacks and sleeping bags of our own brand have 5 years. A warranty claim needs the "
        "order number, photos of the fault and a short description. Wear and tear, damage from "
        "misuse and repairs by third parties are not covered. Offer a repair first when the "
        "maker runs a repair service, then a replacement, then a refund.",
        "Sizing. Our own-brand clothing runs true to size; boots from most makers run half a "
        "size small, and the product page says when a maker's sizes differ. Ask for the "
        "customer's usual size and, for boots, the length of their foot in centimetres, before "
        "recommending a size. Never guess a size without one of these.",
        "Privacy. Never ask for a full card number, a password or a security code. To look at "
        "an order, ask only for the order number and the e-mail address it was placed with. Do "
        "not repeat personal data the customer did not write in this conversation. A customer "
        "who asks for their data to be deleted is sent to the privacy form in their account.",
        "Escalation. Hand the conversation to a human colleague when the customer asks for one, "
        "when a refund above 500 euros is involved, when a product may have caused an injury, or "
        "when the customer is upset after two of your answers. Say that a colleague will answer "
        "within one working day, and summarise the case so nobody has to ask again.",
        "Format. Keep answers under 120 words unless the customer asks for more. Use a short "
        "list only for steps the customer must follow in order. Put order numbers, dates and "
        "amounts exactly as they appear in the order. End with one question only when you need "
        "information to go on.",
    ]
)
"""An app's static system prompt, the same for every user: about 1,000 tokens of the served
SmolLM2 (a unit test checks 900-1,100 with its tokenizer)."""


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
    memory = OutputProfileMemory(
        client=chromadb.EphemeralClient(),
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
    rows: list[dict[str, Any]] = []
    timing_lines = ("--verbose", "True")  # llama.cpp logs its prompt eval counts
    with serve_local_model(n_ctx=8192, logits_all=False, extra_args=timing_lines) as served:
        model = served.chat_model(max_tokens=answer_tokens, temperature=0.0, streaming=True)
        model.invoke("Warm up.")  # loads the weights
        for condition in conditions:
            rows += _condition(condition, memory, served, model, asks, users)
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
