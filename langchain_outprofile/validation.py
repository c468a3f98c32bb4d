"""Validation: the checks every input passes before anything is stored, and entry identity.

The lowest stage above the errors: plain functions over plain values. Each raises
:class:`InvalidInputError` with a message that says what to pass instead. Last, how user
text is shown on a terminal (:func:`visible`): every control character as an escape.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_outprofile.errors import InvalidInputError

__all__ = [
    "CLOCK_SKEW_S",
    "DEFAULT_COLLECTION",
    "DEFAULT_MAX_TEXT_CHARS",
    "MAX_THREAD_ID_CHARS",
    "MAX_TIMESTAMP",
    "Scalar",
    "clamp_to_now",
    "encodable",
    "entry_id",
    "expiry_of",
    "is_real",
    "normalize_text",
    "validate_entry_id",
    "validate_items",
    "validate_metadata",
    "validate_optional_str",
    "validate_rating",
    "validate_retention",
    "validate_strength",
    "validate_text",
    "validate_thread_id",
    "validate_timestamp",
    "validate_user_id",
    "visible",
    "visible_json",
]

DEFAULT_COLLECTION = "outprofile"
"""The Chroma collection that holds every user when no ``collection_name`` is given."""

DEFAULT_MAX_TEXT_CHARS = 20_000
"""Longest accepted entry text, in characters (configurable per memory)."""

MAX_THREAD_ID_CHARS = 512
"""Longest accepted thread id, in characters: a thread id names a pin in the store."""

Scalar = str | int | float | bool

MAX_TIMESTAMP = 253_402_300_799.0
"""9999-12-31T23:59:59Z, the last second a ``datetime`` can show: a later time (from an import
file, say) would make every reader that shows it raise, so none is accepted."""

CLOCK_SKEW_S = 86_400.0
"""How far after now a caller's time may be and still be taken, as now: a day covers clocks
that disagree and a time zone taken for UTC (at most 14 h); anything later is wrong data."""


def normalize_text(text: str) -> str:
    """The form used for identity: NFC, whitespace folded, case kept (case is style)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def entry_id(user_id: str, text: str) -> str:
    """Deterministic id from the user and the normalized text.

    Example:
        ```python
        entry_id("ana", "Hi  there") == entry_id("ana", "Hi there")  # True
        ```
    """
    digest = hashlib.sha256(f"{user_id}\x1f{normalize_text(text)}".encode()).hexdigest()
    return f"op-{digest[:32]}"


def validate_user_id(user_id: object) -> str:
    """Return a usable user id or raise."""
    if not isinstance(user_id, str):
        raise InvalidInputError(f"user_id must be a non-empty string; got {type(user_id).__name__}")
    if not user_id.strip():
        raise InvalidInputError("user_id must be a non-empty string; got an empty one")
    if len(user_id) > 256 or not encodable(user_id):
        raise InvalidInputError("user_id must be at most 256 characters of valid Unicode")
    return user_id


def validate_entry_id(value: object) -> str:
    """An entry id as given to ``delete``: a non-empty string of valid Unicode (an unknown
    one deletes nothing)."""
    if not isinstance(value, str) or not value or len(value) > 256 or not encodable(value):
        raise InvalidInputError(
            f"entry_id must be an entry's id, a string like 'op-...'; got {value!r:.60}"
        )
    return value


