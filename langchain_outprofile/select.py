"""Select: rank entries by preference signal, diversify, and pack them under a token budget.

No LLM call and no embedding call happen here: keys come from stored signal strengths and
creation times, diversity from the style vectors stored beside each entry. The caller
supplies what an entry costs once rendered (``entry_cost``) and a check of the real total
(``fits``), so this stage stays ignorant of the block's exact text.

A :class:`Ranking` holds every entry of one user in ranking order under one set of options.
With exponential decay (or none) and no query or typicality blend, an entry's ranking key is
time-invariant: ``log2(strength) + created_at / half_life`` orders entries exactly as
``strength * 0.5 ** (age / half_life)`` does at any "now" (docs/design.md); feedback credit
adds ``credit_weight * log2(2 * credit)``, which does not move with time either. Such a ranking
takes the changes of a write as a delta (:meth:`Ranking.update`) instead of being built
again from the whole profile, and :func:`choose_from` gives the same :class:`Choice` from an
updated ranking as from a fresh one, because a choice depends only on the ranking's state:
the top ``pool_size`` eligible entries (diversified and packed) and the first
:data:`LEFT_OUT_KEPT` of the rest.

Expiry. An entry whose ``expires_at`` has passed is in no ranking, as if deleted. Keys stay
time-invariant; what moves with time is only *which* entries a ranking holds: a ranking
remembers the latest "now" it was brought to and when its next entry expires, and
:meth:`Ranking.expire` drops the entries expired since (a heap pop each), so an updated
ranking brought to "now" holds exactly what :func:`rank` at "now" holds. A choice carries
``valid_until``, the ranking's next expiry, past which it is not served from a cache.
"""

from __future__ import annotations

import heapq
import math
import re
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from langchain_outprofile.tokens import TokenCounter
from langchain_outprofile.types import (
    Candidate,
    Choice,
    ProfileEntry,
    SelectionOptions,
    StoredProfile,
)

__all__ = ["LEFT_OUT_KEPT", "Beyond", "Ranked", "Ranking", "choose_from", "rank"]

_DAY_S = 86_400.0
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
_WORD = re.compile(r"\w+")
SHARED_TRIGRAMS = 0.5
"""A near-duplicate also shares this share of the shorter text's word trigrams with the pick.

Style vectors alone cannot tell a re-saved text from another text in the same style: two
different ~190-word paragraphs of one writer are at cosine 0.92 or more, so a cosine test
alone kept one entry of a profile of long texts whatever the budget."""
LEFT_OUT_KEPT = 20
"""Left-out candidates a choice lists (best first); ``Choice.left_out_total`` counts all."""

Vectors = Callable[[list[str]], np.ndarray]
"""Style vectors of the given entry ids, rows in that order."""


@dataclass(frozen=True, slots=True)
class Ranked:
    """One entry as the ranking sees it: its key, whether it is in the task scope, and,
    when it can never be chosen under these options, why ('' when eligible)."""

    entry: ProfileEntry
    key: float
    in_scope: bool
    reason: str


@dataclass(frozen=True)
class Beyond:
    """What a ranking *head* (:meth:`Ranking.head`) knows of the entries it does not hold:
    how many eligible ones rank after its last eligible one (``eligible_cut``, that one's
    order), how many never-eligible ones after its last such one (``rest_cut``), and the
    earliest expiry among them. A whole ranking has nothing beyond it."""

    eligible: int = 0
    rest: int = 0
    eligible_cut: tuple[bool, float, str] | None = None
    rest_cut: tuple[float, str] | None = None
    expiry: float = math.inf


def _eligible_order(item: Ranked) -> tuple[bool, float, str]:
    return (not item.in_scope, -item.key, item.entry.id)


def _left_out_order(item: Ranked) -> tuple[float, str]:
    return (-item.key, item.entry.id)


