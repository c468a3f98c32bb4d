"""Repair: rebuild a collection whose Chroma files are damaged, from what survives of it.

A process killed (or a disk filling up) while embedded Chroma persists its vector index can
leave a store that opens but fails every read and write of a collection ("Failed to apply
logs to the hnsw segment writer", "Error deserializing pickle file"; a known Chroma failure,
reproduced here by SIGKILL and by a full disk). The entries themselves survive elsewhere:
every field of an entry, its text included, is row metadata, which Chroma keeps in SQLite
(the metadata segment, plus the write log for writes not yet applied to it), and style
vectors are recomputed from the text.
So :func:`repair`:

1. finds the damage (every row of the entries, state and log collections is read, vectors
   too);
2. reads every row straight from ``chroma.sqlite3`` (the metadata segment, then the write
   log's later operations replayed in order), without going through Chroma;
3. copies the whole store directory to a backup beside it, with the rows as
   ``entries.jsonl``, and leaves a marker in the store naming it;
4. makes the signal log (``log.py``) hold every entry: a row written before the log
   becomes a base event (when the log itself is damaged, it starts anew with every row's
   record), then marks that phase in the marker;
5. deletes the entries collection (and the state collection, when it is damaged too),
   recreates it, and writes every entry's row back as the log folds *then*, with a
   recomputed vector and a new version;
6. reads everything back, then removes the marker.

Nothing is deleted before step 4 ends, and the log is kept (unless damaged), so a repair
killed anywhere loses nothing: the next :func:`repair` starts over (killed before step 4
ended) or folds the log as it is then (after), which holds whatever an app acknowledged
meanwhile and nothing of a user it forgot. Until then a store refuses to open the
collection (:class:`RepairUnfinishedError`, naming the command). ``outprofile repair`` runs it.
For a server, run it on the server's machine on its ``--path`` directory with the server
stopped; :func:`repair` given an ``HttpClient`` rebuilds from what the server still reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api import ClientAPI
from chromadb.errors import NotFoundError
from langchain_core.embeddings import Embeddings

from langchain_outprofile.embeddings import StyleEmbeddings
from langchain_outprofile.errors import EmbeddingMismatchError, InvalidInputError
from langchain_outprofile.store.clients import (
    REPAIR_MARKER,
    LocationLock,
    StoreDamagedError,
    StoreFullError,
    allocated,
    failure_kind,
    location_lock,
    persistent_client,
    repair_hint,
    repair_marker,
    repairing,
    server_of,
)
from langchain_outprofile.store.log import (
    BASE_AT,
    LOG_SUFFIX,
    Event,
    Fold,
    base_event_id,
    event_metadata,
    events_from,
)
from langchain_outprofile.store.profile_store import (
    _HNSW,
    DEFAULT_COLLECTION,
    SCHEMA_VERSION,
    ProfileStore,
    _fingerprint,
)
from langchain_outprofile.store.purge import record_backup, write_json
from langchain_outprofile.store.rows import LOG_MARK, entries_from
from langchain_outprofile.store.state import STATE_SUFFIX
from langchain_outprofile.types import ProfileEntry

__all__ = ["RepairReport", "diagnose", "repair"]

MARKER = REPAIR_MARKER
"""The marker a repair leaves in the store directory until the rebuild is verified."""
JOURNAL = "entries.jsonl"
_DOCUMENT_KEY = "chroma:document"
_PAGE = 5000
_CHUNK = 1 << 20
_OPERATIONS = {0: "add", 1: "update", 2: "upsert", 3: "delete"}  # Chroma's log operations


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair` found and did.

    Attributes:
        location: the store (a directory, or a server URL).
        collection: the entries collection.
        problems: each damaged collection's name and the failure Chroma gave; empty when
            the store was healthy (and ``resumed`` is False).
        repaired: whether the collection was rebuilt.
        resumed: whether an interrupted repair was finished from its saved rows.
        entries: entries in the collection afterwards (or found, when nothing was done).
        users: users among them.
        from_log: entries recovered from Chroma's write log that its metadata segment lacked.
        unreadable: rows that were not readable entries (an app's documents in a brought
            collection): not folded, written back as they were (vectors recomputed).
        backup: the copy of the store taken first (its ``entries.jsonl`` holds every row).
        seconds: how long the repair took.
    """

    location: str
    collection: str
    problems: dict[str, str]
    repaired: bool
    resumed: bool
    entries: int
    users: int
    from_log: int
    unreadable: int
    backup: Path | None
    seconds: float

    @property
    def damaged(self) -> bool:
        """Whether anything needed repair."""
        return bool(self.problems) or self.resumed

    def summary(self) -> str:
        """A few lines for a person (what the CLI prints)."""
        if not self.damaged and not self.repaired:
            return (
                f"{self.location}: collection {self.collection!r} is healthy "
                f"({self.entries} entries); nothing was changed"
            )
        lines = [f"{self.location}: collection {self.collection!r}"]
        lines += [f"  damaged: {name}: {problem}" for name, problem in self.problems.items()]
        if self.resumed:
            lines.append("  finished an interrupted repair from its saved rows")
        lines.append(
            f"  rebuilt {self.entries} entries of {self.users} users"
            f" ({self.from_log} from Chroma's write log) in {self.seconds:.1f} s"
        )
        if self.unreadable:
            lines.append(
                f"  {self.unreadable} rows that are not entries were written back as they were"
            )
        if self.backup is not None:
            lines.append(f"  backup: {self.backup}")
        return "\n".join(lines)


