"""Purge: make forgotten, deleted and superseded text leave the files of an embedded store.

A ``forget``, a ``delete`` or an edit removes rows through Chroma's API, so no read finds
the text again. Chroma's files keep it for a while (docs/reliability.md, "Privacy: what
stays on disk", measured by grepping every file):

- **Chroma's write log** (``embeddings_queue`` in ``chroma.sqlite3``) holds every write's
  metadata, the text included, until each collection's vector index persists (every
  ``sync_threshold`` writes, 1,000 by default); only then does Chroma purge it.
- **Freed SQLite pages** keep the bytes of deleted rows until SQLite reuses the page or the
  file is rebuilt (``VACUUM``).
- **The full-text index** (``embedding_fulltext_search``, only with ``documents=True``)
  keeps a deleted document's tokens in its segments until they are merged.
- **Backups** ``outprofile repair`` made (``<store>.backup-<UTC time>`` beside the store,
  or a ``--backup-dir`` it recorded) hold a copy of the store and its rows as
  ``entries.jsonl``.

:func:`purge_store` rewrites what must be rewritten, with Chroma's own mechanisms where
there is one: under the location lock (every process of the machine waits, then reloads),
each collection's vector index is made to persist by lowering its ``sync_threshold`` to 1
for one write (Chroma then purges its log up to what every segment holds), the threshold is
set back, and with this process's Chroma stopped the full-text index is optimized and the
database vacuumed (what ``chroma utils vacuum`` does after its own log purge).
:func:`scrub_backups` drops the named users' and entries' rows from every known backup's
``entries.jsonl`` and removes the backup's copied Chroma files (the copy of a store that
may be damaged cannot be rewritten safely; its ``entries.jsonl`` stays the recoverable
form, which is what a resumed repair reads). A ``chroma run`` server's files are the
server's: the purge cannot rewrite them (see :data:`SERVER_NOTE`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import sqlite3
import struct
import time
import uuid
import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from langchain_outprofile.store.clients import LocationLock, server_of
from langchain_outprofile.store.log import LOG_SUFFIX
from langchain_outprofile.store.profile_store import ProfileStore
from langchain_outprofile.store.state import STATE_SUFFIX

__all__ = [
    "BACKUPS_FILE",
    "PURGE_MARKER",
    "SERVER_NOTE",
    "PurgeReport",
    "known_backups",
    "purge",
    "purge_store",
    "record_backup",
    "scrub",
    "scrub_backups",
    "write_json",
]

JOURNAL = "entries.jsonl"
"""The rows of a backup (``store/repair.py`` writes it)."""
BACKUPS_FILE = "outprofile-backups.txt"
"""In the store directory: every backup directory a repair of the store made, one a line
(those beside the store, ``<store>.backup-*``, are found without it)."""
PURGE_MARKER = "outprofile-purge.json"
"""In the store directory while a purge runs: each collection's own ``sync_threshold``, so a
purge killed before setting them back has the next one restore them."""
SERVER_NOTE = (
    "a `chroma run` server keeps its own files: stop the server and run `outprofile --path "
    "<its --path directory> purge` on its machine (or `chroma utils vacuum --path <dir> "
    "--force` after 1,000 writes of each collection have persisted its vector index)"
)
_PURGE_ID = "outprofile-purge-{}"  # the row written and deleted to make an index persist:
# a fresh id each time, so a document of an app's brought collection is never overwritten
_SQLITE = "chroma.sqlite3"
_FTS = "embedding_fulltext_search"


@dataclass(frozen=True)
class PurgeReport:
    """What :func:`purge_store` did.

    Attributes:
        location: the store (a directory, ``ephemeral`` or a server URL).
        rewritten: whether Chroma's files were rewritten (False for a server, whose files
            are not this process's, and for the in-memory store, which has none).
        log_rows: rows of Chroma's write log before and after.
        size: bytes of ``chroma.sqlite3`` before and after.
        backups: backup directories whose copied Chroma files were removed.
        note: what is left to do, when anything is (for a server: what its operator runs).
        seconds: how long it took.
    """

    location: str
    rewritten: bool
    log_rows: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)
    backups: list[Path] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        """One or two lines for a person (what ``outprofile purge`` prints)."""
        if not self.rewritten:
            return f"{self.location}: nothing rewritten: {self.note}"
        line = (
            f"{self.location}: purged Chroma's write log ({self.log_rows[0]} -> "
            f"{self.log_rows[1]} rows) and vacuumed chroma.sqlite3 ({self.size[0]} -> "
            f"{self.size[1]} bytes) in {self.seconds:.1f} s"
        )
        if self.backups:
            line += f"; copied Chroma files removed from {len(self.backups)} backups"
        return line


def purge(store: ProfileStore) -> PurgeReport:
    """:func:`purge_store` for a :class:`ProfileStore` (what ``memory.purge()`` runs).

    Example:
        ```python
        purge(ProfileStore(path="./profiles")).summary()
        ```
    """
    return purge_store(
        store.client, store._location, store.collection_name, dimension=store._dimension
    )


def scrub(
    store: ProfileStore,
    *,
    users: Collection[str] = (),
    entries: Mapping[str, Collection[str]] | None = None,
) -> int:
    """:func:`scrub_backups` of a :class:`ProfileStore`'s backups, under its location's lock
    (a repair writing a backup, or another process scrubbing, waits). Nothing to do, and
    no lock taken, when nothing is named or the store has no directory."""
    lock = store._location
    if lock.store_dir is None or not (users or any((entries or {}).values())):
        return 0
    with lock:
        return scrub_backups(lock.store_dir, store.collection_name, users=users, entries=entries)


def purge_store(
    client: Any,
    lock: LocationLock,
    collection_name: str,
    *,
    dimension: int,
) -> PurgeReport:
    """Rewrite an embedded store's Chroma files so nothing deleted stays in them (see the
    module), and strip every known backup of this collection down to its ``entries.jsonl``.

    Args:
        client: the store's chromadb client.
        lock: its location's lock (held throughout: other processes wait, then reload).
        collection_name: the entries collection (its log and state collections go too).
        dimension: the entries collection's vector size (a row is written to make its
            index persist).

    Returns:
        A :class:`PurgeReport`; for a server or the in-memory store nothing is rewritten
        and ``note`` says why (for a server: what its operator runs).

    Example:
        ```python
        store = ProfileStore(path="./profiles")
        purge_store(store.client, location_lock(store.client), "outprofile", dimension=512)
        ```
    """
    started = time.monotonic()
    if lock.store_dir is None:
        note = "the in-memory store keeps no files" if lock.location == "ephemeral" else ""
        return PurgeReport(lock.location, False, note=note or SERVER_NOTE)
    database = lock.store_dir / _SQLITE
    server = server_of(client)
    names = {
        collection_name: dimension,
        f"{collection_name}{LOG_SUFFIX}": 1,
        f"{collection_name}{STATE_SUFFIX}": 1,
    }
    with lock:
        lock.note_write(server)  # every other Chroma state of the store reloads after this
        before = (_log_rows(database), database.stat().st_size)
        _persist_indexes(client, lock, names)
        server.stop()
        try:
            _rewrite_sqlite(database)
            _zero_unused_slots(lock.store_dir)
        finally:
            server.start()
        lock.reload(server)
        stripped = strip_backups(lock.store_dir, collection_name)
        after = (_log_rows(database), database.stat().st_size)
    return PurgeReport(
        lock.location,
        True,
        log_rows=(before[0], after[0]),
        size=(before[1], after[1]),
        backups=stripped,
        seconds=time.monotonic() - started,
    )


def _persist_indexes(client: Any, lock: LocationLock, names: Mapping[str, int]) -> None:
    """Make each collection's vector index persist now, so Chroma purges its write log:
    its ``sync_threshold`` goes to 1 (recorded first in a marker), Chroma reloads, a row
    is written and deleted, and the threshold goes back to what it was."""
    assert lock.store_dir is not None
    marker = lock.store_dir / PURGE_MARKER
    collections = {name: client.get_collection(name, embedding_function=None) for name in names}
    own = _thresholds(marker, collections)
    write_json(marker, own)
    _set_thresholds(collections, dict.fromkeys(own, 1))
    lock.reload(server_of(client))  # Chroma reads the threshold when it opens an index
    for name, size in names.items():
        collection = client.get_collection(name, embedding_function=None)
        row = _PURGE_ID.format(uuid.uuid4().hex)
        collection.add(
            ids=[row],
            embeddings=np.zeros((1, size), dtype=np.float32) + 1.0,
            metadatas=[{"outprofile_purge": True}],
        )
        collection.delete(ids=[row])
    _set_thresholds(collections, own)
    lock.reload(server_of(client))
    marker.unlink(missing_ok=True)


def _thresholds(marker: Path, collections: Mapping[str, Any]) -> dict[str, int]:
    """Each collection's own ``sync_threshold``: from the marker a killed purge left, else
    from the collection's configuration."""
    if marker.exists():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads(marker.read_text(encoding="utf-8"))
            if isinstance(saved, dict) and set(saved) == set(collections):
                return {k: int(v) for k, v in saved.items()}
    found: dict[str, int] = {}
    for name, collection in collections.items():
        hnsw = (collection.configuration_json or {}).get("hnsw") or {}
        found[name] = int(hnsw.get("sync_threshold") or 1000)
    return found