class Ranking:
    """Every entry of one user in ranking order under one :class:`SelectionOptions`, except
    pending outputs (tracked runs awaiting feedback), which are never candidates.

    Eligible entries are ordered by (task scope first, key descending, id); the rest by
    (key descending, id). Built by :func:`rank`; when ``incremental`` (time-invariant keys),
    :meth:`update` applies a write's changed and removed entries in O(changes · log n) plus
    a list shift, and :func:`choose_from` re-packs only when the candidate pool changed.

    Example:
        ```python
        ranking = rank(profile, SelectionOptions(max_tokens=300), now=time.time())
        ranking.update([new_entry], removed=[])
        choice = choose_from(ranking, vectors=..., counter=..., fixed_cost=..., ...)
        ```
    """

    def __init__(
        self,
        options: SelectionOptions,
        items: Iterable[Ranked],
        *,
        incremental: bool,
        now: float = -math.inf,
        beyond: Beyond | None = None,
    ) -> None:
        self.options = options
        self.incremental = incremental
        self.beyond = beyond or Beyond()
        """The entries a head does not hold (none for a whole ranking)."""
        self.now = now
        """The latest time the ranking was brought to: it holds no entry expired by then."""
        self._items: dict[str, Ranked] = {
            i.entry.id: i for i in items if not i.entry.pending and not i.entry.expired(now)
        }
        self._eligible = sorted(_eligible_order(i) for i in self._items.values() if not i.reason)
        self._rest = sorted(_left_out_order(i) for i in self._items.values() if i.reason)
        self._expiries = [
            (i.entry.expires_at, i.entry.id)
            for i in self._items.values()
            if i.entry.expires_at is not None
        ]
        heapq.heapify(self._expiries)
        self.costs: dict[tuple[str, str], tuple[str, bool, int]] = {}
        """Rendered cost of each packed entry, by (id, source input): (text as cut, cut, cost)."""

    def __len__(self) -> int:
        return len(self._items)

    def held(self) -> list[ProfileEntry]:
        """The entries the ranking holds (for a head, not those beyond it)."""
        return [item.entry for item in self._items.values()]

    @property
    def total(self) -> int:
        """Every entry the ranking stands for: those it holds and, for a head, those beyond."""
        return len(self._items) + self.beyond.eligible + self.beyond.rest

    def head(self, eligible: int, rest: int) -> tuple[list[Ranked], Beyond] | None:
        """The first ``eligible`` eligible and ``rest`` never-eligible entries, and what lies
        beyond them: a head that :func:`choose_from` picks from as from the whole ranking,
        since a choice sees only the pool and the best left-out candidates (``eligible`` at
        least ``pool_size`` + :data:`LEFT_OUT_KEPT`, ``rest`` at least the latter). None when
        a head cannot stand for the ranking: keys blended with time or a query, or a task
        scope (out-of-scope entries rank after every in-scope one, yet their best are shown
        as left out)."""
        if not self.incremental or self.options.task is not None:
            return None
        kept_eligible, kept_rest = self._eligible[:eligible], self._rest[:rest]
        held = {o[2] for o in kept_eligible} | {o[1] for o in kept_rest}
        expiries = [
            i.entry.expires_at
            for i in self._items.values()
            if i.entry.expires_at is not None and i.entry.id not in held
        ]
        more_eligible = len(self._eligible) - len(kept_eligible)
        more_rest = len(self._rest) - len(kept_rest)
        beyond = Beyond(
            eligible=more_eligible,
            rest=more_rest,
            eligible_cut=kept_eligible[-1] if more_eligible and kept_eligible else None,
            rest_cut=kept_rest[-1] if more_rest and kept_rest else None,
            expiry=min(expiries, default=math.inf),
        )
        return [self._items[i] for i in held], beyond

    @property
    def answers(self) -> bool:
        """Whether :func:`choose_from` on this ranking gives the whole ranking's choice: always
        for a whole ranking; for a head, while it still holds the pool and the left-out
        candidates a choice shows, and until an entry beyond it expires."""
        beyond, options = self.beyond, self.options
        return (
            self.now < beyond.expiry
            and (beyond.eligible == 0 or len(self._eligible) >= options.pool_size + LEFT_OUT_KEPT)
            and (beyond.rest == 0 or len(self._rest) >= LEFT_OUT_KEPT)
        )

    def update_head(
        self, changes: Iterable[tuple[ProfileEntry | None, ProfileEntry | None]]
    ) -> None:
        """Apply a write to a head: each change is an entry as it was and as it is now (None:
        absent). An entry the head holds moves as in :meth:`update`; one it does not hold was
        beyond it (or nowhere) and is counted out; an entry now ranked before the head's cut
        is held, one after it counted beyond. Check :attr:`answers` after."""
        beyond = self.beyond
        eligible, rest, expiry = beyond.eligible, beyond.rest, beyond.expiry
        for old, new in changes:
            either = new if new is not None else old
            if either is None:
                continue
            entry_id = either.id
            if entry_id in self._items:
                self._remove(entry_id)
            elif old is not None and self._holds_kind(old):
                if ranked(old, self.options).reason:
                    rest -= 1
                else:
                    eligible -= 1
            if new is None or not self._holds_kind(new):
                continue
            item = ranked(new, self.options)
            if item.reason:
                inside = rest == 0 or _left_out_order(item) < (beyond.rest_cut or ())
                rest += 0 if inside else 1
            else:
                inside = eligible == 0 or _eligible_order(item) < (beyond.eligible_cut or ())
                eligible += 0 if inside else 1
            if not inside:
                if new.expires_at is not None:
                    expiry = min(expiry, new.expires_at)
                continue
            self._items[entry_id] = item
            if new.expires_at is not None:
                heapq.heappush(self._expiries, (new.expires_at, entry_id))
            if item.reason:
                insort(self._rest, _left_out_order(item))
            else:
                insort(self._eligible, _eligible_order(item))
        self.beyond = Beyond(
            eligible=eligible,
            rest=rest,
            eligible_cut=beyond.eligible_cut if eligible else None,
            rest_cut=beyond.rest_cut if rest else None,
            expiry=expiry,
        )

    def _holds_kind(self, entry: ProfileEntry) -> bool:
        """Whether a ranking at this time holds ``entry`` (pending and expired ones: never)."""
        return not entry.pending and not entry.expired(self.now)

    def update(self, changed: Iterable[ProfileEntry], removed: Iterable[str] = ()) -> bool:
        """Apply a write: ``changed`` entries as now stored (new or folded), ``removed`` ids
        deleted. Returns whether the ranking changed: a pending output is never a candidate
        (it awaits feedback), so writing or deleting one changes nothing. Only for an
        incremental ranking (a blended key moves with every entry).

        Example:
            ```python
            ranking.update([memory.add("Hi!", user_id="ana")])
            ```
        """
        if not self.incremental:
            raise ValueError("this ranking blends in a query or typicality: rank it again")
        moved = False
        for entry_id in removed:
            moved |= self._remove(entry_id)
        for entry in changed:
            moved |= self._remove(entry.id)
            if entry.pending or entry.expired(self.now):
                continue
            moved = True
            item = ranked(entry, self.options)
            self._items[entry.id] = item
            if entry.expires_at is not None:
                heapq.heappush(self._expiries, (entry.expires_at, entry.id))
            if item.reason:
                insort(self._rest, _left_out_order(item))
            else:
                insort(self._eligible, _eligible_order(item))
        return moved

    def expire(self, now: float) -> bool:
        """Bring the ranking to ``now``: drop the entries expired by then. Returns whether
        any went. Time only moves forward here (an earlier ``now`` changes nothing).

        Example:
            ```python
            ranking.expire(time.time())  # False while nothing expired
            ```
        """
        self.now = max(self.now, now)
        moved = False
        while self._expiries and self._expiries[0][0] <= self.now:
            expires_at, entry_id = heapq.heappop(self._expiries)
            item = self._items.get(entry_id)
            if item is not None and item.entry.expires_at == expires_at:
                moved |= self._remove(entry_id)
        return moved

    @property
    def next_expiry(self) -> float:
        """When the first entry the ranking stands for expires (``math.inf``: none does)."""
        heap = self._expiries
        while heap:  # entries replaced or removed since leave stale heads
            item = self._items.get(heap[0][1])
            if item is not None and item.entry.expires_at == heap[0][0]:
                return min(heap[0][0], self.beyond.expiry)
            heapq.heappop(heap)
        return self.beyond.expiry

    def _remove(self, entry_id: str) -> bool:
        item = self._items.pop(entry_id, None)
        if item is None:
            return False
        if item.reason:
            del self._rest[bisect_left(self._rest, _left_out_order(item))]
        else:
            del self._eligible[bisect_left(self._eligible, _eligible_order(item))]
        return True

    def pool(self) -> list[Ranked]:
        """The top ``pool_size`` eligible entries, in ranking order."""
        return [self._items[o[2]] for o in self._eligible[: self.options.pool_size]]

    def left_out_head(self, count: int) -> list[Ranked]:
        """The best ``count`` entries outside the pool (below it, or never eligible), by
        key descending then id."""
        size = self.options.pool_size
        first_out_of_scope = bisect_left(self._eligible, (True,))
        in_scope = self._eligible[size:first_out_of_scope][:count]
        out_of_scope = self._eligible[max(size, first_out_of_scope) :][:count]
        head = [self._items[o[2]] for o in (*in_scope, *out_of_scope)]
        head += [self._items[o[1]] for o in self._rest[:count]]
        return sorted(head, key=_left_out_order)[:count]


