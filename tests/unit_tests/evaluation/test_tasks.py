"""CoAuthor and POPQUORN: loaders, the replay and its leakage rule, the strategies, the metrics.

Every fixture is invented here and written by the test (no dataset text).
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory, parse_block
from langchain_outprofile.errors import InvalidInputError
from outprofile_lab.evaluation.command import run_command
from outprofile_lab.evaluation.data import (
    SuggestionList,
    TypedSentence,
    detect_format,
    load_coauthor,
    load_popquorn,
)
from outprofile_lab.evaluation.report import cells_summary, headroom
from outprofile_lab.evaluation.runner import SELECTION_RULE, ScoreRow
from outprofile_lab.evaluation.scoring import Message, NllScore
from outprofile_lab.evaluation.strategies import EPOCH
from outprofile_lab.evaluation.tasks import (
    CONTINUE_PROMPT,
    MIN_HISTORY,
    REWRITE_PROMPT,
    CoauthorTask,
    MovingClock,
    PopquornTask,
    Target,
    coauthor_writes,
)

# -- invented fixtures ------------------------------------------------------------------------
from tests.unit_tests.evaluation.coauthor_rows import list_row, session_row, typed_row

T0 = 1_000_000.0


def _coauthor_rows() -> list[dict[str, Any]]:
    """Writer ``wa``: two sessions; writer ``wb``: one. All text is made up."""
    early = [
        typed_row(T0 + i, f"Alpha typed sentence number {i}.") for i in range(1, MIN_HISTORY + 1)
    ]
    first = [
        *early,
        list_row(T0 + 20, ["Dismissed one.", "Dismissed two."], None, "user"),
        list_row(T0 + 30, ["Kept as shown.", "Not taken."], 0, "select"),
        list_row(
            T0 + 40, ["Raw accepted text.", "Other option."], 0, "select", "Edited final text."
        ),
        list_row(T0 + 50, ["Target gold line.", "Target rival line.", "Third line."], 0, "select"),
        typed_row(T0 + 60, "Alpha typed after the target."),
    ]
    second = [
        list_row(T0 + 200, ["Later gold.", "Later rival."], 1, "select"),
    ]
    other = [typed_row(T0 + i, f"Beta wrote line {i}.") for i in range(1, MIN_HISTORY + 5)]
    return [
        session_row("wa", "s1", T0, first),
        session_row("wa", "s2", T0 + 150, second),
        session_row("wb", "s3", T0, other),
    ]


def _write_coauthor(path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in _coauthor_rows():
            handle.write(json.dumps(row) + "\n")
    return path


POPQUORN_ROWS = [
    {
        "user": "1",
        "pairs": [
            {
                "input": "Meet at noon?",
                "output": "Hi, can we meet at noon? Thanks",
                "instance_id": "10",
            },
            {
                "input": "Send the file.",
                "output": "Hi, please send the file. Thanks",
                "instance_id": "11",
            },
            {"input": "Call me.", "output": "Hi, give me a call. Thanks", "instance_id": "12"},
        ],
    },
    {
        "user": "2",
        "pairs": [
            {"input": "Meet at noon?", "output": "NOON MEETING OK??", "instance_id": "10"},
            {"input": "Lunch later.", "output": "LUNCH LATER!!", "instance_id": "20"},
            {"input": "Budget due.", "output": "BUDGET IS DUE!!", "instance_id": "21"},
        ],
    },
    {
        "user": "3",
        "pairs": [
            {"input": "Fix the bug.", "output": "pls fix bug", "instance_id": "30"},
            {"input": "Ship it.", "output": "ship it", "instance_id": "31"},
        ],
    },
]


def _write_popquorn(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in POPQUORN_ROWS), encoding="utf-8")
    return path


@pytest.fixture
def memory() -> OutputProfileMemory:
    # after every stored time: a caller's time past now + 24 h is refused
    clock = MovingClock(EPOCH + 365 * 86_400.0)
    mem = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=f"t-{uuid.uuid4().hex}", clock=clock
    )
    return mem


class FakeScorer:
    """NLL = tokens x (2 - 0.1 x gold words found in the prompt): a block holding the gold's
    words makes it likelier, as a real model would."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        self.calls += 1
        prompt = " ".join(text for _, text in messages).lower()
        words = gold.lower().split()
        found = sum(w in prompt for w in words)
        return NllScore(len(words) * (2.0 - 0.1 * found / len(words)), len(words))


