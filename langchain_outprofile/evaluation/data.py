"""LaMP loading: the official JSON (questions + outputs files) and the one-file JSONL form.

Each task's profile item maps to an (input, output) pair, so that output-only, input-only
and full blocks mean what they say:

| task | item input | item output |
| --- | --- | --- |
| LaMP-7 | — | ``text`` |
| LaMP-4 | ``text`` | ``title`` |
| LaMP-5 | ``abstract`` | ``title`` |
| LaMP-2 | ``description`` | ``tag`` |
| LaMP-3 | ``text`` | ``score`` |
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_outprofile.errors import InvalidInputError

__all__ = [
    "FIELD_MAP",
    "LampExample",
    "ProfileItem",
    "load_lamp",
    "normalize_task",
    "profile_item",
]

FIELD_MAP: dict[str, tuple[str | None, str]] = {
    "LaMP-7": (None, "text"),
    "LaMP-4": ("text", "title"),
    "LaMP-5": ("abstract", "title"),
    "LaMP-2": ("description", "tag"),
    "LaMP-3": ("text", "score"),
}
_TASK = re.compile(r"lamp[\s_-]*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ProfileItem:
    """One profile item as (input, output); ``input`` is '' where the task has none."""

    output: str
    input: str = ""
    date: str = ""


@dataclass(frozen=True)
class LampExample:
    """One LaMP question: its user's profile, the request and the gold output."""

    id: str
    task: str
    input: str
    output: str
    profile: tuple[ProfileItem, ...]

    @property
    def user_id(self) -> str:
        """A user id for the store (LaMP user splits have one question per user)."""
        return f"lamp-{self.id}"

    @property
    def has_inputs(self) -> bool:
        """Whether this task's profile items carry an input half."""
        return FIELD_MAP[self.task][0] is not None


def normalize_task(task: str) -> str:
    """``'LaMP_7'``, ``'lamp-7'`` or ``'LaMP-7'`` → ``'LaMP-7'``; unknown tasks are an error."""
    match = _TASK.fullmatch(str(task).strip())
    name = f"LaMP-{match.group(1)}" if match else str(task)
    if name not in FIELD_MAP:
        raise InvalidInputError(f"unknown LaMP task {task!r}; expected one of {sorted(FIELD_MAP)}")
    return name


def profile_item(task: str, item: Mapping[str, Any]) -> ProfileItem:
    """Map a raw profile item of ``task`` to (input, output)."""
    input_key, output_key = FIELD_MAP[task]
    if output_key not in item:
        raise InvalidInputError(f"{task} profile item lacks {output_key!r}: keys {sorted(item)}")
    return ProfileItem(
        output=str(item[output_key]),
        input=str(item.get(input_key, "")) if input_key else "",
        date=str(item.get("date", "")),
    )


def load_lamp(
    path: str | Path,
    outputs: str | Path | None = None,
    *,
    task: str | None = None,
    limit: int | None = None,
) -> list[LampExample]:
    """Load LaMP questions from JSONL (one record a line) or the official JSON pair.

    Args:
        path: a ``.jsonl`` file of ``{"id","task","input","profile","output"}`` records, or an
            official ``*_questions.json`` file.
        outputs: the official ``*_outputs.json``; default: ``questions`` → ``outputs`` beside it.
        task: the task when the files do not say it (e.g. ``"LaMP-7"``).
        limit: keep only the first ``limit`` examples.

    Example:
        ```python
        examples = load_lamp("../shared/data/lamp/lamp7_dev.jsonl", limit=50)
        examples[0].profile[0].output
        ```
    """
    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(f"LaMP file not found: {source}")
    if source.suffix == ".jsonl":
        rows = list(_jsonl(source))
    else:
        rows = _official(source, Path(outputs) if outputs else None, task)
    examples = [_example(row, i, task) for i, row in enumerate(rows[:limit] if limit else rows)]
    if not examples:
        raise InvalidInputError(f"no LaMP questions in {source}")
    return examples


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise InvalidInputError(f"{path}:{number}: not JSON ({error.msg})") from None


def _official(path: Path, outputs: Path | None, task: str | None) -> list[dict[str, Any]]:
    questions = _read_json(path)
    if not isinstance(questions, list):
        raise InvalidInputError(f"{path}: the questions file must hold a JSON list")
    outputs = outputs or path.with_name(path.name.replace("questions", "outputs"))
    if outputs == path or not outputs.is_file():
        raise InvalidInputError(f"LaMP outputs file not found: {outputs} (pass outputs=...)")
    gold = _read_json(outputs)
    if not isinstance(gold, dict) or not isinstance(gold.get("golds"), list):
        raise InvalidInputError(f"{outputs}: expected {{'task': ..., 'golds': [...]}}")
    by_id = {str(g["id"]): g["output"] for g in gold["golds"]}
    name = task or gold.get("task")
    rows = []
    for question in questions:
        qid = str(question.get("id"))
        if qid not in by_id:
            raise InvalidInputError(f"{outputs}: no gold output for question id {qid}")
        rows.append({**question, "task": name, "output": by_id[qid]})
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{path}: not JSON ({error.msg})") from None


def _example(row: Any, index: int, task: str | None) -> LampExample:
    if not isinstance(row, dict):
        raise InvalidInputError(f"question {index}: expected an object, got {type(row).__name__}")
    missing = [k for k in ("id", "input", "profile", "output") if k not in row]
    if missing:
        raise InvalidInputError(f"question {index}: missing {missing}")
    name = normalize_task(row.get("task") or task or "")
    if not isinstance(row["profile"], list):
        raise InvalidInputError(f"question {index}: profile must be a list")
    items = tuple(profile_item(name, item) for item in row["profile"])
    return LampExample(
        id=str(row["id"]),
        task=name,
        input=str(row["input"]),
        output=str(row["output"]),
        profile=tuple(i for i in items if i.output.strip()),
    )
