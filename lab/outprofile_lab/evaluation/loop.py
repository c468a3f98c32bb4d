"""Closed loop on LAMP edits and POPQUORN (``outprofile eval --loop``): the memory learns
from real edits.

Each writer's edits, in file order, are rounds. At round ``r`` the writer's ``r``-th
instruction is the request (:func:`loop_request`; where the data has no instruction, the
request is to edit the model's paragraph, as in the static task). For every arm:

1. the arm serves its block for the request (:meth:`LoopArms.serve`);
2. the model's output for the request is recorded through the memory's own tracked run,
   ``record_output(output, served=block)``;
3. the writer's real feedback follows: ``feedback(run_id, edited=<their postedit>)``.

**Replay mode** (the default, no model call to write): the "model output" is the dataset's
own preedit, the LLM paragraph the writer edited. With ``--generate`` the scoring model
writes it (greedy, ``--gen-tokens`` tokens, one thread) after the arm's block. Only the
similarity arm keeps the output (the edit supersedes it in the memory's arms), so the mode
changes that arm's pool only: the memory arms' blocks depend on which entries were served
and credited, never on the output's words.

**POPQUORN** runs the same loop (:func:`loop_rounds.popquorn_writers` maps each user onto the LAMP
shapes, named ``pq-<user>`` as in the static task): each user's (email, rewrite) pairs, in
data order, are the rounds; the request is the static POPQUORN task's rewrite request for
the round's email (:func:`tasks.rewrite_request`); the feedback is the user's own rewrite,
``feedback(run_id, edited=<rewrite>)``. In replay mode the "model output" is the original
email unchanged: a null rewriter, whose every output the user rewrites. With ``--generate``
the scoring model writes the rewrite, as for LAMP. Golds are the user's next rewrites, under
the same window and leakage rule.

**CoAuthor** runs it too (:func:`loop_rounds.coauthor_writers`, ``co-<writer>`` as in the
static task): each writer's suggestion lists, over all their sessions in time order, are the
rounds; the request is the static CoAuthor task's for that list
(:func:`tasks.continue_request` of the document when it opened). Only lists the writer
answered are rounds: accepted ones, and dismissed ones (``closed_by == "user"``); a list
closed by asking for another (``regenerate``, ``replaced``) or left open (``end``) carries
no feedback and is skipped, as the static task writes no signal for it. The replayed output
of a round (there is no ``--generate``: the lists are the model's outputs) is the **accepted
candidate**, and for a dismissed list the **first candidate shown** (display order: the one
a writer reads first); the feedback is ``feedback(run_id, "accepted")`` or
``feedback(run_id, "rejected")``, so an accepted list credits the entries served with it and
a dismissed one debits them. A later edit of an accepted text (``edited_to``) is fed as in
the static task, once its session has ended (the data does not say when it was made, and the
edited span can hold text of a later list of that session): before the first round that
opened after that end, every arm gets ``feedback(run_id, edited=<edited_to>)`` on the
accepted round's run (the similarity arm stores the edit), so it supersedes the accepted
text, and the run's credit stays one approval (an entry counts a run once, by its latest
feedback). The writer's typed sentences are not fed: a round is a list. The similarity arm
stores every candidate shown (as the static task's ``all-outputs-bm25`` pool) and every
edit. Golds are the accepted text of the static task's targets only (accepted among two or
more distinct candidates; ``WriterEdit.scorable``): after round ``r``, the next
``gold_next`` such lists, each scored by the NLL of its accepted text and by ``pair_acc``
over its shown candidates (:func:`runner.score_choices`, :func:`runner.pair_accuracy`, the
static task's). The static task's minimum history does not apply: the loop's memory starts
empty.

Arms, each in its own memory user (:func:`arm_user`) so no arm sees another's data, all
at one token budget:

- ``credit``: the memory with ``SelectionOptions(credit_weight=1.0, explore=True)``;
- ``no-credit``: the memory's defaults (credit is recorded, and weighs nothing);
- ``all-outputs-bm25``: a similarity memory that stores every model output and every
  edit and retrieves by BM25 against the request (what extraction-free memories do);
- ``random``: a seeded random pack of the memory's entries (the same entries as
  ``no-credit``: its runs are recorded and edited the same way);
- ``none``: no block.

After round ``r`` (every ``score_every`` rounds, and always the last round that has a
future), each arm's block, the one it would serve next, is scored by the NLL of held-out
gold: the writer's edits of the next ``gold_next`` rounds that are golds (all later ones
with 0; every round is one on LAMP edits and POPQUORN).

**Leakage rule**: when a gold of round ``t`` is scored after round ``r``, ``t > r`` and
every arm has been fed rounds ``<= r`` only, so no arm holds the gold's edit, its
paragraph or anything written after it (:func:`check_unseen`, checked before every score).

Scores are cached in ``out/scores.jsonl`` (one line per scored prompt, keyed by writer,
round, arm, gold, budget, placement, model, frame, mode, seed and dataset, so LAMP-edits,
POPQUORN and CoAuthor rows never mix), generated outputs in
``out/outputs.jsonl``; a stopped run started again with the same ``out`` replays the
memory writes (cheap) and scores only what is missing.
"""