# -- loaders ----------------------------------------------------------------------------------


def test_loaders_read_the_three_formats_and_detect_them(tmp_path: Path, tiny_lamp7: Path) -> None:
    co = _write_coauthor(tmp_path / "co.jsonl.gz")
    pq = _write_popquorn(tmp_path / "pq.jsonl")
    assert detect_format(co) == "coauthor"
    assert detect_format(pq) == "popquorn"
    assert detect_format(tiny_lamp7) == "lamp"
    sessions = load_coauthor(co)
    assert [(s.writer, s.session) for s in sessions] == [("wa", "s1"), ("wa", "s2"), ("wb", "s3")]
    first = sessions[0]
    assert isinstance(first.events[0], TypedSentence)
    lists = [e for e in first.events if isinstance(e, SuggestionList)]
    assert [e.chosen for e in lists] == [None, 0, 0, 0]
    assert lists[0].closed_by == "user" and lists[2].edited_to == "Edited final text."
    assert first.ended_at == T0 + 60
    users = load_popquorn(pq)
    assert [u.user for u in users] == ["1", "2", "3"]
    assert users[1].pairs[0].instance_id == "10" and users[1].pairs[0].output == "NOON MEETING OK??"
    assert len(load_popquorn(pq, limit=2)) == 2


def test_loaders_name_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user": "1", "pairs": [{"input": "a"}]}\n')
    with pytest.raises(InvalidInputError, match="missing"):
        load_popquorn(bad)
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"colour": "red"}\n')
    with pytest.raises(InvalidInputError, match="--format"):
        detect_format(odd)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"writer": "w", "session": "s", "started_at": 1, "events": []}\n{oops\n')
    with pytest.raises(InvalidInputError, match=":2: not JSON"):
        load_coauthor(broken)


# -- CoAuthor replay and the leakage rule -----------------------------------------------------


def test_replay_writes_signals_as_they_happened(tmp_path: Path) -> None:
    sessions = [s for s in load_coauthor(_write_coauthor(tmp_path / "c.gz")) if s.writer == "wa"]
    writes = coauthor_writes(sessions)
    assert [w.t for w in writes] == sorted(w.t for w in writes)
    profile = {(w.text, w.signal) for w in writes if w.store == "profile"}
    assert ("Dismissed one.", "rejected") in profile and ("Dismissed two.", "rejected") in profile
    assert ("Kept as shown.", "accepted") in profile
    assert ("Not taken.", "accepted") not in profile  # shown, not accepted: not a signal
    edit = next(w for w in writes if w.signal == "edited")
    assert edit.text == "Edited final text." and edit.replaces == "Raw accepted text."
    assert edit.t == T0 + 60  # known only when its session ended
    shown = {w.text for w in writes if w.store == "shown"}
    assert {"Not taken.", "Dismissed one.", "Target rival line."} <= shown


def test_a_target_never_sees_its_own_future(tmp_path: Path, memory: OutputProfileMemory) -> None:
    clock = memory.clock
    assert isinstance(clock, MovingClock)
    task = CoauthorTask(memory, clock, load_coauthor(_write_coauthor(tmp_path / "c.gz")), seed=1)
    targets = task.targets()
    assert sorted(t.t for t in targets) == [T0 + 30, T0 + 40, T0 + 50, T0 + 200]  # wb: none
    first = next(t for t in targets if t.t == T0 + 50)
    later = next(t for t in targets if t.t == T0 + 200)
    assert first.user == "co-wa" and first.gold == "Target gold line." and first.chosen == 0
    assert first.candidates == ("Target gold line.", "Target rival line.", "Third line.")
    assert first.request.startswith(CONTINUE_PROMPT)

    task.prepare(first)
    assert clock.now == first.t
    name = task.store_user("wa", first)
    own = memory.store.load(name, with_vectors=False).entries
    shown = memory.store.load(f"{name}#shown", with_vectors=False).entries
    assert all(e.created_at < first.t for e in [*own, *shown])
    texts = {e.text for e in [*own, *shown]}
    assert not texts & {"Target gold line.", "Target rival line.", "Alpha typed after the target."}
    assert "Edited final text." not in texts  # its session has not ended yet
    assert "Raw accepted text." in texts
    assert {e.text for e in own if e.rejected} == {"Dismissed one.", "Dismissed two."}
    for strategy in ("output-profile", "bm25-query", "all-outputs-bm25", "recency", "other-user"):
        block = task.block(first, strategy, "output", 200)
        assert block and memory.counter.count(block) <= 200
        chosen = set(parse_block(block))
        assert "Target gold line." not in chosen
        if strategy != "all-outputs-bm25":  # the similarity memory keeps every output shown
            assert not chosen & {"Dismissed one.", "Dismissed two."}
        if strategy == "other-user":
            assert all(t.startswith("Beta") for t in chosen)
    assert "Not taken." in parse_block(task.block(first, "all-outputs-bm25", "output", 400) or "")

    task.prepare(later)  # the first session ended: the edit replaced the accepted text
    assert not memory.store.load(name, with_vectors=False).entries  # the last target's: gone
    own_now = {e.text for e in memory.store.load(task.store_user("wa", later)).entries}
    assert "Edited final text." in own_now and "Raw accepted text." not in own_now
    assert "Target gold line." in own_now and "Later gold." not in own_now
    task.prepare(first)  # any order: each target replays its own past
    again = {e.text for e in memory.store.load(name, with_vectors=False).entries}
    assert again == {e.text for e in own}


def test_targets_need_two_candidates_and_enough_history(tmp_path: Path) -> None:
    rows = _coauthor_rows()
    rows[0]["events"].insert(0, list_row(T0 + 0.5, ["Too early.", "Also early."], 0, "select"))
    rows[1]["events"].append(list_row(T0 + 210, ["Single candidate."], 0, "select"))
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    clock = MovingClock(T0)
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=f"t-{uuid.uuid4().hex}", clock=clock
    )
    task = CoauthorTask(memory, clock, load_coauthor(path))
    golds = ["Kept as shown.", "Raw accepted text.", "Target gold line.", "Later rival."]
    assert [t.gold for t in sorted(task.targets(), key=lambda t: t.t)] == golds
    assert len(CoauthorTask(memory, clock, load_coauthor(path), limit=1).targets()) == 1