def _set_thresholds(collections: Mapping[str, Any], values: Mapping[str, int]) -> None:
    for name, collection in collections.items():
        # chromadb's client reads the configuration back and warns that the collection has
        # no embedding function of its own (by design: the package embeds every write)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            collection.modify(configuration={"hnsw": {"sync_threshold": values[name]}})


def _rewrite_sqlite(database: Path) -> None:
    """With Chroma stopped in this process (and every other process of the machine waiting
    on the lock): merge the full-text index's segments, so deleted documents' tokens go,
    and rebuild the file, so no freed page keeps a deleted row's bytes."""
    db = sqlite3.connect(database, timeout=60, isolation_level=None)
    try:
        db.execute("PRAGMA secure_delete = ON")
        fts = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_FTS,)
        ).fetchone()
        if fts is not None:
            db.execute(f"INSERT INTO {_FTS}({_FTS}) VALUES ('optimize')")
        db.execute("VACUUM")
    finally:
        db.close()


# header.bin of Chroma's hnswlib: a format version (int32 1), then size_t offsetLevel0,
# max_elements, cur_element_count, size_data_per_element, ...
_HEADER = struct.Struct("<iQQQQ")
_LENGTH_SLOT = 4  # length.bin: one float32 per element slot


def _zero_unused_slots(store_dir: Path) -> None:
    """Zero the element slots past ``cur_element_count`` in each vector index's
    ``data_level0.bin`` and ``length.bin``. hnswlib allocates them for ``max_elements``
    without clearing and persists them whole, so they carry whatever the process's heap
    held before: measured, a ``length.bin`` held the JSON metadata (the text included) of
    a deleted entry. No reader looks past ``cur_element_count``; file sizes stay as they
    are. A header of another layout is left alone."""
    for header in store_dir.glob("*/header.bin"):
        try:
            version, _, max_elements, count, per_element = _HEADER.unpack_from(header.read_bytes())
        except (OSError, struct.error):
            continue
        if version != 1 or not 0 <= count <= max_elements:
            continue
        for name, size in (("data_level0.bin", per_element), ("length.bin", _LENGTH_SLOT)):
            _zero_from(header.with_name(name), count * size, max_elements * size)


