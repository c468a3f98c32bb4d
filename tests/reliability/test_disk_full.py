"""A full disk: a 6 MiB tmpfs, small enough to fill mid-write. A write that fails for
lack of space raises :class:`StoreFullError`, no acknowledged entry is lost, reads go on,
and the store takes writes again once space returns.

Mounting needs the privilege (root, or CAP_SYS_ADMIN): without it the tests skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.store.clients import LocationLock, StoreFullError
from langchain_outprofile.store.repair import repair

FILLER = " and a few more words to take some room on the disk" * 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs at ``tmp_path / 'disk'`` (unmounted, lazily, afterwards)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount: Path) -> None:
    """Space returns: the tmpfs grows to 64 MiB."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)


def _fill(memory: OutputProfileMemory) -> tuple[list[str], BaseException]:
    """Write batches of 50 until one fails; the ids acknowledged and the failure."""
    acked: list[str] = []
    for i in range(10_000):
        items = [{"text": f"entry {i}.{k}{FILLER}", "user_id": "ana"} for k in range(50)]
        try:
            acked += [e.id for e in memory.add_many(items)]
        except Exception as error:
            return acked, error
    raise AssertionError("a 6 MiB disk never filled")


def _all_there(memory: OutputProfileMemory, acked: list[str]) -> None:
    exported = {r["id"] for r in memory.export("ana")}
    missing = set(acked) - exported
    assert not missing, f"{len(missing)} acknowledged entries lost"


def test_a_full_disk_refuses_the_write_and_the_store_works_when_space_returns(
    small_disk: Path,
) -> None:
    memory = OutputProfileMemory.from_path(small_disk / "store", collection_name="full")
    acked, failure = _fill(memory)

    assert isinstance(failure, StoreFullError), repr(failure)
    assert acked, "nothing fit on the disk at all"
    _all_there(memory, acked)  # reads go on while the disk is full
    assert memory.select("ana", max_tokens=300).entries  # a snapshot it cannot save is skipped

    _grow(small_disk)
    memory.add("written once space returned", user_id="ana")
    fresh = OutputProfileMemory.from_path(small_disk / "store", collection_name="full")
    _all_there(fresh, acked)
    assert "written once space returned" in {r["text"] for r in fresh.export("ana")}


_CHECK = textwrap.dedent(
    """
    import json, sys
    from langchain_outprofile import OutputProfileMemory
    from langchain_outprofile.store.clients import StoreDamagedError

    try:
        memory = OutputProfileMemory.from_path(sys.argv[1], collection_name="full")
        memory.select("ana")
        memory.add("written once space returned", user_id="ana")
        print(json.dumps(sorted(r["id"] for r in memory.export("ana"))))
    except StoreDamagedError as error:
        print(json.dumps({"damaged": str(error)}))
    """
)


def _check_in_a_new_process(store: Path) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, str(store)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_when_chroma_itself_runs_out_of_space_the_error_is_typed_and_repair_recovers(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the check before each write (another process may fill the disk between the
    check and the write), Chroma meets ENOSPC itself and can tear its index files: the error
    is still typed, and after space returns a restarted process can use the store, through
    the repair when Chroma left it damaged."""
    monkeypatch.setattr(LocationLock, "check_space", lambda self, call: None)
    store = small_disk / "store"
    memory = OutputProfileMemory.from_path(store, collection_name="full")
    acked, failure = _fill(memory)

    assert isinstance(failure, StoreFullError), repr(failure)
    _grow(small_disk)
    found = _check_in_a_new_process(store)
    if isinstance(found, dict):  # {"damaged": message}
        assert "repair" in found["damaged"]
        report = repair(store, "full")
        assert report.repaired, report.summary()
        found = _check_in_a_new_process(store)
    assert isinstance(found, list)
    missing = set(acked) - set(found)
    assert not missing, f"{len(missing)} acknowledged entries lost"
