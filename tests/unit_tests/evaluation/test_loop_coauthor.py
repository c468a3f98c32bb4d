"""The closed loop on CoAuthor (``outprofile eval <sessions> --loop``): suggestion lists
mapped onto the loop's rounds (request, replayed output, feedback kind), accepted lists
crediting and dismissed lists debiting the served entries, the leakage rule on CoAuthor
rounds, golds scored by the static task's NLL and pair_acc, cache keys apart from the other
datasets', the report's pair_acc and the CLI's dispatch. Invented writers and sentences
written here (no CoAuthor text); a scorer that records every prompt stands in for the
model."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from outprofile_lab.evaluation.command import run_loop_command
from outprofile_lab.evaluation.data import EditWriter, SuggestionList, WriterEdit, load_coauthor
from outprofile_lab.evaluation.loop import (
    ARMS,
    CREDIT,
    LoopCache,
    LoopConfig,
    LoopRow,
    arm_user,
    golds_after,
    loop_request,
    run_loop,
    writer_scored_rounds,
)
from outprofile_lab.evaluation.loop_report import loop_markdown, loop_summary
from outprofile_lab.evaluation.loop_rounds import coauthor_writers
from outprofile_lab.evaluation.runner import pair_accuracy
from outprofile_lab.evaluation.tasks import (
    CONTINUE_PROMPT,
    MIN_HISTORY,
    CoauthorTask,
    MovingClock,
    continue_request,
)
from tests.unit_tests.evaluation.coauthor_rows import list_row, session_row
from tests.unit_tests.evaluation.loop_support import (
    OverlapScorer,
    assert_a_window_reaching_its_own_round_is_refused,
    loop_memory,
    run_eval_cli,
)

T0 = 1_000_000.0


def _rows() -> list[dict[str, Any]]:
    """Writer ``wa``: two sessions, seven answered lists (rounds) and one regenerated;
    ``wb``: no list the static task would score; ``wc``: three lists in one session, the
    first edited later."""
    typed = [
        {"kind": "typed", "t": T0 + i, "text": f"Typed line {i}."}
        for i in range(1, MIN_HISTORY + 1)
    ]
    first = [
        *typed,
        list_row(
            T0 + 20, ["Harbor lights flicker at dusk.", "Gulls circle the old pier."], 0, "select"
        ),
        list_row(T0 + 30, ["Rain falls on tin roofs.", "Fog rolls over the bay."], None, "user"),
        list_row(T0 + 35, ["Asked again once.", "Asked again twice."], None, "regenerate"),
        list_row(T0 + 40, ["Lanterns sway in the wind."], 0, "select"),
        list_row(
            T0 + 50,
            ["Boats rock against the dock.", "Nets dry in the sun.", "Sailors mend ropes."],
            1,
            "select",
            edited_to="Nets dry slowly in the sun.",
        ),
    ]
    second = [
        list_row(
            T0 + 210, ["", "Stars fade above the cliffs.", "Waves crash below."], None, "user"
        ),
        list_row(T0 + 220, ["Morning brings the ferry home.", "Dawn breaks gray."], 0, "select"),
        list_row(
            T0 + 230, ["Children chase crabs on sand.", "Shells crunch underfoot."], 1, "select"
        ),
    ]
    lonely = [
        list_row(T0 + 5, ["Owls hoot in pines.", "Moss covers stones."], None, "user"),
        list_row(T0 + 6, ["Only one idea here."], 0, "select"),
    ]
    # wc's first text, edited, became a span of the final text that holds a later gold's
    edited = "Trains hum at night. Clocks tick loudly."
    pair = [
        list_row(T0 + 7, ["Trains hum at night.", "Rails gleam wet."], 0, "select", edited),
        list_row(T0 + 8, ["Platforms empty out.", "Porters doze."], None, "user"),
        list_row(T0 + 9, ["Signals blink red.", "Clocks tick loudly."], 1, "select"),
    ]
    return [
        session_row("wa", "s1", T0, first),
        session_row("wa", "s2", T0 + 200, second),
        session_row("wb", "s3", T0, lonely),
        session_row("wc", "s4", T0, pair),
    ]


def _write(path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in _rows():
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _write(tmp_path / "coauthor.jsonl.gz")


@pytest.fixture
def writers(data: Path) -> list[EditWriter]:
    return coauthor_writers(load_coauthor(data))


def test_each_answered_list_is_a_round_with_the_static_request_output_and_feedback(
    data: Path, writers: list[EditWriter]
) -> None:
    assert [w.user for w in writers] == ["co-wa", "co-wb", "co-wc"]
    assert {w.dataset for w in writers} == {"coauthor"}
    wa = writers[0]
    # the regenerated list is no round: the writer neither accepted nor dismissed it
    assert [e.id for e in wa.edits] == [
        "co-s1-10",
        "co-s1-11",
        "co-s1-13",
        "co-s1-14",
        "co-s2-0",
        "co-s2-1",
        "co-s2-2",
    ]
    # replay: the accepted candidate, or for a dismissed list the first shown (non-empty)
    assert [(e.preedit, e.feedback) for e in wa.edits] == [
        ("Harbor lights flicker at dusk.", "accepted"),
        ("Rain falls on tin roofs.", "rejected"),
        ("Lanterns sway in the wind.", "accepted"),
        ("Nets dry in the sun.", "accepted"),  # accepted as shown, edited later
        ("Stars fade above the cliffs.", "rejected"),
        ("Morning brings the ferry home.", "accepted"),
        ("Shells crunch underfoot.", "accepted"),
    ]
    assert [e.scorable for e in wa.edits] == [True, False, False, True, False, True, True]
    # the edit is known when its session ended, the time of its last event
    assert [(e.later_edit, e.later_edit_at) for e in wa.edits if e.later_edit] == [
        ("Nets dry slowly in the sun.", T0 + 50)
    ]
    sessions = load_coauthor(data)
    events = {
        f"co-{s.session}-{i}": e
        for s in sessions
        for i, e in enumerate(s.events)
        if isinstance(e, SuggestionList)
    }
    for edit in wa.edits:
        assert loop_request(edit) == continue_request(events[edit.id].context)
        assert loop_request(edit).startswith(CONTINUE_PROMPT)
    # the golds are exactly the static task's targets, with its request, gold and choices
    task = CoauthorTask(loop_memory()[0], MovingClock(T0), sessions)
    targets = {t.id: t for t in task.targets() if t.user == "co-wa"}
    golds = {e.id: e for e in wa.edits if e.scorable}
    assert set(targets) == set(golds)
    for id_, target in targets.items():
        gold = golds[id_]
        assert (loop_request(gold), gold.postedit) == (target.request, target.gold)
        assert (gold.candidates, gold.chosen) == (target.candidates, target.chosen)
    # golds skip the lists that are none: the next three after round 0 are rounds 3, 5, 6
    assert golds_after(wa, 0, 3) == [3, 5, 6] and golds_after(wa, 3, 0) == [5, 6]
    assert writer_scored_rounds(wa, 1) == [0, 1, 2, 3, 4, 5]
    assert writer_scored_rounds(writers[1], 1) == []  # wb: nothing to score


def test_limit_deals_lists_round_robin_over_writers_each_keeping_its_first(
    data: Path,
) -> None:
    sessions = load_coauthor(data)
    full = {w.user: w.edits for w in coauthor_writers(sessions)}
    for limit, sizes in ((1, [1]), (3, [1, 1, 1]), (5, [2, 2, 1]), (8, [3, 2, 3])):
        dealt = coauthor_writers(sessions, limit=limit)
        assert [len(w.edits) for w in dealt] == sizes
        assert all(w.edits == full[w.user][: len(w.edits)] for w in dealt)


def test_accepted_lists_credit_and_dismissed_lists_debit_the_served_entries(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory, clock = loop_memory()
    calls: list[tuple[str, str, Any, Any]] = []
    record_output, feedback = memory.record_output, memory.feedback

    def spy_record(text: str, **kwargs: Any) -> Any:
        calls.append((kwargs["user_id"], "output", text, kwargs["served"]))
        return record_output(text, **kwargs)

    def spy_feedback(run: str, signal: Any = None, **kwargs: Any) -> Any:
        calls.append((kwargs["user_id"], "feedback", signal, kwargs.get("edited")))
        return feedback(run, signal, **kwargs)

    monkeypatch.setattr(memory, "record_output", spy_record)
    monkeypatch.setattr(memory, "feedback", spy_feedback)
    # a budget for every entry: each round serves every entry fed before it
    config = LoopConfig(budget=2000, gold_next=1)
    rows, timing = run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path))
    assert timing["writers"] == 2 and timing["writers_skipped"] == 1  # wb
    wa = writers[0]
    fed = wa.edits[:6]  # round 6 is the last gold: never fed
    for arm in ("credit", "no-credit", "random"):
        user = arm_user(arm, "co-wa")
        mine = [(kind, a, b) for u, kind, a, b in calls if u == user]
        assert all(b is not None for kind, _, b in mine if kind == "output")  # served=
        # each round's output and its feedback; round 3's edit once its session has
        # ended, before round 4 (the next session's first list) is served
        expected = [step for e in fed for step in (("output", e.preedit), ("feedback", e.feedback))]
        expected.insert(8, ("edit", "Nets dry slowly in the sun."))
        assert [
            ("edit", b) if b is not None and kind == "feedback" else (kind, a)
            for kind, a, b in mine
        ] == expected
        entries = {e.text: e for e in memory.store.load(arm_user(arm, "co-wa")).entries}
        # by hand: the entry of round k is served at rounds k+1..5, whose feedback is
        # rounds 1..5 = rejected, accepted, accepted, rejected, accepted
        got = {t: (e.credited, e.debited) for t, e in entries.items() if e.selectable}
        assert got == {
            "Harbor lights flicker at dusk.": (3, 2),
            "Lanterns sway in the wind.": (2, 1),
            "Nets dry slowly in the sun.": (1, 1),  # the edit superseded the accepted text
            "Morning brings the ferry home.": (0, 0),
        }, arm
        assert entries["Nets dry slowly in the sun."].signal.value == "edited"
        rejected = {t for t, e in entries.items() if e.rejected}
        assert rejected == {"Rain falls on tin roofs.", "Stars fade above the cliffs."}
    selection = memory.select(
        arm_user("credit", "co-wa"),
        max_tokens=2000,
        options=memory.options.with_changes(**CREDIT),
    )
    assert "credit=0.57 (+3/-2)" in selection.explain()  # (1 + 3) / (2 + 5)
    # the similarity memory stores every candidate shown, without feedback, and the edit
    similar = {e.text for e in memory.store.load(arm_user("all-outputs-bm25", "co-wa")).entries}
    assert similar == {c for e in fed for c in e.candidates} | {"Nets dry slowly in the sun."}
    assert {r.dataset for r in rows} == {"coauthor"}


def test_no_coauthor_gold_is_scored_under_an_arm_that_holds_its_list_or_a_later_one(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    memory, clock = loop_memory()
    scored: list[tuple[str, int, str]] = []

    def inspect(writer: EditWriter, round_: int, gold: WriterEdit) -> None:
        scored.append((writer.user, round_, gold.id))
        later = writer.edits[writer.edits.index(gold) :]
        # the gold's list and every later one, and their later edits
        shown = {c for e in later for c in e.candidates}
        for arm in ARMS:
            texts = {e.text for e in memory.store.load(arm_user(arm, writer.user)).entries}
            # nor any text holding one of them (an edit made later in the gold's session)
            assert not any(c in t for c in shown for t in texts), (arm, gold.id)

    config = LoopConfig(budget=400, gold_next=0)
    run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path), on_score=inspect)
    index = {e.id: i for w in writers for i, e in enumerate(w.edits)}
    blocks = [(w, r, g) for w, r, g in scored if r >= 0]
    # wa: after rounds 0..2 golds 3, 5, 6; after 3, 4 golds 5, 6; after 5 gold 6; wc: its
    # round 2 after rounds 0 and 1 (the edit of round 0, which holds round 2's accepted
    # text, is never fed: no list of wc opened after its session ended)
    assert len(blocks) == 4 * (3 * 3 + 2 * 2 + 1) + 4 * 2
    assert all(index[g] > r for _, r, g in blocks)
    # a first round's list is never a gold: nothing is scored before it is fed
    assert {g for _, _, g in scored} == {"co-s1-14", "co-s2-1", "co-s2-2", "co-s4-2"}


def test_a_gold_window_reaching_its_own_coauthor_round_is_refused(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_a_window_reaching_its_own_round_is_refused(writers, tmp_path, monkeypatch)


def test_golds_are_scored_by_the_static_tasks_nll_and_pair_acc(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    memory, clock = loop_memory()
    scorer = OverlapScorer()
    config = LoopConfig(arms=("credit", "none"), budget=400, gold_next=1)
    rows, _ = run_loop(writers, memory, clock, scorer, config, LoopCache(tmp_path))
    golds = {e.id: e for w in writers for e in w.edits}
    # one prompt per candidate: the accepted one's score is the row's NLL, not scored twice
    assert len(scorer.seen) == sum(len(golds[r.gold].candidates) for r in rows)
    for row in rows:
        gold = golds[row.gold]
        assert row.chosen == gold.chosen and len(row.choices) == len(gold.candidates)
        assert row.choices[row.chosen] == (row.nll, row.tokens)
        assert row.pair_acc == pair_accuracy(row.choices, row.chosen)
        assert row.pair_acc is not None
    for messages, text in scorer.seen:
        owner = next(g for g in golds.values() if g.scorable and text in g.candidates)
        assert messages[-1] == ("user", loop_request(owner))
    # the cache keeps the choices: a rerun is served whole, pair_acc included
    again = OverlapScorer()
    cached, timing = run_loop(writers, memory, clock, again, config, LoopCache(tmp_path))
    assert again.seen == [] and timing["from_cache"] == len(rows)
    assert sorted(r.pair_acc or 0 for r in cached) == sorted(r.pair_acc or 0 for r in rows)


def test_coauthor_rows_never_share_a_cache_key_with_the_other_datasets() -> None:
    row = LoopRow(
        "co-wa", 0, "credit", "g", 1, 600, "after-system", "m", "compact", "replay", 0, 4.0, 2
    )
    for arm, round_ in (("credit", 0), ("none", -1)):
        base = dataclasses.replace(row, arm=arm, round=round_)
        keys = {dataclasses.replace(base, dataset=d).key for d in ("lamp-edits", "popquorn")}
        assert dataclasses.replace(base, dataset="coauthor").key not in keys


def test_the_report_gives_pair_acc_beside_nll_for_coauthor_only() -> None:
    def row(arm: str, round_: int, gold: str, nll: float, choices: Any) -> LoopRow:
        fixed = ("after-system", "m", "compact", "replay", 0)
        return LoopRow(
            "co-w", round_, arm, gold, 9, 400, *fixed, nll, 2,
            dataset="coauthor", choices=choices, chosen=0,
        )  # fmt: skip

    rows = [
        row("none", -1, "g1", 2.0, ((2.0, 2), (1.0, 2))),  # prefers the rival: 0
        row("credit", 0, "g1", 1.0, ((1.0, 2), (3.0, 2))),  # prefers the accepted: 1
    ]
    summary = loop_summary(rows, arms=("credit", "none"))
    assert summary["last_round"]["arms"]["credit"]["mean_nll"]["mean"] == pytest.approx(0.5)
    accuracy = summary["pair_acc"]["last_round"]["arms"]
    assert accuracy["credit"]["mean_pair_acc"]["mean"] == 1.0
    assert accuracy["none"]["mean_pair_acc"]["mean"] == 0.0
    assert accuracy["credit"]["lift_vs_none"]["mean"] == 1.0  # higher pair_acc is better
    report = {"meta": {"dataset": "coauthor", "arms": ["credit", "none"]}, **summary}
    text = loop_markdown(report)
    assert "Closed loop: CoAuthor" in text and "Mean pair_acc by round" in text
    lamp = [dataclasses.replace(r, dataset="lamp-edits", choices=(), chosen=-1) for r in rows]
    assert "pair_acc" not in loop_summary(lamp, arms=("credit", "none"))


def test_the_cli_runs_the_loop_on_a_coauthor_file(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, scorer = tmp_path / "out", OverlapScorer()
    result = run_eval_cli(
        monkeypatch,
        scorer,
        *(str(data), "--loop", "--budgets", "300", "--placement", "after-system"),
        *("--arms", "credit,none", "--gold-next", "1", "--limit", "10", "--quiet"),
        *("--out", str(out)),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    meta = report["meta"]
    assert meta["dataset"] == "coauthor" and meta["task"] == "coauthor-loop"
    assert meta["writers"] == 2 and meta["writers_skipped"] == 1 and meta["mode"] == "replay"
    assert "pair_acc" in report
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert {(r["writer"], r["dataset"]) for r in rows} == {
        ("co-wa", "coauthor"),
        ("co-wc", "coauthor"),
    }
    # --limit 10 keeps wa's first five rounds (golds at rounds 0 and 3): rounds 0..2 scored
    assert sorted(r["round"] for r in rows if r["arm"] == "credit" and r["writer"] == "co-wa") == [
        0,
        1,
        2,
    ]
    assert all(len(r["choices"]) >= 2 for r in rows)
    assert all(m[-1][1].startswith(CONTINUE_PROMPT) for m, _ in scorer.seen)
    text = (out / "report.md").read_text()
    assert "Closed loop: CoAuthor" in text and "pair_acc" in text


def test_generate_does_not_apply_to_the_coauthor_loop(data: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="CoAuthor"):
        run_loop_command(data, budgets="300", generate=True, out=tmp_path, scorer=OverlapScorer())
    memory, clock = loop_memory()
    writers = coauthor_writers(load_coauthor(data))
    with pytest.raises(Exception, match="CoAuthor"):
        config = LoopConfig(generate=True)
        run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path))


def test_a_counter_of_feedback_kinds_matches_the_data(writers: list[EditWriter]) -> None:
    kinds = Counter(e.feedback for w in writers for e in w.edits)
    assert kinds == Counter({"accepted": 8, "rejected": 4})
