"""Evaluation: does the profile block predict what each user actually wrote? (real LM).

Three tasks: LaMP (query-free profile vs BM25), CoAuthor (preference signals vs a similarity
memory of every output, with the writers' histories replayed in time order) and POPQUORN
(outputs vs inputs as the profile).

Example:
    ```python
    from pathlib import Path
    from outprofile_lab.evaluation import run_command

    run_command(Path("lamp7_dev.jsonl"), strategies="none,output-profile,bm25-query",
                budgets="200", placement="leading", limit=20, seed=0, out=Path("eval-out"))
    ```
"""

from outprofile_lab.evaluation.command import eval_command, run_command, run_loop_command
from outprofile_lab.evaluation.data import (
    LampExample,
    ProfileItem,
    detect_format,
    load_coauthor,
    load_lamp,
    load_popquorn,
)
from outprofile_lab.evaluation.report import cells_summary, headroom
from outprofile_lab.evaluation.runner import (
    EvalConfig,
    ScoreCache,
    ScoreRow,
    run_eval,
    run_task,
)
from outprofile_lab.evaluation.scoring import LlamaScorer, NllScore, OpenAIScorer
from outprofile_lab.evaluation.stats import bootstrap_mean, paired_lift
from outprofile_lab.evaluation.tasks import CoauthorTask, LampTask, PopquornTask, Target

__all__ = [
    "CoauthorTask",
    "EvalConfig",
    "LampExample",
    "LampTask",
    "LlamaScorer",
    "NllScore",
    "OpenAIScorer",
    "PopquornTask",
    "ProfileItem",
    "ScoreCache",
    "ScoreRow",
    "Target",
    "bootstrap_mean",
    "cells_summary",
    "detect_format",
    "eval_command",
    "headroom",
    "load_coauthor",
    "load_lamp",
    "load_popquorn",
    "paired_lift",
    "run_command",
    "run_eval",
    "run_loop_command",
    "run_task",
]
