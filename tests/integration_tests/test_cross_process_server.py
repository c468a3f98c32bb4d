"""Two real processes on one `chroma run` server: the fold loses no acknowledged signal.

The embedded-path variants of these races are in ``tests/reliability/test_cross_process.py``;
the worker is ``tests/reliability/_cross_process_worker.py``.
"""

from __future__ import annotations

from pathlib import Path

import chromadb
import pytest

from langchain_outprofile import OutputProfileMemory, ReadOptions
from tests.conftest import unique_name
from tests.reliability.test_cross_process import (
    SERVER_RACE_TEXTS,
    check_mixed,
    check_race,
    run_pair,
)

pytestmark = pytest.mark.integration


def _memory(server: tuple[str, int], collection: str) -> OutputProfileMemory:
    client = chromadb.HttpClient(host=server[0], port=server[1])
    return OutputProfileMemory.from_client(
        client, collection_name=collection, reads=ReadOptions(cache_ttl_s=0)
    )


def test_two_processes_on_one_server_lose_no_acknowledged_rejection(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    """The rejection race on a server: 6 (then 17) of 150 acknowledged rejections vanished
    when the fold was only serialized within each process."""
    collection = unique_name("race")
    url = f"url:http://{chroma_server[0]}:{chroma_server[1]}"
    reports = run_pair(url, collection, ("reject", "accept"), SERVER_RACE_TEXTS, tmp_path)
    check_race(_memory(chroma_server, collection), reports, SERVER_RACE_TEXTS)


def test_two_processes_on_one_server_run_mixed_operations(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    collection = unique_name("mixed")
    url = f"url:http://{chroma_server[0]}:{chroma_server[1]}"
    reports = run_pair(url, collection, ("mixed-ana", "mixed-bob"), 120, tmp_path)
    check_mixed(_memory(chroma_server, collection), reports)