# -- POPQUORN ---------------------------------------------------------------------------------


def test_popquorn_holds_one_pair_out_and_builds_every_field_mode(
    tmp_path: Path, memory: OutputProfileMemory
) -> None:
    task = PopquornTask(memory, load_popquorn(_write_popquorn(tmp_path / "p.jsonl")), seed=0)
    assert task.setup() == 2 + 2 + 1
    targets = {t.user: t for t in task.targets()}
    one = targets["pq-1"]
    assert one.instance == "10"  # the only email another user also rewrote
    assert one.request == REWRITE_PROMPT + "Meet at noon?" and one.gold.startswith("Hi, can we")
    outputs = parse_block(task.block(one, "output-profile", "output", 200) or "")
    assert set(outputs) == {"Hi, please send the file. Thanks", "Hi, give me a call. Thanks"}
    inputs = parse_block(task.block(one, "output-profile", "input", 200) or "")
    assert set(inputs) == {"Send the file.", "Call me."}
    full = task.block(one, "output-profile", "full", 200) or ""
    assert "Send the file." in full and "Hi, please send the file. Thanks" in full
    assert "Meet at noon?" not in full
    rival = parse_block(task.block(one, "other-rewriter", "output", 200) or "")
    assert set(rival) == {"LUNCH LATER!!", "BUDGET IS DUE!!"}  # user 2 without their rewrite
    assert task.block(targets["pq-3"], "other-rewriter", "output", 200) is None
    other = parse_block(task.block(one, "other-user", "output", 200) or "")
    assert other and not set(other) & {p["output"] for p in POPQUORN_ROWS[0]["pairs"]}  # type: ignore[index]
    assert task.block(one, "none", "output", 200) == ""
    with pytest.raises(InvalidInputError, match="does not apply"):
        task.block(one, "all-outputs-bm25", "output", 200)


