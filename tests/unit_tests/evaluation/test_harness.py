"""The whole harness end to end on the invented fixture with the real SmolLM2 model: a tiny
slice that CI runs so the evaluation cannot rot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from langchain_outprofile.errors import InvalidInputError
from outprofile_lab.evaluation.command import eval_command, run_command, run_loop_command
from outprofile_lab.evaluation.runner import ScoreCache, ScoreRow, pair_accuracy
from outprofile_lab.evaluation.scoring import LlamaScorer
from outprofile_lab.evaluation.strategies import messages_for
from outprofile_lab.evaluation.tasks import continue_request, rewrite_request

pytest.importorskip("llama_cpp", reason="the local extra (llama-cpp-python) is absent")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_end_to_end_with_the_real_model_and_resume(tiny_lamp7: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    scorer = LlamaScorer(n_ctx=1024)
    args: dict[str, Any] = dict(
        strategies="none,output-profile,bm25-query",
        budgets="100",
        placement="leading,trailing",
        limit=2,
        seed=3,
        out=out,
    )
    paths = run_command(tiny_lamp7, scorer=scorer, quiet=True, **args)
    assert [p.name for p in paths] == ["report.json", "report.md", "lift.png"]
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["users"] == 2 and report["meta"]["scored_now"] == 10
    table = report["budgets"]["100"]
    assert list(table) == ["none", "output-profile", "bm25-query"]
    assert set(report["placements"]) == {"leading", "trailing"}
    rows = _rows(out / "scores.jsonl")
    assert len(rows) == 10 and all(r["model"] == scorer.name for r in rows)
    mean = {(r["user"], r["strategy"], r["placement"]): r["nll"] / r["tokens"] for r in rows}
    for placement in ("leading", "trailing"):
        got = report["placements"][placement]["100"]["output-profile"]
        expected = np.mean(
            [
                mean[(u, "none", "-")] - mean[(u, "output-profile", placement)]
                for u in ("lamp-t0", "lamp-t1")
            ]
        )
        assert got["users"] == 2 and np.isclose(got["lift_vs_none"]["mean"], expected)
        assert (
            got["lift_vs_none"]["low"] <= got["lift_vs_none"]["mean"] <= got["lift_vs_none"]["high"]
        )
        assert "lift_vs_bm25-query" in got
    blocks = [r for r in rows if r["strategy"] != "none"]
    assert all(0 < r["block_tokens"] <= 100 and r["entries"] >= 1 for r in blocks)
    assert (out / "lift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "`output-profile`" in (out / "report.md").read_text()

    run_command(tiny_lamp7, scorer=scorer, quiet=True, **args)
    again = json.loads((out / "report.json").read_text())
    assert again["meta"]["scored_now"] == 0 and again["meta"]["from_cache"] == 10
    assert again["placements"] == report["placements"]
    assert len(_rows(out / "scores.jsonl")) == 10

    more = {**args, "budgets": "100,150"}
    run_command(tiny_lamp7, scorer=scorer, quiet=True, cached_only=True, **more)
    cached = json.loads((out / "report.json").read_text())
    assert cached["meta"]["scored_now"] == 0 and len(_rows(out / "scores.jsonl")) == 10
    assert list(cached["budgets"]["150"]) == ["none"]  # nothing was scored at budget 150


def test_bad_arguments_fail_before_any_work(tiny_lamp7: Path, tmp_path: Path) -> None:
    base: dict[str, Any] = dict(
        strategies="none", budgets="100", placement="leading", limit=1, seed=0, out=tmp_path / "x"
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"strategies": "none,rag"}, "unknown strategy"),
        ({"budgets": "100,abc"}, "comma list of integers"),
        ({"placement": "top"}, "unknown placement"),
        ({"limit": 0}, "--limit"),
        ({"backend": "openai"}, "--base-url and --model"),
    ]
    for change, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            run_command(tiny_lamp7, **{**base, **change})
    assert not (tmp_path / "x").exists()


def test_cli_reports_bad_input_as_a_clean_error(tiny_lamp7: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("eval")(eval_command)
    result = CliRunner().invoke(
        app, [str(tiny_lamp7), "--strategies", "none,rag", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "unknown strategy" in result.output and "Traceback" not in result.output


def test_the_loop_end_to_end_with_the_real_model_writing(tmp_path: Path) -> None:
    """``--loop --generate`` on one invented writer: the model writes each round's output
    (four tokens), every arm's block is scored on the next edit, and a second start scores
    and writes nothing."""
    edits = [
        {
            "id": f"w_{n}",
            "instruction": f"Write about the ferry and the {thing}.",
            "preedit": f"The ferry and the {thing} were wonderful and vibrant.",
            "postedit": f"The ferry left. The {thing} stayed.",
        }
        for n, thing in enumerate(("gulls", "fog", "nets"))
    ]
    data = tmp_path / "edits.jsonl"
    data.write_text(json.dumps({"user_id": "W", "edits": edits}) + "\n", encoding="utf-8")
    out = tmp_path / "loop"
    scorer = LlamaScorer(n_ctx=1024)
    args: dict[str, Any] = dict(
        budgets="150", placement="after-system", gold_next=1, generate=True, gen_tokens=4
    )
    paths = run_loop_command(data, out=out, scorer=scorer, quiet=True, **args)
    assert [p.name for p in paths] == ["report.json", "report.md", "loop.png"]
    report = json.loads((out / "report.json").read_text())
    meta = report["meta"]
    assert meta["mode"] == "generate4" and meta["model"] == scorer.name
    # rounds 0 and 1 scored on the next edit: 4 arms x 2 + none's 2 golds; 4 arms x 2 written
    assert meta["scored_now"] == 10 and meta["generated_now"] == 8
    outputs = _rows(out / "outputs.jsonl")
    assert len(outputs) == 8 and all(o["text"] for o in outputs)
    assert {a for a in report["last_round"]["arms"]} == {
        "credit",
        "no-credit",
        "all-outputs-bm25",
        "random",
        "none",
    }
    run_loop_command(data, out=out, scorer=scorer, quiet=True, **args)
    again = json.loads((out / "report.json").read_text())["meta"]
    assert again["scored_now"] == 0 and again["generated_now"] == 0
    assert again["from_cache"] == 10


def test_the_popquorn_loop_end_to_end_with_the_real_model(tmp_path: Path) -> None:
    """``--loop`` on one invented POPQUORN user (replay: the email stands for the model's
    rewrite): every arm's block is scored on the next rewrite, ``none`` under exactly the
    static task's prompt, and a second start scores nothing."""
    pairs = [
        {
            "input": f"Hi all, the {thing} meeting moved to Monday at ten. Thanks, Pat",
            "output": f"Heads up: {thing} meeting is now Monday 10am.",
            "instance_id": str(n),
        }
        for n, thing in enumerate(("budget", "badge", "parking"))
    ]
    data = tmp_path / "popquorn.jsonl"
    data.write_text(json.dumps({"user": "7", "pairs": pairs}) + "\n", encoding="utf-8")
    out = tmp_path / "loop"
    scorer = LlamaScorer(n_ctx=1024)
    args: dict[str, Any] = dict(budgets="150", placement="after-system", gold_next=1)
    run_loop_command(data, out=out, scorer=scorer, quiet=True, **args)
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["dataset"] == "popquorn" and meta["mode"] == "replay"
    assert meta["scored_now"] == 10  # rounds 0 and 1: 4 arms x 1 gold + none's 2 golds
    rows = _rows(out / "scores.jsonl")
    assert {(r["writer"], r["dataset"]) for r in rows} == {("pq-7", "popquorn")}
    none = next(r for r in rows if r["arm"] == "none" and r["gold_round"] == 1)
    static = messages_for(rewrite_request(pairs[1]["input"]), "", "after-system")
    assert scorer.score(static, pairs[1]["output"]).nll == pytest.approx(none["nll"])
    run_loop_command(data, out=out, scorer=scorer, quiet=True, **args)
    again = json.loads((out / "report.json").read_text())["meta"]
    assert again["scored_now"] == 0 and again["from_cache"] == 10