def diagnose(
    path_or_client: str | Path | ClientAPI, collection_name: str = DEFAULT_COLLECTION
) -> dict[str, str]:
    """Read every row of a collection and its state collection, vectors included, as the
    disk holds them (this process's Chroma state is reloaded first: a healthy index in
    memory can hide torn files), and say which fail and how (empty: healthy). Nothing is
    written."""
    client = _client(path_or_client)
    lock = location_lock(client)
    with lock:
        lock.reload(server_of(client))  # what the disk holds: memory can hide damage
        return _problems(client, collection_name)


def repair(
    path_or_client: str | Path | ClientAPI,
    collection_name: str = DEFAULT_COLLECTION,
    *,
    embeddings: Embeddings | None = None,
    backup_dir: str | Path | None = None,
    force: bool = False,
) -> RepairReport:
    """Rebuild a damaged collection from the entries its store still holds (see the module).

    Args:
        path_or_client: the embedded store's directory, or a chromadb client (for a
            ``PersistentClient`` the rows are read from its directory; for an ``HttpClient``
            through the server, which must still read them).
        collection_name: the entries collection (its ``.state`` collection goes with it).
        embeddings: the embedder the collection was written with, when it is not the
            default :class:`StyleEmbeddings` (vectors are recomputed with it).
        backup_dir: where the backup goes (default: ``<store>.backup-<UTC time>`` beside
            the store directory; for a server, that name in the current directory).
        force: rebuild even when nothing fails (e.g. to compact a store).

    Returns:
        A :class:`RepairReport`; ``report.summary()`` says it for a person.

    Raises:
        StoreFullError: when the disk cannot hold the backup (nothing was changed).
        StoreDamagedError: for a server that cannot read the rows any more.
        EmbeddingMismatchError: when the collection was written with another embedder than
            ``embeddings`` (or the default); nothing was changed.

    Holds the store location's lock throughout, so other processes of the machine wait and
    then reload. Example:

        ```python
        report = repair("./profiles", "outprofile")
        print(report.summary())
        ```
    """
    started = time.monotonic()
    client = _client(path_or_client)
    lock = location_lock(client)
    with lock, repairing(lock, collection_name):
        lock.reload(server_of(client))  # what the disk holds: memory can hide damage
        marker = _marker(lock, collection_name)
        problems = _problems(client, collection_name)
        if marker is None and not problems and not force:
            return _healthy(client, lock, collection_name, started)
        if marker is not None and marker.get("phase") == _LOG_HOLDS_ALL:
            # killed after the log held every entry: rebuild the rows from it, as of now
            collection_meta, from_log = dict(marker["metadata"]), int(marker["from_log"])
            backup, unreadable = Path(marker["backup"]), int(marker["unreadable"])
            embedder = _embedder(collection_name, collection_meta, embeddings)
        else:
            embedder, collection_meta, from_log, backup, unreadable = _into_the_log(
                client, lock, collection_name, problems, marker, embeddings, backup_dir
            )
        entries = _rebuild_from_log(
            client, lock, collection_name, problems, embedder, backup, collection_meta
        )
        _done(lock, collection_name)
    return RepairReport(
        location=lock.location,
        collection=collection_name,
        problems=problems,
        repaired=True,
        resumed=marker is not None,
        entries=len(entries),
        users=len({e.user_id for e in entries}),
        from_log=from_log,
        unreadable=unreadable,
        backup=backup,
        seconds=time.monotonic() - started,
    )


