"""Clients: which Chroma a store talks to, and the one lock per store location.

Opening an embedded store on a path, a ``chroma run`` server by URL, and where the store
lives by default. Every store object on one location shares one :class:`LocationLock`:

- in one process, a reentrant thread lock (embedded Chroma fails a read that races another
  thread's write: "Error finding id"; docs/reliability.md);
- across the processes of one machine, a file lock: ``outprofile.lock`` inside the store
  directory of a ``PersistentClient`` (the in-process ``EphemeralClient`` needs none; a
  ``chroma run`` server none at all: it orders its own calls). Every wait for it is bounded
  (``LocationLock.timeout_s``), and only the store's owner can open the file.

Each embedded process keeps Chroma's vector index in memory, so a write by another process
leaves it stale even when the writes are serialized (its reads then fail with "Error finding
id", and its next persist overwrites the other's). The lock file therefore also holds a
*generation*, bumped by every hold that writes; a process whose Chroma state is older than
the generation reloads it from disk before its next call. :class:`GuardedCollection` wraps a
collection so that every call goes through that check, and turns Chroma's failures of a
damaged store or a full disk into :class:`StoreDamagedError` / :class:`StoreFullError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import shutil
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
import httpx
from chromadb.api import ClientAPI
from chromadb.config import Settings
from chromadb.errors import ChromaError, NotFoundError
from filelock import lock_descriptor, unlock_descriptor
from platformdirs import user_data_dir

from langchain_outprofile.errors import (
    InvalidInputError,
    RepairUnfinishedError,
    StoreBusyError,
    StoreDamagedError,
    StoreFullError,
    StoreUnavailableError,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "DEFAULT_RETRY_S",
    "LOCK_FILE",
    "LOCK_TIMEOUT_ENV",
    "REPAIR_MARKER",
    "AsyncGuardedCollection",
    "GuardedCollection",
    "LocationLock",
    "RepairUnfinishedError",
    "Retries",
    "StoreDamagedError",
    "StoreFullError",
    "allocated",
    "check_no_unfinished_repair",
    "checked_retry_s",
    "default_path",
    "failure_kind",
    "http_client",
    "location_lock",
    "persistent_client",
    "repair_marker",
    "repairing",
    "server_of",
    "typed_failure",
    "unreachable",
]

LOCK_FILE = "outprofile.lock"
"""The lock file inside a ``PersistentClient``'s store directory."""
LOCK_TIMEOUT_ENV = "OUTPROFILE_LOCK_TIMEOUT_S"
"""The longest wait for a store directory's lock, in seconds (default 30)."""
DEFAULT_LOCK_TIMEOUT_S = 30.0
"""How long a call waits for a lock another process (or thread) holds before it raises
:class:`StoreBusyError`: far longer than any hold (one Chroma call, or one batch of a long
write), far shorter than forever, which is what a frozen holder would cost."""

_LOCKS: dict[str, LocationLock] = {}
_LOCKS_GUARD = threading.Lock()
# The lock file's record: the generation, and 1 while a hold is changing the store (a holder
# killed in the middle leaves the 1 behind, so the next holder reloads everything).
_RECORD = struct.Struct("<QQ")
# After the record: the pid of the process that took the lock last (0: unknown), so a process
# that waits too long can say who holds it.
_HOLDER = struct.Struct("<Q")
_POLL_S = 0.002  # how often a process waiting for the lock file tries again
_PAUSE_S = 0.005  # between the batches of a long write, so waiting processes get a turn
_HANDOFF_S = 1.0  # longest wait for a waiting thread to take the lock between batches
_MIB = 1 << 20
# Chroma's messages of a store whose segment files are damaged, lower case: a torn index
# file from a crash or a full disk, which only the repair mends.
_DAMAGE_SIGNS = (
    "failed to apply logs",
    "error constructing hnsw segment reader",
    "error creating hnsw segment reader",
    "error loading hnsw index",
    "error deserializing pickle",
    "error finding id",
    "error getting embedding",
)
_FULL_SIGNS = ("database or disk is full", "no space left on device", "os error 28")
# A server's read that races another client's write can fail this way for a moment (its
# metadata already holds a row its vector reader does not yet): retried, not a damage.
_TRANSIENT_SIGNS = ("error finding id",)
_RETRIES_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
DEFAULT_RETRY_S = 10.0
"""How long a store's call waits, in all, for a server it cannot reach (one restarting takes a
few seconds) before it raises :class:`StoreUnavailableError`."""
_DOWN_PAUSES_S = (0.05, 1.0)  # the first pause while a server is unreachable, and the longest
# The request never reached the server: any call may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Calls whose repeat is the same call landing a moment later: reads, insert-if-absent ``add``
# (a retried event has the same id: store/log.py), deletes by id or by filter, and opening a
# collection. ``upsert`` and ``update`` are not: a repeat after a broken response could land
# after another client's write of the same row and undo it (a profile version coming back,
# which readers take for "nothing changed"), so they are retried only when unsent.
_REPEATABLE = frozenset({"get", "count", "add", "delete", "open"})