def test_popquorn_bm25_and_random_draws_show_only_the_users_other_rewrites(
    tmp_path: Path, memory: OutputProfileMemory
) -> None:
    task = PopquornTask(memory, load_popquorn(_write_popquorn(tmp_path / "p.jsonl")), seed=0)
    task.setup()
    targets = {t.user: t for t in task.targets()}
    own = {"Hi, please send the file. Thanks", "Hi, give me a call. Thanks"}
    for strategy in ("bm25-query", "random-0", "random-1", "random-2"):
        assert set(parse_block(task.block(targets["pq-1"], strategy, "output", 200) or "")) == own
    draws = [task.block(targets["pq-1"], f"random-{k}", "output", 200) for k in range(8)]
    assert len(set(draws)) == 2  # two entries, two orders
    assert draws == [task.block(targets["pq-1"], f"random-{k}", "output", 200) for k in range(8)]
    # BM25 of the target email against the stored (email, rewrite) pairs
    call = Target("x", "pq-1", REWRITE_PROMPT + "A call today.", "-")
    assert parse_block(task.block(call, "bm25-query", "output", 200) or "")[0] == (
        "Hi, give me a call. Thanks"
    )


# -- metrics against hand-computed values -----------------------------------------------------


def _row(user: str, group: str, strategy: str, nll: float, **extra: Any) -> ScoreRow:
    budget, placement = (0, "-") if strategy == "none" else (200, "leading")
    return ScoreRow(
        user=user,
        strategy=strategy,
        budget=budget,
        placement=placement,
        model="m",
        nll=nll,
        tokens=2,
        group=group,
        **extra,
    )


def test_pair_acc_counts_pairs_by_mean_nll_per_token() -> None:
    # accepted = index 1: mean NLL 4/2 = 2.0; others 3/1 = 3.0 (loses to it), 1/1 = 1.0 (beats
    # it), 6/3 = 2.0 (tie, half) -> (1 + 0 + 0.5) / 3
    row = _row("t", "u", "x", 4.0, choices=((3.0, 1), (4.0, 2), (1.0, 1), (6.0, 3)), chosen=1)
    assert math.isclose(row.pair_acc or 0.0, 0.5)
    assert _row("t", "u", "x", 4.0).pair_acc is None