def time_invariant(options: SelectionOptions) -> bool:
    """Whether keys under ``options`` never move with time or with other entries (no
    typicality or query blend), so a ranking can take deltas."""
    return options.typicality_weight <= 0.0 and options.relevance_weight <= 0.0


def ranked(entry: ProfileEntry, options: SelectionOptions, blended: float | None = None) -> Ranked:
    """One entry under ``options``: its key (time-invariant unless ``blended`` gives a
    score at "now"), scope and, if ineligible, why."""
    key = _key(entry, options) if blended is None else blended
    in_scope = options.task is None or entry.task == options.task
    return Ranked(entry, key, in_scope, _ineligible_reason(entry, options))


def _key(entry: ProfileEntry, options: SelectionOptions) -> float:
    """log2 of the decayed score, up to a term shared by all entries at any one time."""
    if entry.strength <= 0.0:
        return -math.inf
    key = math.log2(entry.strength) + options.credit_weight * math.log2(2.0 * entry.credit)
    if options.half_life_days is not None:
        key += entry.created_at / (options.half_life_days * _DAY_S)
    return key


def rank(
    profile: StoredProfile,
    options: SelectionOptions,
    *,
    now: float,
    query_vector: np.ndarray | None = None,
) -> Ranking:
    """Rank every entry of ``profile``. Keys are time-invariant unless ``options`` blend in
    typicality or (with ``query_vector``) query similarity: those give scores at ``now``,
    and the ranking cannot take deltas."""
    similarity = _query_similarity(profile, query_vector, options.relevance_weight)
    typical = _typicality(profile, options.typicality_weight)
    if similarity is None and typical is None:
        items = [ranked(e, options) for e in profile.entries]
        return Ranking(options, items, incremental=True, now=now)
    blended = []
    for index, entry in enumerate(profile.entries):
        score = _decayed(entry, options, now)
        if typical is not None:
            t = options.typicality_weight
            score = (1.0 - t) * score + t * max(0.0, float(typical[index]))
        if similarity is not None:
            w = options.relevance_weight
            score = (1.0 - w) * score + w * max(0.0, float(similarity[index]))
        blended.append(ranked(entry, options, score))
    return Ranking(options, blended, incremental=False, now=now)


