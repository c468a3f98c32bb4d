"""The surfaces' references: each class a user builds has LangChain's partner sections, lists
every constructor argument under "Key init args", and its examples run as they are, in a
fresh process and directory, offline."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from langchain_outprofile import (
    OutputProfileStore,
    ProfileInjector,
    ProfileMiddleware,
    ProfileRetriever,
)
from langchain_outprofile.surfaces.tracking import TrackedRunnable
from tests import docstrings


@dataclass(frozen=True)
class Reference:
    """One class's docstring: the sections whose examples run, in order (each uses the
    names the last defined, ``Async`` last), what the program prints after them, and what
    that output must hold."""

    cls: type
    order: list[str]
    check: str
    expected: list[str]

    def __str__(self) -> str:
        return self.cls.__name__


REFERENCES = [
    Reference(
        ProfileInjector,
        ["Instantiate", "Invoke", "Batch", "Async"],
        # the async call's messages, and the claims the examples' comments make
        "print(small[0].content == messages[1].content, [len(m) for m in batches],"
        " [m.type for m in messages])",
        ["Short answer first, then bullets.", "True [3, 3] ['system', 'system', 'human']"],
    ),
    Reference(
        ProfileRetriever,
        ["Instantiate", "Invoke", "Batch", "Async"],
        "print([d.metadata['signal'] for d in docs], len(one), repr(emails[0].page_content),"
        " [len(d) for d in batches])",
        ["['authored', 'endorsed'] 1 'Thanks, see you Tuesday.' [2, 2]"],
    ),
    Reference(
        ProfileMiddleware,
        ["Instantiate", "Invoke", "Stream", "Async"],
        # every model call (two invoked, one streamed, one awaited) was sent the block first
        "print(len(seen), all('Short answer first' in m[0].content for m in seen),"
        " repr(state['messages'][-1].content))",
        ["Short answer first, then bullets.", "['model']", "4 True 'Yes, Tuesday works.'"],
    ),
    Reference(
        OutputProfileStore,
        ["Instantiate", "Put and get", "Search", "In a graph", "Async"],
        "print(keys, sorted(item.key for item in items))",
        [
            "Short answers.\nWarm, never chatty.\n",  # the graph's node, from the store
            "['style', 'tone'] ['sign-off', 'style', 'tone']",
        ],
    ),
    Reference(
        TrackedRunnable,
        ["Instantiate", "Invoke", "Stream", "Async"],
        # the three answers (endorsed, rejected, accepted) under the tracker's task, beside
        # the entry added by hand
        "stats = memory.stats('ana')\n"
        "print(pending, repr(answer), chunks, stats.selectable, stats.pending, stats.rejected,"
        " sorted(stats.tasks.items()))",
        ["1 'Yes: Coffee?' ['Yes: Dinner?'] 3 0 1 [('', 1), ('email', 3)]"],
    ),
]


def _arguments(cls: type) -> list[str]:
    """What the constructor takes: a pydantic model's fields, else ``__init__``'s names."""
    if issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return [n for n in inspect.signature(cls.__init__).parameters if n != "self"]


@pytest.mark.parametrize("ref", REFERENCES, ids=str)
def test_the_docstring_has_the_partner_sections(ref: Reference) -> None:
    titles = re.findall(r"^(\S[^\n]*):$", inspect.cleandoc(ref.cls.__doc__ or ""), re.M)
    assert titles[0] == "Setup"
    assert titles[1].startswith("Key init args")
    assert [t for t in titles if t in ref.order] == ref.order
    assert titles[-1] == "Async"


@pytest.mark.parametrize("ref", REFERENCES, ids=str)
def test_the_docstring_lists_every_argument(ref: Reference) -> None:
    """An argument missing from "Key init args" is one a reader never learns."""
    assert not docstrings.undocumented(ref.cls.__doc__ or "", _arguments(ref.cls))


@pytest.mark.parametrize("ref", REFERENCES, ids=str)
def test_the_docstring_examples_run(ref: Reference, tmp_path: Path) -> None:
    examples = docstrings.examples(ref.cls.__doc__ or "")
    assert set(ref.order) <= set(examples), sorted(examples)
    done = docstrings.run(docstrings.script(examples, ref.order, ref.check), tmp_path)
    assert done.returncode == 0, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    for wanted in ref.expected:
        assert wanted in done.stdout, done.stdout
