"""App: the ``outprofile`` commands (typer + rich) over one :class:`OutputProfileMemory`.

Global options choose the store (``--path`` for an embedded store, ``--chroma-url`` for a
``chroma run`` server, ``--collection``). Errors a person can act on (a missing file, bad
JSON at line N, an unknown user, a bad option) print one clear line and exit non-zero.

Example:
    ```bash
    outprofile --path ./profiles ingest notes.jsonl --user ana
    outprofile --path ./profiles preview --user ana --max-tokens 300 --explain
    outprofile demo
    ```
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

import langchain_outprofile as outprofile
from langchain_outprofile.cli.files import CliError, read_entries, read_exported
from langchain_outprofile.cli.terminal import visible, visible_json, warnings_as_lines
from langchain_outprofile.errors import MissingExtraError, OutprofileError
from langchain_outprofile.tokens import ApproximateTokenizerWarning
from langchain_outprofile.validation import DEFAULT_COLLECTION, DEFAULT_MAX_TEXT_CHARS

if TYPE_CHECKING:
    from langchain_outprofile.memory import OutputProfileMemory

__all__ = ["LAZY_COMMANDS", "app", "main"]

LAZY_COMMANDS = {
    "demo": ("cli.demo", "run_demo"),
    "serve-model": ("model_server", "run_model_server"),
    "serve": ("model_server", "serve_local_model"),
    "repair": ("store.repair", "repair"),
    "default-path": ("store.clients", "default_path"),  # where repair looks without --path
    "http-client": ("store.clients", "http_client"),  # --chroma-url's client
    "eval": ("outprofile_lab.evaluation.command", "eval_command"),
    "bench": ("outprofile_lab.bench.run", "bench_command"),
    "mcp": ("surfaces.mcp_server", "serve"),
}
"""Commands whose modules load only when the command runs (they pull in the store, the
model or the evaluation), so ``outprofile --help`` stays fast. A module name starting with
``outprofile_lab.`` lives in the sibling distribution ``lab/`` (the evaluation and the
benchmarks), outside the library's wheel. The store commands reach the
memory through the package's lazily loaded names. tests/unit_tests/test_layout.py checks
that these point down the stages too."""

LAB = "outprofile_lab"
"""The sibling distribution (``lab/``) that holds the evaluation and the benchmarks."""

BATCH = 256

# Usage mistakes are click exceptions: of typer's own copy of click (typer >= 0.2x) or of
# click itself (older typer). typer.BadParameter is one in both, so its bases name them.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)

app = typer.Typer(
    name="outprofile",
    help="Keep, inspect and inject users' output profiles (what each user wrote or approved).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class StoreChoice:
    """Which store the commands open (set by the global options)."""

    path: Path | None = None
    chroma_url: str | None = None
    collection: str = DEFAULT_COLLECTION

    def open(self, **settings: Any) -> OutputProfileMemory:
        """The memory over the chosen store (``settings``: more of its keywords)."""
        if self.path is not None and self.chroma_url is not None:
            raise CliError("give either --path or --chroma-url, not both")
        settings["collection_name"] = self.collection
        if self.chroma_url is not None:
            client = _command("http-client")(self.chroma_url)
            return outprofile.OutputProfileMemory.from_client(client, **settings)
        if self.path is not None:
            _check_store_path(self.path)
        return outprofile.OutputProfileMemory.from_path(self.path, **settings)


def _check_store_path(path: Path) -> None:
    """A :class:`CliError` when ``--path`` or a folder above it is a file (Chroma would fail
    with ``File exists`` or ``Not a directory``); a missing directory is created later."""
    where = path.expanduser()
    for place in (where, *where.parents):
        if place.exists():
            if not place.is_dir():
                what = "is a file" if place == where else f"is inside the file {str(place)!r}"
                raise CliError(
                    f"--path {str(path)!r} {what}; pass a directory (it is created if missing)"
                )
            return


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the package's typed errors and file errors into a message and exit code 1."""
    try:
        yield
    except (OutprofileError, OSError) as error:
        _print_error(str(error))
        raise typer.Exit(1) from None


