"""The benchmark scenarios run end to end at toy sizes and report what they measured."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest

from langchain_outprofile.errors import InvalidInputError, LocalModelUnavailableError
from langchain_outprofile.local import local_model_path
from langchain_outprofile.tokens import TokenCounter
from outprofile_lab.bench import big_user, prompt_cache
from outprofile_lab.bench.big_write import big_write_scenario
from outprofile_lab.bench.live_loop import live_loop_scenario
from outprofile_lab.bench.prompt_cache import _evaluated_since, _run_conditions
from outprofile_lab.bench.run import SCENARIOS, _ms, bench_command, shared_prefix_table
from outprofile_lab.bench.shared_prefix import (
    STATIC_PROMPT,
    _summary,
    reused_since,
)


def test_the_live_loop_reports_a_pinned_thread_that_holds_still() -> None:
    row = live_loop_scenario(
        chromadb.EphemeralClient(),
        "toy",
        entries=60,
        users=2,
        turns=7,
        max_tokens=300,
        seed=0,
        ms=_ms,
    )
    assert row["entries"] == 60 and row["turns"] == 7
    assert row["pinned_stable_pct"] == 100.0
    assert row["unpinned_blocks_distinct"] > 1  # the endorsed answers enter the current block
    assert row["turn_p50_ms"] > 0 and row["similarity_p50_ms"] > 0
    assert row["ratio_turn_over_similarity"] == row["turn_p50_ms"] / row["similarity_p50_ms"]
    assert row["ratio_add_many_over_raw"] > 0


def test_the_big_write_reports_another_users_reads_during_it() -> None:
    row = big_write_scenario(
        chromadb.EphemeralClient(), "toy", entries=300, max_tokens=300, seed=0, idle_reads=5
    )
    assert row["entries"] == 300 and row["reads"] >= 1
    assert 0 < row["read_p50_ms"] <= row["read_p99_ms"] <= row["read_max_ms"]
    assert row["write_s"] > 0 and row["idle_read_p99_ms"] > 0


def test_the_big_user_phases_report_reads_rss_and_a_complete_forget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the phases in this process, in the order the scenario runs them in children
    row: dict[str, Any] = {}
    phases = ("build", "first-read", "cold-read", "small-user", "touch", "after-write", "forget")
    for phase in phases:
        big_user.main(["--phase", phase, "--path", str(tmp_path), "--entries", "300"])
        row.update(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert row["first_read_s"] > 0 and row["first_read_rss_mb"] >= row["open_rss_mb"] > 0
    assert row["warm_read_ms"] > 0 and row["cold_read_ms"] > 0 and row["small_p99_ms"] > 0
    assert row["after_write_s"] > 0 and row["after_write_rss_mb"] > 0
    assert row["forget_s"] > 0 and row["left_after_forget"] == 0


def test_prompt_eval_counts_are_read_from_the_servers_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("llama_perf_context_print: prompt eval time =  12.50 ms /    37 tokens\n")
    assert _evaluated_since(log, 0) == (37, log.stat().st_size)
    with log.open("a") as handle:
        handle.write(
            "loading\nprompt eval time = 3.1 ms / 4 tokens\nprompt eval time = 1 ms / 2 tokens\n"
        )
    before = len("llama_perf_context_print: prompt eval time =  12.50 ms /    37 tokens\n")
    assert _evaluated_since(log, before)[0] == 6
    assert _evaluated_since(log, log.stat().st_size)[0] is None


def test_both_cache_benchmarks_run_each_condition_on_one_warmed_up_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[Any] = []

    class Model:
        def invoke(self, text: str) -> None:
            events.append(("invoke", text))

    class Served:
        def chat_model(self, **settings: Any) -> Model:
            events.append(("model", settings))
            return Model()

    @contextlib.contextmanager
    def serve(**settings: Any) -> Iterator[Served]:
        events.append(("serve", settings))
        yield Served()
        events.append("stopped")

    def run(condition: str, served: Any, model: Any) -> list[dict[str, Any]]:
        assert isinstance(served, Served) and isinstance(model, Model)
        events.append(("run", condition))
        return [{"condition": condition, "turn": t} for t in range(2)]

    monkeypatch.setattr(prompt_cache, "serve_local_model", serve)
    rows = _run_conditions(("a", "b"), 24, run)
    assert [(r["condition"], r["turn"]) for r in rows] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert events == [
        ("serve", {"n_ctx": 8192, "logits_all": False, "extra_args": ("--verbose", "True")}),
        ("model", {"max_tokens": 24, "temperature": 0.0, "streaming": True}),
        ("invoke", "Warm up."),  # before the first condition: it loads the weights
        ("run", "a"),
        ("run", "b"),
        "stopped",
    ]


def test_reused_prefixes_are_read_from_the_servers_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "Llama.generate: 1018 prefix-match hit, remaining 212 prompt tokens to eval\n"
        "prompt eval time = 900.0 ms / 212 tokens\n"
    )
    assert reused_since(log, 0) == 1018
    assert reused_since(log, log.stat().st_size) is None  # no line: nothing was reused


def test_the_shared_prefix_summary_leaves_out_each_conditions_first_request() -> None:
    def row(condition: str, turn: int, user: int, evaluated: int, reused: int) -> dict[str, Any]:
        return {
            "condition": condition,
            "turn": turn,
            "user": user,
            "ttft_ms": float(evaluated),
            "evaluated_tokens": evaluated,
            "reused_tokens": reused,
        }

    rows = [
        row("leading", 0, 0, 1300, 3),
        row("leading", 0, 1, 1200, 38),
        row("leading", 1, 0, 1260, 38),
        row("after_system", 0, 0, 1250, 40),  # follows the other condition: left out
        row("after_system", 0, 1, 220, 1020),
        row("after_system", 1, 0, 260, 1020),
    ]
    summary = _summary(rows)
    assert summary["leading"]["requests"] == 2
    assert summary["leading"]["evaluated_total"] == 2460
    assert summary["after_system"]["evaluated_median"] == 240
    assert summary["after_system"]["reused_median"] == 1020
    assert summary["after_system"]["ttft_max_ms"] == 260.0
    table = shared_prefix_table(summary)
    assert "| after_system | 2 | 240 / 480 | 1020 | 240.0 / 260.0 |" in table


def test_the_static_prompt_is_about_a_thousand_tokens_of_the_served_model() -> None:
    try:
        path = local_model_path()
    except LocalModelUnavailableError as error:  # the local extra (the GGUF) is missing
        pytest.skip(f"no local model: {error}")
    assert 900 <= TokenCounter.of(path).count(STATIC_PROMPT) <= 1100


def test_the_shared_prefix_scenario_is_offered() -> None:
    assert "shared-prefix" in SCENARIOS
    with pytest.raises(InvalidInputError, match="shared-prefix"):
        bench_command(scenario="nope", sizes=[1000], many_entries=0, modes=["embedded"])
