"""The facade's surfaces that need the optional ``agents`` extra say so when it is missing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.errors import MissingExtraError

AGENTS_MODULES = ("langchain", "langgraph")
"""What the ``agents`` extra installs (``langchain_core`` is a core dependency)."""

OURS = ("langchain_outprofile.surfaces.middleware", "langchain_outprofile.surfaces.langgraph_store")


def hide_the_agents_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the extra's packages unimportable in this process (a None in ``sys.modules``
    refuses an import), and forget our modules that imported them, until the test ends."""
    for name in list(sys.modules):
        if any(name == top or name.startswith(top + ".") for top in AGENTS_MODULES):
            monkeypatch.setitem(sys.modules, name, None)
    for top in AGENTS_MODULES:
        monkeypatch.setitem(sys.modules, top, None)
    for name in OURS:
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize(
    ("what", "build"),
    [
        ("memory.middleware()", lambda memory: memory.middleware()),
        ("memory.as_store()", lambda memory: memory.as_store()),
    ],
)
def test_a_surface_without_the_agents_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
    client: Any,
    what: str,
    build: Callable[[OutputProfileMemory], object],
) -> None:
    memory = OutputProfileMemory.from_client(client, collection_name=f"extras-{len(what)}")
    hide_the_agents_extra(monkeypatch)
    with pytest.raises(MissingExtraError) as raised:
        build(memory)
    message = str(raised.value)
    assert message.startswith(f"{what} needs the `agents` extra")
    assert "pip install 'langchain-outprofile[agents]'" in message
    assert isinstance(raised.value, ImportError)  # callers catching ImportError still do