def transient(error: BaseException, location: str) -> bool:
    """Whether a failed call of a server is worth retrying (see ``_TRANSIENT_SIGNS``)."""
    message = str(error).lower()
    return location.startswith("http") and any(sign in message for sign in _TRANSIENT_SIGNS)


def unreachable(error: BaseException) -> bool:
    """Whether a call failed because the connection to the server failed (refused, reset,
    closed before the response: a server restarting, or down), not inside Chroma."""
    return isinstance(error, httpx.TransportError)


class Retries:
    """When a failed Chroma call is tried again: the one retry rule of every store call.

    - A server's read racing another client's write ("Error finding id", see
      ``_TRANSIENT_SIGNS``): the short fixed pauses of ``_RETRIES_S``.
    - A server that cannot be reached (:func:`unreachable`): pauses from 0.05 s doubling to
      1 s, until ``within_s`` passed since the first failure, for a call whose repeat is
      safe (``_REPEATABLE``, or any call whose request was never sent).

    Args:
        location: the store's location (:func:`location_of`).
        method: the Chroma call (``get``, ``add``, ..., ``open``).
        within_s: the longest wait for an unreachable server, in all.
    """

    def __init__(self, location: str, method: str, within_s: float) -> None:
        self.location = location
        self.method = method
        self.within_s = within_s
        self.waited_s = 0.0
        self._races = iter(_RETRIES_S)
        self._next_s = _DOWN_PAUSES_S[0]
        self._started: float | None = None

    def pause(self, error: BaseException) -> float | None:
        """Seconds to wait before trying again after ``error``; None: raise it."""
        if transient(error, self.location):
            return next(self._races, None)
        if not unreachable(error) or not self.repeatable(error):
            return None
        now = time.monotonic()
        if self._started is None:
            self._started = now
        # the pauses and the time the attempts took both count
        left = self.within_s - max(self.waited_s, now - self._started)
        if left <= 0:
            return None
        pause = min(self._next_s, left)
        self._next_s = min(2 * self._next_s, _DOWN_PAUSES_S[1])
        self.waited_s += pause
        return pause

    def repeatable(self, error: BaseException) -> bool:
        """Whether sending this call again after ``error`` is safe (see ``_REPEATABLE``)."""
        return self.method in _REPEATABLE or isinstance(error, _NOT_SENT)

    def failure(self, error: BaseException) -> StoreUnavailableError:
        """The typed error of a call that failed to reach the server (:func:`unreachable`)."""
        what = f"{type(error).__name__}: {_first_line(error)}"
        if not self.repeatable(error):
            return StoreUnavailableError(
                f"the connection to the Chroma server at {self.location} broke during a "
                f"{self.method} ({what}): the write may or may not have been applied and was "
                "not sent again (a repeat could undo another client's later write); nothing "
                "was acknowledged. Check that the server runs and answers "
                f"{self.location}/api/v2/heartbeat, then retry the call"
            )
        return StoreUnavailableError(
            f"the Chroma server at {self.location} did not answer a {self.method} "
            f"({what}), retried for {self.waited_s:.1f} s: nothing this call wrote was "
            "acknowledged. Check that the server runs (`chroma run --path ... --port ...`) and "
            f"answers {self.location}/api/v2/heartbeat from this machine (host, port, "
            "firewall, proxy), and its log; a memory waits longer with a larger retry_s"
        )


def checked_retry_s(value: float | None) -> float:
    """A store's ``retry_s``: ``value`` checked, or :data:`DEFAULT_RETRY_S`.

    Raises:
        InvalidInputError: not a finite number of seconds >= 0.
    """
    if value is None:
        return DEFAULT_RETRY_S
    return _seconds("retry_s", value)


