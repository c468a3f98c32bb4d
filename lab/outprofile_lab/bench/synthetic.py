"""Seeded synthetic users and output texts for the benchmarks (no data leaves the machine).

Each user gets a stable writing style (sentence length, casing, punctuation, emoji, sign-off)
so the style embeddings and the diversity step see realistic variety; every text is unique.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

__all__ = ["TASKS", "queries", "user_entries", "user_name"]

TASKS = ("email", "post", "review", "chat", "")

_VOCABULARY = (
    "the project timeline meeting budget draft review customer team weekend coffee deadline "
    "release feature bug report design market quarter update plan idea summary question answer "
    "schedule travel hotel flight dinner recipe garden weather music concert movie book chapter "
    "invoice contract offer price discount shipping order refund support ticket server database "
    "query cache latency memory profile style tone voice feedback approval rating comment thread "
    "launch roadmap sprint standup retro hiring interview candidate salary office remote "
    "holiday birthday family friend neighbour school homework exam lecture paper research data "
    "model result chart table figure number growth revenue cost risk issue fix patch test "
    "quickly honestly basically really very quite simply clearly probably definitely maybe "
    "good great fine bad awful lovely solid rough tidy messy short long clear vague brief"
)
_WORDS = _VOCABULARY.split()
_OPENERS = ("Hi all,", "Hey!", "Quick note:", "So,", "Honestly,", "FYI", "Hello team,", "ok so")
_CLOSERS = ("Thanks!", "Cheers,", "Best regards.", "talk soon", "— A.", "Let me know.", "xx")
_EMOJI = ("🙂", "🚀", "👍", "😅", "🎉", "☕", "🔥")
_SIGNALS = ("authored", "authored", "edited", "endorsed", "accepted")
_ENDS = (".", ".", ".", "!", "?", "...", "!!")


def user_name(index: int) -> str:
    """The id of synthetic user ``index``."""
    return f"user-{index:06d}"


def _style(rng: random.Random) -> dict[str, Any]:
    return {
        "words": (rng.randint(4, 9), rng.randint(10, 22)),
        "sentences": (1, rng.randint(2, 6)),
        "lower": rng.random() < 0.25,
        "emoji": rng.random() * 0.5,
        "opener": rng.random() < 0.5,
        "closer": rng.random() < 0.5,
        "bang": rng.random() < 0.3,
    }


def _sentence(rng: random.Random, style: dict[str, Any]) -> str:
    words = rng.choices(_WORDS, k=rng.randint(*style["words"]))
    text = " ".join(words)
    text = text if style["lower"] else text[0].upper() + text[1:]
    end = "!" if style["bang"] and rng.random() < 0.5 else rng.choice(_ENDS)
    emoji = f" {rng.choice(_EMOJI)}" if rng.random() < style["emoji"] else ""
    return text + end + emoji


def _text(rng: random.Random, style: dict[str, Any], serial: int) -> str:
    parts = [rng.choice(_OPENERS)] if style["opener"] else []
    parts += [_sentence(rng, style) for _ in range(rng.randint(*style["sentences"]))]
    parts += [rng.choice(_CLOSERS)] if style["closer"] else []
    parts.append(f"(#{serial})")  # keeps every text unique, so every add is a new entry
    return " ".join(parts)


def user_entries(
    user_index: int, count: int, *, seed: int = 0, now: float = 1.7e9
) -> Iterator[dict[str, Any]]:
    """``count`` add-many records of one synthetic user: varied signals, tasks and ages.

    Example:
        ```python
        records = list(user_entries(0, 3, seed=1))
        records[0]["user_id"]  # "user-000000"
        ```
    """
    rng = random.Random(f"{seed}:{user_index}")
    style = _style(rng)
    user = user_name(user_index)
    for serial in range(count):
        roll = rng.random()
        record: dict[str, Any] = {
            "text": _text(rng, style, serial),
            "user_id": user,
            "task": rng.choice(TASKS),
            "created_at": now - rng.random() * 400 * 86_400.0,
        }
        if roll < 0.15:
            record["rating"] = float(rng.randint(1, 5))
        else:
            record["signal"] = rng.choice(_SIGNALS)
        yield record


def queries(count: int, *, seed: int = 0) -> list[str]:
    """Varied request texts for the query-similarity baseline (one per request)."""
    rng = random.Random(f"{seed}:queries")
    style = _style(rng)
    return [_sentence(rng, style) for _ in range(count)]
