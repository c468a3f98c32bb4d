"""A pinned thread across processes: two worker processes serving one thread send the same
leading block, byte for byte, while feedback lands between their turns; on one embedded
store (``PersistentClient``) and on a ``chroma run`` server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.tokens import OFFLINE_ENCODING
from tests.conftest import unique_name

TURN = """
import json, sys
import chromadb
from langchain_outprofile import OutputProfileMemory
mode, where, collection, thread, run_id = sys.argv[1:6]
if mode == "path":
    client = chromadb.PersistentClient(path=where)
else:
    host, port = where.split(":")
    client = chromadb.HttpClient(host=host, port=int(port))
memory = OutputProfileMemory.from_client(client, collection_name=collection, tokens="{encoding}")
block = memory.select("ana", thread_id=thread).text
memory.record_output("Answer of run " + run_id, user_id="ana", run_id=run_id)
print(json.dumps(block))
""".replace("{encoding}", OFFLINE_ENCODING)


def _turn(mode: str, where: str, collection: str, thread: str) -> tuple[str, str]:
    """One turn of ``thread`` in a new process: its leading block and its run id."""
    run = str(uuid.uuid4())
    done = subprocess.run(
        [sys.executable, "-c", TURN, mode, where, collection, thread, run],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), run


def _conversation(mode: str, where: str, client: Any) -> None:
    collection = unique_name("pinned")
    memory = OutputProfileMemory.from_client(
        client, collection_name=collection, tokens=OFFLINE_ENCODING
    )
    memory.add("Short answer first.", user_id="ana")
    blocks = []
    for _ in range(4):  # turns alternate between fresh processes; feedback after each
        block, run = _turn(mode, where, collection, "thread-1")
        blocks.append(block)
        memory.feedback(run, "endorsed")
    assert blocks == [blocks[0]] * 4 and "Short answer first." in blocks[0]
    new_thread, _ = _turn(mode, where, collection, "thread-2")
    assert new_thread != blocks[0] and "Answer of run" in new_thread


def test_processes_on_one_embedded_store_send_one_pinned_block(tmp_path: Path) -> None:
    where = str(tmp_path / "store")
    client = chromadb.PersistentClient(path=where)
    _conversation("path", where, client)


@pytest.mark.integration
def test_processes_on_one_server_send_one_pinned_block(chroma_server: tuple[str, int]) -> None:
    host, port = chroma_server
    _conversation("server", f"{host}:{port}", chromadb.HttpClient(host=host, port=port))
