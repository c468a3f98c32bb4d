"""The public API: ``__all__`` lists exactly what ``langchain_outprofile`` exports."""

from __future__ import annotations

import subprocess
import sys

import langchain_outprofile

EXPECTED_ALL = [
    "AmbiguousRunError",
    "AsyncClientError",
    "BlockTemplate",
    "BudgetTooSmallWarning",
    "CallLimits",
    "EmbeddingMismatchError",
    "InvalidInputError",
    "MissingUserIdError",
    "OutprofileError",
    "OutputProfileMemory",
    "OutputProfileStore",
    "ProfileEntry",
    "ProfileInjector",
    "ProfileMiddleware",
    "ProfileRetriever",
    "ProfileSelection",
    "ProfileSource",
    "ProfileStats",
    "ProfileStore",
    "RequestLimitError",
    "RunIdConflictError",
    "SelectionOptions",
    "Signal",
    "SignalStrengths",
    "StoreUnavailableError",
    "StyleEmbeddings",
    "TokenCounter",
    "UnknownRunError",
    "http_client",
    "parse_block",
    "platform_store",
    "user_label",
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


def test_the_cli_help_loads_neither_the_store_nor_langchain() -> None:
    """``outprofile --help`` imports only the CLI's own light modules: Chroma, LangChain and
    the commands' heavy modules load when a command runs."""
    heavy = ["chromadb", "langchain_core.runnables", "langchain_outprofile.memory", "llama_cpp"]
    code = (
        "import sys\n"
        "from langchain_outprofile.cli import app\n"
        "try:\n"
        "    app(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules], file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr
