"""Evaluation: does the profile block predict what each user actually wrote? (LaMP, real LM).

Example:
    ```python
    from pathlib import Path
    from langchain_outprofile.evaluation import run_command

    run_command(Path("lamp7_dev.jsonl"), strategies="none,output-profile,bm25-query",
                budgets="200", placement="leading", limit=20, seed=0, out=Path("eval-out"))
    ```
"""

from langchain_outprofile.evaluation.command import eval_command, run_command
from langchain_outprofile.evaluation.data import LampExample, ProfileItem, load_lamp
from langchain_outprofile.evaluation.runner import EvalConfig, ScoreCache, ScoreRow, run_eval
from langchain_outprofile.evaluation.scoring import LlamaScorer, NllScore, OpenAIScorer
from langchain_outprofile.evaluation.stats import bootstrap_mean, paired_lift

__all__ = [
    "EvalConfig",
    "LampExample",
    "LlamaScorer",
    "NllScore",
    "OpenAIScorer",
    "ProfileItem",
    "ScoreCache",
    "ScoreRow",
    "bootstrap_mean",
    "eval_command",
    "load_lamp",
    "paired_lift",
    "run_command",
    "run_eval",
]