from __future__ import annotations

import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langchain_outprofile.errors import InvalidInputError, OutprofileError
from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.render import render_block
from langchain_outprofile.types import ProfileEntry, ProfileSelection
from outprofile_lab.evaluation.data import (
    EditWriter,
    WriterEdit,
)
from outprofile_lab.evaluation.runner import (
    SELECTION_RULE,
    append_jsonl,
    pair_accuracy,
    read_jsonl,
    score_choices,
)
from outprofile_lab.evaluation.scoring import Message, Scorer
from outprofile_lab.evaluation.strategies import (
    EPOCH,
    Placement,
    bm25_order,
    messages_for,
    pack,
    shuffled,
)
from outprofile_lab.evaluation.tasks import (
    MovingClock,
    edit_request,
)

__all__ = [
    "ARMS",
    "LOOP_RULE",
    "WRITE_PROMPT",
    "Generator",
    "LeakageError",
    "LoopArms",
    "LoopCache",
    "LoopConfig",
    "LoopRow",
    "arm_user",
    "check_unseen",
    "gold_rounds",
    "golds_after",
    "loop_request",
    "run_loop",
    "scored_rounds",
    "writer_scored_rounds",
]

ARMS = ("credit", "no-credit", "all-outputs-bm25", "random", "none")
MEMORY_ARMS = ("credit", "no-credit", "random")
"""Arms fed through the memory's own tracked runs and feedback."""
SIMILARITY = "all-outputs-bm25"
WRITE_PROMPT = "Write the paragraph this instruction asks for:\n\n"
LOOP_RULE = 1
"""What the arms mean, in every cache key: a change to an arm's block or to what it is fed
bumps it, so a cache never serves one rule's score for another."""
CREDIT = {"credit_weight": 1.0, "explore": True}
FIRST_DATASET = "lamp-edits"
"""The dataset of every row and output cached before the dataset joined the cache keys (the
loop ran on LAMP edits only): they keep serving LAMP-edits runs."""
_OUTPUT_KEY_FIELDS = 12
"""The length of a generated output's key (:func:`_output`); one shorter is an older key."""
_DAY_S = 86_400.0


class LeakageError(OutprofileError):
    """A gold would be scored under a memory fed its own round or a later one."""


class Generator(Protocol):
    """A model that writes the reply to chat messages (``LlamaScorer.generate``)."""

    name: str

    def generate(self, messages: Sequence[Message], max_tokens: int) -> str:
        """The reply, at most ``max_tokens`` tokens."""
        ...


def loop_request(edit: WriterEdit) -> str:
    """The request of one round: the dataset's own where it fixes one (POPQUORN: rewrite the
    email), else write the paragraph for the instruction, or, where the data has no
    instruction, edit the model's paragraph (:func:`tasks.edit_request`)."""
    if edit.request is not None:
        return edit.request
    if edit.instruction:
        return f"{WRITE_PROMPT}{edit.instruction}"
    return edit_request(edit)