_LOG_HOLDS_ALL = "log"
"""The marker's phase once the signal log holds every entry the rebuild needs."""


def _into_the_log(
    client: ClientAPI,
    lock: LocationLock,
    collection_name: str,
    problems: Mapping[str, str],
    marker: Mapping[str, Any] | None,
    embeddings: Embeddings | None,
    backup_dir: str | Path | None,
) -> tuple[Embeddings | None, dict[str, Any], int, Path, int]:
    """Steps before anything is deleted: read every row, back the store up (the marker
    then names the backup), and make the signal log hold every entry: a row written before
    the log (or every row, when the log itself is damaged and starts anew) becomes a base
    event, added insert-if-absent under the id writers give it. Nothing of the entries
    collection is deleted yet, so a repair killed here starts over from what the store holds
    then (``phase`` is not yet the log's), never from a stale copy. An interrupted repair of
    an earlier release (no phase: it had deleted the collection and the log) resumes from
    its saved rows, as does one whose log this repair had to start anew."""
    saved = marker or {}
    from_journal = marker is not None and ("phase" not in saved or saved.get("from_journal"))
    if from_journal:
        rows, collection_meta, from_log, backup = _saved_rows(saved)
    else:
        rows, collection_meta, from_log = _read_rows(client, lock, collection_name)
    embedder = _embedder(collection_name, collection_meta, embeddings)  # before changes
    if not from_journal:
        backup = _back_up(lock, collection_name, rows, collection_meta, from_log, backup_dir)
    log_name = f"{collection_name}{LOG_SUFFIX}"
    # a log started anew holds nothing: every row's record (a cache, the best left) goes in
    fresh_log = from_journal or log_name in problems or saved.get("fresh_log") is True
    if fresh_log:  # said first: a repair killed from here on starts the log anew again
        said = {"journal": str(backup / JOURNAL), "backup": str(backup), "phase": "backup"}
        _write_marker(lock, collection_name, said | {"fresh_log": True, "from_journal": True})
    if log_name in problems:  # Chroma cannot read it: the rows' caches are the best left
        _drop(client, lock, [log_name])
    bases: list[ProfileEntry] = []
    unreadable = 0
    for row in rows:
        read, _ = _entries([row])
        unreadable += not read
        if read and (fresh_log or _legacy(row)):
            bases.extend(read)
    _add_bases(client, log_name, bases)
    _write_marker(
        lock,
        collection_name,
        {
            "journal": str(backup / JOURNAL),
            "backup": str(backup),
            "phase": _LOG_HOLDS_ALL,
            "metadata": collection_meta,
            "from_log": from_log,
            "unreadable": unreadable,
        },
    )
    return embedder, collection_meta, from_log, backup, unreadable


def _rebuild_from_log(
    client: ClientAPI,
    lock: LocationLock,
    collection_name: str,
    problems: Mapping[str, str],
    embedder: Embeddings | None,
    backup: Path,
    collection_meta: Mapping[str, Any],
) -> list[ProfileEntry]:
    """Delete the entries collection (and the state collection when it is damaged), fold
    the signal log as it is now, write every entry's row back with a recomputed vector,
    renew every version, and read everything back. The log stays: a signal, delete or
    forget an app made meanwhile (a process that opened before the repair) is in it, so
    the rows folded from it keep what was acknowledged and bring back nothing forgotten.
    Rows that are not entries (an app's documents in a brought collection) are written
    back as the backup holds them, into a collection with the metadata it had (its index
    settings included: an app's distance function stays its own)."""
    state_name = f"{collection_name}{STATE_SUFFIX}"
    _drop(client, lock, [collection_name, *([state_name] if state_name in problems else [])])
    if collection_meta:
        client.create_collection(
            collection_name, metadata=dict(collection_meta), embedding_function=None
        )
    store = ProfileStore(client=client, collection_name=collection_name, embeddings=embedder)
    entries = _folded_now(client, collection_name)
    store.write_rows(entries)
    kept = _write_back_others(client, collection_name, store.embeddings, backup)
    left = _problems(client, collection_name)
    if left or store.total() != len(entries) + kept:
        raise StoreDamagedError(
            f"the rebuilt collection {collection_name!r} at {lock.location} still fails "
            f"({left or 'entries are missing'}); run the repair again to finish it"
        )
    return entries