def _seconds(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInputError(f"{name} must be a finite number of seconds >= 0; got {value!r}")
    return float(value)


def default_path() -> Path:
    """Where the embedded store lives when no ``path`` or ``client`` is given."""
    return Path(user_data_dir("langchain-outprofile", appauthor=False)) / "chroma"


def persistent_client(path: str | Path, *, lock_timeout_s: float | None = None) -> ClientAPI:
    """An embedded ``PersistentClient`` on ``path`` with telemetry off. A new directory is
    made owner-only (0700): whoever can open its lock file can stop every process of the
    store (and read the entries).

    Args:
        path: the store directory (made if missing).
        lock_timeout_s: the bound of the directory's lock in this process
            (:meth:`LocationLock.bound`).

    Raises:
        StoreUnavailableError: when ``path`` is a file, or cannot be created.
        StoreBusyError: another process held the directory's lock past the bound.
    """
    where = Path(path).expanduser()
    if where.exists() and not where.is_dir():
        raise StoreUnavailableError(
            f"the store path {str(where)!r} is a file; pass a directory (it is created if missing)"
        )
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = _lock_for(str(where.resolve()))
        lock.bound(lock_timeout_s)
        # under the store's lock: two processes creating Chroma's tables at once collide
        with lock:
            return chromadb.PersistentClient(
                path=str(where), settings=Settings(anonymized_telemetry=False)
            )
    except OSError as error:
        raise StoreUnavailableError(f"cannot open a store at {str(where)!r}: {error}") from None


def http_client(url: str, *, tenant: str | None = None, database: str | None = None) -> ClientAPI:
    """A chromadb ``HttpClient`` for a ``chroma run`` server at ``http(s)://host:port``,
    in Chroma's own ``tenant`` and ``database`` when given (they must exist on the server;
    Chroma's defaults otherwise). Stores in two databases share nothing.

    Raises:
        InvalidInputError: when ``url`` is not an http(s) URL with a host.
        StoreUnavailableError: when no server answers there, or the tenant or database is
            not on it.

    Example:
        ```python
        memory = OutputProfileMemory.from_client(http_client("http://127.0.0.1:8000"))
        ```
    """
    bad = InvalidInputError(f"a Chroma URL looks like http://host:port; got {url!r}")
    if not isinstance(url, str):
        raise bad
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number in range
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    secure = parts.scheme == "https"
    where: dict[str, Any] = {
        **({"tenant": tenant} if tenant is not None else {}),
        **({"database": database} if database is not None else {}),
    }
    try:
        return chromadb.HttpClient(
            host=parts.hostname,
            port=port or (443 if secure else 8000),
            ssl=secure,
            settings=Settings(anonymized_telemetry=False),
            **where,
        )
    except (ValueError, NotFoundError) as error:  # no server, or no such tenant / database
        named = f" with {where}" if where else ""
        raise StoreUnavailableError(f"no Chroma server answers at {url}{named}: {error}") from None


def location_of(client: ClientAPI) -> str:
    """A name of the place a client's data lives: a resolved path, a server address, or the
    process's in-memory system (every ``EphemeralClient`` of a process shares one)."""
    settings: Any = client.get_settings()
    if settings.chroma_api_impl.endswith("FastAPI"):
        return f"http://{settings.chroma_server_host}:{settings.chroma_server_http_port}"
    if settings.is_persistent and settings.persist_directory:
        return str(Path(settings.persist_directory).resolve())
    return "ephemeral"


def location_lock(client: ClientAPI) -> LocationLock:
    """The lock every store object on ``client``'s location shares (one per process)."""
    return _lock_for(location_of(client))


def _lock_for(key: str) -> LocationLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = _new_lock(key)
        return lock


def server_of(client_or_collection: Any) -> Any:
    """The chromadb ``ServerAPI`` behind a client (``_server``) or a collection (``_client``)."""
    found = getattr(client_or_collection, "_server", None)
    return found if found is not None else getattr(client_or_collection, "_client", None)


def _new_lock(location: str) -> LocationLock:
    if location == "ephemeral":
        return LocationLock(location, None)
    if location.startswith("http://"):
        # a server orders its own calls, and no write reads-folds-writes (store/log.py):
        # nothing to lock, on this machine or any other (no lock file: nothing to wait on)
        return LocationLock(location, None, free=True)
    return LocationLock(location, Path(location) / LOCK_FILE, store_dir=Path(location))


def _env_lock_timeout_s() -> float:
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        return _seconds(LOCK_TIMEOUT_ENV, float(text))
    except ValueError:
        raise InvalidInputError(
            f"{LOCK_TIMEOUT_ENV} must be a number of seconds >= 0; got {text!r}"
        ) from None


class LocationLock:
    """One store location's lock: a reentrant thread lock, and a file lock across processes.

    ``with lock:`` holds both (reentrant: the file is locked once per process, at the
    outermost hold), waiting at most ``timeout_s`` (then :class:`StoreBusyError`, naming
    the process that holds the file when it is another). ``lock.reads`` is what a read
    holds: the whole lock (an embedded store's Chroma state goes stale with other
    processes' writes), or nothing for a server. The file lock serializes the processes of
    one directory on **one machine**; a server needs none (docs/design.md, "The write
    model").

    Args:
        location: what :func:`location_of` says of the client.
        lock_file: the lock file; None for the in-process ephemeral store.
        store_dir: the embedded store's directory (enables generations and space checks).
        free: a lock that holds nothing (a server's).
    """

    def __init__(
        self,
        location: str,
        lock_file: Path | None,
        *,
        store_dir: Path | None = None,
        free: bool = False,
    ) -> None:
        self.location = location
        self.lock_file = lock_file
        self.store_dir = store_dir
        self.free = free
        self.reads: LocationLock | contextlib.nullcontext[None] = (
            contextlib.nullcontext() if free else self
        )
        self.timeout_s = DEFAULT_LOCK_TIMEOUT_S if free else _env_lock_timeout_s()
        """The longest wait of ``with lock:`` (seconds): see :meth:`bound`."""
        self._rlock = threading.RLock()
        self._owner = 0  # thread holding _rlock (valid while _count > 0)
        self._count = 0  # holds of _rlock, reads included
        self._depth = 0  # holds of the file lock by the owning thread
        self._fd = -1
        self._pid = 0
        self._generation = 0
        self._changing = False
        self._seen: dict[int, tuple[Any, int]] = {}  # id(server) -> (server, generation)
        self._waiting = 0
        self._handoffs = 0
        self._turns = threading.Condition(threading.Lock())

    # -- holding ----------------------------------------------------------------------------

    def bound(self, timeout_s: float | None) -> None:
        """Set the longest wait of ``with lock:`` for this process (None: leave it). One lock
        per location per process, so one bound: the last one set.

        Raises:
            InvalidInputError: not a finite number of seconds >= 0.
        """
        if timeout_s is not None:
            self.timeout_s = _seconds("lock_timeout_s", timeout_s)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (thread lock, then the file); False if not ``blocking`` and taken,
        or when ``timeout`` (seconds, -1 = none) passed."""
        return self._acquire(blocking, timeout) is None

    def _acquire(self, blocking: bool, timeout: float) -> str | None:
        """Take the lock; None when taken, else which part was not: "thread" or "file"."""
        if self.free:
            return None
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not self._take(blocking, timeout):
            return "thread"
        if self.lock_file is None:
            return None
        if self._depth == 0:
            try:
                locked = self._lock_file(blocking, deadline)
            except BaseException:
                self._give()
                raise
            if not locked:
                self._give()
                return "file"
        self._depth += 1
        return None

    def release(self) -> None:
        """Release one hold (the file at the outermost)."""
        if self.free:
            return
        try:
            if self.lock_file is not None:
                self._depth -= 1
                if self._depth == 0:
                    try:
                        if self._changing:
                            self._write_record(self._generation, 0)
                            self._changing = False
                    finally:
                        unlock_descriptor(self._fd)
        finally:
            self._give()

    def __enter__(self) -> LocationLock:
        missed = self._acquire(True, self.timeout_s)
        if missed is not None:
            raise self._busy(missed)
        return self

    def _busy(self, part: str) -> StoreBusyError:
        """The error of a wait for the lock that outlasted ``timeout_s``."""
        waited = f"more than {self.timeout_s:g} s"
        remedy = (
            f"If it is stopped (`ps -o pid,stat,cmd -p <pid>` shows T), resume it (`kill -CONT "
            "<pid>`) or end it; a process that holds a store lock this long is frozen (SIGSTOP, "
            "a debugger, a frozen container), stuck on a hung disk, or running `outprofile "
            "repair` (which holds it to the end: wait for it). To wait longer, pass "
            f"lock_timeout_s= or set {LOCK_TIMEOUT_ENV}"
        )
        if part == "thread":
            return StoreBusyError(
                f"the store at {self.location} was held by another thread of this process "
                f"(pid {os.getpid()}) for {waited}: nothing was read or written. {remedy}"
            )
        holder = self._holder()
        who = f"process {holder}" if holder else "another process (its pid is unknown)"
        return StoreBusyError(
            f"the store at {self.location} is locked by {who} (lock file "
            f"{str(self.lock_file)!r}) for {waited}: nothing was read or written. "
            + remedy.replace("<pid>", str(holder) if holder else "<pid>")
        )

    def __exit__(self, *exc: object) -> None:
        self.release()

    def held(self) -> bool:
        """Whether the calling thread holds the lock (or its thread part)."""
        return self._count > 0 and self._owner == threading.get_ident()

    def pause(self) -> None:
        """Between the batches of a long operation, with the lock released: let a thread
        that waits for it take it first (lock handoff is not fair by itself), and give
        processes polling the lock file a moment. Does nothing while the caller holds it."""
        if self.free or self.held():
            return
        with self._turns:
            if self._waiting:
                handoffs = self._handoffs
                self._turns.wait_for(lambda: self._handoffs != handoffs, _HANDOFF_S)
        if self.lock_file is not None:
            time.sleep(_PAUSE_S)

    def _take(self, blocking: bool, timeout: float) -> bool:
        if not self._rlock.acquire(blocking=False):
            if not blocking:
                return False
            got = False
            with self._turns:
                self._waiting += 1
            try:
                got = self._rlock.acquire(timeout=timeout)
            finally:
                with self._turns:
                    self._waiting -= 1
                    if got:
                        self._handoffs += 1
                        self._turns.notify_all()
            if not got:
                return False
        self._owner = threading.get_ident()
        self._count += 1
        return True

    def _give(self) -> None:
        self._count -= 1
        self._rlock.release()

    def _lock_file(self, blocking: bool, deadline: float | None) -> bool:
        fd = self._descriptor()
        while not lock_descriptor(fd, blocking=False):
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(_POLL_S)
        if self.store_dir is not None:
            try:
                generation, changing = self._read_record()
                os.pwrite(fd, _HOLDER.pack(os.getpid()), _RECORD.size)
            except BaseException:
                unlock_descriptor(fd)
                raise
            self._generation, self._changing = generation, False
            if changing:  # its last holder was killed while changing the store
                self._bump()
        return True

    def _holder(self) -> int:
        """The pid of the process that took the file lock last (0: unknown)."""
        try:
            data = os.pread(self._descriptor(), _HOLDER.size, _RECORD.size)
        except (OSError, StoreUnavailableError):
            return 0
        return int(_HOLDER.unpack(data)[0]) if len(data) == _HOLDER.size else 0

    def _descriptor(self) -> int:
        """The lock file, opened once per process (a child of ``fork`` opens its own: the
        inherited descriptor shares the parent's lock)."""
        pid = os.getpid()
        if self._fd >= 0 and self._pid == pid:
            return self._fd
        if self._fd >= 0:
            os.close(self._fd)  # the parent's: closing it here does not unlock the parent
            self._fd = -1
            self._seen.clear()
        assert self.lock_file is not None
        try:
            # owner-only: whoever can open the file can take the lock, and so stop every
            # process of the store (a lock file of an older release is narrowed too)
            self._fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            with contextlib.suppress(OSError):  # not ours to change: leave it
                if os.fstat(self._fd).st_mode & 0o077:
                    os.fchmod(self._fd, 0o600)
        except OSError as error:
            raise StoreUnavailableError(
                f"cannot open the lock file {str(self.lock_file)!r} of {self.location}: {error}"
            ) from None
        self._pid = pid
        return self._fd

    # -- generations (embedded stores) ----------------------------------------------------

    def refresh(self, server: Any) -> None:
        """Before a Chroma call under this lock: reload ``server``'s in-memory Chroma state
        from disk if the store changed since it last looked (another process wrote, or
        another client of this path in this process, or a holder died mid-write). Every
        server is reloaded once when first seen, since nothing says how old its state is."""
        if self.store_dir is None or self._depth == 0 or server is None:
            return
        seen = self._seen.get(id(server))
        if seen is None or seen[1] != self._generation:
            self.reload(server)

    def note_write(self, server: Any) -> None:
        """Before a Chroma write under this lock: bump the generation (once per hold), so
        every other Chroma state of this store reloads before its next call."""
        if self.store_dir is None or self._depth == 0 or server is None:
            return
        if not self._changing:
            self._bump()
        self._seen[id(server)] = (server, self._generation)

    def reload(self, server: Any) -> bool:
        """Rebuild ``server``'s embedded Chroma state from disk (new Rust bindings: their
        vector index cache starts empty). Only for embedded stores, under the file lock.
        Returns whether it reloaded."""
        if self.store_dir is None or self._depth == 0 or not hasattr(server, "bindings"):
            return False
        server.stop()
        server.start()
        self._seen[id(server)] = (server, self._generation)
        return True

    def _bump(self) -> None:
        self._generation += 1
        self._write_record(self._generation, 1)
        self._changing = True

    def _read_record(self) -> tuple[int, int]:
        os.lseek(self._fd, 0, os.SEEK_SET)
        data = os.read(self._fd, _RECORD.size)
        if len(data) < _RECORD.size:
            return 0, 0
        generation, changing = _RECORD.unpack(data)
        return int(generation), int(changing)

    def _write_record(self, generation: int, changing: int) -> None:
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, _RECORD.pack(generation, changing))
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise StoreFullError(
                    f"no space left for the lock file of {self.location}"
                ) from error
            raise

    # -- disk space (embedded stores) -----------------------------------------------------

    def check_space(self, call: Mapping[str, Any]) -> None:
        """Refuse a write whose room on the store's disk is not there: Chroma persists its
        vector index by truncating and rewriting files, and running out of space in the
        middle leaves them torn (a damaged store). The room asked for is an estimate: the
        rows' metadata four times over (log, metadata segment, full-text index, journal),
        8 KiB a row for vectors, a fifth of the vector index files (they grow by 20%), and
        1 MiB.

        Raises:
            StoreFullError: when the disk has less free space than that.
        """
        if self.store_dir is None:
            return
        need, free = _needed_space(self.store_dir, call), _free_space(self.store_dir)
        if free is not None and free < need:
            raise StoreFullError(
                f"the disk of the store at {self.location} has {free / _MIB:.1f} MiB free and "
                f"this write needs about {need / _MIB:.1f} MiB: nothing was written (Chroma "
                "damages its index files when a write runs out of space); free space and retry"
            )

    def short_of_space(self) -> bool:
        """Whether the embedded store's disk is (nearly) full."""
        if self.store_dir is None:
            return False
        free = _free_space(self.store_dir)
        return free is not None and free < _needed_space(self.store_dir, {})


def _free_space(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _needed_space(store_dir: Path, call: Mapping[str, Any]) -> int:
    rows = len(call.get("ids") or [])
    payload = sum(len(str(m)) for m in call.get("metadatas") or [] if m)
    payload += sum(len(d) for d in call.get("documents") or [] if d)
    index = 0
    try:
        for segment in os.scandir(store_dir):
            if segment.is_dir():
                index += sum(allocated(f.stat()) for f in os.scandir(segment.path) if f.is_file())
    except OSError:
        pass
    return _MIB + 4 * payload + 8192 * rows + index // 5


def allocated(stat: os.stat_result) -> int:
    """Bytes a file takes on disk: Chroma's ``link_lists.bin`` can be sparse and terabytes
    long (Chroma issue 7510), so its apparent size says nothing of the space it uses."""
    blocks = getattr(stat, "st_blocks", None)
    return stat.st_size if blocks is None else min(stat.st_size, blocks * 512)


def failure_kind(error: BaseException, lock: LocationLock | None = None) -> str | None:
    """``"full"``, ``"damaged"`` or None: what a Chroma failure says about the store. A
    damage-like failure while the store's disk is full counts as ``"full"``."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "full"
    message = str(error).lower()
    if any(sign in message for sign in _FULL_SIGNS):
        return "full"
    if isinstance(error, ChromaError) and any(sign in message for sign in _DAMAGE_SIGNS):
        return "full" if lock is not None and lock.short_of_space() else "damaged"
    return None


def repair_hint(location: str, collection: str) -> str:
    """What to run to repair a damaged collection at ``location``."""
    if location == "ephemeral":
        return "an in-memory store cannot be repaired: recreate it, and import an export"
    if location.startswith("http://"):
        return (
            f"the server at {location} keeps it: stop the server and run `outprofile --path "
            f"<its --path directory> --collection {collection} repair` on its machine"
        )
    return f"run `outprofile --path {location} --collection {collection} repair` (backup first)"


REPAIR_MARKER = "outprofile-repair-{collection}.json"
"""The marker a repair (``store/repair.py``) leaves in the store directory until its
rebuild is verified."""
_REPAIRING: set[tuple[str, str]] = set()  # (store directory, collection) this process repairs
_REPAIRING_LOCK = threading.Lock()


def repair_marker(lock: LocationLock, collection: str) -> Path | None:
    """Where the marker of a repair of ``collection`` goes (None: not an embedded store)."""
    if lock.store_dir is None:
        return None
    return lock.store_dir / REPAIR_MARKER.format(collection=collection)


def check_no_unfinished_repair(lock: LocationLock, collection: str) -> None:
    """Raise :class:`RepairUnfinishedError` naming the command when a repair of
    ``collection`` was interrupted here (its marker is left), unless this process is that
    repair: a store opened on a half-rebuilt collection would serve part of its entries."""
    marker = repair_marker(lock, collection)
    if marker is None or not marker.exists():
        return
    with _REPAIRING_LOCK:
        if (str(lock.store_dir), collection) in _REPAIRING:
            return
    raise RepairUnfinishedError(
        f"a repair of collection {collection!r} at {lock.location} was interrupted (its "
        f"marker {marker.name} is still there) and the collection may be half rebuilt: "
        f"{repair_hint(lock.location, collection)} to finish it; nothing was opened"
    )


@contextmanager
def repairing(lock: LocationLock, collection: str) -> Iterator[None]:
    """While a repair of ``collection`` runs in this process, its own store may open."""
    key = (str(lock.store_dir), collection)
    with _REPAIRING_LOCK:
        _REPAIRING.add(key)
    try:
        yield
    finally:
        with _REPAIRING_LOCK:
            _REPAIRING.discard(key)


class GuardedCollection:
    """A Chroma collection whose every call holds its location's lock (``reads`` part),
    reloads stale embedded state first, and says what a failure means.

    Writes check the disk space first (embedded stores) and bump the lock's generation. A
    failure Chroma gives for damaged segment files is retried once after reloading the
    Chroma state from disk, then raised as :class:`StoreDamagedError`; a full disk raises
    :class:`StoreFullError`. A collection recreated under the same name (by a repair) is
    reopened by name. Attributes other than the calls below pass through.

    Args:
        collection: the chromadb collection.
        lock: its location's lock.
        reopen: returns the collection of the same name afresh.
        retry_s: the longest wait for a server that cannot be reached (:class:`Retries`).
    """

    def __init__(
        self,
        collection: Any,
        lock: LocationLock,
        reopen: Callable[[], Any],
        *,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        self._collection = collection
        self._lock = lock
        self._reopen = reopen
        self._retry_s = retry_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def get(self, **query: Any) -> Any:
        """``collection.get``."""
        return self._call("get", query, writes=False)

    def count(self) -> int:
        """``collection.count``."""
        return int(self._call("count", {}, writes=False))

    def upsert(self, **rows: Any) -> None:
        """``collection.upsert``."""
        self._call("upsert", rows, writes=True)

    def add(self, **rows: Any) -> None:
        """``collection.add``."""
        self._call("add", rows, writes=True)

    def update(self, **rows: Any) -> None:
        """``collection.update``."""
        self._call("update", rows, writes=True)

    def delete(self, **which: Any) -> None:
        """``collection.delete``."""
        self._call("delete", which, writes=True)

    def _call(self, method: str, arguments: dict[str, Any], *, writes: bool) -> Any:
        with self._lock.reads:
            server = server_of(self._collection)
            self._lock.refresh(server)
            if writes:
                self._lock.check_space(arguments)
                self._lock.note_write(server)
            retries = Retries(self._lock.location, method, self._retry_s)
            while True:
                try:
                    return self._once(method, arguments)
                except Exception as error:  # retried, classified below, else re-raised
                    pause = retries.pause(error)
                    if pause is None:
                        return self._after_failure(method, arguments, error, retries)
                time.sleep(pause)

    def _once(self, method: str, arguments: dict[str, Any]) -> Any:
        try:
            return getattr(self._collection, method)(**arguments)
        except NotFoundError:
            fresh = self._reopen()
            if fresh.id == self._collection.id:
                raise
            self._collection = fresh
            return getattr(fresh, method)(**arguments)

    def _after_failure(
        self, method: str, arguments: dict[str, Any], error: Exception, retries: Retries
    ) -> Any:
        if unreachable(error):
            raise retries.failure(error) from error
        kind = failure_kind(error, self._lock)
        if kind == "damaged" and self._lock.reload(server_of(self._collection)):
            try:  # stale in-memory state fails like damage: retry once on what disk holds
                return getattr(self._collection, method)(**arguments)
            except Exception as again:
                kind, error = failure_kind(again, self._lock), again
        if kind is None:
            raise error
        name = str(self._collection.name)
        raise typed_failure(kind, error, self._lock.location, name) from error


class AsyncGuardedCollection:
    """A collection of ``chromadb.AsyncHttpClient``, with the failures typed as
    :class:`GuardedCollection` types them, a read racing another client's write retried, and
    a collection recreated under its name reopened. Its calls hold no lock: a server orders
    its own calls, and no write reads-folds-writes (``store/log.py``).

    Args:
        collection: the ``AsyncCollection``.
        lock: its location's lock (for the location's name in messages).
        reopen: returns an awaitable of the collection of the same name afresh.
        retry_s: the longest wait for a server that cannot be reached (:class:`Retries`).
    """

    def __init__(
        self,
        collection: Any,
        lock: LocationLock,
        reopen: Callable[[], Awaitable[Any]],
        *,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        self._collection = collection
        self._lock = lock
        self._reopen = reopen
        self._retry_s = retry_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def get(self, **query: Any) -> Any:
        """``await collection.get``."""
        return await self._call("get", query)

    async def count(self) -> int:
        """``await collection.count``."""
        return int(await self._call("count", {}))

    async def upsert(self, **rows: Any) -> None:
        """``await collection.upsert``."""
        await self._call("upsert", rows)

    async def add(self, **rows: Any) -> None:
        """``await collection.add``."""
        await self._call("add", rows)

    async def update(self, **rows: Any) -> None:
        """``await collection.update``."""
        await self._call("update", rows)

    async def delete(self, **which: Any) -> None:
        """``await collection.delete``."""
        await self._call("delete", which)

    async def _call(self, method: str, arguments: dict[str, Any]) -> Any:
        retries = Retries(self._lock.location, method, self._retry_s)
        while True:
            try:
                return await self._once(method, arguments)
            except Exception as error:  # retried, classified below, else re-raised
                failed = error
                pause = retries.pause(error)
                if pause is None:
                    break
            await asyncio.sleep(pause)
        if unreachable(failed):
            raise retries.failure(failed) from failed
        kind = failure_kind(failed, self._lock)
        if kind is None:
            raise failed
        name = str(self._collection.name)
        raise typed_failure(kind, failed, self._lock.location, name) from failed

    async def _once(self, method: str, arguments: dict[str, Any]) -> Any:
        try:
            return await getattr(self._collection, method)(**arguments)
        except NotFoundError:
            fresh = await self._reopen()
            if fresh.id == self._collection.id:
                raise
            self._collection = fresh
            return await getattr(fresh, method)(**arguments)


def typed_failure(kind: str, error: Exception, location: str, name: str) -> Exception:
    """The error a call of collection ``name`` that failed with ``error`` raises: a full disk
    (``kind`` "full") or a damaged store (else), saying what to do."""
    if kind == "full":
        return StoreFullError(
            f"the disk of the store at {location} is full: collection {name!r} "
            f"failed with {_first_line(error)!r}; nothing this call wrote was "
            "acknowledged. Free space and retry (if the store then reports damage, "
            f"{repair_hint(location, name)})"
        )
    return StoreDamagedError(
        f"the store at {location} is damaged: collection {name!r} fails with "
        f"Chroma's {_first_line(error)!r} (a known Chroma failure after a process was "
        "killed, or the disk filled, while it wrote). Nothing this call wrote was "
        f"acknowledged; {repair_hint(location, name)}"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