def test_cells_average_per_user_then_bootstrap_and_pair_by_target() -> None:
    c = ((1.0, 1), (2.0, 1))  # accepted (index 0) mean 1.0 beats 2.0
    lose = ((3.0, 1), (2.0, 1))
    rows = [
        # user A has two targets, user B one; NLL per token = nll / 2
        _row("a1", "A", "none", 4.0, choices=lose, chosen=0),
        _row("a2", "A", "none", 6.0, choices=lose, chosen=0),
        _row("b1", "B", "none", 2.0, choices=c, chosen=0),
        _row("a1", "A", "op", 3.0, choices=c, chosen=0),
        _row("a2", "A", "op", 4.0, choices=lose, chosen=0),
        _row("b1", "B", "op", 2.0, choices=c, chosen=0),
        _row("a1", "A", "sim", 4.0, choices=lose, chosen=0),
        _row("b1", "B", "sim", 1.0, choices=c, chosen=0),
    ]
    report = cells_summary(rows, choice=True, seed=0)
    cells = {c["strategy"]: c for c in report["cells"]}
    assert set(cells["op"]) >= {
        "strategy",
        "fields",
        "budget",
        "placement",
        "users",
        "mean_nll",
        "lift_vs_none",
        "pair_acc",
    }
    assert cells["none"]["budget"] == 0 and cells["none"]["lift_vs_none"] is None
    # user means of NLL/token: none A = (2 + 3) / 2 = 2.5, B = 1.0 -> 1.75
    assert math.isclose(cells["none"]["mean_nll"]["mean"], 1.75)
    # lift op: A = mean(2 - 1.5, 3 - 2) = 0.75, B = 0 -> 0.375
    assert math.isclose(cells["op"]["lift_vs_none"]["mean"], 0.375)
    assert cells["op"]["users"] == 2 and cells["op"]["targets"] == 3
    # pair_acc op: A = mean(1, 0) = 0.5, B = 1 -> 0.75; none: A = 0, B = 1 -> 0.5
    assert math.isclose(cells["op"]["pair_acc"]["mean"], 0.75)
    assert math.isclose(cells["none"]["pair_acc"]["mean"], 0.5)
    lift = cells["op"]["lift_vs_none"]
    assert lift["lo"] <= lift["mean"] <= lift["hi"]
    paired = {(p["a"], p["b"], p["metric"]): p for p in report["paired"]}
    # op vs sim on shared targets a1, b1: nll A: 2.0 - 1.5 = 0.5, B: 0.5 - 1.0 = -0.5 -> 0
    assert math.isclose(paired[("op", "sim", "nll")]["mean"], 0.0)
    # pair_acc: A: 1 - 0 = 1, B: 1 - 1 = 0 -> 0.5
    assert math.isclose(paired[("op", "sim", "pair_acc")]["mean"], 0.5)
    assert math.isclose(paired[("op", "none", "pair_acc")]["mean"], 0.25)
    assert {"a", "b", "budget", "metric", "mean", "lo", "hi"} <= set(paired[("op", "sim", "nll")])


# -- the command end to end (fake scorer) ------------------------------------------------------


def test_command_runs_coauthor_and_popquorn_and_resumes(tmp_path: Path) -> None:
    co = _write_coauthor(tmp_path / "co.jsonl.gz")
    scorer = FakeScorer()
    args: dict[str, Any] = dict(
        strategies="none,output-profile,all-outputs-bm25,bm25-query,recency,other-user",
        budgets="200",
        placement="leading",
        limit=None,
        seed=0,
        out=tmp_path / "co-out",
        quiet=True,
    )
    run_command(co, scorer=scorer, **args)
    report = json.loads((tmp_path / "co-out" / "report.json").read_text())
    assert report["meta"]["task"] == "coauthor" and report["meta"]["targets"] == 4
    cells = {c["strategy"]: c for c in report["cells"]}
    assert set(cells) == {
        "none",
        "output-profile",
        "all-outputs-bm25",
        "bm25-query",
        "recency",
        "other-user",
    }
    assert all(c["pair_acc"]["n"] == 1 for c in cells.values())
    assert all(
        {"mean", "lo", "hi"} <= set(c["lift_vs_none"]) for n, c in cells.items() if n != "none"
    )
    assert any(p["metric"] == "pair_acc" for p in report["paired"])
    assert (tmp_path / "co-out" / "lift.png").read_bytes()[:4] == b"\x89PNG"
    calls = scorer.calls
    assert calls == 6 * (2 + 2 + 3 + 2)  # every candidate of every prompt
    run_command(co, scorer=scorer, **args)  # resume: everything comes from the cache
    assert scorer.calls == calls
    again = json.loads((tmp_path / "co-out" / "report.json").read_text())
    assert again["meta"]["scored_now"] == 0 and again["cells"] == report["cells"]
    assert again["meta"]["frame"] == "compact"

    pq = _write_popquorn(tmp_path / "pq.jsonl")
    run_command(
        pq,
        scorer=FakeScorer(),
        **{
            **args,
            "strategies": "none,output-profile,other-user,other-rewriter",
            "out": tmp_path / "pq-out",
        },
        fields="output,input,full",
    )
    report = json.loads((tmp_path / "pq-out" / "report.json").read_text())
    modes = {(c["strategy"], c["fields"]) for c in report["cells"]}
    assert {("output-profile", f) for f in ("output", "input", "full")} <= modes
    assert ("other-rewriter", "output") in modes and "pair_acc" not in report["cells"][0]
    assert "`output-profile`" in (tmp_path / "pq-out" / "report.md").read_text()
    with pytest.raises(InvalidInputError, match="do not apply"):
        run_command(pq, scorer=FakeScorer(), **{**args, "strategies": "none,all-outputs-bm25"})
    with pytest.raises(InvalidInputError, match="do not apply"):
        run_command(co, scorer=FakeScorer(), **{**args, "strategies": "none,random-0"})