def test_the_coauthor_loop_end_to_end_with_the_real_model(tmp_path: Path) -> None:
    """``--loop`` on one invented CoAuthor writer (accepted, dismissed, accepted): every
    arm's block is scored on the last list, ``none`` with exactly the static task's prompt,
    NLL and pair_acc, and a second start scores nothing."""
    context = "The lighthouse keeper climbed the stairs at dusk and looked out to sea."
    lists = [
        (["She counted the ships.", "The lamp was cold."], 0, "select"),
        (["Rain hit the glass.", "A gull cried."], None, "user"),
        (["The sea was calm tonight.", "Thunder rolled far away."], 1, "select"),
    ]
    events = [
        {
            "kind": "suggestions",
            "t": 100.0 + n,
            "context": f"{context} {n}",
            "candidates": candidates,
            "chosen": chosen,
            "closed_by": closed_by,
        }
        for n, (candidates, chosen, closed_by) in enumerate(lists)
    ]
    session = {"writer": "w7", "session": "s7", "started_at": 99.0, "events": events}
    data = tmp_path / "coauthor.jsonl"
    data.write_text(json.dumps(session) + "\n", encoding="utf-8")
    out = tmp_path / "loop"
    scorer = LlamaScorer(n_ctx=1024)
    args: dict[str, Any] = dict(budgets="150", placement="leading", gold_next=1)
    run_loop_command(data, out=out, scorer=scorer, quiet=True, **args)
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["dataset"] == "coauthor" and "pair_acc" in report
    assert report["meta"]["scored_now"] == 9  # rounds 0 and 1: 4 arms x 1 gold + none's
    rows = _rows(out / "scores.jsonl")
    assert {(r["writer"], r["gold_round"]) for r in rows} == {("co-w7", 2)}
    none = next(r for r in rows if r["arm"] == "none")
    static = messages_for(continue_request(f"{context} 2"), "", "leading")
    scores = [scorer.score(static, text) for text in lists[2][0]]
    assert none["nll"] == pytest.approx(scores[1].nll)
    choices = [(s.nll, s.tokens) for s in scores]
    assert [tuple(c) for c in none["choices"]] == pytest.approx(choices)
    assert none["chosen"] == 1
    assert pair_accuracy(none["choices"], 1) == pair_accuracy(choices, 1)
    run_loop_command(data, out=out, scorer=scorer, quiet=True, **args)
    again = json.loads((out / "report.json").read_text())["meta"]
    assert again["scored_now"] == 0 and again["from_cache"] == 9


def test_a_row_cut_by_a_killed_run_costs_only_itself(tmp_path: Path) -> None:
    """A killed run leaves a cut last line: it is skipped, and the next row appended starts
    a line of its own instead of being glued to it (and lost with it)."""
    path = tmp_path / "scores.jsonl"
    kept = ScoreRow("t-1", "none", 0, "-", "m", 1.5, 10, frame="compact")
    path.write_text(json.dumps(kept.__dict__) + '\n{"user": "t-2", "strat', encoding="utf-8")
    cache = ScoreCache(path)
    assert list(cache.rows) == [kept.key]
    added = ScoreRow("t-3", "none", 0, "-", "m", 2.5, 10, frame="compact")
    cache.put(added)
    assert set(ScoreCache(path).rows) == {kept.key, added.key}
