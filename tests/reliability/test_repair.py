"""A store Chroma leaves damaged: a typed error naming the repair, and a repair that rebuilds
every entry from what survives, after a backup.

The damage is made the way a crash or a full disk leaves it: a torn
``index_metadata.pickle`` (reproduced by SIGKILL during 20,000-entry ``add_many`` calls, and
by a full disk), a zeroed index header, or index files gone. The store is written by a
process of its own, so the test process meets the damage as a restarted one does.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.errors import RepairUnfinishedError
from langchain_outprofile.store import profile_store as store_module
from langchain_outprofile.store import repair as repair_module
from langchain_outprofile.store.clients import StoreDamagedError
from langchain_outprofile.store.profile_store import ProfileStore
from langchain_outprofile.store.repair import JOURNAL, MARKER, diagnose, repair
from langchain_outprofile.tokens import OFFLINE_ENCODING

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "repair-me"
USERS = ("ana", "bob", "cy")
_WRITER = textwrap.dedent(
    """
    import sys
    from langchain_outprofile import OutputProfileMemory

    memory = OutputProfileMemory.from_path(sys.argv[1], collection_name=sys.argv[2])
    users = ("ana", "bob", "cy")
    memory.add_many(  # past Chroma's sync threshold (1,000): the vector index is persisted
        [{"text": f"output {i} of {users[i % 3]}", "user_id": users[i % 3], "task": "t"}
         for i in range(1200)]
    )
    memory.add("output 3 of ana", user_id="ana", signal="rejected")
    memory.add("output 4 of bob", user_id="bob", signal="endorsed", metadata={"k": 1})
    memory.record_output("a pending output", user_id="cy", run_id="run-1")
    for i in range(30):  # in Chroma's write log, past the last index persist
        memory.add(f"single {i}", user_id="ana", signal="authored")
    """
)


def _write_store(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Write the store in another process; return every user's export."""
    subprocess.run(
        [sys.executable, "-c", _WRITER, str(path), COLLECTION], check=True, cwd=ROOT, timeout=600
    )
    reader = subprocess.run(
        [sys.executable, "-c", _EXPORTER, str(path), COLLECTION],
        check=True,
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    exports: dict[str, list[dict[str, Any]]] = json.loads(reader.stdout.strip().splitlines()[-1])
    return exports


_EXPORTER = textwrap.dedent(
    """
    import json, sys
    from langchain_outprofile import OutputProfileMemory

    memory = OutputProfileMemory.from_path(sys.argv[1], collection_name=sys.argv[2])
    print(json.dumps({u: memory.export(u) for u in ("ana", "bob", "cy")}))
    """
)


def _vector_dir(path: Path, name: str = COLLECTION) -> Path:
    db = sqlite3.connect(path / "chroma.sqlite3")
    (segment,) = db.execute(
        "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
        "WHERE c.name = ? AND s.scope = 'VECTOR'",
        (name,),
    ).fetchone()
    db.close()
    return path / str(segment)


def _damage(path: Path, how: str, name: str = COLLECTION) -> None:
    folder = _vector_dir(path, name)
    if how == "torn-pickle":  # a persist killed (or out of space) half-way through
        pickle = folder / "index_metadata.pickle"
        data = pickle.read_bytes()
        pickle.write_bytes(data[: len(data) // 2])
    elif how == "zeroed-header":
        (folder / "header.bin").write_bytes(b"\0" * 100)
    else:  # "index-files-gone": every vector lookup fails, counts still work
        for file in folder.iterdir():
            file.unlink()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One store written by another process (copied by each test) and its exports."""
    path = tmp_path_factory.mktemp("written") / "store"
    return path, _write_store(path)


@pytest.fixture
def store(written: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    subprocess.run(["cp", "-a", str(written[0]), str(copy)], check=True)
    return copy


def _exports(memory: OutputProfileMemory) -> dict[str, list[dict[str, Any]]]:
    return {u: sorted(memory.export(u), key=lambda r: str(r["id"])) for u in USERS}


def _sorted(exports: dict[str, Any]) -> dict[str, Any]:
    return {u: sorted(rows, key=lambda r: str(r["id"])) for u, rows in exports.items()}


@pytest.mark.parametrize("how", ["torn-pickle", "zeroed-header", "index-files-gone"])
def test_a_damaged_store_raises_a_typed_error_naming_the_repair(store: Path, how: str) -> None:
    _damage(store, how)
    with pytest.raises(StoreDamagedError, match=r"outprofile --path .* repair") as raised:
        memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)  # open: count
        memory.select("ana")  # first use: vectors
    assert COLLECTION in str(raised.value)
    assert diagnose(store, COLLECTION)  # the repair's check finds it too


@pytest.mark.parametrize("how", ["torn-pickle", "zeroed-header", "index-files-gone"])
def test_repair_rebuilds_every_entry_after_a_backup(
    store: Path, written: tuple[Path, dict[str, Any]], how: str
) -> None:
    _damage(store, how)
    damaged_files = {
        str(f.relative_to(store)): f.read_bytes() for f in _vector_dir(store).iterdir()
    }

    report = repair(store, COLLECTION)

    assert report.damaged and report.repaired and COLLECTION in report.problems
    assert report.entries == 1200 + 1 + 30 and report.users == 3 and report.unreadable == 0
    assert report.backup is not None and (report.backup / JOURNAL).exists()
    for name, data in damaged_files.items():  # what was there, byte for byte
        assert (report.backup / name).read_bytes() == data
    assert not (store / MARKER.format(collection=COLLECTION)).exists()
    memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)
    assert _exports(memory) == _sorted(written[1])  # every field of every entry
    assert "output 3 of ana" not in {e.text for e in memory.select("ana").entries}
    memory.add("written after the repair", user_id="ana")
    assert memory.store.user_ids() == list(USERS)
    assert diagnose(store, COLLECTION) == {}
    assert not repair(store, COLLECTION).damaged  # nothing left to do


def test_entries_only_in_chromas_write_log_are_recovered(
    store: Path, written: tuple[Path, dict[str, Any]]
) -> None:
    """The metadata segment lacks the last writes (applied to it only from the log): the
    repair replays the log's later operations in order."""
    singles = {r["id"] for r in written[1]["ana"] if str(r["text"]).startswith("single 2")}
    db = sqlite3.connect(store / "chroma.sqlite3")
    (segment,) = db.execute(
        "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
        "WHERE c.name = ? AND s.scope = 'METADATA'",
        (COLLECTION,),
    ).fetchone()
    (oldest_in_log,) = db.execute("SELECT min(seq_id) FROM embeddings_queue").fetchone()
    marks = ",".join("?" * len(singles))
    rows = f"SELECT id FROM embeddings WHERE segment_id = ? AND embedding_id IN ({marks})"
    db.execute(f"DELETE FROM embedding_metadata WHERE id IN ({rows})", (segment, *singles))
    db.execute(f"DELETE FROM embeddings WHERE id IN ({rows})", (segment, *singles))
    db.execute(
        "UPDATE max_seq_id SET seq_id = ? WHERE segment_id = ?", (oldest_in_log - 1, segment)
    )
    db.commit()
    db.close()
    _damage(store, "torn-pickle")

    report = repair(store, COLLECTION)

    assert report.from_log >= len(singles) == 11  # single 2, single 20 .. single 29
    memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)
    assert _exports(memory) == _sorted(written[1])


def test_an_interrupted_repair_is_finished_from_its_saved_rows(
    store: Path, written: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the old collection was deleted and half the entries rewritten: the next
    repair folds the signal log, not the half-rebuilt collection."""
    _damage(store, "torn-pickle")
    real_write = store_module.ProfileStore.write_rows

    def half_then_fail(self: Any, entries: Any) -> None:
        real_write(self, list(entries)[: len(entries) // 2])
        raise KeyboardInterrupt("killed in the middle of the rebuild")

    monkeypatch.setattr(store_module.ProfileStore, "write_rows", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        repair(store, COLLECTION)
    assert (store / MARKER.format(collection=COLLECTION)).exists()
    monkeypatch.setattr(store_module.ProfileStore, "write_rows", real_write)

    report = repair(store, COLLECTION)

    assert report.resumed and report.entries == 1231
    memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)
    assert _exports(memory) == _sorted(written[1])


def test_a_healthy_store_is_left_alone(store: Path) -> None:
    before = sorted(p.name for p in store.parent.iterdir())
    report = repair(store, COLLECTION)
    assert not report.damaged and not report.repaired and report.backup is None
    assert report.entries == 1231 and report.users == 3
    assert sorted(p.name for p in store.parent.iterdir()) == before  # no backup taken
    assert "healthy" in report.summary()


def test_a_repair_keeps_what_the_log_holds_not_a_rows_stale_cache(tmp_path: Path) -> None:
    """An entry row keeps only its last writer's fold, as a cache (a racing writer's signal
    may be missing from it); the repair rebuilds every entry from the signal log."""
    path = tmp_path / "store"
    memory = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
    memory.add("Short answer first.", user_id="ana")
    stale = memory.store._collection.get(
        ids=[memory.entry("Short answer first.", user_id="ana").id]
    )
    memory.add("Short answer first.", user_id="ana", signal="rejected")
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    truth = memory.export("ana")
    # the row's cache goes back to before the reject (what a racing writer can leave)
    memory.store._collection.update(ids=stale["ids"], metadatas=stale["metadatas"])
    assert memory.export("ana") == truth  # readers fold the log, not the cache

    report = repair(path, COLLECTION, force=True)

    assert report.repaired and report.entries == 2
    repaired = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
    assert repaired.export("ana") == truth
    assert "Short answer first." not in repaired.select("ana").text


# -- a repair killed mid-rebuild, and an app that goes on -------------------------------------

_KILLED_REPAIR = textwrap.dedent(
    """
    import os, signal, sys
    from langchain_outprofile.store import profile_store
    from langchain_outprofile.store.repair import repair

    # the named step: "rows" (the rebuild has written this many rows) or "bases" (the
    # backup is taken, nothing deleted, the log not yet marked as holding every entry)
    stop_after, step = int(sys.argv[3]), sys.argv[4]
    if step == "bases":
        from langchain_outprofile.store import repair as repair_module

        def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)

        repair_module._add_bases = die
    else:
        store = profile_store.ProfileStore
        name = "write_rows" if hasattr(store, "write_rows") else "replace"  # (before the fix)
        real = getattr(store, name)

        def write_then_die(self, entries):
            real(self, sorted(entries, key=lambda e: (e.user_id, e.id))[:stop_after])
            os.kill(os.getpid(), signal.SIGKILL)

        setattr(store, name, write_then_die)
    repair(sys.argv[1], sys.argv[2], force=True)
    """
)
ANA, BOB = 1000, 200  # sizes at which a kill once left 600 of ana's rows, 0 of bob's


def _two_profiles(memory: OutputProfileMemory) -> None:
    memory.add_many([{"text": f"output {i} of ana", "user_id": "ana"} for i in range(ANA)])
    memory.add_many([{"text": f"output {i} of bob", "user_id": "bob"} for i in range(BOB)])


def _kill_repair(path: Path, stop_after: int = 600, step: str = "rows") -> None:
    """Run a repair in a process of its own that is SIGKILLed at a named step (not a
    timer): after writing ``stop_after`` rows of the rebuild, or before the log holds every
    entry (``step="bases"``); its marker stays."""
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_REPAIR, str(path), COLLECTION, str(stop_after), step],
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert (path / MARKER.format(collection=COLLECTION)).exists()


def _fresh_exports(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every user's export, read by a process that opens the store afresh."""
    reader = subprocess.run(
        [sys.executable, "-c", _EXPORTER, str(path), COLLECTION],
        check=True,
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    exports: dict[str, list[dict[str, Any]]] = json.loads(reader.stdout.strip().splitlines()[-1])
    return exports


def test_a_killed_repair_is_detected_on_open_and_finished_by_the_next(tmp_path: Path) -> None:
    """Before: the store opened on the half-rebuilt collection with no warning (600 of
    ana's 1,000 entries, 0 of bob's 200). Now every way of opening it raises
    ``RepairUnfinishedError`` naming ``outprofile repair``, and the next repair finishes."""
    path = tmp_path / "store"
    _two_profiles(OutputProfileMemory.from_path(path, collection_name=COLLECTION))
    _kill_repair(path)
    named = r"interrupted.*outprofile --path .* repair"

    with pytest.raises(RepairUnfinishedError, match=named):
        OutputProfileMemory.from_path(path, collection_name=COLLECTION, tokens=OFFLINE_ENCODING)
    with pytest.raises(RepairUnfinishedError, match=named):
        ProfileStore(path=path, collection_name=COLLECTION)

    async def open_and_read() -> None:  # the async surface opens the same way
        memory = OutputProfileMemory.from_path(path, collection_name=COLLECTION)
        await memory.aselect("ana")

    with pytest.raises(RepairUnfinishedError, match=named):
        asyncio.run(open_and_read())
    for command in (["stats"], ["export", "--user", "ana"], ["forget", "--user", "bob", "--yes"]):
        store_args = ["--path", str(path), "--collection", COLLECTION]
        cli = subprocess.run(
            [sys.executable, "-m", "langchain_outprofile.cli", *store_args, *command],
            cwd=ROOT,
            timeout=600,
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 1, (command, cli.stdout, cli.stderr)
        assert "interrupted" in cli.stderr and "repair" in cli.stderr, (command, cli.stderr)

    named_command = subprocess.run(  # the command the message names finishes it
        [sys.executable, "-m", "langchain_outprofile.cli", *store_args, "repair", "--json"],
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert named_command.returncode == 0, named_command.stderr
    report = json.loads(named_command.stdout)
    assert report["resumed"] and report["entries"] == ANA + BOB and report["users"] == 2
    assert not (path / MARKER.format(collection=COLLECTION)).exists()
    exports = _fresh_exports(path)
    assert (len(exports["ana"]), len(exports["bob"])) == (ANA, BOB)


@pytest.mark.parametrize("step", ["rows", "bases"])
def test_a_resumed_repair_keeps_what_an_app_wrote_meanwhile(tmp_path: Path, step: str) -> None:
    """An app that opened before the repair goes on after the kill: 50 acknowledged adds
    of ana and a forget of bob. Before: the resumed repair rebuilt from its saved copy,
    losing the 50 adds and bringing bob's 200 entries back. Now it folds the signal log as
    it is then (killed mid-rebuild), or starts over from the store as it is then (killed
    before anything was deleted): ana's 1,050 entries, nothing of bob."""
    path = tmp_path / "store"
    app = OutputProfileMemory.from_path(path, collection_name=COLLECTION, tokens=OFFLINE_ENCODING)
    _two_profiles(app)
    _kill_repair(path, step=step)

    meanwhile = {app.add(f"written meanwhile {i}", user_id="ana").text for i in range(50)}
    app.forget("bob")

    report = repair(path, COLLECTION)

    assert report.resumed
    exports = _fresh_exports(path)
    texts = {str(r["text"]) for r in exports["ana"]}
    assert meanwhile <= texts, f"{len(meanwhile - texts)} of 50 acknowledged writes lost"
    assert len(exports["ana"]) == ANA + 50
    assert exports["bob"] == [], f"{len(exports['bob'])} entries of a forgotten user back"
    fresh = OutputProfileMemory.from_path(path, collection_name=COLLECTION, tokens=OFFLINE_ENCODING)
    assert fresh.store.user_ids() == ["ana"]


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_damaged_log_starts_anew_from_the_rows_and_a_kill_there_loses_nothing(
    store: Path,
    written: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    interrupted: bool,
) -> None:
    """The signal log itself damaged: the repair drops it and starts it anew from every
    row's record (the best left). Killed after dropping it (nothing else deleted), the next
    repair takes the rows from its backup, not from the store (whose log is empty now)."""
    _damage(store, "torn-pickle", f"{COLLECTION}.log")
    assert f"{COLLECTION}.log" in diagnose(store, COLLECTION)
    if interrupted:
        real_add = repair_module._add_bases

        def fail(*args: Any) -> None:
            raise KeyboardInterrupt("killed after the damaged log was dropped")

        monkeypatch.setattr(repair_module, "_add_bases", fail)
        with pytest.raises(KeyboardInterrupt):
            repair(store, COLLECTION)
        monkeypatch.setattr(repair_module, "_add_bases", real_add)

    report = repair(store, COLLECTION)

    assert report.entries == 1231 and report.resumed == interrupted
    memory = OutputProfileMemory.from_path(store, collection_name=COLLECTION)
    assert _exports(memory) == _sorted(written[1])
    assert diagnose(store, COLLECTION) == {}


@pytest.mark.slow  # 20 kills of a real repair process: soak-length
def test_twenty_killed_repairs_lose_nothing_and_restore_nothing(tmp_path: Path) -> None:
    """20 rounds on one store, each a repair SIGKILLed at another step (before the log
    holds every entry, or after 343 to 1,191 rows of the rebuild), then the app (open since
    before the first repair) writes 10 entries for ana and forgets the round's user, and
    the next repair finishes: after every round, 0 acknowledged writes lost, 0 entries of a
    forgotten user back, and every other user as before."""
    path = tmp_path / "store"
    app = OutputProfileMemory.from_path(path, collection_name=COLLECTION, tokens=OFFLINE_ENCODING)
    _two_profiles(app)
    acked = {f"output {i} of ana" for i in range(ANA)}
    others = [f"user{n}" for n in range(20)]
    app.add_many([{"text": f"of {u}", "user_id": u} for u in others])
    for round_ in range(20):
        step = "bases" if round_ % 5 == 0 else "rows"
        _kill_repair(path, stop_after=(round_ * 397) % (ANA + BOB), step=step)
        acked |= {app.add(f"round {round_} write {i}", user_id="ana").text for i in range(10)}
        app.forget(others[round_])

        assert repair(path, COLLECTION).resumed
        exports = _fresh_exports(path)  # ana, bob and cy
        texts = {str(r["text"]) for r in exports["ana"]}
        assert acked <= texts, f"round {round_}: {len(acked - texts)} acknowledged writes lost"
        assert len(exports["bob"]) == BOB
        fresh = OutputProfileMemory.from_path(
            path, collection_name=COLLECTION, tokens=OFFLINE_ENCODING
        )
        assert fresh.store.user_ids() == sorted(["ana", "bob", *others[round_ + 1 :]])