def _print_error(message: str) -> None:
    """One line on stderr, user text printed as text (no rich markup is interpreted; line
    breaks inside the message, e.g. from a file name or a user id, become spaces; control
    characters, e.g. an ESC in a stored user id, show as escapes)."""
    line = visible(" ".join(message.splitlines()))
    Console(stderr=True, soft_wrap=True).print(Text(f"error: {line}", style="bold red"))


def _memory(ctx: typer.Context, max_text_chars: int | None = None) -> OutputProfileMemory:
    choice: StoreChoice = ctx.ensure_object(StoreChoice)
    if max_text_chars is None:
        return choice.open()
    return choice.open(writes=outprofile.WriteOptions(max_text_chars=max_text_chars))


def _known_user(memory: OutputProfileMemory, user_id: str) -> str:
    """``user_id`` if it has entries, else a :class:`CliError` that lists who is stored."""
    if memory.store.count(user_id) > 0:
        return user_id
    users = memory.store.user_ids()
    listed = ", ".join(users[:10]) + (" ..." if len(users) > 10 else "") if users else "none"
    raise CliError(f"no entries stored for user {user_id!r} (users in this store: {listed})")


# -- commands -------------------------------------------------------------------------------


@app.callback()
def choose_store(
    ctx: typer.Context,
    path: Annotated[
        Path | None, typer.Option("--path", help="Directory of the embedded Chroma store.")
    ] = None,
    chroma_url: Annotated[
        str | None, typer.Option("--chroma-url", help="A `chroma run` server: http://host:port.")
    ] = None,
    collection: Annotated[
        str, typer.Option("--collection", help="Collection holding every user.")
    ] = DEFAULT_COLLECTION,
) -> None:
    """Keep, inspect and inject users' output profiles."""
    # Until the command ends: warnings print as one line, without Python's file and source.
    ctx.with_resource(warnings_as_lines())
    # preview and --explain already name the encoding used; the warning would repeat it.
    warnings.simplefilter("ignore", ApproximateTokenizerWarning)
    ctx.obj = StoreChoice(path=path, chroma_url=chroma_url, collection=collection)


ExistingFile = Annotated[Path, typer.Argument(metavar="FILE", help="A JSONL or JSON file (UTF-8).")]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")
]
MaxTextChars = Annotated[
    int | None,
    typer.Option(
        "--max-text-chars",
        min=1,
        help=f"Longest entry text accepted, in characters [default: {DEFAULT_MAX_TEXT_CHARS}].",
    ),
]


def _print_json(value: Any) -> None:
    """``value`` as one JSON document on stdout (non-ASCII kept as is, control characters
    escaped)."""
    typer.echo(visible_json(json.dumps(value, ensure_ascii=False, indent=2, default=str)))


def _progress(label: str, total: int, quiet: bool) -> Progress:
    """A progress bar on stderr (hidden when ``quiet``, e.g. with ``--json``)."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, console=Console(stderr=True), disable=quiet)


@app.command()
def ingest(
    ctx: typer.Context,
    file: ExistingFile,
    user: Annotated[str | None, typer.Option("--user", help="User of every entry.")] = None,
    max_text_chars: MaxTextChars = None,
    as_json: JsonFlag = False,
) -> None:
    """Store entries from JSONL (one entry per line) or a LaMP questions file."""
    with _errors():
        memory = _memory(ctx, max_text_chars)
        entries = read_entries(memory.entry, file, user)
        if not entries:
            raise CliError(f"{file}: no entries found")
        with _progress("storing", len(entries), as_json) as progress:
            task = progress.add_task("store", total=len(entries))
            for start in range(0, len(entries), BATCH):
                memory.add_many(entries[start : start + BATCH])
                progress.advance(task, len(entries[start : start + BATCH]))
        users = {e.user_id for e in entries}
        distinct = len({e.id for e in entries})  # the same text of a user is one entry
        if as_json:
            _print_json({"stored": distinct, "users": len(users)})
        else:
            typer.echo(f"stored {distinct} entries for {len(users)} user(s)")


def _budget(value: int | None) -> int | None:
    """A ``--max-tokens`` below 1 is a usage mistake (exit 2, as the README says), caught
    while the options are parsed, before a store is opened."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be 1 or more (a token budget); got {value}")
    return value


