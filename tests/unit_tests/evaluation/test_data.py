"""Loaders: JSONL and the official JSON pair, per-task field mapping, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_outprofile.errors import InvalidInputError
from outprofile_lab.evaluation.data import load_lamp, normalize_task, profile_item


def test_jsonl_loads_every_user_with_output_only_items(tiny_lamp7: Path) -> None:
    raw = [json.loads(line) for line in tiny_lamp7.read_text().splitlines()]
    examples = load_lamp(tiny_lamp7)
    assert [e.id for e in examples] == [r["id"] for r in raw]
    first = examples[0]
    assert first.task == "LaMP-7" and not first.has_inputs
    assert [p.output for p in first.profile] == [p["text"] for p in raw[0]["profile"]]
    assert all(p.input == "" for p in first.profile)
    assert first.output == raw[0]["output"] and first.user_id == f"lamp-{raw[0]['id']}"


def test_limit_keeps_the_first_users(tiny_lamp7: Path) -> None:
    assert [e.id for e in load_lamp(tiny_lamp7, limit=2)] == ["t0", "t1"]


def test_official_pair_maps_text_to_input_and_title_to_output(
    tiny_lamp4: tuple[Path, Path],
) -> None:
    questions, outputs = tiny_lamp4
    examples = load_lamp(questions)  # outputs found beside the questions file
    assert [e.task for e in examples] == ["LaMP-4", "LaMP-4"]
    item = examples[0].profile[0]
    raw = json.loads(questions.read_text())[0]["profile"][0]
    assert (item.input, item.output, item.date) == (raw["text"], raw["title"], raw["date"])
    golds = {g["id"]: g["output"] for g in json.loads(outputs.read_text())["golds"]}
    assert {e.id: e.output for e in examples} == golds
    assert examples[0].has_inputs


@pytest.mark.parametrize(
    ("task", "item", "expected"),
    [
        ("LaMP-5", {"abstract": "A", "title": "T"}, ("A", "T")),
        ("LaMP-2", {"description": "D", "tag": "comedy"}, ("D", "comedy")),
        ("LaMP-3", {"text": "R", "score": 4}, ("R", "4")),
        ("LaMP-7", {"text": "tweet"}, ("", "tweet")),
    ],
)
def test_field_map(task: str, item: dict[str, object], expected: tuple[str, str]) -> None:
    mapped = profile_item(task, item)
    assert (mapped.input, mapped.output) == expected


def test_task_names_normalize_and_unknown_tasks_are_refused() -> None:
    assert normalize_task("LaMP_4") == normalize_task("lamp-4") == "LaMP-4"
    with pytest.raises(InvalidInputError, match="unknown LaMP task"):
        normalize_task("LaMP-9")


def test_bad_files_raise_clear_errors(tmp_path: Path, tiny_lamp4: tuple[Path, Path]) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        load_lamp(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(InvalidInputError, match=r"broken.jsonl:2: not JSON"):
        load_lamp(broken)
    lone = tmp_path / "dev_questions.json"
    lone.write_text(tiny_lamp4[0].read_text())
    with pytest.raises(InvalidInputError, match="outputs file not found"):
        load_lamp(lone)
    missing_field = tmp_path / "m.jsonl"
    missing_field.write_text(json.dumps({"id": "1", "task": "LaMP-7", "input": "x"}) + "\n")
    with pytest.raises(InvalidInputError, match=r"missing \['profile', 'output'\]"):
        load_lamp(missing_field)


def test_real_lamp7_dev_file(lamp7_path: Path) -> None:
    lines = [json.loads(line) for line in lamp7_path.read_text().split("\n") if line.strip()]
    examples = load_lamp(lamp7_path)
    assert len(examples) == len(lines)
    assert len({e.user_id for e in examples}) == len(examples)
    assert all(e.task == "LaMP-7" and not e.has_inputs for e in examples)
    first, raw = examples[0], lines[0]
    assert first.input == raw["input"] and first.output == raw["output"]
    assert [p.output for p in first.profile] == [
        p["text"] for p in raw["profile"] if p["text"].strip()
    ]
