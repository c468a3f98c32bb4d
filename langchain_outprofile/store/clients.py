"""Clients: which Chroma a store talks to, and the one lock per store location per process.

Opening an embedded store on a path, a ``chroma run`` server by URL, and where the store
lives by default. Embedded Chroma can fail a read that races another thread's write on
the same location ("Error finding id"; docs/reliability.md), so every store object on one
location in one process shares one lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings
from platformdirs import user_data_dir

from langchain_outprofile.errors import InvalidInputError, StoreUnavailableError

__all__ = ["default_path", "http_client", "location_lock", "persistent_client"]

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def default_path() -> Path:
    """Where the embedded store lives when no ``path`` or ``client`` is given."""
    return Path(user_data_dir("langchain-outprofile", appauthor=False)) / "chroma"


def persistent_client(path: str | Path) -> ClientAPI:
    """An embedded ``PersistentClient`` on ``path`` with telemetry off.

    Raises:
        StoreUnavailableError: when ``path`` is a file, or cannot be created.
    """
    where = Path(path).expanduser()
    if where.exists() and not where.is_dir():
        raise StoreUnavailableError(
            f"the store path {str(where)!r} is a file; pass a directory (it is created if missing)"
        )
    try:
        return chromadb.PersistentClient(
            path=str(where), settings=Settings(anonymized_telemetry=False)
        )
    except OSError as error:
        raise StoreUnavailableError(f"cannot open a store at {str(where)!r}: {error}") from None


def http_client(url: str) -> ClientAPI:
    """A chromadb ``HttpClient`` for a ``chroma run`` server at ``http(s)://host:port``.

    Raises:
        InvalidInputError: when ``url`` is not an http(s) URL with a host.
        StoreUnavailableError: when no server answers there.

    Example:
        ```python
        memory = OutputProfileMemory(client=http_client("http://127.0.0.1:8000"))
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
    try:
        return chromadb.HttpClient(
            host=parts.hostname,
            port=port or (443 if secure else 8000),
            ssl=secure,
            settings=Settings(anonymized_telemetry=False),
        )
    except ValueError as error:  # chromadb's "Could not connect to a Chroma server"
        raise StoreUnavailableError(f"no Chroma server answers at {url}: {error}") from None


def location_of(client: ClientAPI) -> str:
    """A name of the place a client's data lives: a resolved path, a server address, or the
    process's in-memory system (every ``EphemeralClient`` of a process shares one)."""
    settings: Any = client.get_settings()
    if settings.chroma_api_impl.endswith("FastAPI"):
        return f"http://{settings.chroma_server_host}:{settings.chroma_server_http_port}"
    if settings.is_persistent and settings.persist_directory:
        return str(Path(settings.persist_directory).resolve())
    return "ephemeral"


def location_lock(client: ClientAPI) -> threading.RLock:
    """The lock every store object on ``client``'s location in this process shares."""
    key = location_of(client)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())
