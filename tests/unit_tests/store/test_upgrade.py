"""Upgrade in place: a store written before the signal log opens and keeps every entry and
signal; new signals fold on top of the old rows, in every process alike.

The test writes the old store itself, row by row, as the release before the log wrote it
(row format 2: the folded record in the ``e`` payload, no log collection), so it does not
depend on an old release being installed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from langchain_outprofile import OutputProfileMemory, StyleEmbeddings
from langchain_outprofile.store.log import LOG_SUFFIX, base_event_id
from langchain_outprofile.store.profile_store import ProfileStore
from langchain_outprofile.store.state import state_id
from langchain_outprofile.tokens import OFFLINE_ENCODING
from langchain_outprofile.types import ProfileEntry, Signal


def _old_row(entry: ProfileEntry) -> dict[str, Any]:
    """The metadata the release before the log wrote for an entry."""
    payload = entry.to_dict()
    del payload["id"], payload["user_id"]
    payload["signals"] = ",".join(payload["signals"])
    meta: dict[str, Any] = {
        "user_id": entry.user_id,
        "e": json.dumps(payload),
        "pending": entry.pending,
    }
    if entry.run_id:
        meta["run_id"] = entry.run_id
    if entry.pending:
        meta["updated_at"] = float(entry.updated_at)
    return meta


def _write_old_store(path: Path, name: str, entries: list[ProfileEntry]) -> None:
    embeddings = StyleEmbeddings()
    client = chromadb.PersistentClient(
        path=str(path), settings=Settings(anonymized_telemetry=False)
    )
    collection = client.create_collection(
        name,
        metadata={
            "outprofile_schema": 2,
            "embedding": embeddings.fingerprint,
            "dimension": embeddings.dimension,
            "outprofile_versioned": True,
            "hnsw:space": "cosine",
        },
        embedding_function=None,
    )
    collection.add(
        ids=[e.id for e in entries],
        metadatas=[_old_row(e) for e in entries],
        embeddings=embeddings.embed_array([e.text for e in entries]),
    )
    state = client.create_collection(
        f"{name}.state", metadata={"outprofile_state": 2}, embedding_function=None
    )
    users = sorted({e.user_id for e in entries})
    state.add(
        ids=[state_id("v", u) for u in users],
        metadatas=[{"user_id": u, "version": uuid.uuid4().hex, "emptied": False} for u in users],
        embeddings=np.ones((len(users), 1), dtype=np.float32),
    )
    assert f"{name}{LOG_SUFFIX}" not in [c.name for c in client.list_collections()]


def _old_entries() -> list[ProfileEntry]:
    endorsed = ProfileEntry.create("Short answer first.", user_id="ana", signal="endorsed")
    twice = endorsed.merged_with(
        ProfileEntry.create("Short answer first.", user_id="ana", signal="accepted")
    )
    return [
        twice,
        ProfileEntry.create("Bullets, no fluff.", user_id="ana", task="email"),
        ProfileEntry.create("Never this.", user_id="ana", signal="rejected"),
        ProfileEntry.create("Cheers, Bob", user_id="bob", signal="accepted"),
        ProfileEntry.create(
            "A tracked answer.", user_id="ana", signal="pending", run_id="run-before-the-log"
        ),
    ]


def _export(memory: OutputProfileMemory, user: str) -> dict[str, dict[str, Any]]:
    return {r["text"]: r for r in memory.export(user)}


@pytest.mark.parametrize("eager_rows", [512, 0], ids=["one-read", "paged"])
def test_a_store_written_before_the_log_keeps_every_entry_and_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eager_rows: int
) -> None:
    # paged: a big profile's load reads rows by id only where they hold a base
    monkeypatch.setattr(ProfileStore, "eager_rows", eager_rows)
    old = _old_entries()
    _write_old_store(tmp_path / "store", "profiles", old)
    memory = OutputProfileMemory.from_path(
        tmp_path / "store", collection_name="profiles", tokens=OFFLINE_ENCODING
    )
    for user in ("ana", "bob"):
        want = {e.text: e.to_dict() for e in old if e.user_id == user}
        assert _export(memory, user) == want
    assert {e.text for e in memory.select("ana").entries} == {
        "Short answer first.",
        "Bullets, no fluff.",
    }


def test_new_signals_fold_on_top_of_old_rows_in_every_process(tmp_path: Path) -> None:
    _write_old_store(tmp_path / "store", "profiles", _old_entries())
    memory = OutputProfileMemory.from_path(
        tmp_path / "store", collection_name="profiles", tokens=OFFLINE_ENCODING
    )
    stored = memory.add("Short answer first.", user_id="ana", signal="endorsed")
    # 0.88 before (endorsed, accepted), one more endorsement: 1 - 0.12 * 0.2
    assert stored.strength == pytest.approx(1 - 0.12 * 0.2)
    assert stored.signals == (Signal.ENDORSED, Signal.ACCEPTED, Signal.ENDORSED)
    # the old record was copied into the log before its row was rewritten
    assert memory.store._log.get(ids=[base_event_id(stored.id)], include=[])["ids"]
    memory.add(
        "Never this.", user_id="ana", signal="endorsed"
    )  # an approval after the old reject lifts it
    fresh = OutputProfileMemory.from_path(
        tmp_path / "store", collection_name="profiles", tokens=OFFLINE_ENCODING
    )
    assert _export(fresh, "ana") == _export(memory, "ana")
    assert _export(fresh, "ana")["Short answer first."]["strength"] == pytest.approx(0.976)
    assert "Never this." in fresh.select("ana").text
    assert fresh.select("ana").text == memory.select("ana").text


def test_a_run_tracked_before_the_log_still_takes_feedback(tmp_path: Path) -> None:
    _write_old_store(tmp_path / "store", "profiles", _old_entries())
    memory = OutputProfileMemory.from_path(
        tmp_path / "store", collection_name="profiles", tokens=OFFLINE_ENCODING
    )
    assert "A tracked answer." not in memory.select("ana").text
    assert memory.feedback("run-before-the-log", "endorsed").text == "A tracked answer."
    assert "A tracked answer." in memory.select("ana").text