def _zero_from(path: Path, start: int, expected: int) -> None:
    """Overwrite ``path`` with zeros from ``start`` to its end, when it is ``expected``
    bytes long (else it is not the layout this reads, and it is left alone)."""
    try:
        if path.stat().st_size != expected or start >= expected:
            return
        with path.open("r+b") as out:
            out.seek(start)
            left = expected - start
            while left:
                chunk = min(left, 1 << 20)
                out.write(bytes(chunk))
                left -= chunk
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        return


def _log_rows(database: Path) -> int:
    db = sqlite3.connect(database, timeout=60)
    try:
        return int(db.execute("SELECT count(*) FROM embeddings_queue").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0
    finally:
        db.close()


# -- backups ---------------------------------------------------------------------------------


def record_backup(store_dir: Path, backup: Path) -> None:
    """Note a backup directory of the store (:func:`known_backups` then finds it wherever
    it is)."""
    with (store_dir / BACKUPS_FILE).open("a", encoding="utf-8") as out:
        out.write(str(backup.resolve()) + "\n")
        out.flush()
        os.fsync(out.fileno())


def known_backups(store_dir: Path, collection_name: str) -> list[Path]:
    """Every backup of ``collection_name`` a repair of the store made that still exists:
    ``<store>.backup-*`` beside it, and the directories :func:`record_backup` noted."""
    beside = glob.glob(glob.escape(str(store_dir)) + ".backup-*")
    noted: list[str] = []
    with contextlib.suppress(OSError):
        noted = (store_dir / BACKUPS_FILE).read_text(encoding="utf-8").splitlines()
    found: list[Path] = []
    for name in dict.fromkeys([*beside, *(n for n in noted if n)]):
        folder = Path(name)
        if _collection_of(folder / JOURNAL) == collection_name:
            found.append(folder)
    return found


def _collection_of(journal: Path) -> str | None:
    """The collection a backup's journal is of (None: not a backup's journal)."""
    try:
        with journal.open(encoding="utf-8") as lines:
            header = json.loads(lines.readline()).get("outprofile_repair", {})
    except (OSError, ValueError, AttributeError):
        return None
    name = header.get("collection") if isinstance(header, dict) else None
    return name if isinstance(name, str) else None


def scrub_backups(
    store_dir: Path | None,
    collection_name: str,
    *,
    users: Collection[str] = (),
    entries: Mapping[str, Collection[str]] | None = None,
) -> int:
    """Remove from every known backup of the collection the rows of ``users`` (a forget)
    and the rows ``entries`` names (user -> entry ids: a delete, an edit), and strip each
    backup that held any of them down to its ``entries.jsonl`` (its copied Chroma files
    hold the text in ways no row-level rewrite reaches). Call it holding the location
    lock. Returns how many rows went.

    Example:
        ```python
        scrub_backups(Path("./profiles"), "outprofile", users={"ana"})
        ```
    """
    if store_dir is None:
        return 0
    named = {(u, i) for u, ids in (entries or {}).items() for i in ids}
    removed = 0
    for backup in known_backups(store_dir, collection_name):
        dropped = _scrub_journal(backup / JOURNAL, set(users), named)
        if dropped:
            _strip(backup)
        removed += dropped
    return removed


def strip_backups(store_dir: Path, collection_name: str) -> list[Path]:
    """Remove the copied Chroma files of every known backup of the collection (each keeps
    its ``entries.jsonl``); returns the backups that had any."""
    return [b for b in known_backups(store_dir, collection_name) if _strip(b)]


def _scrub_journal(journal: Path, users: set[str], named: set[tuple[str, str]]) -> int:
    """Rewrite a backup's journal without the rows of ``users`` and the ``named``
    (user, entry id) rows, atomically; returns how many rows went."""
    kept: list[str] = []
    dropped = 0
    for n, line in enumerate(_lines(journal)):
        if n and line.strip() and _matches(line, users, named):
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        partial = journal.with_name(journal.name + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            out.writelines(kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, journal)
    return dropped


def _lines(journal: Path) -> Iterator[str]:
    with journal.open(encoding="utf-8") as lines:
        yield from lines


def _matches(line: str, users: set[str], named: set[tuple[str, str]]) -> bool:
    try:
        row = json.loads(line)
    except ValueError:
        return False
    metadata = row.get("metadata") if isinstance(row, dict) else None
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return isinstance(user, str) and (user in users or (user, row.get("id")) in named)


def _strip(backup: Path) -> bool:
    """Delete everything in a backup but its journal; whether anything was there."""
    found = False
    for item in backup.iterdir():
        if item.name == JOURNAL:
            continue
        found = True
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
    return found


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` whole or not at all (a marker a killed process
    leaves is either the old one or the new one): a synced partial file, then a rename."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        out.write(json.dumps(data))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
