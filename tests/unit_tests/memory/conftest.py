"""Fixtures of the memory tests."""

from __future__ import annotations

from collections.abc import Iterator

import chromadb
import pytest


@pytest.fixture
def client() -> Iterator[chromadb.api.ClientAPI]:
    """A fresh in-process Chroma (collections still need unique names: it is shared)."""
    yield chromadb.EphemeralClient()
