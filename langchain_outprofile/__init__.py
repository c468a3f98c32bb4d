"""langchain-outprofile: personalize LangChain apps with what a user wrote or approved.

Example:
    ```python
    from langchain_outprofile import OutputProfileMemory, Signal

    memory = OutputProfileMemory(path="./profiles")
    memory.add("Short answer first, then bullets.", user_id="ana", signal=Signal.AUTHORED)
    block = memory.select("ana", max_tokens=400).text
    ```
"""

from langchain_outprofile.embeddings import StyleEmbeddings
from langchain_outprofile.feedback import UnknownRunError
from langchain_outprofile.inject import MissingUserIdError, ProfileInjector
from langchain_outprofile.memory import OutputProfileMemory, ProfileStats
from langchain_outprofile.records import (
    InvalidInputError,
    OutprofileError,
    ProfileEntry,
    Signal,
    SignalStrengths,
)
from langchain_outprofile.render import BlockTemplate, ProfileSelection, parse_block
from langchain_outprofile.retriever import ProfileRetriever
from langchain_outprofile.selection import SelectionOptions
from langchain_outprofile.store import EmbeddingMismatchError, ProfileStore, StoreUnavailableError
from langchain_outprofile.tokens import TokenCounter

__all__ = [
    "BlockTemplate",
    "EmbeddingMismatchError",
    "InvalidInputError",
    "MissingUserIdError",
    "OutprofileError",
    "OutputProfileMemory",
    "ProfileEntry",
    "ProfileInjector",
    "ProfileRetriever",
    "ProfileSelection",
    "ProfileStats",
    "ProfileStore",
    "SelectionOptions",
    "Signal",
    "SignalStrengths",
    "StoreUnavailableError",
    "StyleEmbeddings",
    "TokenCounter",
    "UnknownRunError",
    "parse_block",
]
