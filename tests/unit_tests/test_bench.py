"""The benchmark scenarios run end to end at toy sizes and report what they measured."""

from __future__ import annotations

from pathlib import Path

import chromadb

from langchain_outprofile.bench.big_write import big_write_scenario
from langchain_outprofile.bench.live_loop import live_loop_scenario
from langchain_outprofile.bench.prompt_cache import _evaluated_since
from langchain_outprofile.bench.run import _ms


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