def validate_items(value: object, name: str) -> list[Any]:
    """The items of a batch argument as a list: any iterable but a string, bytes or a
    single dict (each would iterate as something else than the items meant)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise InvalidInputError(
            f"{name} must be a list (or another iterable) of items; got {type(value).__name__}"
        )
    return list(value)


def validate_text(text: object, *, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """Return the text to store (NFC-normalized, surrounding whitespace stripped) or raise."""
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string; got {type(text).__name__}")
    if not encodable(text):
        raise InvalidInputError("text contains lone surrogates; pass valid Unicode")
    body = unicodedata.normalize("NFC", text).strip()
    if not body:
        raise InvalidInputError("text is empty or only whitespace; pass the output to remember")
    if len(body) > max_chars:
        raise InvalidInputError(
            f"text has {len(body)} characters, over the limit of {max_chars}; "
            "shorten it or raise the limit (OutputProfileMemory(writes=WriteOptions("
            "max_text_chars=...)); outprofile ingest or import --max-text-chars)"
        )
    return body


def validate_rating(rating: object) -> float:
    """Return a rating in [1, 5] or raise (NaN, infinities, booleans and huge ints are refused)."""
    if not is_real(rating) or not 1.0 <= float(rating) <= 5.0:  # type: ignore[arg-type]
        raise InvalidInputError(f"rating must be a number from 1 to 5; got {rating!r:.40}")
    return float(rating)  # type: ignore[arg-type]


def validate_strength(value: object, name: str) -> float:
    """Return a signal strength in [0, 1] or raise."""
    if not is_real(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise InvalidInputError(f"{name} must be a number in [0, 1]; got {value!r:.40}")
    return float(value)  # type: ignore[arg-type]


def validate_timestamp(value: object) -> float:
    """Return a finite, non-negative epoch time in seconds, at most :data:`MAX_TIMESTAMP`."""
    if not is_real(value) or not 0 <= float(value) <= MAX_TIMESTAMP:  # type: ignore[arg-type]
        raise InvalidInputError(
            f"created_at must be epoch seconds (a number >= 0, before the year 10000); "
            f"got {value!r:.40}"
        )
    return float(value)  # type: ignore[arg-type]


def clamp_to_now(when: float, now: float, name: str = "created_at") -> float:
    """A caller's time, taken as ``now`` when it is at most :data:`CLOCK_SKEW_S` ahead.

    A future time would lead the block for as long as it stays ahead (the ranking key grows
    with time), so none is stored; one more than the allowance ahead is refused.

    Example:
        ```python
        clamp_to_now(1_000.0 + 60, now=1_000.0)  # 1000.0
        ```
    """
    if when <= now:
        return when
    if when - now <= CLOCK_SKEW_S:
        return now
    raise InvalidInputError(
        f"{name} is {(when - now) / 86_400:,.1f} days in the future ({when!r:.20} > now "
        f"{now:.0f}); pass a time at most {CLOCK_SKEW_S / 3600:.0f} h after now (check the "
        "clock or the time zone of whatever wrote it)"
    )


def validate_retention(value: object, name: str = "retention_s") -> float | None:
    """A retention period in seconds (finite, > 0, ending before the year 10000), or None
    (keep forever).

    Example:
        ```python
        validate_retention(30 * 86_400)  # 2592000.0
        ```
    """
    if value is None:
        return None
    if not is_real(value) or not 0 < float(value) <= MAX_TIMESTAMP:  # type: ignore[arg-type]
        raise InvalidInputError(
            f"{name} must be a number of seconds > 0 (or None: keep forever); got {value!r:.40}"
        )
    return float(value)  # type: ignore[arg-type]


def expiry_of(
    *, expires_at: object, ttl_s: object, retention_s: float | None, now: float
) -> float | None:
    """When a new signal's entry expires (epoch seconds; None: never): ``expires_at`` as
    given, else ``now + ttl_s``, else ``now + retention_s`` (the memory's default), else
    never. A time already past, or after the year 9999, is refused: to remove an entry now,
    delete it.

    Example:
        ```python
        expiry_of(expires_at=None, ttl_s=60, retention_s=None, now=1_000.0)  # 1060.0
        ```
    """
    if expires_at is not None and ttl_s is not None:
        raise InvalidInputError("give expires_at= or ttl_s=, not both")
    if ttl_s is not None:
        when = now + validate_retention(ttl_s, "ttl_s")  # type: ignore[operator]
    elif expires_at is not None:
        if not is_real(expires_at):
            raise InvalidInputError(
                f"expires_at must be epoch seconds (a finite number); got {expires_at!r:.40}"
            )
        when = float(expires_at)  # type: ignore[arg-type]
    elif retention_s is not None:
        when = now + retention_s
    else:
        return None
    if when > MAX_TIMESTAMP:
        raise InvalidInputError(
            f"the entry would expire after the year 9999 ({when:.0f}); pass a shorter ttl_s "
            "or expires_at, or none to keep it forever"
        )
    if when <= now:
        raise InvalidInputError(
            f"expires_at={when!r:.20} is not after now ({now:.0f}): an entry that has already "
            "expired cannot be stored; delete it instead"
        )
    return when


def validate_optional_str(value: object, name: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """Return ``value`` as a string ('' for None) or raise."""
    if value is None:
        return ""
    if not isinstance(value, str) or not encodable(value) or len(value) > max_chars:
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
        if isinstance(value, int | float) and not isinstance(value, bool) and not is_real(value):
            raise InvalidInputError(f"metadata[{key!r}] must be a finite number; got {value!r:.40}")
        if not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"metadata[{key!r}] must be a str, int, float or bool (Chroma stores scalars "
                f"only); got {type(value).__name__}"
            )
        if isinstance(value, str) and not encodable(value):
            raise InvalidInputError(f"metadata[{key!r}] contains lone surrogates")
        clean[key] = value
    return clean


def validate_thread_id(thread_id: object) -> str:
    """A thread id as a string: a non-empty ``str`` (or an int or UUID, as LangGraph apps
    pass them) of at most :data:`MAX_THREAD_ID_CHARS` characters.

    Example:
        ```python
        validate_thread_id(uuid.uuid4())  # its str()
        ```
    """
    if isinstance(thread_id, bool) or not isinstance(thread_id, (str, int, uuid.UUID)):
        raise InvalidInputError(
            f"thread_id must be a str, int or UUID; got {type(thread_id).__name__}"
        )
    text = str(thread_id)
    if not text or len(text) > MAX_THREAD_ID_CHARS or "\x00" in text or not encodable(text):
        raise InvalidInputError(
            f"thread_id must be 1-{MAX_THREAD_ID_CHARS} characters of valid Unicode without "
            f"NUL; got {text!r:.60}"
        )
    return text


def is_real(value: object) -> bool:
    """True for an int or float (not a bool) that is finite as a float."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def encodable(text: str) -> bool:
    """True when ``text`` is valid Unicode (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- user text on a terminal (the CLI and `outprofile eval` print it) ------------------------

_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0 (ESC, BEL, CR, ...), DEL and C1 (U+009B is a one-byte CSI)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\u2028\u2029]"  # line and paragraph separators: a line break the reader does not see
)


def visible(text: str, *, keep: str = "") -> str:
    """``text`` with each control character shown as an escape (``\\x1b``, ``\\u202e``);
    the characters in ``keep`` (e.g. ``"\\n"`` for a multi-line block) stay as they are.

    Example:
        ```python
        visible("\\x1b]0;owned\\x07ana")  # '\\\\x1b]0;owned\\\\x07ana'
        ```
    """
    return _CONTROL.sub(lambda found: _escaped(found[0], keep), text)


def visible_json(document: str) -> str:
    """A JSON document from ``json.dumps`` with the control characters it leaves raw (DEL,
    C1, bidi controls, line separators) written as ``\\uXXXX`` escapes. Those characters
    can only occur inside strings, where the escape means the same character, so the
    document parses to the same value; the newlines of its indentation stay."""
    return _CONTROL.sub(lambda found: _escaped(found[0], "\n", json=True), document)


def _escaped(char: str, keep: str, *, json: bool = False) -> str:
    if char in keep:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF and not json else f"\\u{code:04x}"
