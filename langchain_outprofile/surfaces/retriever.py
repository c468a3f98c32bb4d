"""Retriever: the user's profile selection as LangChain Documents.

Selection is by preference signal, not query similarity: the query is read only when
``relevance_weight`` > 0. ``user_id`` comes from the explicit field, else
``config["configurable"]["user_id"]``, else :class:`MissingUserIdError`. Any selection option
can change per call through ``config["configurable"]["profile_<name>"]`` (declared in
``config_specs``) or ``configurable_fields`` (``k``, ``max_tokens``, ``task``, ``options``).
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
    SurfaceSettings,
    aselect,
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
    for one call (``profile_max_tokens``, ``profile_task``, ...).

    Example:
        ```python
        retriever = memory.as_retriever(user_id="ana", k=5)
        docs = retriever.invoke("any query")
        docs = retriever.invoke("q", config={"configurable": {"profile_task": "email"}})
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
        kwargs["user_id"] = user_id_from_config(self.user_id, config)
        kwargs["options"] = self._settings.for_call(config, names=OPTION_NAMES).options
        return kwargs

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
        options: SelectionOptions | None = None,
    ) -> list[Document]:
        user = user_id if user_id is not None else user_id_from_config(self.user_id, None)
        chosen = options if options is not None else self._settings.options
        selection = self.memory.select(user, options=chosen, query=query)
        return self._documents(selection, k)

    def _documents(self, selection: ProfileSelection, k: int | None) -> list[Document]:
        limit = _check_k(k if k is not None else self.k)
        return selection_documents(selection)[:limit]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        user_id: str | None = None,
        k: int | None = None,
        options: SelectionOptions | None = None,
    ) -> list[Document]:
        user = user_id if user_id is not None else user_id_from_config(self.user_id, None)
        chosen = options if options is not None else self._settings.options
        selection = await aselect(self.memory, user, options=chosen, query=query)
        return self._documents(selection, k)


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
