"""The public API: ``__all__`` lists exactly what ``langchain_outprofile`` exports."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

import langchain_outprofile
from langchain_outprofile.errors import LocalModelUnavailableError

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
    "ReadOptions",
    "RequestLimitError",
    "RunIdConflictError",
    "SelectionOptions",
    "Signal",
    "SignalStrengths",
    "StoreUnavailableError",
    "StyleEmbeddings",
    "TokenCounter",
    "UnknownRunError",
    "WriteOptions",
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
    heavy = [
        "langchain.agents",
        "langchain_community",
        "llama_cpp",
        "bm25s",
        "matplotlib",
        "scipy.stats",
        "openai",
    ]
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


def test_the_compiled_runtime_without_langchain_community_names_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """langchain-community is a dependency of the compiled runtime only (the ``llama-cpp``
    extra): importing its chat model without it raises an ImportError that says what to
    install."""
    for name in [m for m in sys.modules if m.split(".")[0] == "langchain_community"]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("langchain_community", "langchain_community.chat_models.llamacpp"):
        monkeypatch.setitem(sys.modules, name, None)  # None: its import raises ImportError
    monkeypatch.delitem(sys.modules, "langchain_outprofile.local_llama_cpp", raising=False)

    with pytest.raises(ImportError) as error:
        importlib.import_module("langchain_outprofile.local_llama_cpp")

    assert isinstance(error.value, LocalModelUnavailableError)
    assert "langchain-community" in str(error.value)
    assert "bash scripts/install.sh llama-cpp" in str(error.value)


def test_only_the_compiled_runtime_needs_langchain_community() -> None:
    """Without langchain-community the memory, the local model's module (cyllama is its
    default runtime), the model server's module and the benchmarks import; the compiled
    runtime's chat model names its extra."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoCommunity(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "langchain_community":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoCommunity())
        import outprofile_lab.bench.run
        import langchain_outprofile.model_server
        from langchain_outprofile import OutputProfileMemory
        import langchain_outprofile.local
        try:
            import langchain_outprofile.local_llama_cpp
        except ImportError as error:
            print(type(error).__name__, error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("LocalModelUnavailableError"), result.stdout
    assert "bash scripts/install.sh llama-cpp" in result.stdout