def test_headroom_is_the_mean_and_the_best_of_the_draws_per_user() -> None:
    """Hand-made table (NLL per token; _row's tokens = 2): A and B have every draw, C lacks
    one and is left out of the headroom."""
    cells_of: dict[str, tuple[float, float, float]] = {  # none, output-profile, bm25-query
        "A": (3.0, 2.6, 2.4),
        "B": (2.0, 1.9, 1.6),
        "C": (2.0, 1.0, 1.0),
    }
    draws_of = {"A": [2.8, 2.2, 2.5], "B": [1.7, 1.8, 2.1], "C": [0.5, 0.5]}
    rows = []
    for user, values in cells_of.items():
        for name, value in zip(("none", "output-profile", "bm25-query"), values, strict=True):
            rows.append(_row(user, "", name, 2 * value))
        rows += [_row(user, "", f"random-{k}", 2 * v) for k, v in enumerate(draws_of[user])]
    (h,) = headroom(rows, seed=0)
    assert (h["budget"], h["draws"], h["users"], h["targets"]) == (200, 3, 2, 2)
    cells = {c["strategy"]: c for c in h["cells"]}  # one target per user: nothing to cross-fit
    assert set(cells) == {"none", "output-profile", "bm25-query", "random-mean", "random-best"}
    assert math.isclose(cells["random-mean"]["mean_nll"]["mean"], (2.5 + 5.6 / 3) / 2)
    assert math.isclose(cells["random-best"]["mean_nll"]["mean"], (2.2 + 1.7) / 2)
    assert math.isclose(cells["output-profile"]["mean_nll"]["mean"], 2.25)  # C left out
    paired = {(p["a"], p["b"]): p for p in h["paired"]}
    # best vs default: A 2.6 - 2.2, B 1.9 - 1.7; mean vs default: A 0.1, B 1.9 - 5.6 / 3
    assert math.isclose(paired[("random-best", "output-profile")]["mean"], 0.3)
    assert math.isclose(
        paired[("random-mean", "output-profile")]["mean"], (0.1 + 1.9 - 5.6 / 3) / 2
    )
    assert math.isclose(paired[("random-best", "bm25-query")]["mean"], (0.2 - 0.1) / 2)
    best_vs_mean = paired[("random-best", "random-mean")]
    assert best_vs_mean["mean"] > 0 and best_vs_mean["wins"] == 1.0  # best >= mean, always
    assert math.isclose(best_vs_mean["mean"], (0.3 + 5.6 / 3 - 1.7) / 2)
    # the report's own cells never pair one draw with another
    assert not any(
        p["a"].startswith("random-") and p["b"].startswith("random-")
        for p in cells_summary(rows, choice=False)["paired"]
    )