def profile_vectors(profile: StoredProfile) -> Vectors:
    """The :data:`Vectors` of a loaded profile (rows fetched only when asked for)."""
    position = {e.id: i for i, e in enumerate(profile.entries)}
    return lambda ids: profile.vectors_for([position[i] for i in ids])


def choose_from(
    ranking: Ranking,
    *,
    vectors: Vectors,
    counter: TokenCounter,
    fixed_cost: int,
    entry_cost: Callable[[ProfileEntry], int],
    fits: Callable[[Sequence[ProfileEntry]], bool],
    now: float,
) -> Choice:
    """Pick the entries of one block from a ranking: maximal marginal relevance over the
    pool with greedy whole-entry packing, then the real token check of the rendered block.

    Every entry's rendered cost is kept on the ranking, so an updated ranking counts
    tokens only for entries it has not packed before.
    """
    options = ranking.options
    ranking.expire(now)  # an expired entry is never chosen, whatever cached the ranking
    pool = ranking.pool()
    chosen, over, duplicates = _diversify_and_pack(
        pool, vectors, ranking, counter, fixed_cost, entry_cost
    )
    while chosen and not fits([entry for _, entry, _, _ in chosen]):
        item, _, cost, _ = chosen.pop()
        over.append((item, cost, "over budget once rendered"))
    block = _block_order(chosen, options)
    left_out = [
        *((item, 0, f"near-duplicate of {of}") for item, of in duplicates),
        *over,
        *(
            (r, 0, r.reason or "below the candidate pool")
            for r in ranking.left_out_head(LEFT_OUT_KEPT)
        ),
    ]
    left_out.sort(key=lambda found: _left_out_order(found[0]))
    display = _display(options, ranking.incremental, now)
    return Choice(
        tuple(
            Candidate(entry, display(item), _age_days(item.entry, now), tokens=cost, cut=cut)
            for item, entry, cost, cut in block
        ),
        tuple(
            Candidate(item.entry, display(item), _age_days(item.entry, now), cost, reason=why)
            for item, cost, why in left_out[:LEFT_OUT_KEPT]
        ),
        options,
        left_out_total=ranking.total - len(block),
        note=_budget_note(options, fixed_cost, block, [cost for _, cost, _ in over if cost]),
        valid_until=ranking.next_expiry,
    )


