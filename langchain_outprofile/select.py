"""Select: score entries by preference signal, diversify, and pack them under a token budget.

No LLM call and no embedding call happen here: scores come from stored signal strengths
and ages, diversity from the style vectors stored beside each entry. The caller supplies
what an entry costs once rendered (``entry_cost``) and a check of the real total
(``fits``), so this stage stays ignorant of the block's exact text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from langchain_outprofile.tokens import TokenCounter
from langchain_outprofile.types import (
    Candidate,
    Choice,
    ProfileEntry,
    SelectionOptions,
    StoredProfile,
)

__all__ = ["choose"]

_DAY_S = 86_400.0
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")


def choose(
    profile: StoredProfile,
    options: SelectionOptions,
    *,
    counter: TokenCounter,
    fixed_cost: int,
    entry_cost: Callable[[ProfileEntry], int],
    fits: Callable[[Sequence[ProfileEntry]], bool],
    now: float,
    query_vector: np.ndarray | None = None,
) -> Choice:
    """Pick the entries of one block.

    Args:
        profile: the user's stored entries and style vectors.
        options: budget, decay, diversity, order and field choices.
        counter: counts tokens for cutting long entries.
        fixed_cost: tokens of the header and footer.
        entry_cost: tokens one rendered entry adds.
        fits: the real check that a rendered list of entries stays within budget.
        now: the time ages are measured from (epoch seconds).
        query_vector: used only when ``options.relevance_weight`` > 0.
    """
    scored, left_out = _score(profile, options, now, query_vector)
    ordered = _diversify(scored, profile, options, left_out)
    chosen = _pack(ordered, options, counter, fixed_cost, entry_cost, left_out)
    while chosen and not fits([c.entry for c in chosen]):
        dropped = chosen.pop()
        left_out.append(replace(dropped, reason="over budget once rendered"))
    chosen = _block_order(chosen, options)
    left_out.sort(key=lambda c: (-c.score, c.entry.id))
    note = _budget_note(options, fixed_cost, chosen, left_out)
    return Choice(tuple(chosen), tuple(left_out), options, note=note)


def _budget_note(
    options: SelectionOptions, fixed_cost: int, chosen: list[Candidate], left_out: list[Candidate]
) -> str:
    """Why the block is empty when the budget is the cause: it cannot hold the frame, or no
    eligible entry fits beside the frame."""
    if fixed_cost >= options.max_tokens:
        return (
            f"max_tokens={options.max_tokens} does not exceed the block's frame ({fixed_cost} "
            "tokens of header and footer), so no entry can fit: raise max_tokens"
        )
    costs = [c.tokens for c in left_out if c.reason.startswith("over budget") and c.tokens]
    if chosen or not costs:
        return ""
    return (
        f"no entry fits in max_tokens={options.max_tokens}: the frame takes {fixed_cost} tokens "
        f"and the smallest eligible entry {min(costs)}: raise max_tokens, or lower "
        "max_entry_tokens"
    )


def _score(
    profile: StoredProfile,
    options: SelectionOptions,
    now: float,
    query_vector: np.ndarray | None,
) -> tuple[list[tuple[int, Candidate]], list[Candidate]]:
    """Score every eligible entry; return (index, candidate) best first, and the ineligible."""
    scored: list[tuple[int, Candidate]] = []
    left_out: list[Candidate] = []
    similarity = _query_similarity(profile, query_vector, options.relevance_weight)
    typical = _typicality(profile, options.typicality_weight)
    for index, entry in enumerate(profile.entries):
        age_days = max(0.0, now - entry.created_at) / _DAY_S
        score = entry.strength * _decay(age_days, options.half_life_days)
        if typical is not None:
            t = options.typicality_weight
            score = (1.0 - t) * score + t * max(0.0, float(typical[index]))
        if similarity is not None:
            w = options.relevance_weight
            score = (1.0 - w) * score + w * max(0.0, float(similarity[index]))
        reason = _ineligible_reason(entry, options)
        if reason:
            left_out.append(Candidate(entry, score, age_days, reason=reason))
        else:
            scored.append((index, Candidate(entry, score, age_days)))
    in_scope = options.task
    scored.sort(
        key=lambda ic: (
            in_scope is not None and ic[1].entry.task != in_scope,
            -ic[1].score,
            ic[1].entry.id,
        )
    )
    return scored, left_out


def _ineligible_reason(entry: ProfileEntry, options: SelectionOptions) -> str:
    if entry.rejected:
        return "rejected"
    if entry.pending:
        return "pending feedback"
    if entry.strength <= 0.0:
        return "no positive signal"
    if options.task is not None and entry.task != options.task and not options.fill_from_profile:
        return f"outside task {options.task!r}"
    if options.fields in ("input", "full") and not entry.source_input:
        return "no stored input"
    return ""


def _decay(age_days: float, half_life_days: float | None) -> float:
    return 1.0 if half_life_days is None else 0.5 ** (age_days / half_life_days)


def _query_similarity(
    profile: StoredProfile, query_vector: np.ndarray | None, weight: float
) -> np.ndarray | None:
    if weight <= 0.0 or query_vector is None or not profile.entries:
        return None
    return profile.vectors @ np.asarray(query_vector, dtype=np.float32)


def _typicality(profile: StoredProfile, weight: float) -> np.ndarray | None:
    """Cosine of each entry's style vector to the centroid of the user's selectable entries."""
    usable = [i for i, e in enumerate(profile.entries) if e.selectable]
    if weight <= 0.0 or not usable:
        return None
    vectors = profile.vectors
    centroid = vectors[usable].mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    return vectors @ (centroid / norm) if norm > 0 else None


def _diversify(
    scored: list[tuple[int, Candidate]],
    profile: StoredProfile,
    options: SelectionOptions,
    left_out: list[Candidate],
) -> list[Candidate]:
    """Maximal marginal relevance over the top of the ranking; near-duplicates are dropped."""
    pool, rest = scored[: options.pool_size], scored[options.pool_size :]
    # a direct constructor, not dataclasses.replace: this runs for nearly every entry
    left_out.extend(
        Candidate(c.entry, c.score, c.age_days, reason="below the candidate pool") for _, c in rest
    )
    if not pool:
        return []
    pool_vectors = profile.vectors_for([i for i, _ in pool])  # only the pool's rows are fetched
    scope = np.array([options.task is None or c.entry.task == options.task for _, c in pool])
    top = max(c.score for _, c in pool) or 1.0
    relevance = np.array([c.score / top for _, c in pool])
    max_similarity = np.zeros(len(pool), dtype=np.float32)
    remaining = np.ones(len(pool), dtype=bool)
    ordered: list[Candidate] = []
    lam = options.mmr_lambda
    while remaining.any():
        gain = lam * relevance - (1.0 - lam) * max_similarity + 2.0 * scope
        gain[~remaining] = -np.inf
        pick = int(np.argmax(gain))
        remaining[pick] = False
        ordered.append(pool[pick][1])
        similarity = pool_vectors @ pool_vectors[pick]
        np.maximum(max_similarity, similarity, out=max_similarity)
        duplicates = remaining & (similarity >= options.duplicate_threshold)
        for index in np.flatnonzero(duplicates):
            remaining[index] = False
            left_out.append(
                replace(pool[index][1], reason=f"near-duplicate of {pool[pick][1].entry.id}")
            )
    return ordered


def _pack(
    ordered: list[Candidate],
    options: SelectionOptions,
    counter: TokenCounter,
    fixed_cost: int,
    entry_cost: Callable[[ProfileEntry], int],
    left_out: list[Candidate],
) -> list[Candidate]:
    """Greedy whole-entry packing: take each candidate that still fits, skip the rest."""
    used = fixed_cost
    chosen: list[Candidate] = []
    for candidate in ordered:
        entry, cut = _cut_to(candidate.entry, options.max_entry_tokens, counter)
        cost = entry_cost(entry)
        if used + cost > options.max_tokens:
            left_out.append(replace(candidate, tokens=cost, reason="over budget"))
            continue
        used += cost
        chosen.append(replace(candidate, entry=entry, tokens=cost, cut=cut))
    return chosen


def _cut_to(
    entry: ProfileEntry, max_tokens: int, counter: TokenCounter
) -> tuple[ProfileEntry, bool]:
    """Cut a long entry at the last sentence boundary within ``max_tokens`` (else a word one)."""
    if counter.count(entry.text) <= max_tokens:
        return entry, False
    text = _longest_prefix(entry.text, _sentence_ends(entry.text), max_tokens, counter)
    if not text:
        word_ends = [m.start() for m in re.finditer(r"\s+", entry.text)]
        text = _longest_prefix(entry.text, word_ends, max_tokens, counter)
    return replace(entry, text=text or _longest_char_prefix(entry.text, max_tokens, counter)), True


def _sentence_ends(text: str) -> list[int]:
    return [m.start() for m in _SENTENCE_END.finditer(text)]


def _longest_prefix(text: str, ends: list[int], max_tokens: int, counter: TokenCounter) -> str:
    best = ""
    for end in ends:
        prefix = text[:end].rstrip()
        if counter.count(prefix) > max_tokens:
            break
        best = prefix
    return best


def _longest_char_prefix(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """The longest character prefix of ``text`` that counts at most ``max_tokens`` tokens
    (the last resort for text with no sentence or word boundary, such as a run of emoji)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if counter.count(text[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _block_order(chosen: list[Candidate], options: SelectionOptions) -> list[Candidate]:
    """Oldest first for ``stable``; else the task's own entries, then strongest first."""
    if options.order == "stable":
        return sorted(chosen, key=lambda c: (c.entry.created_at, c.entry.id))
    task = options.task
    return sorted(
        chosen, key=lambda c: (task is not None and c.entry.task != task, -c.score, c.entry.id)
    )