def arm_user(arm: str, writer: str) -> str:
    """The memory user holding one arm's data for one writer."""
    return f"loop-{arm}-{writer}"


def gold_rounds(round_: int, rounds: int, window: int) -> range:
    """The rounds whose edits are gold after round ``round_``: the next ``window`` (every
    later round with 0), never ``round_`` itself or an earlier one.

    Example:
        ```python
        list(gold_rounds(2, 6, 2)), list(gold_rounds(2, 6, 0))  # [3, 4], [3, 4, 5]
        ```
    """
    end = rounds if window == 0 else min(rounds, round_ + 1 + window)
    return range(round_ + 1, end)


def scored_rounds(rounds: int, every: int) -> list[int]:
    """The rounds after which the arms are scored: every ``every``-th, and the last one
    that has a later edit to score (round ``rounds - 2``).

    Example:
        ```python
        scored_rounds(6, 2)  # [0, 2, 4]; scored_rounds(7, 2) is [0, 2, 4, 5]
        ```
    """
    return [r for r in range(rounds - 1) if r % every == 0 or r == rounds - 2]


def golds_after(writer: EditWriter, round_: int, window: int) -> list[int]:
    """The rounds whose golds are scored after ``round_``: the next ``window`` rounds that
    are golds (:attr:`WriterEdit.scorable`; every later one with 0). Where every round is
    a gold (LAMP edits, POPQUORN) this is :func:`gold_rounds`.

    Example:
        ```python
        golds_after(writer, 2, 3)  # [3, 4, 5] on LAMP edits; CoAuthor skips dismissed lists
        ```
    """
    positions = [i for i, edit in enumerate(writer.edits) if edit.scorable]
    before = bisect_right(positions, round_)
    return [positions[k] for k in gold_rounds(before - 1, len(positions), window)]


def writer_scored_rounds(writer: EditWriter, every: int) -> list[int]:
    """:func:`scored_rounds` of one writer: the last scored round is the last before its
    last gold (the writer's last round where every round is a gold).

    Example:
        ```python
        writer_scored_rounds(writer, 1)  # [0, 1, ..., last gold - 1]
        ```
    """
    golds = [i for i, edit in enumerate(writer.edits) if edit.scorable]
    return scored_rounds(golds[-1] + 1, every) if golds else []


def check_unseen(fed_through: dict[str, int], gold_round: int) -> None:
    """Raise :class:`LeakageError` unless every arm was fed only rounds before
    ``gold_round`` (``fed_through``: each arm's last fed round, -1 for none)."""
    seen = {arm: r for arm, r in fed_through.items() if r >= gold_round}
    if seen:
        raise LeakageError(
            f"the gold of round {gold_round} would be scored under arms fed through rounds "
            f"{seen}: a target must never see its own round or a later one"
        )


