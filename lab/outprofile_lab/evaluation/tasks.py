"""Tasks: what is predicted for whom, and what each strategy's block holds at that moment.

Three tasks share one runner (see :mod:`runner`):

- :class:`LampTask`: LaMP questions; each user's profile is stored as authored entries.
- :class:`PopquornTask`: POPQUORN email rewriting. One pair per user is held out; the profile is
  the user's other pairs (authored, the email as ``source_input``). ``--fields`` chooses what
  the block shows: ``output`` (the other rewrites), ``input`` (the other emails) or ``full``.
  ``bm25-query`` and the random draws ``random-<k>`` show the user's other rewrites too.
- :class:`CoauthorTask`: CoAuthor writing sessions. Each target is an accepted suggestion list
  with two or more candidates; the writer's history is replayed into the memory in time order
  up to (not including) the moment the list opened, with the signals as they happened.

Leakage rule (CoAuthor): an event is written to the memory only when its time is strictly
before the target's. Typed sentences count at the time of their last typed character,
acceptances when the list opened, dismissals (``closed_by == "user"``) as rejections of every
candidate when the list opened, and edits of an accepted suggestion (``edited_to``) only when
the session that holds them has ended (the edit's own time is not in the data).
"""

from __future__ import annotations

import random as random_module
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.render import render_block
from langchain_outprofile.types import Fields, ProfileEntry
from outprofile_lab.evaluation.data import (
    EditWriter,
    LampExample,
    RewriteUser,
    SuggestionList,
    TypedSentence,
    WriterEdit,
    WritingSession,
)
from outprofile_lab.evaluation.strategies import (
    EPOCH,
    bm25_order,
    build_block,
    draw_index,
    draw_order,
    ingest,
    other_users,
    pack,
    word_counts,
)

__all__ = [
    "COAUTHOR_STRATEGIES",
    "CONTEXT_CHARS",
    "CONTINUE_PROMPT",
    "EDIT_PROMPT",
    "LAMP_EDITS_STRATEGIES",
    "MIN_HISTORY",
    "POPQUORN_STRATEGIES",
    "REWRITE_PROMPT",
    "CoauthorTask",
    "EvalTask",
    "LampEditsTask",
    "LampTask",
    "MovingClock",
    "PopquornTask",
    "Target",
    "Write",
    "check_strategies",
    "coauthor_writes",
    "continue_request",
    "list_target",
    "rewrite_request",
]

_DAY_S = 86_400.0
REWRITE_PROMPT = "Rewrite the following email in your own words:\n\n"
CONTINUE_PROMPT = "Continue this text with the next sentence:\n\n"
CONTEXT_CHARS = 600
"""The document context in a CoAuthor request: its last 600 characters, cut at a word start."""
MIN_HISTORY = 10
"""A CoAuthor list is a target only when the writer has this many positive entries before it."""
POPQUORN_STRATEGIES = ("none", "output-profile", "other-user", "other-rewriter", "bm25-query")
"""POPQUORN's strategies, besides the random draws ``random-<k>``."""
LAMP_EDITS_STRATEGIES = ("none", "output-profile", "other-writer")
EDIT_PROMPT = "Edit this paragraph the way you edit writing:\n\n"
COAUTHOR_STRATEGIES = (
    "none",
    "output-profile",
    "all-outputs-bm25",
    "bm25-query",
    "recency",
    "other-user",
)


@dataclass(frozen=True)
class Target:
    """One prediction to score: ``gold`` after ``request``, for ``user`` (the bootstrap unit).

    Choice tasks also carry every candidate shown (``gold == candidates[chosen]``).
    """

    id: str
    user: str
    request: str
    gold: str
    t: float = 0.0
    candidates: tuple[str, ...] = ()
    chosen: int = -1
    instance: str = ""


class EvalTask(Protocol):
    """What the runner needs of a task."""

    name: str
    choice: bool
    replays: bool
    """Whether :meth:`prepare` replays history in time order (targets then score in order)."""
    memory: OutputProfileMemory

    def targets(self) -> Sequence[Target]:
        """Every target, in the order they are scored."""
        ...

    def setup(self) -> int:
        """Store what every target may see; returns the entries written."""
        ...

    def prepare(self, target: Target) -> None:
        """Bring the memory to the state ``target`` may see (replay up to its time)."""
        ...

    def block(self, target: Target, strategy: str, fields: Fields, budget: int) -> str | None:
        """The block of one strategy ('' = no block; None = the strategy does not apply)."""
        ...