def test_the_best_draw_is_chosen_per_user_not_per_target() -> None:
    # user D: draw 0 scores 1.0 and 3.0 on its two targets (mean 2.0), draw 1 2.0 and 1.5
    # (1.75): the best draw is 1 on both targets (1.75), not the per-target minimum (1.25)
    rows = [_row(t, "D", "none", 8.0) for t in ("d1", "d2")]
    for k, values in enumerate([(1.0, 3.0), (2.0, 1.5)]):
        rows += [
            _row(t, "D", f"random-{k}", 2 * v) for t, v in zip(("d1", "d2"), values, strict=True)
        ]
    (h,) = headroom(rows)
    cells = {c["strategy"]: c for c in h["cells"]}
    assert (h["users"], h["targets"]) == (1, 2)
    assert math.isclose(cells["random-best"]["mean_nll"]["mean"], 1.75)
    assert math.isclose(cells["random-mean"]["mean_nll"]["mean"], 1.875)
    # cross-fitted: d1 takes the draw best on d2 (draw 1: 1.5 < 3.0) and scores 2.0 with it;
    # d2 takes the draw best on d1 (draw 0: 1.0) and scores 3.0: worse than the mean here
    assert math.isclose(cells["random-picked"]["mean_nll"]["mean"], 2.5)
    paired = {(p["a"], p["b"]): p["mean"] for p in h["paired"]}
    assert math.isclose(paired[("random-picked", "random-mean")], 1.875 - 2.5)
    assert headroom([r for r in rows if r.strategy != "random-1"]) == []  # one draw: no headroom


def test_popquorn_can_hold_out_two_pairs_under_one_profile(
    tmp_path: Path, memory: OutputProfileMemory
) -> None:
    users = load_popquorn(_write_popquorn(tmp_path / "p.jsonl"))
    one = PopquornTask(memory, users, seed=0)
    two = PopquornTask(memory, users, seed=0, holdout=2)
    assert {u: h[0] for u, h in two.held.items()} == {u: one.held[u][0] for u in two.held}
    assert set(two.held) == {"1", "2"}  # user 3 has two pairs: one would be left to show
    assert two.setup() == 1 + 1
    targets = [t for t in two.targets() if t.user == "pq-1"]
    assert [t.id for t in targets] == ["pq-1#0", "pq-1#1"]
    assert len({t.gold for t in targets}) == 2
    blocks = {t.id: two.block(t, "random-3", "output", 200) for t in targets}
    assert blocks["pq-1#0"] == blocks["pq-1#1"]  # the same block, scored on two texts
    shown = set(parse_block(blocks["pq-1#0"] or ""))
    assert len(shown) == 1 and not shown & {t.gold for t in targets}
    with pytest.raises(InvalidInputError, match="holdout"):
        PopquornTask(memory, users, holdout=0)


def test_command_reports_the_headroom_of_random_draws_and_resumes(
    tmp_path: Path, tiny_lamp7: Path
) -> None:
    pq = _write_popquorn(tmp_path / "pq.jsonl")
    args: dict[str, Any] = dict(
        strategies="none,output-profile,bm25-query",
        budgets="200",
        placement="leading",
        limit=None,
        seed=0,
        out=tmp_path / "out",
        quiet=True,
        random_draws=4,
    )
    scorer = FakeScorer()
    run_command(pq, scorer=scorer, **args)
    assert scorer.calls == 3 * (3 + 4)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["meta"]["strategies"][-4:] == [f"random-{k}" for k in range(4)]
    (h,) = report["headroom"]
    assert (h["draws"], h["users"]) == (4, 3)
    assert {c["strategy"] for c in h["cells"]} >= {"random-mean", "random-best"}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Headroom: 4 random draws" in markdown and "`random-best` | `output-profile`" in markdown
    again = FakeScorer()
    run_command(pq, scorer=again, **args)
    assert again.calls == 0  # every draw is in the cache under its own name
    assert "random-picked" not in markdown  # one target per user
    run_command(pq, scorer=FakeScorer(), **{**args, "out": tmp_path / "h2"}, holdout=2)
    (h,) = json.loads((tmp_path / "h2" / "report.json").read_text())["headroom"]
    assert (h["users"], h["targets"]) == (2, 4)
    assert "random-picked" in {c["strategy"] for c in h["cells"]}
    assert "`random-picked` | `random-mean`" in (tmp_path / "h2" / "report.md").read_text()
    with pytest.raises(InvalidInputError, match="POPQUORN only"):
        run_command(tiny_lamp7, scorer=FakeScorer(), **{**args, "out": tmp_path / "l"}, holdout=2)


