"""What the CLI prints of user text: control characters as escapes, warnings as one line."""

from __future__ import annotations

import io
import json
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_outprofile.cli.terminal import visible, visible_json, warnings_as_lines


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # ESC ... CSI: clear the screen, cursor home
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # OSC: set the window title, BEL ends it
        ("\x07", "\\x07"),  # BEL
        ("\x9b2J", "\\x9b2J"),  # C1 CSI: the one-byte form of ESC [
        ("\x85", "\\x85"),  # C1 NEL
        ("a\rb", "a\\x0db"),  # CR overwrites the line
        ("\x7f", "\\x7f"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),  # bidi override, pop
        ("\u2066x\u2069\u200f\u061c", "\\u2066x\\u2069\\u200f\\u061c"),  # isolates, marks
        ("one\u2028two", "one\\u2028two"),
        ("plain text, é, 😊, <\u200b/entry>", "plain text, é, 😊, <\u200b/entry>"),
    ],
)
def test_visible_escapes_control_characters(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_visible_keeps_what_it_is_told_to() -> None:
    assert visible("a\nb\x1b", keep="\n") == "a\nb\\x1b"
    assert visible("a\nb") == "a\\x0ab"


@given(
    st.recursive(st.text() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))
)
def test_visible_json_parses_to_the_same_value_and_has_no_raw_controls(value: object) -> None:
    for indent in (None, 2):
        document = visible_json(json.dumps(value, ensure_ascii=False, indent=indent))
        assert json.loads(document) == value
        assert visible(document, keep="\n") == document  # nothing left to escape


def test_warnings_print_as_one_line_and_the_handler_is_restored() -> None:
    before = warnings.showwarning
    out = io.StringIO()
    with warnings_as_lines(out):
        warnings.simplefilter("always")
        warnings.warn("budget too\nsmall \x1b[2J", UserWarning, stacklevel=1)
        assert warnings.showwarning is not before
    assert warnings.showwarning is before
    assert out.getvalue() == "warning: budget too small \\x1b[2J\n"
