"""Errors: every exception and warning this package raises on purpose, in one place.

Each message names what was wrong and what to pass or do instead. Every exception derives
from :class:`OutprofileError`, so ``except OutprofileError`` catches all of them. The two
warnings (:class:`ApproximateTokenizerWarning`, :class:`BudgetTooSmallWarning`) derive from
``UserWarning`` only: a warning is filtered by category, never raised into an ``except``.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousRunError",
    "ApproximateTokenizerWarning",
    "AsyncClientError",
    "BudgetTooSmallWarning",
    "EmbeddingMismatchError",
    "InvalidInputError",
    "LocalModelUnavailableError",
    "MissingExtraError",
    "MissingUserIdError",
    "ModelServerError",
    "OutprofileError",
    "RepairUnfinishedError",
    "RequestLimitError",
    "RunIdConflictError",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreFullError",
    "StoreUnavailableError",
    "UnknownRunError",
]


class OutprofileError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(OutprofileError, ValueError):
    """An argument was rejected; nothing was stored or changed.

    The message names the argument and says what to pass instead.
    """


class MissingUserIdError(InvalidInputError):
    """No ``user_id`` was given, so no profile can be chosen (none is shared by default)."""


class RequestLimitError(InvalidInputError):
    """A call's own settings (``config["configurable"]["profile_<name>"]`` on any surface,
    or a value of a retriever's ``configurable_fields``) went past what the app lets a
    request change: a budget over the surface's ``CallLimits.max_tokens``, or a setting not in
    its ``CallLimits.settable``. Nothing was read; the message names the setting and the limit
    (ask for less, or build the surface with wider ``limits=``)."""


class UnknownRunError(OutprofileError, LookupError):
    """No tracked output is stored under this run id (never tracked, expired or deleted),
    or, when the call names a user, none of that user's: another user's run is unknown."""


class RunIdConflictError(InvalidInputError):
    """A run id another user's tracked run already holds was given for a new run: run ids
    identify one run of one user, so nothing was stored (pass a fresh ``uuid4()``)."""


class AmbiguousRunError(InvalidInputError):
    """Feedback named a run id that tracked runs of more than one user hold (possible only
    in stores written before run ids were checked): pass ``user_id=``."""


class EmbeddingMismatchError(OutprofileError):
    """The collection was written with another embedder or schema than the one given."""


class StoreUnavailableError(OutprofileError):
    """No Chroma server answers at the given URL (also after the retries of a call:
    ``retry_s``), or the store path cannot hold a store."""


class AsyncClientError(OutprofileError, TypeError):
    """A synchronous method was called on a memory given an async Chroma client
    (``chromadb.AsyncHttpClient``): call its ``a``-prefixed twin from the event loop."""


class ModelServerError(OutprofileError, RuntimeError):
    """The local model server did not start (its log's last lines are in the message)."""


class LocalModelUnavailableError(OutprofileError, ImportError):
    """The embedded model cannot be used because the ``local`` extra is not installed."""


class MissingExtraError(OutprofileError, ImportError):
    """A command or feature needs an optional extra that is not installed; the message
    names the ``pip install`` that adds it."""


class StoreDamagedError(StoreUnavailableError):
    """Chroma's files of a collection are damaged, so its reads and writes fail: the known
    Chroma failure after a process was killed (or the disk filled) while it wrote ("Failed to
    apply logs to the hnsw segment writer", a torn ``index_metadata.pickle``). The call that
    raised acknowledged nothing. ``outprofile repair`` (``store.repair.repair``) rebuilds
    the collection from the entries Chroma's metadata segment and write log still hold, after
    copying the store to a backup."""


class RepairUnfinishedError(StoreDamagedError):
    """A repair of this collection (``outprofile repair``) was interrupted: its marker is
    still in the store directory and the collection may be half rebuilt, so the store is
    not opened (reads would miss entries that are not rewritten yet). Run the command the
    message names to finish it; the signal log keeps every entry meanwhile."""


class StoreBusyError(StoreUnavailableError):
    """Another process (or thread) held the lock of an embedded store's directory longer
    than the wait allows (``lock_timeout_s``, ``OUTPROFILE_LOCK_TIMEOUT_S``; 30 s by
    default): it is frozen (stopped, in a debugger, a frozen container) or stuck on a hung
    disk. Nothing was read or written; the message names the holder's pid when known."""


class StoreFullError(StoreUnavailableError):
    """A write was refused, or failed, for lack of disk space. Nothing the call wrote was
    acknowledged; entries stored before are intact. Free space and retry."""


class ApproximateTokenizerWarning(UserWarning):
    """Counts are not exact for the target model; the message says what to install or pass."""


class BudgetTooSmallWarning(UserWarning):
    """The token budget cannot hold the block's frame (or any entry beside it), so the block
    is empty; ``explain()`` says the same."""