@dataclass(frozen=True)
class LoopConfig:
    """What one loop run does (its ``mode`` and ``seed`` are in every cache key)."""

    arms: tuple[str, ...] = ARMS
    budget: int = 600
    placement: Placement = "after-system"
    score_every: int = 1
    gold_next: int = 3
    """Gold after round r: the edits of rounds r+1 .. r+gold_next (0: every later round)."""
    generate: bool = False
    gen_tokens: int = 64
    seed: int = 0
    frame: str = "compact"

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise InvalidInputError(f"unknown arms {bad}; choose from {', '.join(ARMS)}")
        for name, low in (("budget", 1), ("score_every", 1), ("gold_next", 0), ("gen_tokens", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                flag = name.replace("_", "-")
                raise InvalidInputError(f"--{flag} must be an integer >= {low}; got {value!r}")

    @property
    def mode(self) -> str:
        """``replay`` (the preedit is the output) or ``generate<N>`` (the model writes)."""
        return f"generate{self.gen_tokens}" if self.generate else "replay"


@dataclass(frozen=True)
class LoopRow:
    """One scored prompt of the loop: ``arm``'s block after ``round`` (``none``: -1, it has
    no memory), predicting the writer's edit ``gold`` of round ``gold_round``."""

    writer: str
    round: int
    arm: str
    gold: str
    gold_round: int
    budget: int
    placement: str
    model: str
    frame: str
    mode: str
    seed: int
    nll: float
    tokens: int
    block_tokens: int = 0
    entries: int = 0
    selection: int = SELECTION_RULE
    rule: int = LOOP_RULE
    dataset: str = FIRST_DATASET
    """Where the writer's edits come from (``lamp-edits``, ``popquorn`` or ``coauthor``)."""
    choices: tuple[tuple[float, int], ...] = ()
    """Each shown candidate's (NLL, tokens) after the same prompt (CoAuthor golds)."""
    chosen: int = -1
    """The accepted candidate's index in ``choices`` (-1: no choices)."""

    @property
    def key(self) -> tuple[Any, ...]:
        """The cache key."""
        return row_key(
            self.writer,
            self.round,
            self.arm,
            self.gold,
            self.budget,
            self.placement,
            self.model,
            self.frame,
            self.mode,
            self.seed,
            self.selection,
            self.rule,
            dataset=self.dataset,
        )

    @property
    def mean(self) -> float:
        """Mean NLL per gold token."""
        return self.nll / self.tokens

    @property
    def pair_acc(self) -> float | None:
        """The static task's pair accuracy of the accepted candidate (None without
        choices: :func:`runner.pair_accuracy`)."""
        return pair_accuracy(self.choices, self.chosen)


def row_key(
    writer: str,
    round_: int,
    arm: str,
    gold: str,
    budget: int,
    placement: str,
    model: str,
    frame: str,
    mode: str,
    seed: int,
    selection: int = SELECTION_RULE,
    rule: int = LOOP_RULE,
    *,
    dataset: str = FIRST_DATASET,
) -> tuple[Any, ...]:
    """A row's key. ``none``'s prompt has no block: one score per gold, whatever the
    round, budget, frame, mode, seed or rule (the dataset stays: its gold is another)."""
    if arm == "none":
        round_, budget, frame, mode, seed, selection, rule = -1, 0, "", "", 0, 0, 0
    return (
        writer,
        round_,
        arm,
        gold,
        budget,
        placement,
        model,
        frame,
        mode,
        seed,
        selection,
        rule,
        dataset,
    )


@dataclass
class LoopCache:
    """Append-only JSONL of :class:`LoopRow` (``scores.jsonl``) and of generated outputs
    (``outputs.jsonl``); reloaded on start so runs resume."""

    out: Path
    rows: dict[tuple[Any, ...], LoopRow] = field(default_factory=dict)
    outputs: dict[tuple[Any, ...], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for raw in read_jsonl(self.scores_path):
            try:
                raw["choices"] = tuple(tuple(c) for c in raw.get("choices", ()))
                row = LoopRow(**raw)
            except (TypeError, AttributeError):
                continue
            self.rows[row.key] = row
        for raw in read_jsonl(self.outputs_path):
            if isinstance(raw.get("key"), list) and isinstance(raw.get("text"), str):
                key = tuple(raw["key"])
                if len(key) == _OUTPUT_KEY_FIELDS - 1:  # cached before the dataset was in it
                    key = (*key, FIRST_DATASET)
                self.outputs[key] = raw["text"]

    @property
    def scores_path(self) -> Path:
        """Where the scores are."""
        return self.out / "scores.jsonl"

    @property
    def outputs_path(self) -> Path:
        """Where the generated outputs are."""
        return self.out / "outputs.jsonl"

    def put(self, row: LoopRow) -> None:
        """Store and append one row (flushed at once)."""
        self.rows[row.key] = row
        append_jsonl(self.scores_path, asdict(row))

    def put_output(self, key: tuple[Any, ...], text: str) -> None:
        """Store and append one generated output."""
        self.outputs[key] = text
        append_jsonl(self.outputs_path, {"key": list(key), "text": text})


Served = ProfileSelection | list[str] | None


class LoopArms:
    """The arms of one writer: what each serves, and what each is fed after a round."""

    def __init__(
        self,
        memory: OutputProfileMemory,
        clock: MovingClock,
        config: LoopConfig,
        writer: EditWriter,
    ) -> None:
        self.memory = memory
        self.clock = clock
        self.config = config
        self.writer = writer
        self.arms = tuple(a for a in config.arms if a != "none")
        self.fed_through = dict.fromkeys(self.arms, -1)
        self.edits_due: list[int] = []
        """Fed rounds whose later edit is not fed yet (their session had not ended)."""
        self.credit_options = memory.options.with_changes(**CREDIT)

    def reset(self) -> None:
        """Forget whatever an earlier run stored for these arms (a resumed run replays)."""
        for arm in self.arms:
            self.memory.forget(arm_user(arm, self.writer.user))
        self.fed_through = dict.fromkeys(self.arms, -1)
        self.edits_due = []

    def serve(self, arm: str, round_: int, request: str) -> tuple[str, Served]:
        """The block ``arm`` serves at ``round_`` for ``request``, and what the run's
        ``served=`` names (the selection, or the packed entries' ids)."""
        if arm == "none":
            return "", None
        user, budget = arm_user(arm, self.writer.user), self.config.budget
        if arm in ("credit", "no-credit"):
            options = self.credit_options if arm == "credit" else None
            selection = self.memory.select(user, max_tokens=budget, options=options)
            return selection.text, selection
        entries = self._entries(user)
        if arm == "random":
            order = shuffled(entries, f"loop:{self.config.seed}:{user}:{round_}")
        else:
            order = bm25_order(entries, request)
        chosen = pack(self.memory, order, budget)
        return render_block(chosen, "output", self.memory.template), [e.id for e in chosen]

    def _entries(self, user: str) -> list[ProfileEntry]:
        stored = self.memory.store.load(user, with_vectors=False).entries
        return sorted((e for e in stored if e.selectable), key=lambda e: e.id)

    def feed(self, arm: str, round_: int, output: str, served: Served) -> None:
        """Round ``round_``'s run of ``arm``: its output, and the writer's edit as feedback."""
        if arm == "none":
            return
        if round_ != self.fed_through[arm] + 1:
            raise LeakageError(f"{arm} fed round {round_} after {self.fed_through[arm]}")
        edit = self.writer.edits[round_]
        user, request = arm_user(arm, self.writer.user), loop_request(edit)
        task = TASKS.get(self.writer.dataset, self.writer.dataset)
        self.clock.now = EPOCH + round_ * _DAY_S
        if arm == SIMILARITY:
            # every output the model showed (each candidate of a CoAuthor list), and the edit
            texts = [(text, "accepted") for text in edit.candidates or (output,)]
            if edit.feedback == "edited":
                texts.append((edit.postedit, "edited"))
            self.memory.add_many(
                [_record(t, user, s, request, task, self.clock.now) for t, s in texts]
            )
        else:
            run = run_id(user, round_)
            self.memory.record_output(
                output, user_id=user, run_id=run, source_input=request, task=task, served=served
            )
            if edit.feedback == "edited":
                self.memory.feedback(run, edited=edit.postedit, user_id=user)
            else:  # accepted or rejected as it was shown (a CoAuthor list)
                self.memory.feedback(run, edit.feedback, user_id=user)
        self.fed_through[arm] = round_

    def feed_known_edits(self, round_: int) -> list[int]:
        """Before round ``round_``: feed every arm the later edits of fed rounds whose
        session ended before this round opened (:attr:`WriterEdit.later_edit`), each
        once; returns those rounds."""
        now = self.writer.edits[round_].t
        known = [k for k in self.edits_due if self.writer.edits[k].later_edit_at < now]
        if not known:
            return []
        self.clock.now = EPOCH + round_ * _DAY_S
        task = TASKS.get(self.writer.dataset, self.writer.dataset)
        for k in known:
            edit = self.writer.edits[k]
            text, request = edit.later_edit or "", loop_request(edit)
            for arm in self.arms:
                user = arm_user(arm, self.writer.user)
                if arm == SIMILARITY:
                    self.memory.add_many(
                        [_record(text, user, "edited", request, task, self.clock.now)]
                    )
                else:
                    self.memory.feedback(run_id(user, k), edited=text, user_id=user)
        self.edits_due = [k for k in self.edits_due if k not in known]
        return known


TASKS = {"lamp-edits": "paragraph", "popquorn": "email-rewrite", "coauthor": "coauthor"}
"""The entries' ``task`` by dataset (POPQUORN's and CoAuthor's as the static tasks store
them)."""


def run_id(user: str, round_: int) -> str:
    """The tracked run of one arm's round (the same in every run, so replays match)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"outprofile-loop:{user}:{round_}"))


def _record(
    text: str, user: str, signal: str, request: str, task: str, at: float
) -> dict[str, Any]:
    return {
        "text": text,
        "user_id": user,
        "signal": signal,
        "task": task,
        "source_input": request,
        "created_at": at,
    }


def run_loop(
    writers: Sequence[EditWriter],
    memory: OutputProfileMemory,
    clock: MovingClock,
    scorer: Scorer,
    config: LoopConfig,
    cache: LoopCache,
    *,
    generator: Generator | None = None,
    show_progress: bool = False,
    on_score: Callable[[EditWriter, int, WriterEdit], None] | None = None,
) -> tuple[list[LoopRow], dict[str, Any]]:
    """Run the loop over every writer with a round to score (two or more edits; on CoAuthor a
    gold after a first round; see the module docstring).

    ``on_score(writer, round, gold_edit)`` is called before each score (tests inspect the
    arms' stores there).

    Example:
        ```python
        rows, timing = run_loop(writers, memory, MovingClock(EPOCH), LlamaScorer(),
                                LoopConfig(budget=600), LoopCache(Path("out")))
        ```
    """
    if config.generate and any(w.dataset == "coauthor" for w in writers):
        raise InvalidInputError(
            "--generate does not apply to CoAuthor: its lists are the model's outputs, and "
            "what the writer would have done with another text is not in the data"
        )
    if config.generate and generator is None:
        raise InvalidInputError("--generate needs a model that writes (the llama backend)")
    started = time.perf_counter()
    eligible = [w for w in writers if writer_scored_rounds(w, config.score_every)]
    total = sum(len(writer_scored_rounds(w, config.score_every)) for w in eligible)
    counts = {"scored_now": 0, "generated_now": 0, "rounds_fed": 0}
    rows: list[LoopRow] = []
    with _progress(show_progress, total) as advance:
        for writer in eligible:
            rows.extend(
                _run_writer(
                    writer,
                    memory,
                    clock,
                    scorer,
                    config,
                    cache,
                    generator,
                    counts,
                    advance,
                    on_score,
                )
            )
    timing = {
        "writers": len(eligible),
        "writers_skipped": len(writers) - len(eligible),
        **counts,
        "from_cache": len(rows) - counts["scored_now"],
        "total_s": round(time.perf_counter() - started, 2),
    }
    return rows, timing


def _run_writer(
    writer: EditWriter,
    memory: OutputProfileMemory,
    clock: MovingClock,
    scorer: Scorer,
    config: LoopConfig,
    cache: LoopCache,
    generator: Generator | None,
    counts: dict[str, int],
    advance: Callable[[], None],
    on_score: Callable[[EditWriter, int, WriterEdit], None] | None,
) -> list[LoopRow]:
    arms = LoopArms(memory, clock, config, writer)
    arms.reset()
    scoring = writer_scored_rounds(writer, config.score_every)
    scored = set(scoring)
    rows: list[LoopRow] = []
    scorer_ = _Scoring(scorer, config, cache, counts, arms, on_score)
    if "none" in config.arms:
        golds = sorted({t for r in scoring for t in golds_after(writer, r, config.gold_next)})
        rows.extend(scorer_.score("none", -1, t, "") for t in golds)
    for round_ in range(scoring[-1] + 1):
        arms.feed_known_edits(round_)
        edit = writer.edits[round_]
        request = loop_request(edit)
        for arm in arms.arms:
            block, served = arms.serve(arm, round_, request)
            output = _output(
                arm, round_, edit, block, config, cache, generator, scorer, counts, writer
            )
            arms.feed(arm, round_, output, served)
        if edit.later_edit:
            arms.edits_due.append(round_)
        counts["rounds_fed"] += 1
        if round_ not in scored:
            continue
        for arm in arms.arms:
            shared = None if arm == SIMILARITY else arms.serve(arm, round_ + 1, "")[0]
            for t in golds_after(writer, round_, config.gold_next):
                if shared is None:  # the similarity arm retrieves for each gold's request
                    block = arms.serve(arm, round_ + 1, loop_request(writer.edits[t]))[0]
                else:
                    block = shared
                rows.append(scorer_.score(arm, round_, t, block))
        advance()
    return rows


def _output(
    arm: str,
    round_: int,
    edit: WriterEdit,
    block: str,
    config: LoopConfig,
    cache: LoopCache,
    generator: Generator | None,
    scorer: Scorer,
    counts: dict[str, int],
    writer: EditWriter,
) -> str:
    """The round's model output: the preedit (replay; POPQUORN's is the email unchanged), or
    the model's, cached."""
    if not config.generate or generator is None:
        return edit.preedit
    key = (
        writer.user,
        round_,
        arm,
        config.budget,
        config.placement,
        scorer.name,
        config.frame,
        config.mode,
        config.seed,
        SELECTION_RULE,
        LOOP_RULE,
        writer.dataset,
    )
    text = cache.outputs.get(key)
    if text is None:
        messages = messages_for(loop_request(edit), block, config.placement)
        text = generator.generate(messages, config.gen_tokens).strip() or "(empty)"
        cache.put_output(key, text)
        counts["generated_now"] += 1
    return text


@dataclass
class _Scoring:
    """Scores one arm's block on one gold, through the cache, after the leakage check."""

    scorer: Scorer
    config: LoopConfig
    cache: LoopCache
    counts: dict[str, int]
    arms: LoopArms
    on_score: Callable[[EditWriter, int, WriterEdit], None] | None

    def score(self, arm: str, round_: int, gold_round: int, block: str) -> LoopRow:
        writer, config = self.arms.writer, self.config
        gold = writer.edits[gold_round]
        check_unseen(self.arms.fed_through, gold_round)
        key = row_key(
            writer.user,
            round_,
            arm,
            gold.id,
            config.budget,
            config.placement,
            self.scorer.name,
            config.frame,
            config.mode,
            config.seed,
            dataset=writer.dataset,
        )
        cached = self.cache.rows.get(key)
        if cached is not None:
            return cached
        if self.on_score is not None:
            self.on_score(writer, round_, gold)
        messages = messages_for(loop_request(gold), block, config.placement)
        score = self.scorer.score(messages, gold.postedit)
        # a CoAuthor gold: every shown candidate after the same prompt, for pair_acc
        choices: tuple[tuple[float, int], ...] = ()
        if gold.chosen >= 0:
            choices = score_choices(self.scorer, messages, score, gold.candidates, gold.chosen)
        none = arm == "none"
        row = LoopRow(
            writer=writer.user,
            round=key[1],
            arm=arm,
            gold=gold.id,
            gold_round=gold_round,
            budget=key[4],
            placement=config.placement,
            model=self.scorer.name,
            frame=key[7],
            mode=key[8],
            seed=key[9],
            nll=score.nll,
            tokens=score.tokens,
            block_tokens=self.arms.memory.counter.count(block) if block else 0,
            entries=block.count("<entry n="),
            selection=0 if none else SELECTION_RULE,
            rule=0 if none else LOOP_RULE,
            dataset=writer.dataset,
            choices=choices,
            chosen=gold.chosen if choices else -1,
        )
        self.cache.put(row)
        self.counts["scored_now"] += 1
        return row


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[], None]]:
    if not show:
        yield lambda: None
        return
    columns = (TextColumn("loop rounds"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("loop", total=total)
        yield lambda: progress.advance(task)