def test_the_frame_is_part_of_every_cache_key(tmp_path: Path) -> None:
    """A block rendered in another frame is another prompt: rows of caches written before
    frames were recorded (no ``frame`` key: the earlier 59-token frame) are never served to a
    run in the compact frame; only ``none``, whose prompt has no block, is shared."""
    co = _write_coauthor(tmp_path / "co.jsonl.gz")
    args: dict[str, Any] = dict(
        strategies="none,output-profile",
        budgets="200",
        placement="leading",
        limit=1,
        seed=0,
        out=tmp_path / "out",
        quiet=True,
    )
    compact = FakeScorer()
    run_command(co, scorer=compact, **args)
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
    ]
    blocks = [r for r in rows if r["strategy"] != "none"]
    assert blocks and {r["frame"] for r in blocks} == {"compact"}
    assert {r["selection"] for r in blocks} == {SELECTION_RULE}
    old_style = [{k: v for k, v in r.items() if k != "frame"} for r in rows]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_style))
    resumed = FakeScorer()
    run_command(co, scorer=resumed, **{**args, "out": tmp_path / "old"})
    assert resumed.calls > 0  # the blocks are scored again
    again = [
        json.loads(line) for line in (tmp_path / "old" / "scores.jsonl").read_text().splitlines()
    ]
    assert sum(r["strategy"] == "none" for r in again) == 1  # `none` was served
    assert sorted(r.get("frame", "-") for r in again if r["strategy"] != "none") == [
        "-",
        "compact",
    ]
    assert json.loads((tmp_path / "old" / "report.json").read_text())["meta"]["frame"] == "compact"
    with pytest.raises(InvalidInputError, match="--frame"):
        run_command(co, scorer=FakeScorer(), frame="legacy", **args)


def test_blocks_chosen_by_an_earlier_selection_rule_are_scored_again(
    tiny_lamp7: Path, tmp_path: Path
) -> None:
    """Rows written before the selection rule was recorded (no ``selection`` key) were chosen
    by rule 1: a run now scores its blocks again and reuses only ``none``'s."""
    args: dict[str, Any] = dict(
        strategies="none,output-profile", budgets="200", placement="leading", limit=2, seed=0
    )
    first = FakeScorer()
    run_command(tiny_lamp7, scorer=first, out=tmp_path / "new", quiet=True, **args)
    lines = (tmp_path / "new" / "scores.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    (tmp_path / "old").mkdir()
    old = "\n".join(json.dumps({k: v for k, v in r.items() if k != "selection"}) for r in rows)
    (tmp_path / "old" / "scores.jsonl").write_text(old)
    again = FakeScorer()
    run_command(tiny_lamp7, scorer=again, out=tmp_path / "old", quiet=True, **args)
    blocks = sum(r["strategy"] != "none" for r in rows)
    assert first.calls == len(rows) == 2 * blocks and again.calls == blocks
    resumed = FakeScorer()
    run_command(tiny_lamp7, scorer=resumed, out=tmp_path / "new", quiet=True, **args)
    assert resumed.calls == 0
