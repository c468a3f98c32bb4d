"""Evaluation: does the profile block predict what each user actually wrote? (real LM).

Three tasks: LaMP (query-free profile vs BM25), CoAuthor (preference signals vs a similarity
memory of every output, with the writers' histories replayed in time order) and POPQUORN
(outputs vs inputs as the profile).

Example:
    ```python
    from pathlib import Path
    from langchain_outprofile.evaluation import run_command

    run_command(Path("lamp7_dev.jsonl"), strategies="none,output-profile,bm25-query",
                budgets="200", placement="leading", limit=20, seed=0, out=Path("eval-out"))
    ```
"""

from langchain_outprofile.evaluation.command import eval_command, run_command
from langchain_outprofile.evaluation.data import (
    LampExample,
    ProfileItem,
    detect_format,
    load_coauthor,
    load_lamp,
    load_popquorn,
)
from langchain_outprofile.evaluation.report import cells_summary, headroom
from langchain_outprofile.evaluation.runner import (
    EvalConfig,
    ScoreCache,
    ScoreRow,
    run_eval,
    run_task,
)
from langchain_outprofile.evaluation.scoring import LlamaScorer, NllScore, OpenAIScorer
from langchain_outprofile.evaluation.stats import bootstrap_mean, paired_lift
from langchain_outprofile.evaluation.tasks import CoauthorTask, LampTask, PopquornTask, Target

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
    "run_task",
]
