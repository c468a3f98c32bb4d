"""LAMP edits as a static task: the loader, leave-one-edit-out profiles, and what each
strategy's block may hold (invented writers and paragraphs written here, no LAMP text)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import chromadb
import pytest

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.memory import OutputProfileMemory
from outprofile_lab.evaluation.data import detect_format, load_lamp_edits
from outprofile_lab.evaluation.strategies import EPOCH
from outprofile_lab.evaluation.tasks import (
    EDIT_PROMPT,
    LampEditsTask,
    MovingClock,
    check_strategies,
)

SCENES = {1: "counts gulls at dawn", 2: "paints the stairs red", 3: "writes to her sister"}


def _edit(writer: str, n: int, paragraph: str | None) -> dict[str, object]:
    return {
        "id": f"{writer}_{n}",
        "instruction": f"Write about lighthouse {n}." if paragraph else None,
        "preedit": f"Model paragraph {paragraph or writer + str(n)} about a lighthouse keeper.",
        "postedit": f"{writer} edited {paragraph or n}: the keeper {SCENES[n]}.",
        "paragraph_id": paragraph,
    }


def _write(path: Path) -> Path:
    writers = [
        {"user_id": "A", "edits": [_edit("A", 1, "p1"), _edit("A", 2, "p2"), _edit("A", 3, None)]},
        {"user_id": "B", "edits": [_edit("B", 1, "p1"), _edit("B", 2, "p2")]},
        {"user_id": "C", "edits": [_edit("C", 1, None)]},  # one edit: nothing to hold out
    ]
    path.write_text("".join(json.dumps(w) + "\n" for w in writers), encoding="utf-8")
    return path


@pytest.fixture
def task(tmp_path: Path) -> LampEditsTask:
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=f"t-{uuid.uuid4().hex}",
        clock=MovingClock(EPOCH + 365 * 86_400.0),
    )
    return LampEditsTask(memory, load_lamp_edits(_write(tmp_path / "e.jsonl")), seed=0)


def test_the_loader_and_the_format_are_recognised(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl")
    assert detect_format(path) == "lamp-edits"
    writers = load_lamp_edits(path)
    assert [w.user for w in writers] == ["A", "B", "C"]
    assert writers[0].edits[2].instruction is None and writers[0].edits[2].paragraph_id is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"user_id": "A", "edits": [{"id": "x", "preedit": "p"}]}) + "\n")
    with pytest.raises(InvalidInputError, match="postedit"):
        load_lamp_edits(bad)


def test_every_edit_of_a_writer_with_two_is_a_target_and_the_request_hides_the_edit(
    task: LampEditsTask,
) -> None:
    targets = task.targets()
    assert [t.id for t in targets] == ["le-A/A_1", "le-A/A_2", "le-A/A_3", "le-B/B_1", "le-B/B_2"]
    one = targets[0]
    assert one.user == one.id  # each edit is its own bootstrap unit
    assert one.request.startswith(EDIT_PROMPT) and "Write about lighthouse 1." in one.request
    assert one.gold == "A edited p1: the keeper counts gulls at dawn."
    assert one.gold not in one.request
    assert "Instruction" not in targets[2].request  # no instruction in the data


def test_own_block_leaves_the_target_out_and_input_fields_show_the_model_paragraphs(
    task: LampEditsTask,
) -> None:
    target = task.targets()[0]
    assert task.block(target, "none", "output", 400) == ""
    own = task.block(target, "output-profile", "output", 400) or ""
    assert "A edited p2" in own and "A edited 3" in own and "A edited p1" not in own
    model = task.block(target, "output-profile", "input", 400) or ""
    assert "Model paragraph p2" in model and "edited" not in model
    assert "Model paragraph p1" not in model


def test_other_writer_shows_their_edits_of_other_shared_paragraphs_only(
    task: LampEditsTask,
) -> None:
    targets = task.targets()
    other = task.block(targets[0], "other-writer", "output", 400) or ""
    assert "B edited p2" in other and "B edited p1" not in other and "A edited" not in other
    assert task.block(targets[2], "other-writer", "output", 400) is None  # no shared paragraph
    with pytest.raises(InvalidInputError, match="other-writer"):
        task.block(targets[0], "bm25-query", "output", 400)
    with pytest.raises(InvalidInputError, match="lamp-edits"):
        check_strategies("lamp-edits", ["none", "other-user"])