def _write_back_others(
    client: ClientAPI, collection_name: str, embedder: Embeddings, backup: Path
) -> int:
    """Write the rows of the backup's journal that are not entries back as they were (the
    app's documents in a brought collection: this package never deletes them), with
    vectors computed again from their documents by the collection's embedder (the one a
    ``langchain_chroma.Chroma`` shares with the memory; Chroma's SQLite keeps no vectors).
    Returns how many."""
    lines = (backup / JOURNAL).read_text(encoding="utf-8").splitlines()[1:]
    others = [row for line in lines if line and not _entries([row := json.loads(line)])[0]]
    if not others:
        return 0
    collection = client.get_collection(collection_name, embedding_function=None)
    # Chroma takes no empty metadata and no None beside a document in one call: rows go in
    # groups by which of the two they have
    groups: dict[tuple[bool, bool], list[Row]] = {}
    for row in others:
        shape = (bool(row["metadata"]), isinstance(row["document"], str))
        groups.setdefault(shape, []).append(row)
    for (has_metadata, has_document), rows in groups.items():
        for start in range(0, len(rows), _PAGE):
            part = rows[start : start + _PAGE]
            texts = [r["document"] if has_document else "" for r in part]
            fields: dict[str, Any] = {"metadatas": [r["metadata"] for r in part]}
            fields = fields if has_metadata else {}
            if has_document:
                fields["documents"] = texts
            vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
            collection.add(ids=[r["id"] for r in part], embeddings=vectors, **fields)
    return len(others)


def _folded_now(client: ClientAPI, collection_name: str) -> list[ProfileEntry]:
    """Every user's entries as the log folds them now, in (user, id) order."""
    log = client.get_collection(f"{collection_name}{LOG_SUFFIX}", embedding_function=None)
    folds: dict[str, Fold] = {}
    for page in _pages(log, ["metadatas"]):
        for event in events_from(page):
            folds.setdefault(event.user_id, Fold(event.user_id)).add([event])
    entries = [e for fold in folds.values() for e in fold.entries().values() if e.text]
    return sorted(entries, key=lambda e: (e.user_id, e.id))


def _add_bases(client: ClientAPI, log_name: str, bases: list[ProfileEntry]) -> None:
    """Add each entry as a base event (folded before every other event of it), under the
    id every writer gives an entry's base: ``add`` keeps one the log holds already."""
    log = client.get_or_create_collection(
        name=log_name,
        metadata={"outprofile_log": SCHEMA_VERSION, **_HNSW},
        embedding_function=None,
    )
    events = [Event(base_event_id(e.id), e.user_id, e.id, "put", BASE_AT, 0, e) for e in bases]
    for start in range(0, len(events), _PAGE):
        part = events[start : start + _PAGE]
        log.add(
            ids=[e.id for e in part],
            metadatas=[event_metadata(e) for e in part],
            embeddings=np.ones((len(part), 1), dtype=np.float32),
        )


def _legacy(row: Row) -> bool:
    """Whether a row was written before the log (its payload is the entry's base)."""
    return LOG_MARK not in (row["metadata"] or {})


# -- finding damage ---------------------------------------------------------------------------


def _client(path_or_client: str | Path | ClientAPI) -> ClientAPI:
    if isinstance(path_or_client, str | Path):
        return persistent_client(path_or_client)
    if path_or_client is None or not hasattr(path_or_client, "get_settings"):
        raise InvalidInputError(
            f"repair needs a store directory or a chromadb client; got {path_or_client!r}"
        )
    return path_or_client


