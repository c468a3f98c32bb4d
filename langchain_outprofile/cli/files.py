"""Reading the CLI's input files: JSONL entries, exported records, and LaMP question files.

Every problem names the file and the line (or list item) to fix; nothing is written here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from langchain_outprofile.errors import InvalidInputError, OutprofileError
from langchain_outprofile.types import ProfileEntry

__all__ = [
    "ENTRY_FIELDS",
    "CliError",
    "read_entries",
    "read_exported",
    "read_records",
    "read_text",
]

ENTRY_FIELDS = frozenset(
    {"text", "user_id", "signal", "rating", "task", "source_input", "created_at", "metadata"}
)


class CliError(OutprofileError):
    """A problem the person running the command can fix; printed without a traceback."""


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) pairs of a JSONL file, or of a JSON file holding a list.

    Raises:
        CliError: naming the line of the first malformed record.

    Example:
        ```python
        read_records(Path("entries.jsonl"))[0]  # (1, {"text": "...", "user_id": "ana"})
        ```
    """
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise CliError(f"{path}: not valid JSON at line {error.lineno}: {error.msg}") from None
        except ValueError as error:
            raise CliError(f"{path}: not usable JSON: {str(error)[:120]}") from None
        pairs = list(enumerate(items, start=1))
        where = "item"
    else:
        pairs = [(n, _json_line(path, n, line)) for n, line in _lines(text)]
        where = "line"
    for n, item in pairs:
        if not isinstance(item, dict):
            raise CliError(f"{path}: {where} {n} must be a JSON object; got {type(item).__name__}")
    return pairs


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a leading BOM dropped), or a :class:`CliError` naming
    what is wrong with it.

    Line ends are kept as they are: text mode's newline translation would turn a lone
    carriage return (JSON whitespace inside a record) into a line break.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise CliError(f"{path} is a directory; pass a JSONL or JSON file") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CliError(
            f"{path}: not UTF-8 text (line {line}, byte {error.start}); "
            "save it as UTF-8 and try again"
        ) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines and their numbers. JSONL lines end at ``\n`` only: a record may hold
    U+0085, U+2028 or a lone ``\r`` inside a string, which ``str.splitlines`` would split."""
    for n, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield n, line.removesuffix("\r")


def _json_line(path: Path, n: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise CliError(f"{path}: line {n} is not valid JSON: {error.msg}") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise CliError(f"{path}: line {n} is not usable JSON: {str(error)[:120]}") from None


def read_entries(
    build: Callable[..., ProfileEntry], path: Path, user_id: str | None
) -> list[ProfileEntry]:
    """Validated entries of a JSONL/JSON file of entries or of LaMP question records.

    An entry is ``{text, user_id?, signal?, rating?, task?, source_input?, created_at?,
    metadata?}``. A LaMP record (``{id, input, profile: [{text, ...}], ...}``) becomes one
    authored entry per profile item, for the user named by the record's ``id``. ``user_id``,
    when given, is the user of every entry.

    Example:
        ```python
        entries = read_entries(memory.entry, Path("lamp7_dev.jsonl"), user_id=None)
        ```
    """
    entries: list[ProfileEntry] = []
    for n, record in read_records(path):
        try:
            items = (
                _lamp_items(record, user_id)
                if "profile" in record
                else [_entry_fields(record, user_id)]
            )
            entries += [build(**item) for item in items]
        except (InvalidInputError, TypeError) as error:
            raise CliError(f"{path}: line {n}: {error}") from None
    return entries


def _entry_fields(record: Mapping[str, Any], user_id: str | None) -> dict[str, Any]:
    unknown = sorted(set(record) - ENTRY_FIELDS)
    if unknown:
        raise InvalidInputError(f"unknown field(s) {unknown}; allowed: {sorted(ENTRY_FIELDS)}")
    fields = dict(record)
    fields["user_id"] = user_id or fields.get("user_id")
    if not fields["user_id"]:
        raise InvalidInputError("no user_id in the entry; pass --user or add a user_id field")
    return fields


def _lamp_items(record: Mapping[str, Any], user_id: str | None) -> list[dict[str, Any]]:
    profile = record["profile"]
    owner = user_id or record.get("id")
    if not isinstance(profile, list) or owner in (None, ""):
        raise InvalidInputError("a LaMP record needs an 'id' and a 'profile' list")
    items = []
    for item in profile:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise InvalidInputError("every LaMP profile item needs a 'text' string")
        meta = {"source": "lamp", "lamp_record": str(record.get("id", ""))}
        if item.get("id") is not None:
            meta["lamp_item"] = str(item["id"])
        items.append({"text": item["text"], "user_id": str(owner), "metadata": meta})
    return items


def read_exported(path: Path, max_chars: int) -> list[dict[str, Any]]:
    """Records written by ``outprofile export``, each checked before anything is imported.

    Raises:
        CliError: naming the line of the first record that is not a valid export record.

    Example:
        ```python
        memory.import_(read_exported(Path("ana.jsonl"), memory.writes.max_text_chars))
        ```
    """
    pairs = read_records(path)
    for n, record in pairs:
        try:
            ProfileEntry.from_dict(record, max_chars)
        except InvalidInputError as error:
            raise CliError(f"{path}: line {n}: {error}") from None
    return [record for _, record in pairs]