def _display(options: SelectionOptions, incremental: bool, now: float) -> Callable[[Ranked], float]:
    """A candidate's shown score: its decayed strength at ``now`` (or its blended score)."""
    if incremental:
        return lambda item: _decayed(item.entry, options, now)
    return lambda item: item.key


def _decayed(entry: ProfileEntry, options: SelectionOptions, now: float) -> float:
    credit: float = (2.0 * entry.credit) ** options.credit_weight
    return entry.strength * credit * _decay(_age_days(entry, now), options.half_life_days)


def _age_days(entry: ProfileEntry, now: float) -> float:
    return max(0.0, now - entry.created_at) / _DAY_S


def _budget_note(
    options: SelectionOptions,
    fixed_cost: int,
    chosen: Sequence[object],
    over_budget_costs: list[int],
) -> str:
    """Why the block is empty when the budget is the cause: it cannot hold the frame, or no
    eligible entry fits beside the frame."""
    if fixed_cost >= options.max_tokens:
        return (
            f"max_tokens={options.max_tokens} does not exceed the block's frame ({fixed_cost} "
            "tokens of header and footer), so no entry can fit: raise max_tokens"
        )
    if chosen or not over_budget_costs:
        return ""
    return (
        f"no entry fits in max_tokens={options.max_tokens}: the frame takes {fixed_cost} tokens "
        f"and the smallest eligible entry {min(over_budget_costs)}: raise max_tokens, or lower "
        "max_entry_tokens"
    )


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
    if weight <= 0.0:
        return None
    usable = [i for i, e in enumerate(profile.entries) if e.selectable]
    if not usable:
        return None
    vectors = profile.vectors
    centroid = vectors[usable].mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    return vectors @ (centroid / norm) if norm > 0 else None


Packed = tuple[Ranked, ProfileEntry, int, bool]
"""A chosen entry: its ranking item, the entry as rendered (cut), its cost, whether cut."""