def _problems(client: ClientAPI, collection_name: str) -> dict[str, str]:
    """Each collection (entries, state, log) whose rows or vectors fail to read, and how."""
    found: dict[str, str] = {}
    names = [collection_name, f"{collection_name}{STATE_SUFFIX}"]
    for name in [*names, f"{collection_name}{LOG_SUFFIX}"]:
        try:
            collection = client.get_collection(name, embedding_function=None)
            collection.count()
            for _ in _pages(collection, ["metadatas", "embeddings"]):
                pass
        except NotFoundError:
            continue
        except Exception as error:
            if failure_kind(error) is None:
                raise
            found[name] = str(error).strip().splitlines()[0][:300]
    return found


def _pages(collection: Any, include: Any) -> Iterator[Any]:
    offset = 0
    while True:
        page = collection.get(include=include, limit=_PAGE, offset=offset)
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])


def _healthy(
    client: ClientAPI, lock: LocationLock, collection_name: str, started: float
) -> RepairReport:
    try:
        collection = client.get_collection(collection_name, embedding_function=None)
        users = {  # rows without a user (an app's, in a brought collection) name none
            u
            for p in _pages(collection, ["metadatas"])
            for m in p["metadatas"]
            if isinstance(u := (m or {}).get("user_id"), str)
        }
        entries = int(collection.count())
    except NotFoundError:
        users, entries = set(), 0
    return RepairReport(
        location=lock.location,
        collection=collection_name,
        problems={},
        repaired=False,
        resumed=False,
        entries=entries,
        users=len(users),
        from_log=0,
        unreadable=0,
        backup=None,
        seconds=time.monotonic() - started,
    )


# -- reading what survives --------------------------------------------------------------------

Row = dict[str, Any]  # {"id", "metadata", "document"}


def _read_rows(
    client: ClientAPI, lock: LocationLock, collection_name: str
) -> tuple[list[Row], dict[str, Any], int]:
    """Every row of the collection, its Chroma metadata, and how many rows came from the
    write log (embedded: straight from SQLite; server: through the API)."""
    if lock.store_dir is not None:
        return _rows_from_sqlite(lock.store_dir / "chroma.sqlite3", collection_name)
    try:
        collection = client.get_collection(collection_name, embedding_function=None)
        rows = [
            {"id": id_, "metadata": dict(meta or {}), "document": doc}
            for page in _pages(collection, ["metadatas", "documents"])
            for id_, meta, doc in zip(
                page["ids"],
                page["metadatas"],
                page["documents"] or [None] * len(page["ids"]),
                strict=True,
            )
        ]
        return rows, dict(collection.metadata or {}), 0
    except Exception as error:
        if failure_kind(error) is None:
            raise
        raise StoreDamagedError(
            f"the server at {lock.location} cannot read collection {collection_name!r} any "
            f"more ({error}); {repair_hint(lock.location, collection_name)}"
        ) from error


def _rows_from_sqlite(database: Path, collection_name: str) -> tuple[list[Row], Any, int]:
    """The collection's rows as Chroma's SQLite holds them: the metadata segment, then every
    later operation of the write log applied in order (upserts and updates merge keys, a
    ``None`` value removes one, as Chroma does)."""
    db = sqlite3.connect(database, timeout=60)
    try:
        found = db.execute(
            "SELECT id FROM collections WHERE name = ? ORDER BY id", (collection_name,)
        ).fetchall()
        if len(found) != 1:
            raise StoreDamagedError(
                f"{database} holds {len(found)} collections named {collection_name!r}; "
                "repair needs exactly one"
            )
        collection_id = found[0][0]
        collection_meta = {
            key: _value(s, i, f, b)
            for key, s, i, f, b in db.execute(
                "SELECT key, str_value, int_value, float_value, bool_value "
                "FROM collection_metadata WHERE collection_id = ?",
                (collection_id,),
            )
        }
        segment = db.execute(
            "SELECT id FROM segments WHERE collection = ? AND scope = 'METADATA'",
            (collection_id,),
        ).fetchone()
        rows: dict[str, Row] = {}
        applied = 0
        if segment is not None:
            for id_, key, s, i, f, b in db.execute(
                "SELECT e.embedding_id, m.key, m.string_value, m.int_value, m.float_value, "
                "m.bool_value FROM embeddings e LEFT JOIN embedding_metadata m ON m.id = e.id "
                "WHERE e.segment_id = ? ORDER BY e.id",
                (segment[0],),
            ):
                row = rows.setdefault(id_, {"id": id_, "metadata": {}, "document": None})
                if key is not None:
                    _set(row, key, _value(s, i, f, b))
            seq = db.execute(
                "SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment[0],)
            ).fetchone()
            applied = int(seq[0]) if seq and seq[0] is not None else 0
        from_log: set[str] = set()
        for operation, id_, metadata in db.execute(
            "SELECT operation, id, metadata FROM embeddings_queue "
            "WHERE topic LIKE ? AND seq_id > ? ORDER BY seq_id",
            (f"%/{collection_id}", applied),
        ):
            _replay(rows, _OPERATIONS.get(operation), id_, metadata)
            from_log.add(id_)
        return list(rows.values()), collection_meta, len(from_log & set(rows))
    except sqlite3.DatabaseError as error:
        raise StoreDamagedError(f"cannot read {database}: {error}") from error
    finally:
        db.close()


