"""The closed loop on LAMP edits (``outprofile eval --loop``): its leakage rule, what each
arm's memory holds after the rounds, the credit of served blocks, resuming from the cache,
the report's pairs and the CLI flags. Invented writers and paragraphs written here (no LAMP
text); a scorer made of word overlap stands in for the model."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from outprofile_lab.evaluation import command
from outprofile_lab.evaluation.command import eval_command, run_loop_command
from outprofile_lab.evaluation.data import EditWriter, WriterEdit, load_lamp_edits
from outprofile_lab.evaluation.loop import (
    ARMS,
    WRITE_PROMPT,
    LeakageError,
    LoopArms,
    LoopCache,
    LoopConfig,
    LoopRow,
    arm_user,
    check_unseen,
    gold_rounds,
    loop_request,
    run_loop,
    scored_rounds,
)
from outprofile_lab.evaluation.loop_report import loop_summary
from outprofile_lab.evaluation.scoring import Message
from outprofile_lab.evaluation.tasks import EDIT_PROMPT
from tests.unit_tests.evaluation.loop_support import (
    OverlapScorer,
    assert_a_window_reaching_its_own_round_is_refused,
    loop_memory,
)

THINGS = ["gulls", "stairs", "sister", "ferry", "lamp", "kettle", "nets", "fog"]


def _edit(writer: str, n: int, instruction: bool) -> dict[str, Any]:
    thing = THINGS[n % len(THINGS)]
    return {
        "id": f"{writer}_{n}",
        "instruction": f"Write about the keeper and the {thing}." if instruction else None,
        "preedit": f"Model paragraph {writer}{n}: the keeper looked at the {thing} gravely.",
        "postedit": f"{writer} edit {n}: keeper counts {thing} at dawn, plainly.",
        "paragraph_id": f"p{n}",
    }


def _write(path: Path) -> Path:
    writers = [
        {"user_id": "A", "edits": [_edit("A", n, n != 2) for n in range(5)]},
        {"user_id": "B", "edits": [_edit("B", n, False) for n in range(3)]},
        {"user_id": "C", "edits": [_edit("C", 0, True)]},  # one edit: no round has a future
    ]
    path.write_text("".join(json.dumps(w) + "\n" for w in writers), encoding="utf-8")
    return path


@pytest.fixture
def writers(tmp_path: Path) -> list[EditWriter]:
    return load_lamp_edits(_write(tmp_path / "edits.jsonl"))


def test_rounds_golds_and_the_guard_follow_the_rule() -> None:
    assert list(gold_rounds(2, 6, 2)) == [3, 4]
    assert list(gold_rounds(2, 6, 0)) == [3, 4, 5]
    assert list(gold_rounds(4, 6, 3)) == [5]
    assert scored_rounds(6, 2) == [0, 2, 4] and scored_rounds(7, 2) == [0, 2, 4, 5]
    assert scored_rounds(2, 1) == [0] and scored_rounds(1, 1) == []
    check_unseen({"credit": 2, "random": -1}, 3)
    with pytest.raises(LeakageError, match="round 3"):
        check_unseen({"credit": 3, "random": 1}, 3)
    edit = WriterEdit("x", "Write a thing.", "pre", "post", None)
    assert loop_request(edit) == f"{WRITE_PROMPT}Write a thing."
    no_instruction = WriterEdit("y", None, "pre", "post", None)
    assert loop_request(no_instruction).startswith(EDIT_PROMPT)


def test_no_gold_is_scored_under_an_arm_that_holds_its_edit_or_its_paragraph(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    memory, clock = loop_memory()
    scored: list[tuple[str, int, str]] = []

    def inspect(writer: EditWriter, round_: int, gold: WriterEdit) -> None:
        scored.append((writer.user, round_, gold.id))
        for arm in ARMS:
            texts = {e.text for e in memory.store.load(arm_user(arm, writer.user)).entries}
            assert gold.postedit not in texts and gold.preedit not in texts, (arm, gold.id)
            later = writer.edits[writer.edits.index(gold) :]
            assert not texts & {e.postedit for e in later}

    config = LoopConfig(budget=400, gold_next=0)
    rows, timing = run_loop(
        writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path), on_score=inspect
    )
    assert timing["writers"] == 2 and timing["writers_skipped"] == 1
    # every round with a future scored every later edit, in every arm but none (once per gold)
    a_blocks = [(w, r, g) for w, r, g in scored if w == "A" and r >= 0]
    assert len(a_blocks) == 4 * (4 + 3 + 2 + 1)
    assert all(int(g.split("_")[1]) > r for _, r, g in a_blocks)
    assert {r.gold_round > r.round for r in rows} == {True}


def test_a_gold_window_that_reaches_its_own_round_is_refused(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_a_window_reaching_its_own_round_is_refused(writers, tmp_path, monkeypatch)


def test_each_arm_holds_what_it_was_fed_and_credit_counts_the_served_blocks(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: Counter[tuple[str, str]] = Counter()
    feed = LoopArms.feed

    def spy(self: LoopArms, arm: str, round_: int, output: str, block: Any) -> None:
        ids = [e.id for e in block.entries] if hasattr(block, "entries") else list(block or [])
        served.update((arm, i) for i in ids)
        feed(self, arm, round_, output, block)

    monkeypatch.setattr(LoopArms, "feed", spy)
    memory, clock = loop_memory()
    # a budget for about two entries: the arms serve different blocks
    run_loop(writers, memory, clock, OverlapScorer(), LoopConfig(budget=90), LoopCache(tmp_path))
    writer = writers[0]
    fed = writer.edits[:-1]  # the last round has no future: it is never fed
    for arm in ("credit", "no-credit", "random"):
        entries = memory.store.load(arm_user(arm, "A")).entries
        live = [e for e in entries if e.selectable]
        assert sorted(e.text for e in live) == sorted(e.postedit for e in fed), arm
        assert {e.signal.value for e in live} == {"edited"}
        assert not any(e.pending for e in entries)
        # every feedback is an edit, an approval: each entry is credited once per block
        # that held it, and never debited
        for entry in live:
            assert entry.credited == served[(arm, entry.id)], (arm, entry.text)
            assert entry.debited == 0
    credit = {e.text: e.credited for e in memory.store.load(arm_user("credit", "A")).entries}
    assert sum(credit.values()) > 0  # blocks were served and credited
    similar = memory.store.load(arm_user("all-outputs-bm25", "A")).entries
    expected = {e.preedit for e in fed} | {e.postedit for e in fed}
    assert {e.text for e in similar} == expected
    assert memory.store.load(arm_user("none", "A")).entries == ()


def test_with_a_budget_for_every_entry_an_entry_of_round_k_is_credited_by_each_later_round(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    memory, clock = loop_memory()
    config = LoopConfig(arms=("credit", "none"), budget=2000)
    run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path))
    # A: 5 edits, rounds 0..3 fed; the edit of round k was in the blocks of rounds k+1..3
    got = {e.text: e.credited for e in memory.store.load(arm_user("credit", "A")).entries}
    assert got == {writers[0].edits[k].postedit: 3 - k for k in range(4)}


def test_a_stopped_run_resumes_from_the_cache_to_the_same_rows(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    config = LoopConfig(budget=120, gold_next=2)
    memory, clock = loop_memory()
    whole, _ = run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path / "a"))
    # the same run, stopped after 9 scores, then started again over the same memory
    memory, clock = loop_memory()
    with pytest.raises(KeyboardInterrupt):
        run_loop(writers, memory, clock, OverlapScorer(9), config, LoopCache(tmp_path / "b"))
    with (tmp_path / "b" / "scores.jsonl").open("a") as handle:
        handle.write('{"writer": "A", "round"')  # a line cut by the kill
    again = OverlapScorer()
    resumed, timing = run_loop(writers, memory, clock, again, config, LoopCache(tmp_path / "b"))
    assert again.calls == len(whole) - 9 and timing["from_cache"] == 9
    assert sorted((r.key, r.nll) for r in resumed) == sorted((r.key, r.nll) for r in whole)
    # and a third start scores nothing
    idle = OverlapScorer()
    run_loop(writers, memory, clock, idle, config, LoopCache(tmp_path / "b"))
    assert idle.calls == 0


def test_the_cache_keys_keep_modes_seeds_and_models_apart() -> None:
    row = LoopRow(
        "A", 2, "random", "A_3", 3, 600, "after-system", "m", "compact", "replay", 0, 4.0, 2
    )
    assert row.mean == 2.0
    for change in ({"mode": "generate64"}, {"seed": 1}, {"model": "other"}, {"round": 3}):
        other = LoopRow(**{**row.__dict__, **change})
        assert other.key != row.key
    none = LoopRow("A", -1, "none", "A_3", 3, 0, "after-system", "m", "", "", 0, 4.0, 2)
    assert none.key == LoopRow(**{**none.__dict__, "mode": "generate64", "seed": 5}).key


def _row(writer: str, round_: int, arm: str, gold: str, mean: float) -> LoopRow:
    return LoopRow(writer, round_, arm, gold, 0, 600, "a", "m", "f", "replay", 0, mean * 2, 2)


def test_the_summary_pairs_the_arms_at_each_writers_last_round() -> None:
    rows = [
        _row("A", -1, "none", "g1", 3.0),
        _row("A", -1, "none", "g2", 3.0),
        _row("A", 0, "credit", "g1", 2.8),
        _row("A", 0, "all-outputs-bm25", "g1", 2.9),
        _row("A", 1, "credit", "g2", 2.0),
        _row("A", 1, "all-outputs-bm25", "g2", 2.5),
        _row("B", -1, "none", "h1", 4.0),
        _row("B", 0, "credit", "h1", 3.5),
        _row("B", 0, "all-outputs-bm25", "h1", 3.4),
    ]
    summary = loop_summary(rows, arms=("credit", "all-outputs-bm25", "none"))
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["rounds"][0]["writers"] == 2
    assert summary["rounds"][0]["arms"]["credit"]["mean_nll"]["mean"] == pytest.approx(3.15)
    last = summary["last_round"]
    pair = next(p for p in last["pairs"] if p["b"] == "all-outputs-bm25")
    # A's last round is 1: 2.5 - 2.0; B's is 0: 3.4 - 3.5
    assert pair["a"] == "credit" and pair["mean"] == pytest.approx((0.5 - 0.1) / 2)
    assert pair["n"] == 2 and pair["wins"] == 0.5
    assert last["arms"]["credit"]["lift_vs_none"]["mean"] == pytest.approx((1.0 + 0.5) / 2)
    # growth: A's lift went from 0.2 to 1.0; B, scored at one round only, has none
    assert summary["growth"]["credit"]["mean"] == pytest.approx(0.8)
    assert summary["growth"]["credit"]["n"] == 1


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setattr(command, "require_extras", lambda backend: None)
    monkeypatch.setattr(command, "_scorer", lambda *a: OverlapScorer())
    monkeypatch.setattr(command, "_counting", lambda backend, model: {})
    app = typer.Typer()
    app.command("eval")(eval_command)
    return CliRunner().invoke(app, list(args))


def test_the_cli_runs_the_loop_with_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, out = _write(tmp_path / "edits.jsonl"), tmp_path / "out"
    result = _cli(
        tmp_path,
        monkeypatch,
        *(str(data), "--loop", "--budgets", "300", "--placement", "after-system"),
        *("--arms", "credit,none", "--score-every", "2", "--gold-next", "1", "--limit", "1"),
        *("--quiet", "--out", str(out)),
    )
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(out / n) for n in ("report.json", "report.md", "loop.png")]
    report = json.loads((out / "report.json").read_text())
    meta = report["meta"]
    assert meta["arms"] == ["credit", "none"] and meta["budget"] == 300
    assert meta["mode"] == "replay" and meta["score_every"] == 2 and meta["gold_next"] == 1
    assert meta["writers"] == 1 and meta["placement"] == "after-system"
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    # A has 5 edits: rounds 0, 2 and 3 scored, each on the next edit
    assert sorted((r["round"], r["gold"]) for r in rows if r["arm"] == "credit") == [
        (0, "A_1"),
        (2, "A_3"),
        (3, "A_4"),
    ]
    assert {r["arm"] for r in rows} == {"credit", "none"}
    assert "Closed loop" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--budgets", "200,400"), "one budget"),
        (("--budgets", "300", "--arms", "credit,bogus"), "bogus"),
        (("--budgets", "300", "--score-every", "0"), "score-every"),
        (("--budgets", "300", "--gold-next", "-1"), "gold-next"),
        (("--budgets", "300", "--placement", "leading,middle"), "one placement"),
        (("--budgets", "300", "--system-prompt-tokens", "300"), "--system-prompt-tokens"),
        (("--budgets", "300", "--random-draws", "2"), "--random-draws"),
        (("--budgets", "300", "--cached-only"), "--cached-only"),
    ],
)
def test_the_cli_refuses_bad_loop_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    data = _write(tmp_path / "edits.jsonl")
    result = _cli(tmp_path, monkeypatch, str(data), "--loop", *args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in result.output


def test_the_loop_runs_on_lamp_edits_only(tiny_lamp7: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="LAMP edits"):
        run_loop_command(tiny_lamp7, budgets="300", out=tmp_path, scorer=OverlapScorer())


def test_generate_mode_stores_the_models_output_in_the_similarity_arm_only(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    class Echo:
        name = "echo"
        calls = 0

        def generate(self, messages: Sequence[Message], max_tokens: int) -> str:
            Echo.calls += 1
            return f"generated {Echo.calls} for {len(messages)} messages"

    memory, clock = loop_memory()
    config = LoopConfig(generate=True, budget=300)
    cache = LoopCache(tmp_path)
    run_loop(writers, memory, clock, OverlapScorer(), config, cache, generator=Echo())
    assert Echo.calls == 4 * (4 + 2)  # four arms that record, rounds fed: A 4, B 2
    similar = {e.text for e in memory.store.load(arm_user("all-outputs-bm25", "A")).entries}
    assert any(t.startswith("generated") for t in similar)
    assert not any(e.preedit in similar for e in writers[0].edits)
    credit = {e.text for e in memory.store.load(arm_user("credit", "A")).entries if e.selectable}
    assert not any(t.startswith("generated") for t in credit)
    # resumed: the outputs come from the cache, the model writes nothing
    memory, clock = loop_memory()
    run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path), generator=Echo())
    assert Echo.calls == 24
    with pytest.raises(Exception, match="model that writes"):
        run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path / "x"))