class MovingClock:
    """A settable clock for the memory: the replay sets it to each target's time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- LaMP -------------------------------------------------------------------------------------


class LampTask:
    """LaMP questions: one target per user, profiles stored once up front."""

    name = "lamp"
    choice = False
    replays = False

    def __init__(
        self, memory: OutputProfileMemory, examples: Sequence[LampExample], seed: int = 0
    ) -> None:
        self.memory = memory
        self.examples = {e.user_id: e for e in examples}
        self.partners = other_users(examples, seed)
        self.seed = seed
        self.population = word_counts(item.output for e in examples for item in e.profile)

    def targets(self) -> list[Target]:
        """One target per question."""
        return [Target(u, u, e.input, e.output) for u, e in self.examples.items()]

    def setup(self) -> int:
        """Store every profile as authored entries."""
        return ingest(self.memory, list(self.examples.values()))

    def prepare(self, target: Target) -> None:
        """Nothing to replay: LaMP profiles do not change."""

    def block(self, target: Target, strategy: str, fields: Fields, budget: int) -> str | None:
        """The LaMP strategies of :func:`build_block` (``fields`` via ``full``/``input-only``)."""
        example = self.examples[target.id]
        if fields != "output" and strategy == "output-profile":
            if not example.has_inputs:
                return None
            return self.memory.select(target.id, max_tokens=budget, fields=fields).text
        return build_block(
            self.memory,
            example,
            strategy,
            budget,
            seed=self.seed,
            partner=self.partners.get(target.id),
            population=self.population,
        )


def file_order_records(
    name: str, items: Iterable[tuple[int, str, str]], *, signal: str, task: str
) -> list[dict[str, Any]]:
    """``add_many`` records of profile ``name`` from ``(position, output, input)`` items: the
    data has no times, so the n-th item of the file is dated n days after :data:`EPOCH`."""
    return [
        {
            "text": output,
            "user_id": name,
            "signal": signal,
            "task": task,
            "source_input": source,
            "created_at": EPOCH + position * _DAY_S,
        }
        for position, output, source in items
    ]


# -- POPQUORN ---------------------------------------------------------------------------------


class PopquornTask:
    """Leave one pair out per user; the profile is the user's other pairs.

    The held-out pair is, where possible, one whose email another user also rewrote (seeded
    choice), so that ``other-rewriter`` (that other user's profile, without their rewrite of
    this email) can be compared with the user's own profile on the very same email.
    ``other-user`` is a seeded derangement partner's profile, also without this email.

    With ``holdout`` > 1, each user with more than ``holdout`` pairs has that many held out
    (the first chosen as above, the others seeded among the rest), every one a target
    (``pq-<user>#<i>``) scored under the same profile (the other pairs), so the same block
    is measured on two or more of the user's texts (the headroom's cross-fitted pick).
    """

    name = "popquorn"
    choice = False
    replays = False

    def __init__(
        self,
        memory: OutputProfileMemory,
        users: Sequence[RewriteUser],
        seed: int = 0,
        holdout: int = 1,
    ) -> None:
        if holdout < 1:
            raise InvalidInputError(f"--holdout must be >= 1; got {holdout}")
        self.memory = memory
        self.users = {u.user: u for u in users}
        self.seed = seed
        rewriters: dict[str, list[str]] = defaultdict(list)
        for user in users:
            for pair in user.pairs:
                rewriters[pair.instance_id].append(user.user)
        self.rewriters = rewriters
        self.holdout = holdout
        self.held: dict[str, list[int]] = {}
        for user in users:
            if len(user.pairs) < holdout + 1:
                continue
            shared = [i for i, p in enumerate(user.pairs) if len(rewriters[p.instance_id]) > 1]
            pool = shared or list(range(len(user.pairs)))
            first = random_module.Random(f"{seed}:{user.user}").choice(pool)
            rest = [i for i in range(len(user.pairs)) if i != first]
            extra = random_module.Random(f"{seed}:{user.user}:more").sample(rest, holdout - 1)
            self.held[user.user] = [first, *extra]
        order = sorted(self.held)
        shuffled = order[:]
        random_module.Random(seed).shuffle(shuffled)
        self.partners = {u: shuffled[(i + 1) % len(shuffled)] for i, u in enumerate(shuffled)}
        self._stored: set[str] = set()

    def targets(self) -> list[Target]:
        """Each user's held-out pair."""
        out = []
        for user, indices in self.held.items():
            for n, index in enumerate(indices):
                pair = self.users[user].pairs[index]
                out.append(
                    Target(
                        id=f"pq-{user}" if self.holdout == 1 else f"pq-{user}#{n}",
                        user=f"pq-{user}",
                        request=rewrite_request(pair.input),
                        gold=pair.output,
                        instance=pair.instance_id,
                    )
                )
        return out

    def setup(self) -> int:
        """Store each user's profile without the held-out pairs."""
        return sum(
            self._store(u, *(self.users[u].pairs[i].instance_id for i in held))
            for u, held in self.held.items()
        )

    def _store(self, user: str, *without: str, store_user: str | None = None) -> int:
        """Store ``user``'s pairs except instances ``without`` (file order as time)."""
        name = store_user or f"pq-{user}"
        if name in self._stored:
            return 0
        self._stored.add(name)
        pairs = enumerate(self.users[user].pairs)
        kept = ((i, p.output, p.input) for i, p in pairs if p.instance_id not in without)
        records = file_order_records(name, kept, signal="authored", task="email-rewrite")
        return len(self.memory.add_many(records))

    def prepare(self, target: Target) -> None:
        """Nothing to replay (POPQUORN has no times); other profiles are stored on demand."""

    def other_rewriter(self, target: Target) -> str | None:
        """Another user who rewrote the target's email (seeded), or None."""
        user = target.user.removeprefix("pq-")
        others = sorted(u for u in self.rewriters[target.instance] if u != user)
        if not others:
            return None
        return random_module.Random(f"{self.seed}:{target.id}").choice(others)

    def block(self, target: Target, strategy: str, fields: Fields, budget: int) -> str | None:
        """``none``, ``output-profile`` (any fields), ``other-user``, ``other-rewriter``,
        ``bm25-query`` (the user's other pairs by BM25 of email and rewrite against the target
        email) and ``random-<k>`` (the ``k``-th seeded random order of them); the last two
        show the rewrites, packed whole."""
        if strategy == "none":
            return ""
        draw = draw_index(strategy)
        if strategy == "bm25-query" or draw is not None:
            stored = self.memory.store.load(target.user, with_vectors=False).entries
            entries = sorted((e for e in stored if e.selectable), key=lambda e: e.id)
            email = target.request.removeprefix(REWRITE_PROMPT)
            order = (
                bm25_order(entries, email)
                if draw is None
                else draw_order(entries, target.user, draw)
            )
            return render_block(pack(self.memory, order, budget), "output", self.memory.template)
        if strategy == "output-profile":
            return self.memory.select(target.user, max_tokens=budget, fields=fields).text
        if strategy in ("other-user", "other-rewriter"):
            user = target.user.removeprefix("pq-")
            other = (
                self.partners.get(user) if strategy == "other-user" else self.other_rewriter(target)
            )
            if other is None:
                return None
            name = f"pq-{other}~{target.instance}"
            self._store(other, target.instance, store_user=name)
            return self.memory.select(name, max_tokens=budget, fields=fields).text
        raise InvalidInputError(
            f"strategy {strategy!r} does not apply to POPQUORN; choose from "
            f"{', '.join(POPQUORN_STRATEGIES)}"
        )


