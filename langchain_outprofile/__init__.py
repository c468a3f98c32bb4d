"""langchain-outprofile: personalize LangChain apps with what a user wrote or approved.

Names are loaded on first use (PEP 562), so ``import langchain_outprofile`` and
``outprofile --help`` stay fast; ``ProfileMiddleware`` and ``OutputProfileStore`` (LangGraph)
need the optional ``agents`` extra.

Example:
    ```python
    from langchain_outprofile import OutputProfileMemory, Signal

    memory = OutputProfileMemory.from_path("./profiles")
    memory.add("Short answer first, then bullets.", user_id="ana", signal=Signal.AUTHORED)
    block = memory.select("ana", max_tokens=400).text
    ```
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_outprofile.embeddings import StyleEmbeddings
    from langchain_outprofile.errors import (
        AmbiguousRunError,
        AsyncClientError,
        EmbeddingMismatchError,
        InvalidInputError,
        MissingUserIdError,
        OutprofileError,
        RequestLimitError,
        RunIdConflictError,
        StoreUnavailableError,
        UnknownRunError,
    )
    from langchain_outprofile.memory import (
        BudgetTooSmallWarning,
        OutputProfileMemory,
        ProfileStats,
    )
    from langchain_outprofile.render import BlockTemplate, parse_block
    from langchain_outprofile.surfaces._common import CallLimits
    from langchain_outprofile.surfaces.injector import ProfileInjector
    from langchain_outprofile.surfaces.langgraph_store import (
        OutputProfileStore,
        platform_store,
        user_label,
    )
    from langchain_outprofile.surfaces.middleware import ProfileMiddleware
    from langchain_outprofile.surfaces.retriever import ProfileRetriever
    from langchain_outprofile.tokens import TokenCounter
    from langchain_outprofile.types import (
        ProfileEntry,
        ProfileSelection,
        ProfileSource,
        ReadOptions,
        SelectionOptions,
        Signal,
        SignalStrengths,
        WriteOptions,
    )

_EXPORTS = {
    "AmbiguousRunError": "errors",
    "AsyncClientError": "errors",
    "BlockTemplate": "render",
    "BudgetTooSmallWarning": "memory",
    "CallLimits": "surfaces._common",
    "EmbeddingMismatchError": "errors",
    "InvalidInputError": "errors",
    "MissingUserIdError": "errors",
    "OutprofileError": "errors",
    "OutputProfileMemory": "memory",
    "OutputProfileStore": "surfaces.langgraph_store",
    "ProfileEntry": "types",
    "ProfileInjector": "surfaces.injector",
    "ProfileMiddleware": "surfaces.middleware",
    "ProfileRetriever": "surfaces.retriever",
    "ProfileSelection": "types",
    "ProfileSource": "types",
    "ProfileStats": "memory",
    "ReadOptions": "types",
    "RequestLimitError": "errors",
    "RunIdConflictError": "errors",
    "SelectionOptions": "types",
    "Signal": "types",
    "SignalStrengths": "types",
    "StoreUnavailableError": "errors",
    "StyleEmbeddings": "embeddings",
    "TokenCounter": "tokens",
    "UnknownRunError": "errors",
    "WriteOptions": "types",
    "parse_block": "render",
    "platform_store": "surfaces.langgraph_store",
    "user_label": "surfaces.langgraph_store",
}
__all__ = [
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
assert sorted(__all__) == sorted(_EXPORTS)  # one list of names, kept in two places for mypy

_AGENTS_HINT = (
    "{name} needs the `agents` extra (LangChain v1's create_agent and LangGraph): "
    "pip install 'langchain-outprofile[agents]'"
)
_NEEDS_AGENTS = {"ProfileMiddleware", "OutputProfileStore", "platform_store", "user_label"}


def __getattr__(name: str) -> Any:
    """Load an exported name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(import_module(f"{__name__}.{module}"), name)
    except ImportError as error:
        if name in _NEEDS_AGENTS:
            raise ImportError(f"{_AGENTS_HINT.format(name=name)} ({error})") from error
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