def _diversify_and_pack(
    pool: list[Ranked],
    vectors: Vectors,
    ranking: Ranking,
    counter: TokenCounter,
    fixed_cost: int,
    entry_cost: Callable[[ProfileEntry], int],
) -> tuple[list[Packed], list[tuple[Ranked, int, str]], list[tuple[Ranked, str]]]:
    """Maximal marginal relevance over the pool, packing each pick that still fits.

    Picks go in MMR order (relevance from the keys, similarity from the style vectors).
    Near-duplicates of a pick leave the pool: style similarity of at least
    ``duplicate_threshold`` and :data:`SHARED_TRIGRAMS` of their word trigrams in common. A
    pick that does not fit the budget is left out as over budget. Once no entry left in the
    pool fits what remains of the budget, the rest are over budget without being ordered.
    Returns (chosen, over budget, near-duplicates as (item, id it duplicates)). A similarity
    row is one product of the pool's vectors with the pick's, computed the same way for a
    fresh ranking and an updated one, so both choose identically.
    """
    options = ranking.options
    if not pool:
        return [], [], []
    costs = [_cost(item, ranking, counter, entry_cost) for item in pool]
    cost_of = np.array([cost for _, _, cost in costs], dtype=np.int64)
    pool_vectors = np.ascontiguousarray(vectors([r.entry.id for r in pool]), dtype=np.float32)
    relevance = _relevance(np.array([r.key for r in pool], dtype=np.float64), ranking.incremental)
    scope = np.array([r.in_scope for r in pool])
    max_similarity = np.zeros(len(pool), dtype=np.float32)
    remaining = np.ones(len(pool), dtype=bool)
    chosen: list[Packed] = []
    over: list[tuple[Ranked, int, str]] = []
    duplicates: list[tuple[Ranked, str]] = []
    trigrams: dict[int, frozenset[tuple[str, ...]]] = {}

    def trigrams_of(index: int) -> frozenset[tuple[str, ...]]:
        if index not in trigrams:
            trigrams[index] = word_trigrams(pool[index].entry.text)
        return trigrams[index]

    used, lam = fixed_cost, options.mmr_lambda
    explore = _least_tried(pool, options)
    while remaining.any() and used + int(cost_of[remaining].min()) <= options.max_tokens:
        gain = lam * relevance - (1.0 - lam) * max_similarity + 2.0 * scope
        gain[~remaining] = -np.inf
        pick = int(np.argmax(gain)) if explore is None else explore
        explore = None
        remaining[pick] = False
        item, (text, cut, cost) = pool[pick], costs[pick]
        if used + cost > options.max_tokens:
            over.append((item, cost, "over budget"))
        else:
            used += cost
            entry = replace(item.entry, text=text) if cut else item.entry
            chosen.append((item, entry, cost, cut))
        similarity = pool_vectors @ pool_vectors[pick]
        np.maximum(max_similarity, similarity, out=max_similarity)
        for index in np.flatnonzero(remaining & (similarity >= options.duplicate_threshold)):
            if shared_share(trigrams_of(pick), trigrams_of(int(index))) >= SHARED_TRIGRAMS:
                remaining[index] = False
                duplicates.append((pool[index], item.entry.id))
    over += [(pool[i], costs[i][2], "over budget") for i in np.flatnonzero(remaining)]
    return chosen, over, duplicates


def _least_tried(pool: list[Ranked], options: SelectionOptions) -> int | None:
    """With ``explore`` (and credit weighed), the pool's in-scope entry with the least
    feedback yet, the first in ranking order among equals: the block's first pick, so one
    place goes to an entry whose credit is least known. None otherwise."""
    if not options.explore or options.credit_weight <= 0.0 or not pool:
        return None
    scoped = [i for i, r in enumerate(pool) if r.in_scope] or list(range(len(pool)))
    return min(scoped, key=lambda i: (pool[i].entry.credited + pool[i].entry.debited, i))


def word_trigrams(text: str) -> frozenset[tuple[str, ...]]:
    """The case-folded word trigrams of ``text`` (a text of fewer words: its words, once).

    Example:
        ```python
        word_trigrams("Keep going, team!")  # {("keep", "going", "team")}
        ```
    """
    words = _WORD.findall(text.casefold())
    if len(words) < 3:
        return frozenset({tuple(words)})
    return frozenset(zip(words, words[1:], words[2:], strict=False))


def shared_share(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    """The share of the smaller set's trigrams that the other also has (0 when one is empty)."""
    smaller = min(len(a), len(b))
    return len(a & b) / smaller if smaller else 0.0


def _relevance(keys: np.ndarray, log_keys: bool) -> np.ndarray:
    """Each pool entry's relevance relative to the best: 2^(key - best) for log keys (the
    ratio of decayed scores), score / best for blended ones."""
    if log_keys:
        return np.asarray(np.exp2(keys - keys.max()))
    top = float(keys.max()) or 1.0
    return np.asarray(keys / top)


def _cost(
    item: Ranked,
    ranking: Ranking,
    counter: TokenCounter,
    entry_cost: Callable[[ProfileEntry], int],
) -> tuple[str, bool, int]:
    """(text as cut to ``max_entry_tokens``, whether cut, rendered cost) of one entry,
    kept on the ranking by (id, source input)."""
    entry = item.entry
    known = (entry.id, entry.source_input)
    if known not in ranking.costs:
        cut_entry, cut = _cut_to(entry, ranking.options.max_entry_tokens, counter)
        ranking.costs[known] = (cut_entry.text, cut, entry_cost(cut_entry))
    return ranking.costs[known]


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


def _block_order(chosen: list[Packed], options: SelectionOptions) -> list[Packed]:
    """Oldest first for ``stable``; else the task's own entries, then strongest first."""
    if options.order == "stable":
        return sorted(chosen, key=lambda c: (c[1].created_at, c[1].id))
    return sorted(chosen, key=lambda c: _eligible_order(c[0]))