def rewrite_request(email: str) -> str:
    """The request of a POPQUORN target (and of a POPQUORN round of the closed loop): rewrite
    the email."""
    return REWRITE_PROMPT + email


# -- LAMP edits -------------------------------------------------------------------------------


class LampEditsTask:
    """Leave one edit out: each edit of a writer with two or more is a target.

    The request is the instruction and the model's paragraph (``preedit``); the gold is the
    writer's edit of it (``postedit``). A target's profile is the writer's *other* edits,
    stored as ``edited`` entries (the postedit, with the preedit as its source input):
    ``output-profile`` with fields ``output`` shows the writer's own past edits, with fields
    ``input`` the model's unedited paragraphs of the same records. ``other-writer`` shows
    another writer's edits (seeded among those who edited the target's paragraph), without
    their edit of it: the same paragraphs, edited by someone else. Targets whose paragraph no
    other writer edited have no ``other-writer`` block.

    Each target is its own bootstrap unit (``Target.user``): three writers hold most of the
    edits, too few units for an interval over writers.
    """

    name = "lamp-edits"
    choice = False
    replays = False

    def __init__(
        self, memory: OutputProfileMemory, writers: Sequence[EditWriter], seed: int = 0
    ) -> None:
        self.memory = memory
        self.writers = {w.user: w for w in writers if len(w.edits) >= 2}
        self.seed = seed
        editors: dict[str, list[str]] = defaultdict(list)
        for writer in self.writers.values():
            for edit in writer.edits:
                if edit.paragraph_id:
                    editors[edit.paragraph_id].append(writer.user)
        self.editors = editors
        self.held: dict[str, tuple[str, WriterEdit]] = {}
        self._stored: set[str] = set()

    def targets(self) -> list[Target]:
        """Every edit of every writer with two or more."""
        out = []
        for writer in self.writers.values():
            for edit in writer.edits:
                target_id = f"le-{writer.user}/{edit.id}"
                self.held[target_id] = (writer.user, edit)
                out.append(
                    Target(
                        id=target_id,
                        user=target_id,
                        request=edit_request(edit),
                        gold=edit.postedit,
                        instance=edit.paragraph_id or edit.id,
                    )
                )
        return out

    def setup(self) -> int:
        """Nothing up front: each target's profile is stored when first asked for."""
        return 0

    def prepare(self, target: Target) -> None:
        """Nothing to replay (the data has no times)."""

    def other_writer(self, target: Target) -> str | None:
        """Another writer who edited the target's paragraph (seeded), or None."""
        writer, edit = self.held[target.id]
        others = sorted(u for u in self.editors.get(edit.paragraph_id or "", ()) if u != writer)
        if not others:
            return None
        return random_module.Random(f"{self.seed}:{target.id}").choice(others)

    def block(self, target: Target, strategy: str, fields: Fields, budget: int) -> str | None:
        """``none``, ``output-profile`` (fields ``output`` or ``input``) or ``other-writer``."""
        if strategy == "none":
            return ""
        writer, edit = self.held[target.id]
        if strategy == "output-profile":
            name = self._store(writer, lambda e: e.id == edit.id, f"le-{writer}~{edit.id}")
            return self._select(name, budget, fields)
        if strategy == "other-writer":
            other = self.other_writer(target)
            if other is None:
                return None
            paragraph = edit.paragraph_id
            name = self._store(
                other, lambda e: e.paragraph_id == paragraph, f"le-{other}~{paragraph}"
            )
            return self.memory.select(name, max_tokens=budget, fields=fields).text
        raise InvalidInputError(
            f"strategy {strategy!r} does not apply to LAMP edits; choose from "
            f"{', '.join(LAMP_EDITS_STRATEGIES)}"
        )

    def _select(self, name: str, budget: int, fields: Fields) -> str:
        return self.memory.select(name, max_tokens=budget, fields=fields).text

    def _store(self, writer: str, leave_out: Callable[[WriterEdit], bool], name: str) -> str:
        """Store ``writer``'s edits but those ``leave_out`` names as profile ``name`` (once)."""
        if name not in self._stored:
            self._stored.add(name)
            edits = enumerate(self.writers[writer].edits)
            kept = ((i, e.postedit, e.preedit) for i, e in edits if not leave_out(e))
            self.memory.add_many(
                file_order_records(name, kept, signal="edited", task="paragraph-edit")
            )
        return name


