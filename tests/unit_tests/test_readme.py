"""The README's complete Python snippets run as they are, offline, in a fresh directory.

A snippet counts as complete when it imports the package itself; fragments such as
``chain = prompt | ...`` are illustrations, covered by the examples and the surface tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
COMPLETE = [b for b in BLOCKS if re.search(r"^(from|import) langchain_outprofile\b", b, re.M)]


def test_the_readme_has_complete_snippets() -> None:
    assert len(COMPLETE) >= 2, "the short tour and the LangGraph store snippet"


@pytest.mark.parametrize("code", COMPLETE, ids=[f"snippet{i}" for i in range(len(COMPLETE))])
def test_a_readme_snippet_runs(code: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr
