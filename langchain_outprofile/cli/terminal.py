"""Terminal: what the CLI prints of text it does not control, and how it shows warnings.

User ids, entry texts, file names and a model's answers come from users. Printed raw, an ESC
or CSI sequence in them clears the screen, moves the cursor or sets the window title (OSC),
and a bidi override makes the line read in another order than it is stored. The CLI prints
such text through :func:`visible`, which shows every control character as an escape
(``\\x1b``, ``\\x9b``, ``\\u202e``), and JSON through :func:`visible_json`, which escapes
the ones ``json.dumps`` leaves raw (the document parses to the same data). Backslashes are
left as they are: the point is that nothing reaches the terminal as a command, not a
reversible encoding (``export`` and ``--json`` are that).

Warnings (a budget too small for the frame, an approximate tokenizer) print as one line,
``warning: ...``, without Python's file path and source line (:func:`warnings_as_lines`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.text import Text

__all__ = ["visible", "visible_json", "warnings_as_lines"]

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


@contextmanager
def warnings_as_lines(stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, every warning prints as one line ``warning: <message>`` on stderr
    (or ``stream``), its text through :func:`visible`; the previous handling is restored
    after. A person running a command can act on the message; the file and source line
    Python adds point into this package, not at anything they wrote."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        flat = " ".join(str(message).split())
        console = Console(file=stream, stderr=stream is None, soft_wrap=True)
        console.print(Text(f"warning: {visible(flat)}", style="yellow"))

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
