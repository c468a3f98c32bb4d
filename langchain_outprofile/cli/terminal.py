"""Terminal: what the CLI prints of text it does not control, and how it shows warnings.

User ids, entry texts, file names and a model's answers come from users. Printed raw, an ESC
or CSI sequence in them clears the screen, moves the cursor or sets the window title (OSC),
and a bidi override makes the line read in another order than it is stored. The CLI prints
such text through :func:`visible`, which shows every control character as an escape
(``\\x1b``, ``\\x9b``, ``\\u202e``), and JSON through :func:`visible_json`, which escapes
the ones ``json.dumps`` leaves raw (the document parses to the same data). Both live in
``validation`` (plain functions over user text), so ``outprofile eval`` uses them too.
Backslashes are left as they are: the point is that nothing reaches the terminal as a
command, not a reversible encoding (``export`` and ``--json`` are that).

Warnings (a budget too small for the frame, an approximate tokenizer) print as one line,
``warning: ...``, without Python's file path and source line (:func:`warnings_as_lines`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.text import Text

from langchain_outprofile.validation import visible, visible_json

__all__ = ["visible", "visible_json", "warnings_as_lines"]


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
