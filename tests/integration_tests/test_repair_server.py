"""``repair`` given a server client: the rows come through the server (it must still read
them), the backup is their export, and the rebuilt collection holds every entry."""

from __future__ import annotations

import json
from pathlib import Path

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.store.repair import JOURNAL, diagnose, repair
from tests.conftest import unique_name

pytestmark = pytest.mark.integration


def _exports(memory: OutputProfileMemory) -> dict[str, list[dict[str, object]]]:
    return {u: sorted(memory.export(u), key=lambda r: str(r["id"])) for u in ("ana", "bob")}


def test_a_forced_repair_through_a_server_keeps_every_entry(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    client = chromadb.HttpClient(host=chroma_server[0], port=chroma_server[1])
    name = unique_name("repair")
    memory = OutputProfileMemory.from_client(client, collection_name=name)
    memory.add_many([{"text": f"output {i}", "user_id": ("ana", "bob")[i % 2]} for i in range(300)])
    memory.add("output 2", user_id="ana", signal="rejected")
    before = _exports(memory)
    assert diagnose(client, name) == {}

    report = repair(client, name, force=True, backup_dir=tmp_path / "backup")

    assert report.repaired and not report.problems and report.entries == 300
    assert report.backup == tmp_path / "backup"
    rows = (tmp_path / "backup" / JOURNAL).read_text().splitlines()
    assert len(rows) == 301 and "outprofile_repair" in json.loads(rows[0])
    after = OutputProfileMemory.from_client(client, collection_name=name)
    assert _exports(after) == before
    memory.add("the old memory object reopens the rebuilt collection", user_id="ana")
    assert len(after.export("ana")) == 151