@app.command()
def preview(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Whose block.")],
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", callback=_budget, help="Token budget of the block (>= 1)."),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Prefer this task.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Why each entry was chosen.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the user's profile block exactly as the model will read it."""
    with _errors():
        memory = _memory(ctx)
        selection = memory.select(_known_user(memory, user), max_tokens=max_tokens, task=task)
        if as_json:
            _print_json(_selection_json(selection))
            return
        console = Console()
        title = visible(f"{user}: {len(selection.entries)} entries, {selection.tokens} tokens")
        block = visible(selection.text, keep="\n") or "(empty block)"
        console.print(Panel(Text(block), title=Text(title)))
        if explain:
            console.print(_explain_tables(selection))


_STATS_GROUP = 100  # users per read of ``stats``: a ``$in`` of 100 ids stays a small query


@app.command()
def stats(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="One user; default: all.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Counts per user: entries, selectable, pending, rejected, by signal."""
    with _errors():
        memory = _memory(ctx)
        every = _counted_stats(memory, user, as_json)
        if as_json:
            _print_json([dataclasses.asdict(s) for s in every])
            return
        if not every:
            typer.echo("no profiles stored")
            return
        table = Table("user", "entries", "selectable", "pending", "rejected", "signals")
        for s in every:
            name = s.user_id
            signals = ", ".join(f"{k}={v}" for k, v in sorted(s.by_signal.items()))
            counts = (s.entries, s.selectable, s.pending, s.rejected)
            table.add_row(Text(visible(name)), *map(str, counts), Text(signals))
        Console().print(table)


def _counted_stats(memory: OutputProfileMemory, user: str | None, quiet: bool) -> list[Any]:
    """Each user's stats, with a progress bar on stderr: over 1,401 users ``stats`` printed
    nothing for 17 s. The bar spins while the users are listed, then counts them. Users
    are read :data:`_STATS_GROUP` at a time, a few Chroma reads per group (10,000 users
    took 156 s at two or three reads a user)."""
    with _progress("stats", 0, quiet) as progress:
        task = progress.add_task("users", total=None)
        users = [_known_user(memory, user)] if user else memory.store.user_ids()
        progress.update(task, total=len(users))
        every: list[outprofile.ProfileStats] = []
        for start in range(0, len(users), _STATS_GROUP):
            group = users[start : start + _STATS_GROUP]
            found = memory.store.load_many(group)
            every.extend(outprofile.ProfileStats.of(u, e) for u, e in found.items())
            progress.advance(task, len(group))
    return every


@app.command()
def export(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Whose entries.")],
    out: Annotated[Path | None, typer.Option("--out", help="File (default: stdout).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write everything stored for one user as JSONL (restorable with `import`); with
    --json as one JSON list (also restorable)."""
    with _errors():
        memory = _memory(ctx)
        records = memory.export(_known_user(memory, user))
        lines = "".join(visible_json(json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
        if as_json:
            lines = visible_json(json.dumps(records, ensure_ascii=False, indent=2)) + "\n"
        if out is None:
            typer.echo(lines, nl=False)
        else:
            out.write_text(lines, encoding="utf-8")
            typer.echo(visible(f"wrote {len(records)} entries to {out}"))


@app.command("import")
def import_(
    ctx: typer.Context,
    file: ExistingFile,
    max_text_chars: MaxTextChars = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore entries written by `export`, exactly (all are validated first)."""
    with _errors():
        memory = _memory(ctx, max_text_chars)
        records = read_exported(file, memory.writes.max_text_chars)
        with _progress("importing", len(records), as_json) as progress:
            task = progress.add_task("import", total=len(records))
            count = 0
            for start in range(0, len(records), BATCH):
                count += memory.import_(records[start : start + BATCH])
                progress.advance(task, len(records[start : start + BATCH]))
        if as_json:
            _print_json({"imported": count})
        else:
            typer.echo(f"imported {count} entries")


@app.command()
def forget(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Whose entries to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Then rewrite Chroma's files (see `outprofile purge`), so the user's text "
            "leaves the disk now.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Hard-delete everything stored for one user, in the store and in its repair backups
    (--json implies no question: pass --yes)."""
    with _errors():
        memory = _memory(ctx)
        count = memory.store.count(_known_user(memory, user))
        if as_json and not yes:
            raise CliError("--json asks nothing: add --yes to delete")
        if not yes and not typer.confirm(f"delete all {count} entries of {user!r}?"):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
        deleted = memory.forget(user)
        report = memory.purge() if purge else None
        if as_json:
            done: dict[str, Any] = {"deleted": deleted, "user_id": user}
            if report is not None:
                done["purge"] = dataclasses.asdict(report)
            _print_json(done)
        else:
            typer.echo(f"deleted {deleted} entries of {user!r}")
            if report is not None:
                typer.echo(visible(report.summary()))


@app.command()
def purge(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Rewrite the store's Chroma files so nothing forgotten, deleted or edited away stays
    on disk, and keep only entries.jsonl in repair backups (other processes wait)."""
    with _errors():
        report = _memory(ctx).purge()
        if as_json:
            _print_json(dataclasses.asdict(report))
        elif report.rewritten:
            typer.echo(visible(report.summary()))
        if not report.rewritten:  # a server's files: what was asked for is not done
            if not as_json:
                _print_error(report.summary())
            raise typer.Exit(1)


@app.command()
def expire(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's entries (default: all).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete the entries whose expiry has passed, and tracked outputs left without feedback
    past their pending TTL (neither is ever selected, even before)."""
    with _errors():
        report = _memory(ctx).expire(user)
        if as_json:
            _print_json(
                {"deleted": report.entries, "pending": report.pending, "by_user": report.by_user}
            )
        else:
            whose = f"of {user!r}" if user is not None else f"of {len(report.by_user)} users"
            typer.echo(
                f"deleted {report.entries} expired entries and {report.pending} stale tracked "
                f"outputs {whose}"
            )


@app.command()
def demo(
    as_json: JsonFlag = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Ask the embedded model through its OpenAI-compatible server and ChatOpenAI "
            "(started on a free loopback port and stopped after) instead of in process.",
        ),
    ] = False,
) -> None:
    """An offline run-through: three users, their blocks, one request answered for two."""
    with _errors():
        console = Console(quiet=as_json)
        if serve:
            with _command("serve")(n_threads=1) as served:
                run = _command("demo")(console, served=served)
        else:
            run = _command("demo")(console)
        if as_json:
            _print_json({k: getattr(run, k) for k in ("model", "blocks", "answers", "seconds")})


@app.command()
def repair(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when every check passes.")
    ] = False,
    backup_dir: Annotated[
        Path | None, typer.Option("--backup-dir", help="Where the backup of the store goes.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check the store and, when Chroma cannot read or write it any more (e.g. after a crash
    mid-write), rebuild the collection from the entries it still holds, keeping a backup."""
    with _errors():
        choice: StoreChoice = ctx.ensure_object(StoreChoice)
        if choice.path is not None and choice.chroma_url is not None:
            raise CliError("give either --path or --chroma-url, not both")
        if choice.chroma_url is not None:
            where: Any = _command("http-client")(choice.chroma_url)
        else:
            where = choice.path or _command("default-path")()
        report = _command("repair")(where, choice.collection, backup_dir=backup_dir, force=force)
        if as_json:
            _print_json(dataclasses.asdict(report))
        else:
            typer.echo(report.summary())


@app.command("serve-model")
def serve_model(
    port: Annotated[int, typer.Option("--port", help="Loopback port (0: a free one).")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="llama.cpp CPU threads.")] = 1,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Context length in tokens.")] = 2048,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="cyllama or llama-cpp-python (default: $OUTPROFILE_LOCAL_RUNTIME, else "
            "cyllama when installed).",
        ),
    ] = None,
) -> None:
    """Serve the embedded SmolLM2 as an OpenAI-compatible endpoint on loopback until Ctrl-C,
    and print the variables that point ChatOpenAI (and the examples) at it."""

    def announce(served: Any) -> None:
        typer.echo(f"serving {served.model} at {served.base_url} (pid {served.pid})")
        for name, value in served.environ().items():
            typer.echo(f"export {name}={value}")
        typer.echo(SERVED_LIMIT_NOTE)

    with _errors():
        options: dict[str, Any] = {"n_threads": threads, "n_ctx": n_ctx, "runtime": runtime}
        if port:
            options["port"] = port
        code = _command("serve-model")(announce, **options)
    raise typer.Exit(code)


SERVED_LIMIT_NOTE = (
    "# ChatOpenAI(max_tokens=N) limits answers here: ChatOpenAI sends max_completion_tokens, "
    "which llama-cpp-python ignores, so this server reads it as max_tokens"
)
"""Printed by ``serve-model`` as a shell comment (the lines above it can be eval'd): a plain
llama-cpp-python server would ignore ChatOpenAI's limit; this one does not."""


@app.command("mcp")
def mcp(
    ctx: typer.Context,
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (a host spawns it) or http (streamable).")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="Loopback address for http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port for http (0: a free one).")] = 8000,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Serve this user only: the tools take no user_id."),
    ] = None,
) -> None:
    """Serve the profiles to MCP hosts (the `mcp` extra): get_profile, remember, feedback
    and forget, over stdio or streamable HTTP on loopback."""

    def announce(url: str) -> None:  # stderr: stdout is the protocol's on stdio
        typer.echo(f"serving MCP over streamable HTTP at {url} (Ctrl-C stops)", err=True)

    with _errors():
        options = {"transport": transport, "host": host, "port": port, "user_id": user}
        _command("mcp")(lambda: _memory(ctx), announce=announce, **options)


_FORWARDED: dict[str, Any] = {
    "add_help_option": False,
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
}


@app.command("eval", **_FORWARDED)
def eval_(ctx: typer.Context) -> Any:
    """Score profile strategies by the gold output's NLL (LaMP, CoAuthor, POPQUORN) and write
    report.json, report.md and a plot. `outprofile eval --help` lists the options."""
    return _forward("eval", ctx)


@app.command("bench", **_FORWARDED)
def bench(ctx: typer.Context) -> Any:
    """Time ingest, add, cold and warm select+render and the similarity baseline on synthetic
    users; print a markdown table and write JSON. A quick run: --sizes 1000 --many-entries 0
    --modes embedded. `outprofile bench --help` lists the options."""
    return _forward("bench", ctx)


def _selection_json(selection: Any) -> dict[str, Any]:
    """A selection as JSON: the block, its count, and each chosen and left-out entry."""

    def candidate(c: Any) -> dict[str, Any]:
        fields = ("score", "age_days", "tokens", "cut", "reason")
        return {"entry": c.entry.to_dict(), **{f: getattr(c, f) for f in fields}}

    return {
        "user_id": selection.user_id,
        "text": selection.text,
        "tokens": selection.tokens,
        "encoding": selection.encoding,
        "max_tokens": selection.choice.options.max_tokens,
        "note": selection.choice.note,
        "chosen": [candidate(c) for c in selection.choice.chosen],
        "left_out": [candidate(c) for c in selection.choice.left_out],
        "left_out_total": selection.choice.left_out_total,
    }


def _explain_tables(selection: Any, max_left_out: int = 20) -> Group:
    """``preview --explain`` as tables: why each entry was chosen, and why others were not."""
    options = selection.choice.options
    chosen = Table(
        "#", "signal", "strength", "age (d)", "score", "tokens", "task", "text",
        title=Text(
            f"{len(selection.entries)} entries, {selection.tokens}/{options.max_tokens} tokens "
            f"({selection.encoding}), order={options.order}, fields={options.fields}"
        ),
    )  # fmt: skip
    for n, c in enumerate(selection.choice.chosen, start=1):
        cut = " (cut)" if c.cut else ""
        chosen.add_row(
            str(n), c.entry.signal.value, f"{c.entry.strength:.2f}", f"{c.age_days:.1f}",
            f"{c.score:.3f}", f"{c.tokens}{cut}", Text(visible(c.entry.task or "-")),
            Text(_short(c.entry.text)),
        )  # fmt: skip
    parts: list[Any] = [chosen]
    if selection.choice.note:
        parts.append(Text(visible(f"note: {selection.choice.note}")))
    total = selection.choice.left_out_total
    if total:
        left = Table("text", "reason", title=Text(f"left out: {total}"))
        for c in selection.choice.left_out[:max_left_out]:
            left.add_row(Text(_short(c.entry.text)), Text(visible(c.reason)))
        if total > max_left_out:
            left.caption = f"... and {total - max_left_out} more"
        parts.append(left)
    return Group(*parts)


def _short(text: str, width: int = 60) -> str:
    """``text`` on one line, control characters shown as escapes, cut to ``width``."""
    flat = visible(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _command(name: str) -> Any:
    """The function behind a command of :data:`LAZY_COMMANDS`, its module loaded now."""
    module, attribute = LAZY_COMMANDS[name]
    if not module.startswith(LAB + "."):
        return getattr(import_module(f"{outprofile.__name__}.{module}"), attribute)
    try:
        return getattr(import_module(module), attribute)
    except ModuleNotFoundError as error:
        if error.name != LAB:
            raise
        raise MissingExtraError(
            f"`outprofile {name}` comes with the evaluation and benchmarks distribution: "
            "pip install -e ./lab (from a checkout of langchain-outprofile)"
        ) from None


def _forward(name: str, ctx: typer.Context) -> Any:
    """Run a lazily loaded command with the arguments given after its name."""
    runner = forwarded_app(name)
    return runner(args=list(ctx.args), prog_name=f"outprofile {name}", standalone_mode=False)


def forwarded_app(name: str) -> typer.Typer:
    """The app of one lazily loaded command (``eval``, ``bench``): its function, with the
    first paragraph of its docstring as its help."""
    runner = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    function = _command(name)
    runner.command(name, help=_summary(function.__doc__ or ""))(function)
    return runner


def _summary(docstring: str) -> str:
    """A command's help: its docstring's first paragraph (the rest, Args and a Python
    example, is for readers of the code; ``--help`` lists each option's own help)."""
    return " ".join(docstring.strip().split("\n\n", 1)[0].split())


def main() -> None:
    """The ``outprofile`` entry point: every mistake a person can fix (a missing argument, an
    unknown option, a value of the wrong type, a bad file or store) prints one line on
    stderr naming the fix, never a box or a traceback. With no arguments it prints the help."""
    try:
        result = app(args=sys.argv[1:] or ["--help"], prog_name="outprofile", standalone_mode=False)
    except _USAGE_ERROR as error:
        ctx = getattr(error, "ctx", None)
        command = ctx.command_path if ctx is not None else "outprofile"
        _print_error(f"{_click_message(error).rstrip('.')} (see: {command} --help)")
        sys.exit(2)
    except _CLICK_ERROR as error:
        _print_error(_click_message(error))
        sys.exit(int(getattr(error, "exit_code", 1)))
    except typer.Abort:
        _print_error("aborted; nothing more was done")
        sys.exit(1)
    except OutprofileError as error:  # a command that does not catch the package's own errors
        _print_error(str(error))
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def _click_message(error: Exception) -> str:
    format_message = getattr(error, "format_message", None)
    return str(format_message() if callable(format_message) else error)
