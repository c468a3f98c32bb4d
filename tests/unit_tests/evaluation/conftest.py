"""Fixtures of the evaluation tests: the invented LaMP-shaped files under tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def tiny_lamp7() -> Path:
    """Three invented users in the LaMP-7 JSONL form (no LaMP text)."""
    return FIXTURES / "lamp7_tiny.jsonl"


@pytest.fixture
def tiny_lamp4() -> tuple[Path, Path]:
    """Two invented users in the official LaMP-4 questions/outputs JSON form."""
    return FIXTURES / "lamp4_tiny_questions.json", FIXTURES / "lamp4_tiny_outputs.json"
