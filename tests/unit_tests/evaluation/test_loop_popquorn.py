"""The closed loop on POPQUORN (``outprofile eval <popquorn> --loop``): users mapped onto the
loop's writers, the requests the model and the scorer receive, what each arm is fed, the
leakage rule on POPQUORN rounds, cache keys apart from LAMP edits', and the CLI's dispatch
by dataset. Invented users and emails written here (no POPQUORN text); a scorer that records
every prompt stands in for the model."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from outprofile_lab.evaluation import loop
from outprofile_lab.evaluation.command import run_loop_command
from outprofile_lab.evaluation.data import EditWriter, WriterEdit, load_popquorn
from outprofile_lab.evaluation.loop import (
    ARMS,
    LoopCache,
    LoopConfig,
    LoopRow,
    arm_user,
    loop_request,
    run_loop,
)
from outprofile_lab.evaluation.loop_rounds import popquorn_writers
from outprofile_lab.evaluation.scoring import Message
from outprofile_lab.evaluation.tasks import (
    REWRITE_PROMPT,
    PopquornTask,
    rewrite_request,
)
from tests.unit_tests.evaluation.loop_support import (
    OverlapScorer,
    assert_a_window_reaching_its_own_round_is_refused,
    loop_memory,
    run_eval_cli,
)

TOPICS = ["budget", "offsite", "badge", "printer", "invoice", "parking"]


def _pair(user: str, n: int, same: bool = False) -> dict[str, Any]:
    topic = TOPICS[n % len(TOPICS)]
    email = f"Hi team, {user}{n} here: the {topic} memo is due Friday, please send comments."
    rewrite = email if same else f"{user} rewrite {n}: {topic} memo Friday, comments welcome."
    return {"input": email, "output": rewrite, "instance_id": f"{n}{user}"}


def _write(path: Path) -> Path:
    users = [
        {"user": "1", "pairs": [_pair("u", n) for n in range(5)]},
        # one rewrite is the email unchanged, as two pairs of the real data are
        {"user": "2", "pairs": [_pair("v", n, same=n == 1) for n in range(3)]},
        {"user": "3", "pairs": [_pair("w", 0)]},  # one pair: no round has a future
    ]
    path.write_text("".join(json.dumps(u) + "\n" for u in users), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _write(tmp_path / "popquorn.jsonl")


@pytest.fixture
def writers(data: Path) -> list[EditWriter]:
    return popquorn_writers(load_popquorn(data))


def test_a_popquorn_user_is_a_writer_whose_rounds_are_their_pairs_in_data_order(
    data: Path, writers: list[EditWriter]
) -> None:
    users = load_popquorn(data)
    assert [w.user for w in writers] == ["pq-1", "pq-2", "pq-3"]
    assert {w.dataset for w in writers} == {"popquorn"}
    for user, writer in zip(users, writers, strict=True):
        assert len(writer.edits) == len(user.pairs)
        for pair, edit in zip(user.pairs, writer.edits, strict=True):
            # replay's output is the email unchanged; the feedback is the user's rewrite
            assert edit.preedit == pair.input and edit.postedit == pair.output
            assert edit.paragraph_id == pair.instance_id and edit.instruction is None
            assert loop_request(edit) == f"{REWRITE_PROMPT}{pair.input}"
    # the request is the static task's for the same email, built by the same function
    task = PopquornTask(loop_memory()[0], users, seed=0)
    by_user = {w.user: w for w in writers}
    targets = task.targets()
    assert len(targets) == 2  # user 3 has one pair: nothing to leave out
    for target in targets:
        edit = next(e for e in by_user[target.user].edits if e.postedit == target.gold)
        assert loop_request(edit) == target.request == rewrite_request(edit.preedit)
    # a LAMP edit without a request still gets the LAMP request
    lamp = WriterEdit("x", "Write a thing.", "pre", "post", None)
    assert loop_request(lamp) != lamp.request and "Write a thing." in loop_request(lamp)


def test_replay_records_the_email_as_the_output_and_the_rewrite_as_the_edit(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory, clock = loop_memory()
    recorded: list[tuple[str, str, str | None, str | None]] = []
    edits: list[tuple[str, str | None]] = []
    record_output, feedback = memory.record_output, memory.feedback

    def spy_record(text: str, **kwargs: Any) -> Any:
        recorded.append((kwargs["user_id"], text, kwargs["source_input"], kwargs["task"]))
        return record_output(text, **kwargs)

    def spy_feedback(run: str, *args: Any, **kwargs: Any) -> Any:
        edits.append((kwargs["user_id"], kwargs.get("edited")))
        return feedback(run, *args, **kwargs)

    monkeypatch.setattr(memory, "record_output", spy_record)
    monkeypatch.setattr(memory, "feedback", spy_feedback)
    scorer = OverlapScorer()
    config = LoopConfig(budget=400, gold_next=2)
    rows, timing = run_loop(writers, memory, clock, scorer, config, LoopCache(tmp_path))
    assert timing["writers"] == 2 and timing["writers_skipped"] == 1
    fed = {w.user: w.edits[:-1] for w in writers[:2]}  # a last round has no future
    for arm in ("credit", "no-credit", "random"):
        for writer, rounds in fed.items():
            user = arm_user(arm, writer)
            assert [(t, s, k) for u, t, s, k in recorded if u == user] == [
                (e.preedit, rewrite_request(e.preedit), "email-rewrite") for e in rounds
            ]
            assert [e for u, e in edits if u == user] == [e.postedit for e in rounds]
    # the similarity arm stores the same two texts per round itself
    similar = {e.text for e in memory.store.load(arm_user("all-outputs-bm25", "pq-1")).entries}
    assert similar == {e.preedit for e in fed["pq-1"]} | {e.postedit for e in fed["pq-1"]}
    # every prompt scored asks to rewrite the gold's own email; the gold is that rewrite
    rewrites = {e.postedit: e for w in writers for e in w.edits}
    assert len(scorer.seen) == len(rows) > 0
    for messages, gold in scorer.seen:
        assert messages[-1] == ("user", rewrite_request(rewrites[gold].preedit))
    assert {r.dataset for r in rows} == {"popquorn"}
    # user 2's unchanged rewrite (round 1) is fed like any other edit
    credit = memory.store.load(arm_user("credit", "pq-2")).entries
    assert {e.text for e in credit if e.selectable} == {e.postedit for e in fed["pq-2"]}


def test_no_popquorn_gold_is_scored_under_an_arm_that_holds_its_rewrite_or_its_email(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    memory, clock = loop_memory()
    scored: list[tuple[str, int, str]] = []

    def inspect(writer: EditWriter, round_: int, gold: WriterEdit) -> None:
        scored.append((writer.user, round_, gold.id))
        later = writer.edits[writer.edits.index(gold) :]
        for arm in ARMS:
            texts = {e.text for e in memory.store.load(arm_user(arm, writer.user)).entries}
            assert not texts & {e.postedit for e in later}, (arm, gold.id)
            assert not texts & {e.preedit for e in later}, (arm, gold.id)

    config = LoopConfig(budget=400, gold_next=0)
    run_loop(writers, memory, clock, OverlapScorer(), config, LoopCache(tmp_path), on_score=inspect)
    index = {e.id: i for w in writers for i, e in enumerate(w.edits)}
    blocks = [(w, r, g) for w, r, g in scored if r >= 0]
    # pq-1 (5 pairs) every later rewrite after rounds 0..3 in four arms; pq-2 (3) after 0..1
    assert len(blocks) == 4 * (4 + 3 + 2 + 1) + 4 * (2 + 1)
    assert all(index[g] > r for _, r, g in blocks)


def test_a_gold_window_reaching_its_own_popquorn_round_is_refused(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_a_window_reaching_its_own_round_is_refused(writers, tmp_path, monkeypatch)


def test_popquorn_and_lamp_rows_never_share_a_cache_key(
    writers: list[EditWriter], tmp_path: Path
) -> None:
    row = LoopRow(
        "pq-1", 0, "credit", "g", 1, 600, "after-system", "m", "compact", "replay", 0, 4.0, 2
    )
    assert row.dataset == "lamp-edits"  # rows cached before POPQUORN ran are LAMP edits'
    for arm, round_ in (("credit", 0), ("none", -1)):
        lamp = dataclasses.replace(row, arm=arm, round=round_)
        assert dataclasses.replace(lamp, dataset="popquorn").key != lamp.key
    # the same users and golds, labelled LAMP edits, into the same cache: all scored anew
    config = LoopConfig(budget=300, gold_next=1)
    first = OverlapScorer()
    memory, clock = loop_memory()
    rows, _ = run_loop(writers, memory, clock, first, config, LoopCache(tmp_path))
    relabelled = [dataclasses.replace(w, dataset="lamp-edits") for w in writers]
    second = OverlapScorer()
    again, timing = run_loop(relabelled, memory, clock, second, config, LoopCache(tmp_path))
    assert len(second.seen) == len(rows) and timing["from_cache"] == 0
    assert {r.dataset for r in again} == {"lamp-edits"}
    # and each dataset's rerun is served from the cache
    third = OverlapScorer()
    run_loop(writers, memory, clock, third, config, LoopCache(tmp_path))
    assert third.seen == []


def test_the_cli_runs_the_loop_on_a_popquorn_file(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, scorer = tmp_path / "out", OverlapScorer()
    result = run_eval_cli(
        monkeypatch,
        scorer,
        *(str(data), "--loop", "--budgets", "300", "--placement", "after-system"),
        *("--arms", "credit,none", "--gold-next", "1", "--limit", "1", "--quiet"),
        *("--out", str(out)),
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["dataset"] == "popquorn" and meta["task"] == "popquorn-loop"
    assert meta["writers"] == 1 and meta["mode"] == "replay"
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert {(r["writer"], r["dataset"]) for r in rows} == {("pq-1", "popquorn")}
    # user 1 has 5 pairs: rounds 0..3 scored on the next rewrite
    assert sorted(r["round"] for r in rows if r["arm"] == "credit") == [0, 1, 2, 3]
    assert all(m[-1][1].startswith(REWRITE_PROMPT) for m, _ in scorer.seen)
    report = (out / "report.md").read_text()
    assert "Closed loop: POPQUORN" in report and "1 users" in report


def test_generate_on_popquorn_has_the_model_write_the_rewrite_for_the_same_request(
    data: Path, tmp_path: Path
) -> None:
    asked: list[list[Message]] = []

    class Writer:
        name = "writer"

        def generate(self, messages: Sequence[Message], max_tokens: int) -> str:
            asked.append(list(messages))
            return f"generated rewrite {len(asked)}"

    run_loop_command(
        data,
        arms="all-outputs-bm25,none",
        budgets="300",
        limit=1,
        gold_next=1,
        generate=True,
        gen_tokens=8,
        out=tmp_path,
        scorer=OverlapScorer(),
        generator=Writer(),
        quiet=True,
    )
    emails = [p.input for p in load_popquorn(data)[0].pairs]
    assert [m[-1] for m in asked] == [("user", rewrite_request(e)) for e in emails[:-1]]
    outputs = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 4 and all(o["key"][-1] == "popquorn" for o in outputs)


def test_lamp_outputs_cached_before_the_dataset_joined_the_key_still_serve_lamp_runs(
    tmp_path: Path,
) -> None:
    class Writer:
        name = "writer"
        calls = 0

        def generate(self, messages: Sequence[Message], max_tokens: int) -> str:
            Writer.calls += 1
            return f"generated {Writer.calls}"

    edits = tuple(
        WriterEdit(f"W_{n}", f"Write {n}.", f"pre {n}", f"post {n}", None) for n in range(3)
    )
    lamp = [EditWriter("W", edits)]
    config = LoopConfig(arms=("all-outputs-bm25",), budget=300, gold_next=1, generate=True)
    memory, clock = loop_memory()
    run_loop(lamp, memory, clock, OverlapScorer(), config, LoopCache(tmp_path), generator=Writer())
    assert Writer.calls == 2
    lines = (tmp_path / "outputs.jsonl").read_text().splitlines()
    outputs = [json.loads(line) for line in lines]
    assert all(
        len(o["key"]) == loop._OUTPUT_KEY_FIELDS and o["key"][-1] == "lamp-edits" for o in outputs
    )
    # the same lines as an older run wrote them: no dataset at the key's end
    older = [{**o, "key": o["key"][:-1]} for o in outputs]
    (tmp_path / "outputs.jsonl").write_text("".join(json.dumps(o) + "\n" for o in older))
    scores = tmp_path / "scores.jsonl"
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert rows and all(r.pop("dataset") == "lamp-edits" for r in rows)
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    memory, clock = loop_memory()
    idle = OverlapScorer()
    run_loop(lamp, memory, clock, idle, config, LoopCache(tmp_path), generator=Writer())
    assert Writer.calls == 2 and idle.seen == []  # served from the older lines
    # a POPQUORN writer of the same name and rounds is written anew
    popquorn = [dataclasses.replace(lamp[0], dataset="popquorn")]
    run_loop(
        popquorn, memory, clock, OverlapScorer(), config, LoopCache(tmp_path), generator=Writer()
    )
    assert Writer.calls == 4
