"""Types: the data that flows between the stages, and the protocol the surfaces depend on.

Entries and their signals (capture), a user's loaded profile (store), selection options and
the choice selection makes (select), the finished :class:`ProfileSelection` (render), and
:class:`ProfileSource`, the one thing the LangChain surfaces need of a memory. Nothing here
touches Chroma, tokens or LangChain.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Literal, Protocol, TypedDict

import numpy as np

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.validation import (
    DEFAULT_MAX_TEXT_CHARS,
    Scalar,
    entry_id,
    is_real,
    validate_metadata,
    validate_optional_str,
    validate_rating,
    validate_retention,
    validate_strength,
    validate_text,
    validate_timestamp,
    validate_user_id,
)

__all__ = [
    "LOWEST_POSITIVE_RATING",
    "POSITIVE_SIGNALS",
    "Candidate",
    "Choice",
    "EntryDetails",
    "EntryFields",
    "Fields",
    "Order",
    "ProfileEntry",
    "ProfileSelection",
    "ProfileSource",
    "ReadOptions",
    "SelectionOptions",
    "Signal",
    "SignalStrengths",
    "StoredProfile",
    "WriteOptions",
    "combine_strengths",
]

Order = Literal["strongest", "stable"]
Fields = Literal["output", "input", "full"]

LOWEST_POSITIVE_RATING = 3
"""Ratings of 3-5 stars approve an output (strength (r - 1) / 4); 1-2 stars reject it, as a
person reading the stars would mean them."""

MAX_CREDIT_WEIGHT = 4.0
"""The largest ``credit_weight``: at 4 an entry whose blocks were always approved scores up
to 16 times one whose blocks never were, which already outweighs any strength difference."""


class Signal(StrEnum):
    """How an output came to be in a user's profile: written by the user, or an assistant's
    output the user answered. The strengths of an entry's positive signals combine into its
    own (:func:`combine_strengths`); an entry still pending, or whose latest decisive signal
    is a rejection, is never selected (:class:`ProfileEntry`)."""

    AUTHORED = "authored"
    """The user wrote it (a message, an email, a post)."""
    EDITED = "edited"
    """An assistant answer the user edited; the edited text is stored."""
    ENDORSED = "endorsed"
    """Explicit approval: thumbs-up, "save"."""
    RATING = "rating"
    """A 3-5 star rating, mapped to strength (r - 1) / 4 (1-2 stars are a rejection)."""
    ACCEPTED = "accepted"
    """Implicit approval: copied, sent, kept without regenerating."""
    REJECTED = "rejected"
    """Thumbs-down or a 1-2 star rating: the entry is never selected again."""
    PENDING = "pending"
    """A recorded output awaiting feedback: never selected."""

    @classmethod
    def parse(cls, value: Signal | str) -> Signal:
        """Return the signal named by ``value`` or raise :class:`InvalidInputError`."""
        if isinstance(value, Signal):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        names = ", ".join(s.value for s in cls)
        raise InvalidInputError(f"signal must be one of {names}; got {value!r:.80}")


POSITIVE_SIGNALS = frozenset(
    {Signal.AUTHORED, Signal.EDITED, Signal.ENDORSED, Signal.RATING, Signal.ACCEPTED}
)


@dataclass(frozen=True)
class SignalStrengths:
    """Default strength of each positive signal; override any of them.

    Example:
        ```python
        strengths = SignalStrengths(accepted=0.3)
        strengths.of(Signal.RATING, rating=5)  # 1.0
        ```
    """

    authored: float = 1.0
    edited: float = 1.0
    endorsed: float = 0.8
    accepted: float = 0.4

    def __post_init__(self) -> None:
        for name in ("authored", "edited", "endorsed", "accepted"):
            validate_strength(getattr(self, name), f"strength {name}")

    def of(self, signal: Signal, rating: float | None = None) -> float:
        """Strength of one signal (a rating maps to (r - 1) / 4; negative signals give 0)."""
        if signal is Signal.RATING:
            return (validate_rating(rating) - 1.0) / 4.0
        if signal not in POSITIVE_SIGNALS:
            return 0.0
        return float(getattr(self, signal.value))


def combine_strengths(strengths: Iterable[float]) -> float:
    """Combine repeated positive signals on one entry as 1 - prod(1 - s_i)."""
    remaining = 1.0
    for strength in strengths:
        remaining *= 1.0 - strength
    return 1.0 - remaining


def signal_for(signal: Signal | str | None, rating: float | None) -> Signal:
    """The signal an add means: explicit, else ``rating`` when a rating is given, else
    authored. A rating below :data:`LOWEST_POSITIVE_RATING` stars is a rejection."""
    if signal is None:
        parsed = Signal.RATING if rating is not None else Signal.AUTHORED
    else:
        parsed = Signal.parse(signal)
    if rating is not None and parsed is not Signal.RATING:
        raise InvalidInputError(f"rating= goes with signal='rating'; got signal={parsed.value!r}")
    if parsed is Signal.RATING and validate_rating(rating) < LOWEST_POSITIVE_RATING:
        return Signal.REJECTED
    return parsed


@dataclass(frozen=True)
class ProfileEntry:
    """One output text of one user, with its provenance.

    ``signals`` lists every signal the entry received, oldest first; ``strength`` is their
    combination. An entry whose latest decisive signal is ``rejected`` or which is still
    ``pending`` is never selected.

    Example:
        ```python
        entry = ProfileEntry.create("Short answer first.", user_id="ana", task="email")
        entry.id  # deterministic: same user and normalized text give the same id
        ```
    """

    id: str
    user_id: str
    text: str
    signals: tuple[Signal, ...]
    strength: float
    task: str = ""
    source_input: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    run_id: str = ""
    metadata: Mapping[str, Scalar] = field(default_factory=dict)
    expires_at: float | None = None
    """When the entry expires (epoch seconds; None: never). An expired entry is never
    selected, reads as gone, and is deleted by a later write or ``expire``. Folded so that
    the latest signal that names an expiry sets it (:meth:`merged_with`)."""
    credited: int = 0
    """Tracked runs whose block held this entry and whose answer the user approved
    (endorsed, accepted, edited, rated 3 or more); each run counts once, by its latest
    feedback."""
    debited: int = 0
    """Tracked runs whose block held this entry and whose answer the user rejected (or
    rated 2 or less)."""

    @classmethod
    def create(
        cls,
        text: str,
        *,
        user_id: str,
        signal: Signal | str | None = None,
        rating: float | None = None,
        task: str | None = None,
        source_input: str | None = None,
        created_at: float | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        strengths: SignalStrengths | None = None,
        max_chars: int = DEFAULT_MAX_TEXT_CHARS,
        expires_at: float | None = None,
    ) -> ProfileEntry:
        """Validate every argument and build a new entry (raises :class:`InvalidInputError`;
        ``expires_at`` is checked against now by the memory, which sets it)."""
        user = validate_user_id(user_id)
        body = validate_text(text, max_chars=max_chars)
        parsed = signal_for(signal, rating)
        strength = (strengths or SignalStrengths()).of(parsed, rating)
        when = validate_timestamp(created_at) if created_at is not None else time.time()
        return cls(
            id=entry_id(user, body),
            user_id=user,
            text=body,
            signals=(parsed,),
            strength=strength,
            task=validate_optional_str(task, "task"),
            source_input=validate_optional_str(source_input, "source_input", max_chars),
            created_at=when,
            updated_at=when,
            run_id=validate_optional_str(run_id, "run_id"),
            metadata=validate_metadata(metadata),
            expires_at=_expiry(expires_at),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record; :meth:`from_dict` restores it exactly (``expires_at`` only
        when the entry expires)."""
        record: dict[str, Any] = {
            "id": self.id,
            "user_id": self.user_id,
            "text": self.text,
            "signals": [s.value for s in self.signals],
            "strength": self.strength,
            "task": self.task,
            "source_input": self.source_input,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "run_id": self.run_id,
            "metadata": dict(self.metadata),
        }
        if self.expires_at is not None:
            record["expires_at"] = self.expires_at
        if self.credited or self.debited:
            record["credited"], record["debited"] = self.credited, self.debited
        return record

    @classmethod
    def from_dict(
        cls, record: Mapping[str, Any], max_chars: int = DEFAULT_MAX_TEXT_CHARS
    ) -> ProfileEntry:
        """Validate and rebuild an entry written by :meth:`to_dict` (the id is recomputed)."""
        if not isinstance(record, Mapping):
            raise InvalidInputError(f"a record must be a dict; got {type(record).__name__}")
        missing = {"user_id", "text", "signals"} - set(record)
        if missing:
            raise InvalidInputError(f"record is missing {sorted(missing)}")
        raw_signals = record["signals"]
        if not isinstance(raw_signals, list) or not raw_signals:
            raise InvalidInputError("record 'signals' must be a non-empty list of signal names")
        created = validate_timestamp(record.get("created_at", time.time()))
        return cls.checked(
            user_id=record["user_id"],
            text=record["text"],
            signals=tuple(Signal.parse(s) for s in raw_signals),
            strength=record.get("strength", 1.0),
            task=record.get("task"),
            source_input=record.get("source_input"),
            created_at=created,
            updated_at=record.get("updated_at", created),
            run_id=record.get("run_id"),
            metadata=record.get("metadata"),
            max_chars=max_chars,
            expires_at=record.get("expires_at"),
            credited=record.get("credited", 0),
            debited=record.get("debited", 0),
        )

    @classmethod
    def checked(
        cls,
        *,
        user_id: object,
        text: object,
        signals: object,
        strength: object,
        task: object = None,
        source_input: object = None,
        created_at: object = 0.0,
        updated_at: object = None,
        run_id: object = None,
        metadata: object = None,
        max_chars: int = DEFAULT_MAX_TEXT_CHARS,
        expires_at: object = None,
        credited: object = 0,
        debited: object = 0,
    ) -> ProfileEntry:
        """Validate every field of an entry given whole, and derive its id from (user, text)."""
        user = validate_user_id(user_id)
        body = validate_text(text, max_chars=max_chars)
        if (
            not isinstance(signals, tuple)
            or not signals
            or not all(isinstance(s, Signal) for s in signals)
        ):
            raise InvalidInputError("signals must be a non-empty tuple of Signal values")
        created = validate_timestamp(created_at)
        return cls(
            id=entry_id(user, body),
            user_id=user,
            text=body,
            signals=signals,
            strength=validate_strength(strength, "strength"),
            task=validate_optional_str(task, "task"),
            source_input=validate_optional_str(source_input, "source_input", max_chars),
            created_at=created,
            updated_at=validate_timestamp(created if updated_at is None else updated_at),
            run_id=validate_optional_str(run_id, "run_id"),
            metadata=validate_metadata(metadata),  # type: ignore[arg-type]
            expires_at=_expiry(expires_at),
            credited=_count(credited, "credited"),
            debited=_count(debited, "debited"),
        )

    def validated(self, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> ProfileEntry:
        """This entry with every field checked and its id derived from (user, text) again:
        a copy made with ``dataclasses.replace`` gets the id its user and text call for."""
        return ProfileEntry.checked(
            user_id=self.user_id,
            text=self.text,
            signals=self.signals,
            strength=self.strength,
            task=self.task,
            source_input=self.source_input,
            created_at=self.created_at,
            updated_at=self.updated_at,
            run_id=self.run_id,
            metadata=self.metadata,
            max_chars=max_chars,
            expires_at=self.expires_at,
            credited=self.credited,
            debited=self.debited,
        )

    def expired(self, now: float) -> bool:
        """Whether the entry has expired at ``now`` (never, without ``expires_at``).

        Example:
            ```python
            replace(entry, expires_at=10.0).expired(now=10.0)  # True
            ```
        """
        return self.expires_at is not None and self.expires_at <= now

    @property
    def rejected(self) -> bool:
        """True when a ``rejected`` signal came after every approval."""
        return bool(self.signals) and self.signals[-1] is Signal.REJECTED

    @property
    def pending(self) -> bool:
        """True while the entry only awaits feedback."""
        return all(s is Signal.PENDING for s in self.signals)

    @property
    def selectable(self) -> bool:
        """Whether selection may ever pick this entry."""
        return not self.rejected and not self.pending and self.strength > 0.0

    @property
    def signal(self) -> Signal:
        """The latest signal received."""
        return self.signals[-1]

    @property
    def credit(self) -> float:
        """The chance that a block holding this entry gets approved: the mean of a
        Beta(1 + credited, 1 + debited) posterior, 0.5 before any feedback.

        Example:
            ```python
            replace(entry, credited=3, debited=1).credit  # (1 + 3) / (2 + 4) = 0.667
            ```
        """
        return (1 + self.credited) / (2 + self.credited + self.debited)

    def merged_with(self, newer: ProfileEntry) -> ProfileEntry:
        """Fold a newer record of the same text into this one.

        Positive strengths combine as 1 - prod(1 - s_i); a later ``rejected`` wins; a later
        approval after a rejection lifts it again. Newer task, input, run id, metadata and
        expiry values replace older ones where given (so the latest signal that names an
        expiry sets it, and one that names none keeps it); ``created_at`` keeps the first
        sighting.
        """
        signals = tuple(s for s in self.signals if s is not Signal.PENDING) + newer.signals
        if newer.signal is Signal.REJECTED:
            strength = 0.0
        elif self.rejected or self.pending:
            strength = newer.strength
        else:
            strength = combine_strengths((self.strength, newer.strength))
        return replace(
            self,
            signals=signals,
            strength=strength,
            task=newer.task or self.task,
            source_input=newer.source_input or self.source_input,
            updated_at=max(self.updated_at, newer.updated_at),
            run_id=newer.run_id or self.run_id,
            metadata={**self.metadata, **newer.metadata},
            expires_at=self.expires_at if newer.expires_at is None else newer.expires_at,
            credited=self.credited + newer.credited,
            debited=self.debited + newer.debited,
        )


_SIGNAL_OF = {s.value: s for s in Signal}
"""Signals by name: a dictionary lookup, where ``Signal(name)`` costs an enum call per
signal of every entry of a cold read."""


def stored_entry(id_: str, user_id: str, data: Mapping[str, Any]) -> ProfileEntry:
    """An entry from fields this package wrote itself (a row payload or a saved snapshot):
    no validation, since it runs for every entry of a cold read. ``signals`` may be a list
    of names or one comma-separated string."""
    signals = data["signals"]
    names = signals.split(",") if isinstance(signals, str) else signals
    return ProfileEntry(
        id=id_,
        user_id=user_id,
        text=str(data["text"]),
        signals=tuple(_SIGNAL_OF.get(s) or Signal(s) for s in names if s),
        strength=float(data["strength"]),
        task=str(data.get("task", "")),
        source_input=str(data.get("source_input", "")),
        created_at=float(data.get("created_at", 0.0)),
        updated_at=float(data.get("updated_at", 0.0)),
        run_id=str(data.get("run_id", "")),
        metadata=dict(data.get("metadata", {})),
        expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
        credited=int(data.get("credited", 0)),
        debited=int(data.get("debited", 0)),
    )


class EntryDetails(TypedDict, total=False):
    """Optional fields of a new entry besides its signal and rating (the part of
    :class:`EntryFields` every signal takes; see :meth:`ProfileEntry.create`)."""

    task: str | None
    source_input: str | None
    created_at: float | None
    run_id: str | None
    metadata: Mapping[str, Any] | None
    expires_at: float | None
    """When the entry expires, epoch seconds (default: ``retention_s`` after now, or never)."""
    ttl_s: float | None
    """Seconds from now until the entry expires (instead of ``expires_at``)."""


class EntryFields(EntryDetails, total=False):
    """Every optional field of a new entry (keyword arguments of ``OutputProfileMemory.add``)."""

    signal: Signal | str | None
    rating: float | None


class StoredProfile:
    """Every entry of one user, with the style vectors stored beside them (row i ↔ entry i).

    Vectors may be fetched lazily: a cold read loads texts and metadata only, and selection
    asks :meth:`vectors_for` for the rows of its candidate pool, so a large profile never
    moves every embedding out of Chroma. Fetched rows are kept.

    Args:
        entries: the entries, oldest first.
        vectors: every row at once; or None with ``fetch``.
        fetch: returns the vectors of the given entry ids (rows in that order).
        dimension: vector length, when ``vectors`` is None.

    Example:
        ```python
        profile = StoredProfile((entry,), np.ones((1, 8), dtype=np.float32))
        profile.vectors_for([0]).shape  # (1, 8)
        ```
    """

    def __init__(
        self,
        entries: tuple[ProfileEntry, ...],
        vectors: np.ndarray | None = None,
        *,
        fetch: Callable[[list[str]], np.ndarray] | None = None,
        dimension: int = 0,
    ) -> None:
        if vectors is None and fetch is None:
            raise InvalidInputError("StoredProfile needs vectors or a fetch function")
        self.entries = entries
        self._all = vectors
        self._fetch = fetch
        self._dimension = dimension if vectors is None else int(vectors.shape[1])
        self._rows: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def vectors(self) -> np.ndarray:
        """Every row (fetched once, on first use, when the profile was loaded lazily)."""
        if self._all is None:
            self._all = self.vectors_for(range(len(self.entries)))
        return self._all

    def vectors_for(self, indices: Iterable[int]) -> np.ndarray:
        """The rows of the given entry indices, fetching only those not seen before."""
        wanted = list(indices)
        if self._all is not None:
            return self._all[wanted]
        with self._lock:
            missing = sorted({i for i in wanted if i not in self._rows})
            if missing and self._fetch is not None:
                rows = self._fetch([self.entries[i].id for i in missing])
                self._rows.update(zip(missing, rows, strict=True))
            if not wanted:
                return np.zeros((0, self._dimension), dtype=np.float32)
            return np.stack([self._rows[i] for i in wanted])


@dataclass(frozen=True)
class SelectionOptions:
    """How a block is chosen. Every field has a sensible default.

    Args:
        max_tokens: budget of the whole rendered block (header and delimiters included).
        max_entry_tokens: longer entries are cut at a sentence boundary.
        half_life_days: recency half-life; ``None`` turns decay off.
        order: ``"strongest"`` first, or ``"stable"`` (oldest first: a new entry appends).
        fields: ``"output"`` (default), ``"input"`` or ``"full"`` (for ablations).
        task: scope to entries of this task first.
        fill_from_profile: when the task scope cannot fill the budget, use other entries.
        relevance_weight: 0 (default) ignores the query entirely; up to 1 blends it in.
        typicality_weight: 0 (default) off; up to 1 blends in closeness to the user's style
            centroid (query-free: the block stays the same for every request).
        mmr_lambda: 1 ranks by score alone; lower values favour stylistic diversity.
        duplicate_threshold: style (cosine) similarity from which an entry that also shares
            half its word trigrams with a chosen one is a near-duplicate of it.
        pool_size: how many top-scored candidates diversity and packing consider.
        credit_weight: 0 (default) ignores feedback credit; above 0, an entry's score is
            multiplied by ``(2 * credit) ** credit_weight`` (:attr:`ProfileEntry.credit`:
            how often blocks holding it were approved), a factor that does not move with
            time.
        explore: with ``credit_weight`` above 0, give one place of the block to the pool's
            entry with the least feedback yet (ties: the higher score), so entries that
            were never shown get credit too.

    Example:
        ```python
        options = SelectionOptions(max_tokens=300, order="stable")
        options.with_changes(task="email").task  # "email"
        ```
    """

    max_tokens: int = 600
    max_entry_tokens: int = 200
    half_life_days: float | None = 180.0
    order: Order = "strongest"
    fields: Fields = "output"
    task: str | None = None
    fill_from_profile: bool = True
    relevance_weight: float = 0.0
    typicality_weight: float = 0.0
    mmr_lambda: float = 0.7
    duplicate_threshold: float = 0.92
    pool_size: int = 400
    credit_weight: float = 0.0
    explore: bool = False

    def __post_init__(self) -> None:
        _check_int(self.max_tokens, "max_tokens", 1)
        _check_int(self.max_entry_tokens, "max_entry_tokens", 1)
        _check_int(self.pool_size, "pool_size", 1)
        if self.half_life_days is not None:
            _check_fraction(self.half_life_days, "half_life_days", upper=math.inf, open_low=True)
        _check_fraction(self.relevance_weight, "relevance_weight")
        _check_fraction(self.typicality_weight, "typicality_weight")
        _check_fraction(self.mmr_lambda, "mmr_lambda")
        _check_fraction(self.duplicate_threshold, "duplicate_threshold")
        _check_fraction(self.credit_weight, "credit_weight", upper=MAX_CREDIT_WEIGHT)
        if not isinstance(self.explore, bool):
            raise InvalidInputError(
                f"explore must be True or False; got {self.explore!r:.40} "
                "(parse a string from a request into a bool first)"
            )
        if self.order not in ("strongest", "stable"):
            raise InvalidInputError(f"order must be 'strongest' or 'stable'; got {self.order!r}")
        if self.fields not in ("output", "input", "full"):
            raise InvalidInputError(f"fields must be output, input or full; got {self.fields!r}")
        if self.task is not None:
            validate_optional_str(self.task, "task")
        if not isinstance(self.fill_from_profile, bool):
            # a request's "false" or "0" is a truthy string: refuse it rather than guess
            raise InvalidInputError(
                f"fill_from_profile must be True or False; got {self.fill_from_profile!r:.40} "
                "(parse a string from a request into a bool first)"
            )

    def with_changes(self, **changes: object) -> SelectionOptions:
        """A copy with some fields changed (``None`` values are ignored).

        Raises:
            InvalidInputError: for a name that is not a field, or a value out of range.
        """
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise InvalidInputError(
                f"unknown selection option(s) {unknown}; SelectionOptions has "
                f"{[f.name for f in fields(self)]}"
            )
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReadOptions:
    """How a memory serves reads without ranking anew: its read cache, the selections it
    saves in the store (snapshots) and the blocks it pins to conversation threads.

    Args:
        cache_ttl_s: how long a user's cached candidates serve reads before the store is
            asked again (writes through the same memory update it at once; 0 = always read
            through).
        cache_size: users kept in the read cache (least recently used are dropped).
        cache_entries: entries the read cache may hold in all: each cached user's loaded
            profile counts its entries, and each cached block its candidates (chosen and
            left out). Least recently used users are dropped first; a user larger than this
            alone is read but not kept. States past ``cache_ttl_s`` are dropped too.
        snapshot_ttl_s: how long a selection saved in the store serves cold reads of an
            unchanged profile (every write makes it stale at once; 0 = never save one).
        pin_threads: serve a read that names a ``thread_id`` the block pinned at the
            thread's first read, for the whole thread (byte-identical, so the provider's
            prompt cache keeps hitting; feedback given meanwhile shows in the next thread).
            False: every read gets the current block.
        pin_ttl_s: how long a thread's pin serves (default: a day).

    Example:
        ```python
        reads = ReadOptions(cache_ttl_s=0, snapshot_ttl_s=0)  # every read asks the store
        reads.pin_threads  # True
        ```
    """

    cache_ttl_s: float = 2.0
    cache_size: int = 1024
    cache_entries: int = 200_000
    snapshot_ttl_s: float = 3600.0
    pin_threads: bool = True
    pin_ttl_s: float = 86_400.0

    def __post_init__(self) -> None:
        _check_setting(self.cache_ttl_s, "cache_ttl_s", low=0)
        _check_setting(self.cache_size, "cache_size", low=1)
        _check_setting(self.cache_entries, "cache_entries", low=0)
        _check_setting(self.snapshot_ttl_s, "snapshot_ttl_s", low=0)
        _check_setting(self.pin_ttl_s, "pin_ttl_s", low=0, strict=True)
        if not isinstance(self.pin_threads, bool):
            raise InvalidInputError(
                f"pin_threads must be True or False; got {self.pin_threads!r:.40}"
            )


@dataclass(frozen=True)
class WriteOptions:
    """What a memory's writes keep, and for how long.

    Args:
        strengths: the strength of each positive signal (:class:`SignalStrengths`).
        max_text_chars: the longest entry text accepted.
        retention_s: how long an entry is kept after its latest signal (seconds; None, the
            default: forever). Each write sets the entry's ``expires_at`` to now plus this,
            unless it names its own (``expires_at=`` or ``ttl_s=``). An expired entry is
            never selected and reads as gone; it is deleted by a later write of its user
            (at most hourly per process, in the background) or by ``memory.expire()``.
        pending_ttl_s: tracked outputs still pending after this long are deleted.

    Example:
        ```python
        writes = WriteOptions(retention_s=30 * 86_400)  # entries kept 30 days
        writes.max_text_chars  # 20000
        ```
    """

    strengths: SignalStrengths = field(default_factory=SignalStrengths)
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    retention_s: float | None = None
    pending_ttl_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not isinstance(self.strengths, SignalStrengths):
            raise InvalidInputError(
                f"strengths must be a SignalStrengths; got {type(self.strengths).__name__}"
            )
        _check_setting(self.max_text_chars, "max_text_chars", low=1)
        _check_setting(self.pending_ttl_s, "pending_ttl_s", low=0, strict=True)
        object.__setattr__(self, "retention_s", validate_retention(self.retention_s))


@dataclass(frozen=True)
class Candidate:
    """An entry as selection saw it: its score, cost, and what happened to it."""

    entry: ProfileEntry
    score: float
    age_days: float
    tokens: int = 0
    cut: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Choice:
    """The entries chosen (in block order) and the first other entries with why each was
    left out (pending outputs, which await feedback, are no candidates and are not listed)."""

    chosen: tuple[Candidate, ...]
    left_out: tuple[Candidate, ...]
    options: SelectionOptions
    left_out_total: int = -1
    """How many entries were left out in all (``left_out`` keeps the first of them)."""
    note: str = ""
    """Why the block is empty or short when the cause is the settings (e.g. a budget smaller
    than the frame), '' otherwise."""
    valid_until: float = math.inf
    """When the first entry of the ranking this choice came from expires: from then on the
    choice may differ (a cached or saved one is not served past it)."""

    def __post_init__(self) -> None:
        if self.left_out_total < 0:
            object.__setattr__(self, "left_out_total", len(self.left_out))


@dataclass(frozen=True)
class ProfileSelection:
    """A user's block and how it was chosen.

    Attributes:
        user_id: whose profile this is.
        text: the framed block exactly as the model will read it ('' when empty).
        tokens: token count of ``text`` with ``encoding``: exact for the model that
            tokenizer belongs to, unless ``encoding`` starts with ``"approximate"`` (a
            fallback was used; the warning said what to install or pass to count exactly).
        entries: the chosen entries, in block order.
        choice: scores, costs and the reason each other entry was left out.

    Example:
        ```python
        selection = memory.select("ana", max_tokens=300)
        print(selection.text)
        print(selection.explain())
        ```
    """

    user_id: str
    text: str
    tokens: int
    choice: Choice
    encoding: str = ""
    entries: tuple[ProfileEntry, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(c.entry for c in self.choice.chosen))

    def __bool__(self) -> bool:
        return bool(self.text)

    @property
    def exact_tokens(self) -> bool:
        """Whether :attr:`tokens` is the exact count for the tokenizer named by ``encoding``."""
        return not self.encoding.startswith("approximate")

    def explain(self, max_left_out: int = 20) -> str:
        """Per entry: signal, strength, age, score, tokens; and why each other was left out."""
        options = self.choice.options
        lines = [
            f"profile block for user {self.user_id!r}: {len(self.entries)} entries, "
            f"{self.tokens}/{options.max_tokens} tokens ({self.encoding}), order={options.order}, "
            f"fields={options.fields}, half_life_days={options.half_life_days}"
            + (f", credit_weight={options.credit_weight:g}" if options.credit_weight else ""),
        ]
        if self.choice.note:
            lines.append(f"note: {self.choice.note}")
        lines += [_explain_line(n, c) for n, c in enumerate(self.choice.chosen, start=1)]
        left, total = self.choice.left_out, self.choice.left_out_total
        if total:
            lines.append(f"left out: {total}")
            shown = left[:max_left_out]
            lines += [
                f"  - {_preview(c.entry.text)}: {c.reason}{_credit_note(c.entry)}" for c in shown
            ]
            if total > len(shown):
                lines.append(f"  ... and {total - len(shown)} more")
        return "\n".join(lines)


class ProfileSource(Protocol):
    """What the LangChain surfaces (injector, retriever, middleware, tracking) use of a
    memory. :class:`~langchain_outprofile.OutputProfileMemory` is one; a test double or
    another backend can be another."""

    options: SelectionOptions

    def select(
        self,
        user_id: str,
        *,
        max_tokens: int | None = None,
        task: str | None = None,
        query: str | None = None,
        options: SelectionOptions | None = None,
        thread_id: str | None = None,
    ) -> ProfileSelection:
        """The user's block (the one pinned for ``thread_id``, when given)."""
        ...

    def record_output(
        self,
        text: str,
        *,
        user_id: str,
        run_id: str,
        source_input: str | None = None,
        task: str | None = None,
        served: ProfileSelection | Sequence[str] | None = None,
    ) -> ProfileEntry:
        """Store one run's output as pending feedback under ``run_id``, with the block the
        run was served (``served``), which feedback on the run credits."""
        ...


def _explain_line(n: int, candidate: Candidate) -> str:
    entry = candidate.entry
    cut = ", cut at a sentence boundary" if candidate.cut else ""
    return (
        f"{n:>3}. [{entry.signal.value}] strength={entry.strength:.2f} "
        f"age={candidate.age_days:.1f}d score={candidate.score:.3f} tokens={candidate.tokens}"
        f"{cut} task={entry.task or '-'}{_credit_note(entry)}  {_preview(entry.text)}"
    )


def _credit_note(entry: ProfileEntry) -> str:
    """An entry's feedback credit, when any run's feedback gave it some."""
    if not entry.credited and not entry.debited:
        return ""
    return f" credit={entry.credit:.2f} (+{entry.credited}/-{entry.debited})"


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def _expiry(value: object) -> float | None:
    """An entry's ``expires_at`` as stored: None, or epoch seconds before the year 10000."""
    if value is None:
        return None
    try:
        return validate_timestamp(value)
    except InvalidInputError:
        raise InvalidInputError(
            f"expires_at must be epoch seconds (a number >= 0, before the year 10000) or "
            f"None; got {value!r:.40}"
        ) from None


def _count(value: object, name: str) -> int:
    """A feedback count as stored: an int >= 0."""
    _check_int(value, name, 0)
    return value  # type: ignore[return-value]


def _check_int(value: object, name: str, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidInputError(f"{name} must be an int >= {low}; got {value!r:.40}")


def _check_fraction(value: object, name: str, upper: float = 1.0, open_low: bool = False) -> None:
    number = float(value) if is_real(value) else None  # type: ignore[arg-type]
    if number is None and upper == math.inf and value == math.inf:
        number = math.inf
    valid = number is not None and (number > 0 if open_low else number >= 0) and number <= upper
    if not valid:
        bound = "> 0" if open_low else f"in [0, {upper:g}]"
        raise InvalidInputError(f"{name} must be a number {bound}; got {value!r:.40}")


def _check_setting(value: object, name: str, *, low: int, strict: bool = False) -> None:
    """Refuse a cache, snapshot, pin or write setting that is not a finite number in range
    (``strict``: above ``low``)."""
    if not is_real(value) or value < low or (strict and value <= low):  # type: ignore[operator]
        relation = f"> {low}" if strict else f">= {low}"
        raise InvalidInputError(f"{name} must be a finite number {relation}; got {value!r:.40}")
