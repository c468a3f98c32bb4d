"""Two Python processes on one real Chroma server: writes cross over within the cache TTL.

The reader reports, for every read, how long after the start of its caching read it began.
A read that began less than ``cache_ttl_s`` after that start is certainly a cache hit (the
cache entry is younger than the TTL), so it must still show the old block; the first read
that shows the write must come no later than the TTL plus a generous margin for a loaded
machine. Neither assertion depends on scheduling luck.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique_name
from tests.integration_tests._two_process_worker import FIRST, LONG_TTL_S, SECOND

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("_two_process_worker.py")
TTL_S = 1.5
MARGIN_S = 10.0
REPO = str(Path(__file__).resolve().parents[2])


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _expect(process: subprocess.Popen[str], line: str) -> str:
    assert process.stdout is not None
    got = process.stdout.readline().strip()
    assert got == line or line == "*", f"worker said {got!r}, expected {line!r}"
    return got


def _send(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def _run(host: str, port: int) -> dict[str, Any]:
    collection = unique_name("twoproc")
    writer = _spawn("writer", host, str(port), collection)
    reader: subprocess.Popen[str] | None = None
    try:
        _expect(writer, "ready")
        reader = _spawn("reader", host, str(port), collection, str(TTL_S))
        _expect(reader, "cached")
        _send(writer, "go")
        _expect(writer, "written")
        _send(reader, "check")
        report: dict[str, Any] = json.loads(_expect(reader, "*"))
        assert writer.wait(timeout=60) == 0
        assert reader.wait(timeout=60) == 0
        return report
    finally:
        for process in (writer, reader):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def report(chroma_server: tuple[str, int]) -> dict[str, Any]:
    """One writer/reader round on the shared server (both tests read its report)."""
    return _run(*chroma_server)


def test_a_write_in_one_process_reaches_the_others_select_within_the_ttl(
    report: dict[str, Any],
) -> None:

    assert report["cached"] == {"short": [FIRST], "long": [FIRST]}
    polls = report["polls"]
    for poll in polls:
        if poll["since_cache_s"] < TTL_S:
            assert poll["texts"] == [FIRST], "a cache younger than the TTL served a fresh read"
    seen = [p for p in polls if SECOND in p["texts"]]
    assert seen, f"the write never became visible to the other process: {polls}"
    assert seen[0]["texts"] == sorted([FIRST, SECOND])
    assert seen[0]["since_cache_s"] >= TTL_S
    assert seen[0]["since_cache_s"] <= TTL_S + MARGIN_S


def test_a_long_ttl_keeps_serving_the_cached_block_until_it_expires(
    report: dict[str, Any],
) -> None:

    long = report["long"]
    assert long["since_cache_s"] < LONG_TTL_S, "the machine stalled longer than the long TTL"
    assert long["texts"] == [FIRST]