def _value(string: Any, integer: Any, real: Any, boolean: Any) -> Any:
    if boolean is not None:
        return bool(boolean)
    if integer is not None:
        return int(integer)
    if real is not None:
        return float(real)
    return string


def _set(row: Row, key: str, value: Any) -> None:
    if key == _DOCUMENT_KEY:
        row["document"] = value
    elif value is None:
        row["metadata"].pop(key, None)
    else:
        row["metadata"][key] = value


def _replay(rows: dict[str, Row], operation: str | None, id_: str, metadata: str | None) -> None:
    if operation == "delete":
        rows.pop(id_, None)
        return
    if operation is None or (operation == "update" and id_ not in rows):
        return
    if operation == "add" and id_ in rows:
        return
    row = rows.setdefault(id_, {"id": id_, "metadata": {}, "document": None})
    for key, value in (json.loads(metadata) if metadata else {}).items():
        _set(row, key, value)


def _entries(rows: list[Row]) -> tuple[list[ProfileEntry], int]:
    """The rows that read as entries (as ``ProfileStore`` reads them), and how many did not."""
    entries: list[ProfileEntry] = []
    unreadable = 0
    for row in rows:
        read = entries_from(
            {"ids": [row["id"]], "metadatas": [row["metadata"]], "documents": [row["document"]]}
        )
        entry = read[0] if read else None  # None: not a row of this package
        if entry is None or not entry.text:
            unreadable += 1
            continue
        entries.append(entry)
    return entries, unreadable


def _embedder(
    collection_name: str, collection_meta: Mapping[str, Any], given: Embeddings | None
) -> Embeddings | None:
    """The embedder to recompute vectors with: the one the collection was written with."""
    written = collection_meta.get("embedding")
    candidate = given or StyleEmbeddings()
    if written is None or written == _fingerprint(candidate)[0]:
        return given
    raise EmbeddingMismatchError(
        f"collection {collection_name!r} was written with embedding={written!r}; pass that "
        "embedder as embeddings= to repair it (its vectors are recomputed); nothing was changed"
    )


# -- backup, rebuild, marker -----------------------------------------------------------------


