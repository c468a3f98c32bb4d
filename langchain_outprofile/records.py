"""Records: profile entries, preference signals, and validation of every input.

This is the leftmost stage of the data flow. It knows nothing of Chroma, tokens or
LangChain; it only says what an entry is, how strong its preference signal is, and
whether an input is acceptable.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_MAX_TEXT_CHARS",
    "InvalidInputError",
    "OutprofileError",
    "ProfileEntry",
    "Signal",
    "SignalStrengths",
    "combine_strengths",
    "entry_id",
    "normalize_text",
]

DEFAULT_MAX_TEXT_CHARS = 20_000
"""Longest accepted entry text, in characters (configurable per memory)."""

Scalar = str | int | float | bool


class OutprofileError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(OutprofileError, ValueError):
    """An argument was rejected; nothing was stored or changed.

    The message names the argument and says what to pass instead.
    """


class Signal(StrEnum):
    """How an output came to be in a user's profile (see DESIGN.md "Records and signals")."""

    AUTHORED = "authored"
    """The user wrote it (a message, an email, a post)."""
    EDITED = "edited"
    """An assistant answer the user edited; the edited text is stored."""
    ENDORSED = "endorsed"
    """Explicit approval: thumbs-up, "save", a 4-5 star rating."""
    RATING = "rating"
    """A 1-5 rating, mapped to strength (r - 1) / 4."""
    ACCEPTED = "accepted"
    """Implicit approval: copied, sent, kept without regenerating."""
    REJECTED = "rejected"
    """Thumbs-down: the entry is never selected again."""
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
        raise InvalidInputError(f"signal must be one of {names}; got {value!r}")


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
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
                raise InvalidInputError(
                    f"strength {name} must be a number in [0, 1]; got {value!r}"
                )

    def of(self, signal: Signal, rating: float | None = None) -> float:
        """Strength of one positive signal (a rating maps to (r - 1) / 4)."""
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
    ) -> ProfileEntry:
        """Validate every argument and build a new entry (raises :class:`InvalidInputError`)."""
        user = validate_user_id(user_id)
        body = validate_text(text, max_chars=max_chars)
        parsed = _signal_for(signal, rating)
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
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record; :meth:`from_dict` restores it exactly."""
        return {
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
        user = validate_user_id(record["user_id"])
        text = validate_text(record["text"], max_chars=max_chars)
        raw_signals = record["signals"]
        if not isinstance(raw_signals, list) or not raw_signals:
            raise InvalidInputError("record 'signals' must be a non-empty list of signal names")
        strength = record.get("strength", 1.0)
        if not _is_real(strength) or not 0.0 <= float(strength) <= 1.0:
            raise InvalidInputError(f"record 'strength' must be in [0, 1]; got {strength!r}")
        created = validate_timestamp(record.get("created_at", time.time()))
        return cls(
            id=entry_id(user, text),
            user_id=user,
            text=text,
            signals=tuple(Signal.parse(s) for s in raw_signals),
            strength=float(strength),
            task=validate_optional_str(record.get("task"), "task"),
            source_input=validate_optional_str(
                record.get("source_input"), "source_input", max_chars
            ),
            created_at=created,
            updated_at=validate_timestamp(record.get("updated_at", created)),
            run_id=validate_optional_str(record.get("run_id"), "run_id"),
            metadata=validate_metadata(record.get("metadata")),
        )

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

    def merged_with(self, newer: ProfileEntry) -> ProfileEntry:
        """Fold a newer record of the same text into this one.

        Positive strengths combine as 1 - prod(1 - s_i); a later ``rejected`` wins; a later
        approval after a rejection lifts it again. Newer task, input, run id and metadata
        values replace older ones where given; ``created_at`` keeps the first sighting.
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
        )


def _signal_for(signal: Signal | str | None, rating: float | None) -> Signal:
    """The signal an add means: explicit, else ``rating`` when a rating is given, else authored."""
    if signal is None:
        return Signal.RATING if rating is not None else Signal.AUTHORED
    parsed = Signal.parse(signal)
    if rating is not None and parsed is not Signal.RATING:
        raise InvalidInputError(f"rating= goes with signal='rating'; got signal={parsed.value!r}")
    return parsed


def normalize_text(text: str) -> str:
    """The form used for identity: NFC, whitespace folded, case kept (case is style)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def entry_id(user_id: str, text: str) -> str:
    """Deterministic id from the user and the normalized text."""
    digest = hashlib.sha256(f"{user_id}\x1f{normalize_text(text)}".encode()).hexdigest()
    return f"op-{digest[:32]}"


def validate_user_id(user_id: object) -> str:
    """Return a usable user id or raise."""
    if not isinstance(user_id, str):
        raise InvalidInputError(f"user_id must be a non-empty string; got {type(user_id).__name__}")
    if not user_id.strip():
        raise InvalidInputError("user_id must be a non-empty string; got an empty one")
    if len(user_id) > 256 or not _encodable(user_id):
        raise InvalidInputError("user_id must be at most 256 characters of valid Unicode")
    return user_id


def validate_text(text: object, *, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """Return the text to store (NFC-normalized, surrounding whitespace stripped) or raise."""
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string; got {type(text).__name__}")
    if not _encodable(text):
        raise InvalidInputError("text contains lone surrogates; pass valid Unicode")
    body = unicodedata.normalize("NFC", text).strip()
    if not body:
        raise InvalidInputError("text is empty or only whitespace; pass the output to remember")
    if len(body) > max_chars:
        raise InvalidInputError(
            f"text has {len(body)} characters, over the limit of {max_chars}; "
            "shorten it or raise max_text_chars"
        )
    return body


def validate_rating(rating: object) -> float:
    """Return a rating in [1, 5] or raise (NaN, infinities and booleans are refused)."""
    if not _is_real(rating) or not 1.0 <= float(rating) <= 5.0:  # type: ignore[arg-type]
        raise InvalidInputError(f"rating must be a number from 1 to 5; got {rating!r}")
    return float(rating)  # type: ignore[arg-type]


def validate_timestamp(value: object) -> float:
    """Return a finite, non-negative epoch time in seconds or raise."""
    if not _is_real(value) or float(value) < 0:  # type: ignore[arg-type]
        raise InvalidInputError(f"created_at must be epoch seconds (a number >= 0); got {value!r}")
    return float(value)  # type: ignore[arg-type]


def validate_optional_str(value: object, name: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """Return ``value`` as a string ('' for None) or raise."""
    if value is None:
        return ""
    if not isinstance(value, str) or not _encodable(value) or len(value) > max_chars:
        raise InvalidInputError(f"{name} must be a string of valid Unicode; got {value!r:.80}")
    return value


def validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Scalar]:
    """Return a copy of free metadata with scalar values only, or raise."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict; got {type(metadata).__name__}")
    clean: dict[str, Scalar] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"metadata keys must be non-empty strings; got {key!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"metadata[{key!r}] must be finite; got {value!r}")
        if not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"metadata[{key!r}] must be a str, int, float or bool (Chroma stores scalars "
                f"only); got {type(value).__name__}"
            )
        if isinstance(value, str) and not _encodable(value):
            raise InvalidInputError(f"metadata[{key!r}] contains lone surrogates")
        clean[key] = value
    return clean


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
