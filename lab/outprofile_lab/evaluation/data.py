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

import gzip
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_outprofile.errors import InvalidInputError

__all__ = [
    "FIELD_MAP",
    "FORMATS",
    "EditWriter",
    "LampExample",
    "ProfileItem",
    "RewritePair",
    "RewriteUser",
    "SuggestionList",
    "TypedSentence",
    "WriterEdit",
    "WritingSession",
    "detect_format",
    "load_coauthor",
    "load_lamp",
    "load_lamp_edits",
    "load_popquorn",
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
        rows = list(_records(source))
    else:
        rows = _official(source, Path(outputs) if outputs else None, task)
    examples = [_example(row, i, task) for i, row in enumerate(rows[:limit] if limit else rows)]
    if not examples:
        raise InvalidInputError(f"no LaMP questions in {source}")
    return examples


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


# -- POPQUORN and CoAuthor -------------------------------------------------------------------

FORMATS = ("lamp", "coauthor", "popquorn", "lamp-edits")


@dataclass(frozen=True)
class RewritePair:
    """One email and one user's rewrite of it (POPQUORN)."""

    input: str
    output: str
    instance_id: str


@dataclass(frozen=True)
class RewriteUser:
    """A POPQUORN user: their (email, rewrite) pairs in file order (the data has no times)."""

    user: str
    pairs: tuple[RewritePair, ...]


@dataclass(frozen=True)
class WriterEdit:
    """One paragraph a model wrote for ``instruction`` (``preedit``) and a writer's edit of it
    (LAMP edits). ``paragraph_id`` names a paragraph several writers edited, else None.

    The closed loop also maps POPQUORN pairs and CoAuthor lists onto this shape
    (``loop_rounds.popquorn_writers``, ``loop_rounds.coauthor_writers``): there
    ``request`` is the round's request, fixed by the dataset; LAMP edits leave it None (the
    loop builds theirs from the instruction)."""

    id: str
    instruction: str | None
    preedit: str
    postedit: str
    paragraph_id: str | None
    request: str | None = None
    feedback: str = "edited"
    """The writer's feedback on the round's output: ``edited`` (``postedit`` is their edit),
    or ``accepted`` / ``rejected`` of the output itself (a CoAuthor list)."""
    candidates: tuple[str, ...] = ()
    """Every candidate shown (a CoAuthor list's non-empty ones, in display order)."""
    chosen: int = -1
    """The accepted candidate's index in ``candidates`` (-1: none)."""
    scorable: bool = True
    """Whether ``postedit`` is scored as a gold: every LAMP edit and POPQUORN rewrite; a
    CoAuthor list only when the static task would take it as a target."""
    t: float = 0.0
    """When the round happened (a CoAuthor list's opening; 0 where the data has no times)."""
    later_edit: str | None = None
    """The writer's later edit of the accepted text (CoAuthor ``edited_to``), fed as
    ``feedback(run_id, edited=...)`` at the first round after ``later_edit_at``."""
    later_edit_at: float = 0.0
    """When ``later_edit`` is known: the end of its session (its own time is not in the data)."""


@dataclass(frozen=True)
class EditWriter:
    """A LAMP-edits writer: their edits in file order (the data has no times). ``dataset``
    names where the edits come from (``lamp-edits``, or ``popquorn`` for a POPQUORN user the
    closed loop maps onto this shape); the loop keys its cache by it."""

    user: str
    edits: tuple[WriterEdit, ...]
    dataset: str = "lamp-edits"


@dataclass(frozen=True)
class SuggestionList:
    """One list of model suggestions shown to a CoAuthor writer.

    ``chosen`` is the index of the accepted candidate (None: not accepted); ``closed_by`` is
    ``select``, ``user`` (dismissed), ``regenerate``, ``replaced`` or ``end``; ``edited_to`` is
    the final-text span the accepted suggestion became when the writer edited it.
    """

    t: float
    context: str
    candidates: tuple[str, ...]
    chosen: int | None
    closed_by: str
    edited_to: str | None = None


@dataclass(frozen=True)
class TypedSentence:
    """A sentence of the final text the writer typed; ``t`` = its latest typed character."""

    t: float
    text: str


@dataclass(frozen=True)
class WritingSession:
    """One CoAuthor writing session: its events sorted by time."""

    writer: str
    session: str
    genre: str
    started_at: float
    events: tuple[SuggestionList | TypedSentence, ...]

    @property
    def ended_at(self) -> float:
        """The time of the last event (when the final text, and its edits, are known)."""
        return max((e.t for e in self.events), default=self.started_at)


def detect_format(path: str | Path) -> str:
    """``lamp``, ``coauthor``, ``popquorn`` or ``lamp-edits``, from the first record's keys.

    Example:
        ```python
        detect_format("../shared/data/popquorn/popquorn_users.jsonl")  # "popquorn"
        ```
    """
    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(f"data file not found: {source}")
    if source.suffix == ".json":
        return "lamp"
    first = next(_records(source), None)
    if not isinstance(first, dict):
        raise InvalidInputError(f"{source}: no JSON object on its first line")
    if {"writer", "events"} <= set(first):
        return "coauthor"
    if {"user", "pairs"} <= set(first):
        return "popquorn"
    if {"user_id", "edits"} <= set(first):
        return "lamp-edits"
    if "profile" in first:
        return "lamp"
    raise InvalidInputError(
        f"{source}: cannot tell the format from keys {sorted(first)}; pass --format "
        f"({', '.join(FORMATS)})"
    )


def load_popquorn(path: str | Path, *, limit: int | None = None) -> list[RewriteUser]:
    """POPQUORN users (``{"user", "pairs": [{"input", "output", "instance_id"}]}`` a line).

    Example:
        ```python
        users = load_popquorn("../shared/data/popquorn/popquorn_users.jsonl", limit=10)
        ```
    """
    users = []
    for number, row in enumerate(_records(Path(path)), start=1):
        if not isinstance(row, dict) or not isinstance(row.get("pairs"), list) or "user" not in row:
            raise InvalidInputError(f"{path}:{number}: expected {{'user', 'pairs': [...]}}")
        pairs = []
        for pair in row["pairs"]:
            missing = [k for k in ("input", "output", "instance_id") if k not in pair]
            if missing:
                raise InvalidInputError(f"{path}:{number}: a pair is missing {missing}")
            if str(pair["output"]).strip() and str(pair["input"]).strip():
                pairs.append(
                    RewritePair(str(pair["input"]), str(pair["output"]), str(pair["instance_id"]))
                )
        users.append(RewriteUser(str(row["user"]), tuple(pairs)))
        if limit and len(users) >= limit:
            break
    if not users:
        raise InvalidInputError(f"no POPQUORN users in {path}")
    return users


def load_lamp_edits(path: str | Path, *, limit: int | None = None) -> list[EditWriter]:
    """LAMP writers' edits (``{"user_id", "edits": [{"id", "instruction", "preedit",
    "postedit", "paragraph_id", ...}]}`` a line; ``instruction`` and ``paragraph_id`` may be
    null).

    Example:
        ```python
        writers = load_lamp_edits("../shared/data/lamp_edits/lamp_edits.jsonl")
        ```
    """
    writers = []
    for number, row in enumerate(_records(Path(path)), start=1):
        if not isinstance(row, dict) or not isinstance(row.get("edits"), list):
            raise InvalidInputError(f"{path}:{number}: expected {{'user_id', 'edits': [...]}}")
        if "user_id" not in row:
            raise InvalidInputError(f"{path}:{number}: a writer is missing 'user_id'")
        edits = []
        for edit in row["edits"]:
            missing = [k for k in ("id", "preedit", "postedit") if not edit.get(k)]
            if missing:
                raise InvalidInputError(f"{path}:{number}: an edit is missing {missing}")
            paragraph, instruction = edit.get("paragraph_id"), edit.get("instruction")
            edits.append(
                WriterEdit(
                    id=str(edit["id"]),
                    instruction=str(instruction) if instruction else None,
                    preedit=str(edit["preedit"]),
                    postedit=str(edit["postedit"]),
                    paragraph_id=str(paragraph) if paragraph else None,
                )
            )
        writers.append(EditWriter(str(row["user_id"]), tuple(edits)))
        if limit and len(writers) >= limit:
            break
    if not writers:
        raise InvalidInputError(f"no LAMP-edits writers in {path}")
    return writers


def load_coauthor(path: str | Path) -> list[WritingSession]:
    """CoAuthor writing sessions (JSONL, optionally gzipped), each writer's by start time.

    Example:
        ```python
        sessions = load_coauthor("../shared/data/coauthor/coauthor_sessions.jsonl.gz")
        ```
    """
    sessions = []
    for number, row in enumerate(_records(Path(path)), start=1):
        missing = [k for k in ("writer", "session", "started_at", "events") if k not in row]
        if missing:
            raise InvalidInputError(f"{path}:{number}: missing {missing}")
        events = tuple(sorted((_event(e, path, number) for e in row["events"]), key=_time))
        sessions.append(
            WritingSession(
                writer=str(row["writer"]),
                session=str(row["session"]),
                genre=str(row.get("genre", "")),
                started_at=float(row["started_at"]),
                events=events,
            )
        )
    if not sessions:
        raise InvalidInputError(f"no CoAuthor sessions in {path}")
    return sorted(sessions, key=lambda s: (s.writer, s.started_at))


def _time(event: SuggestionList | TypedSentence) -> float:
    return event.t


def _event(raw: Any, path: str | Path, number: int) -> SuggestionList | TypedSentence:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "typed":
        return TypedSentence(float(raw["t"]), str(raw["text"]))
    if kind == "suggestions":
        chosen = raw.get("chosen")
        return SuggestionList(
            t=float(raw["t"]),
            context=str(raw.get("context", "")),
            candidates=tuple(str(c) for c in raw["candidates"]),
            chosen=None if chosen is None else int(chosen),
            closed_by=str(raw.get("closed_by", "")),
            edited_to=None if raw.get("edited_to") is None else str(raw["edited_to"]),
        )
    raise InvalidInputError(f"{path}:{number}: unknown event kind {kind!r}")


def _records(path: Path) -> Iterator[Any]:
    """JSON lines of a plain or gzipped file."""
    if not path.is_file():
        raise InvalidInputError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise InvalidInputError(f"{path}:{number}: not JSON ({error.msg})") from None