def _back_up(
    lock: LocationLock,
    collection_name: str,
    rows: list[Row],
    collection_meta: Mapping[str, Any],
    from_log: int,
    backup_dir: str | Path | None,
) -> Path:
    """Copy the store directory (embedded) and write the rows as ``entries.jsonl``; then
    leave the marker naming them in the store. Refuses, changing nothing, when the disk
    cannot hold the copy."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    store_dir = lock.store_dir
    if backup_dir is not None:
        target = Path(backup_dir).expanduser()
    elif store_dir is not None:
        target = store_dir.with_name(f"{store_dir.name}.backup-{stamp}")
    else:
        target = Path.cwd() / f"outprofile-{collection_name}.backup-{stamp}"
    need = sum(len(json.dumps(r)) for r in rows) + (1 << 20)
    if store_dir is not None:
        need += sum(allocated(f.stat()) for f in store_dir.rglob("*") if f.is_file())
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < need:
        raise StoreFullError(
            f"the backup of {lock.location} needs about {need >> 20} MiB at {target.parent}, "
            f"which has {free >> 20} MiB free: nothing was changed; free space, or pass "
            "backup_dir= on another disk"
        )
    if store_dir is not None:
        shutil.copytree(store_dir, target, copy_function=_copy_sparse)
        record_backup(store_dir, target)  # so a forget or purge finds it (store/purge.py)
    else:
        target.mkdir(parents=True)
    journal = target / JOURNAL
    with journal.open("w", encoding="utf-8") as out:
        header = {"collection": collection_name, "metadata": collection_meta, "from_log": from_log}
        out.write(json.dumps({"outprofile_repair": header}) + "\n")
        for row in rows:
            out.write(json.dumps(row) + "\n")
        out.flush()
        os.fsync(out.fileno())
    # the marker names the backup; nothing is deleted before its phase says the log holds all
    _write_marker(
        lock, collection_name, {"journal": str(journal), "backup": str(target), "phase": "backup"}
    )
    return target


def _copy_sparse(source: str, target: str) -> None:
    """``shutil.copy2``, but a sparse file (Chroma's ``link_lists.bin`` can be terabytes of
    holes) is copied extent by extent, holes left as holes."""
    stat = os.stat(source)
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if allocated(stat) >= stat.st_size or seek_data is None or seek_hole is None:
        shutil.copy2(source, target)
        return
    with open(source, "rb") as src, open(target, "wb") as dst:
        position = 0
        while position < stat.st_size:
            try:
                start = os.lseek(src.fileno(), position, seek_data)
            except OSError:  # no data after position
                break
            end = os.lseek(src.fileno(), start, seek_hole)
            src.seek(start)
            dst.seek(start)
            while start < end:
                chunk = src.read(min(_CHUNK, end - start))
                if not chunk:
                    break
                dst.write(chunk)
                start += len(chunk)
            position = end
        dst.truncate(stat.st_size)
    shutil.copystat(source, target)


def _marker(lock: LocationLock, collection_name: str) -> dict[str, Any] | None:
    """What the marker of an interrupted repair of this collection says (None: no marker)."""
    marker = repair_marker(lock, collection_name)
    if marker is None or not marker.exists():
        return None
    found: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
    return found


def _write_marker(lock: LocationLock, collection_name: str, data: Mapping[str, Any]) -> None:
    marker = repair_marker(lock, collection_name)
    if marker is not None:
        write_json(marker, data)


def _saved_rows(marker: Mapping[str, Any]) -> tuple[list[Row], dict[str, Any], int, Path]:
    """The rows an interrupted repair of an earlier release saved (its marker's journal)."""
    journal = Path(marker["journal"])
    lines = journal.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])["outprofile_repair"]
    rows = [json.loads(line) for line in lines[1:] if line]
    return rows, dict(header["metadata"]), int(header["from_log"]), journal.parent


def _drop(client: ClientAPI, lock: LocationLock, names: list[str]) -> None:
    """Delete collections and the segment directories Chroma leaves behind; the Chroma
    state of this process starts anew (other processes reopen by name)."""
    server = server_of(client)
    lock.note_write(server)
    segments = _segment_dirs(lock, names)
    for name in names:
        with contextlib.suppress(NotFoundError):
            client.delete_collection(name)
    for folder in segments:
        shutil.rmtree(folder, ignore_errors=True)
    lock.reload(server)


def _segment_dirs(lock: LocationLock, names: list[str]) -> list[Path]:
    if lock.store_dir is None:
        return []
    db = sqlite3.connect(lock.store_dir / "chroma.sqlite3", timeout=60)
    try:
        found = db.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            f"WHERE c.name IN ({','.join('?' * len(names))})",
            names,
        ).fetchall()
    finally:
        db.close()
    return [lock.store_dir / segment for (segment,) in found if (lock.store_dir / segment).is_dir()]


def _done(lock: LocationLock, collection_name: str) -> None:
    marker = repair_marker(lock, collection_name)
    if marker is not None:
        marker.unlink(missing_ok=True)
