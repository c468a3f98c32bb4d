"""The public API: ``__all__`` lists exactly what ``langchain_outprofile`` exports."""

from __future__ import annotations

import subprocess
import sys

import langchain_outprofile

EXPECTED_ALL = [
    "AmbiguousRunError",
    "BlockTemplate",
    "BudgetTooSmallWarning",
    "EmbeddingMismatchError",
    "InvalidInputError",
    "MissingUserIdError",
    "OutprofileError",
    "OutputProfileMemory",
    "ProfileEntry",
    "ProfileInjector",
    "ProfileMiddleware",
    "ProfileRetriever",
    "ProfileSelection",
    "ProfileSource",
    "ProfileStats",
    "ProfileStore",
    "RunIdConflictError",
    "SelectionOptions",
    "Signal",
    "SignalStrengths",
    "StoreUnavailableError",
    "StyleEmbeddings",
    "TokenCounter",
    "UnknownRunError",
    "parse_block",
]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(langchain_outprofile.__all__)
    for name in langchain_outprofile.__all__:
        assert getattr(langchain_outprofile, name) is not None, name


def test_importing_the_package_loads_no_optional_or_heavy_module() -> None:
    """``import langchain_outprofile`` stays light: the agents extra (langchain), the local
    model, the evaluation's extras and scipy's statistics are loaded only where used."""
    heavy = ["langchain.agents", "llama_cpp", "bm25s", "matplotlib", "scipy.stats", "openai"]
    code = f"import sys, langchain_outprofile\nprint([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stdout
