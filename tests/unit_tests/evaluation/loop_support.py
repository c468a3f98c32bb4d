"""What the closed-loop tests of every dataset share: a stand-in model, a fresh memory on
its own moving clock, the check that a gold window reaching its own round is refused, and
``outprofile eval`` run with the stand-in model."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
import pytest
import typer
from typer.testing import CliRunner, Result

from langchain_outprofile.memory import OutputProfileMemory
from outprofile_lab.evaluation import command, loop
from outprofile_lab.evaluation.command import eval_command
from outprofile_lab.evaluation.data import EditWriter
from outprofile_lab.evaluation.loop import LeakageError, LoopCache, LoopConfig, run_loop
from outprofile_lab.evaluation.scoring import Message, NllScore
from outprofile_lab.evaluation.strategies import EPOCH
from outprofile_lab.evaluation.tasks import MovingClock


class OverlapScorer:
    """A stand-in model: each gold word missing from the prompt costs 1 nat, each present
    0.5 (so a block holding the writer's words scores better). It counts its calls, keeps
    every prompt and gold it scored (``seen``) and, with ``fail_after``, stops the run
    there as a killed process would."""

    name = "overlap"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.seen: list[tuple[list[Message], str]] = []

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.seen.append((list(messages), gold))
        prompt = {w.strip(".,:") for _, text in messages for w in text.split()}
        words = [w.strip(".,:") for w in gold.split()]
        return NllScore(sum(0.5 if w in prompt else 1.0 for w in words), len(words))


def loop_memory(client: Any = None) -> tuple[OutputProfileMemory, MovingClock]:
    """A memory on a new collection whose time is a clock the loop moves."""
    clock = MovingClock(EPOCH)
    memory = OutputProfileMemory.from_client(
        client or chromadb.EphemeralClient(),
        collection_name=f"t-{uuid.uuid4().hex}",
        clock=clock,
    )
    return memory, clock


def assert_a_window_reaching_its_own_round_is_refused(
    writers: list[EditWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With golds from the scored round on (a leaky window), the run stops with
    :class:`LeakageError` before scoring."""

    def leaky(round_: int, rounds: int, window: int) -> range:
        return range(round_, rounds)

    monkeypatch.setattr(loop, "gold_rounds", leaky)
    memory, clock = loop_memory()
    with pytest.raises(LeakageError, match="own round"):
        run_loop(writers, memory, clock, OverlapScorer(), LoopConfig(), LoopCache(tmp_path))


def run_eval_cli(monkeypatch: pytest.MonkeyPatch, scorer: OverlapScorer, *args: str) -> Result:
    """``outprofile eval ARGS`` with ``scorer`` as its model (no extra required, no token
    counting table)."""
    monkeypatch.setattr(command, "require_extras", lambda backend: None)
    monkeypatch.setattr(command, "_scorer", lambda *a: scorer)
    monkeypatch.setattr(command, "_counting", lambda backend, model: {})
    app = typer.Typer()
    app.command("eval")(eval_command)
    return CliRunner().invoke(app, list(args))