def edit_request(edit: WriterEdit) -> str:
    """The request of a LAMP-edits target: the instruction (when known) and the paragraph."""
    head = f"Instruction: {edit.instruction}\n\n" if edit.instruction else ""
    return f"{EDIT_PROMPT}{head}Paragraph:\n{edit.preedit}"


# -- CoAuthor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One replayed memory write: at time ``t``, ``text`` gets ``signal`` in a store.

    ``store`` is ``profile`` (the writer's signal memory) or ``shown`` (every suggestion shown,
    the similarity memory's pool). ``replaces`` is a text whose entry the write removes (an
    accepted suggestion superseded by its edit).
    """

    t: float
    store: str
    text: str
    signal: str
    replaces: str = ""


def coauthor_writes(sessions: Iterable[WritingSession]) -> list[Write]:
    """Every memory write one writer's sessions imply, sorted by time (stable).

    Example:
        ```python
        writes = coauthor_writes(sessions_of_one_writer)
        [w for w in writes if w.t < target_time]  # what a target may see
        ```
    """
    writes: list[Write] = []
    for session in sessions:
        for event in session.events:
            if isinstance(event, TypedSentence):
                if event.text.strip():
                    writes.append(Write(event.t, "profile", event.text, "authored"))
                continue
            for text in event.candidates:
                if text.strip():
                    writes.append(Write(event.t, "shown", text, "accepted"))
            if event.chosen is not None:
                accepted = event.candidates[event.chosen]
                if accepted.strip():
                    writes.append(Write(event.t, "profile", accepted, "accepted"))
                if event.edited_to and event.edited_to.strip() and event.edited_to != accepted:
                    writes.append(
                        Write(session.ended_at, "profile", event.edited_to, "edited", accepted)
                    )
            elif event.closed_by == "user":
                writes.extend(
                    Write(event.t, "profile", text, "rejected")
                    for text in event.candidates
                    if text.strip()
                )
    return sorted(writes, key=lambda w: w.t)


def continue_request(context: str) -> str:
    """The request of a CoAuthor list: continue the document as it was when the list opened
    (its last :data:`CONTEXT_CHARS` characters).

    Example:
        ```python
        continue_request(event.context)  # "Continue this text with the next sentence: ..."
        ```
    """
    return CONTINUE_PROMPT + _context(context)


def list_target(session: WritingSession, index: int, event: SuggestionList) -> Target | None:
    """The target of one list (``index``: its place in the session's events), or None when
    it is not one: not accepted, fewer than two distinct non-empty candidates, or an empty
    accepted text. ``candidates`` are the non-empty ones in display order.

    Example:
        ```python
        target = list_target(session, 3, session.events[3])
        ```
    """
    if event.chosen is None:
        return None
    shown = [c for c in event.candidates if c.strip()]
    gold = event.candidates[event.chosen]
    if len(set(shown)) < 2 or not gold.strip():
        return None
    return Target(
        id=f"co-{session.session}-{index}",
        user=f"co-{session.writer}",
        request=continue_request(event.context),
        gold=gold,
        t=event.t,
        candidates=tuple(shown),
        chosen=shown.index(gold),
    )


def _context(text: str, limit: int = CONTEXT_CHARS) -> str:
    """The last ``limit`` characters of ``text``, starting at a word."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < limit // 4 else tail


class CoauthorTask:
    """Accepted suggestion lists as targets; each writer's history replayed in time order.

    Targets (lists with an accepted candidate and two or more candidates, after at least
    :data:`MIN_HISTORY` positive entries of the writer) are sampled round-robin over writers
    from a seeded shuffle of each writer's targets, and scored in that order, so the first
    ``limit`` (or a run that stops early) cover every writer evenly.

    For each target, :meth:`prepare` replays the writer's history strictly before the target
    (signals in time order, through ``add_many``, ``delete`` for an edit) into fresh memory
    users of that target (``co-<writer>@<target>``, its ``#shown`` pool, and the other-user
    partner's), and forgets the previous target's users.
    """

    name = "coauthor"
    choice = True
    replays = True

    def __init__(
        self,
        memory: OutputProfileMemory,
        clock: MovingClock,
        sessions: Sequence[WritingSession],
        *,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        self.memory = memory
        self.clock = clock
        self.seed = seed
        by_writer: dict[str, list[WritingSession]] = defaultdict(list)
        for session in sessions:
            by_writer[session.writer].append(session)
        self.writers = sorted(by_writer)
        self.writes = {w: coauthor_writes(by_writer[w]) for w in self.writers}
        self._targets = self._sample(by_writer, limit)
        self._live: list[str] = []

    def _sample(
        self, by_writer: dict[str, list[WritingSession]], limit: int | None
    ) -> list[Target]:
        per_writer: list[list[Target]] = []
        for writer in self.writers:
            positive = sorted(
                w.t for w in self.writes[writer] if w.store == "profile" and w.signal != "rejected"
            )
            eligible = []
            for session in by_writer[writer]:
                for index, event in enumerate(session.events):
                    if not isinstance(event, SuggestionList):
                        continue
                    target = list_target(session, index, event)
                    if target is None or sum(t < event.t for t in positive) < MIN_HISTORY:
                        continue
                    eligible.append(target)
            random_module.Random(f"{self.seed}:{writer}").shuffle(eligible)
            per_writer.append(eligible)
        picked: list[Target] = []
        depth = max((len(e) for e in per_writer), default=0)
        for round_ in range(depth):
            for eligible in per_writer:
                if round_ < len(eligible):
                    picked.append(eligible[round_])
        return picked[:limit] if limit else picked

    def targets(self) -> list[Target]:
        """The sampled targets, round-robin over writers."""
        return self._targets

    def setup(self) -> int:
        """Nothing up front: :meth:`prepare` replays each target's history."""
        return 0

    def partner(self, target: Target) -> str:
        """Another writer (seeded per target) who has a profile at the target's time."""
        writer = target.user.removeprefix("co-")
        others = [w for w in self.writers if w != writer]
        random_module.Random(f"{self.seed}:{target.id}").shuffle(others)
        for other in others:
            history = self.writes[other]
            if sum(1 for w in history if w.t < target.t and w.store == "profile") >= MIN_HISTORY:
                return other
        return others[0] if others else writer

    @staticmethod
    def store_user(writer: str, target: Target) -> str:
        """The memory user holding ``writer``'s history as of ``target``."""
        return f"co-{writer}@{target.id}"

    def prepare(self, target: Target) -> None:
        """Replay the writer and the other-user partner up to (not including) the target."""
        for user in self._live:
            self.memory.forget(user)
        self.clock.now = target.t
        writer = target.user.removeprefix("co-")
        partner = self.partner(target)
        self._live = [
            self.store_user(writer, target),
            f"{self.store_user(writer, target)}#shown",
            self.store_user(partner, target),
        ]
        self.replay(writer, target, shown=True)
        if partner != writer:
            self.replay(partner, target, shown=False)

    def replay(self, writer: str, target: Target, *, shown: bool) -> int:
        """Write every event of ``writer`` strictly before ``target``; returns the writes."""
        name = self.store_user(writer, target)
        records: list[dict[str, Any]] = []
        count = 0
        for write in self.writes[writer]:
            if write.t >= target.t:
                break
            if write.store == "shown" and not shown:
                continue
            if write.replaces:  # the edit supersedes the accepted text: write, then delete
                self.memory.add_many(records)
                records = []
                old = ProfileEntry.create(write.replaces, user_id=name).id
                self.memory.delete(old, user_id=name)
            user = name if write.store == "profile" else f"{name}#shown"
            records.append(
                {
                    "text": write.text,
                    "user_id": user,
                    "signal": write.signal,
                    "task": "coauthor",
                    "created_at": write.t,
                }
            )
            count += 1
        if records:
            self.memory.add_many(records)
        return count

    def block(self, target: Target, strategy: str, fields: Fields, budget: int) -> str | None:
        """The CoAuthor strategies (see docs/evaluation.md)."""
        memory = self.memory
        user = self.store_user(target.user.removeprefix("co-"), target)
        context = target.request.removeprefix(CONTINUE_PROMPT)
        if strategy == "none":
            return ""
        if strategy == "output-profile":
            return memory.select(user, max_tokens=budget, fields=fields).text
        if strategy == "recency":
            return memory.select(
                user, max_tokens=budget, mmr_lambda=1.0, duplicate_threshold=1.0
            ).text
        if strategy == "other-user":
            other = self.store_user(self.partner(target), target)
            return memory.select(other, max_tokens=budget).text
        if strategy in ("bm25-query", "all-outputs-bm25"):
            pool = user if strategy == "bm25-query" else f"{user}#shown"
            entries = [e for e in memory.store.load(pool, with_vectors=False).entries]
            entries = [e for e in entries if e.selectable]
            order = bm25_order(sorted(entries, key=lambda e: e.id), context)
            return render_block(pack(memory, order, budget), "output", memory.template)
        raise InvalidInputError(
            f"strategy {strategy!r} does not apply to CoAuthor; choose from "
            f"{', '.join(COAUTHOR_STRATEGIES)}"
        )


def check_strategies(task: str, strategies: Sequence[str]) -> None:
    """Fail early on a strategy the task (``lamp``, ``coauthor``, ``popquorn``) lacks (the
    random draws ``random-<k>`` apply to LaMP and POPQUORN)."""
    allowed: dict[str, Sequence[str]] = {
        "popquorn": POPQUORN_STRATEGIES,
        "coauthor": COAUTHOR_STRATEGIES,
        "lamp-edits": LAMP_EDITS_STRATEGIES,
    }
    names = allowed.get(task)
    if names is None:
        return
    draws = task == "popquorn"
    bad = [s for s in strategies if s not in names and not (draws and draw_index(s) is not None)]
    if bad:
        raise InvalidInputError(
            f"strategies {bad} do not apply to {task}; choose from {', '.join(names)}"
        )
