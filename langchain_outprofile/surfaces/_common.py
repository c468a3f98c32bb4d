"""Common: what every LangChain surface shares: whose profile, and with which settings.

Every surface reads ``user_id`` from the explicit argument, else from
``config["configurable"]["user_id"]``, else raises :class:`MissingUserIdError`: a shared
profile is never used silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_outprofile.errors import InvalidInputError, MissingUserIdError
from langchain_outprofile.types import ProfileSource, SelectionOptions
from langchain_outprofile.validation import validate_user_id

__all__ = [
    "USER_ID_SPEC",
    "Placement",
    "SurfaceSettings",
    "check_placement",
    "user_id_from_config",
]

Placement = Literal["merge", "separate"]

USER_ID_SPEC = ConfigurableFieldSpec(
    id="user_id",
    annotation=str,
    name="User ID",
    description="Unique identifier for the user.",
    default="",
    is_shared=True,
)
"""How ``user_id`` is declared in ``config_specs``: exactly the spec of
``RunnableWithMessageHistory``'s documented ``history_factory_config`` example, so that both
can share one ``user_id`` in a chain (two different specs for one id are refused)."""


def user_id_from_config(explicit: str | None, config: RunnableConfig | None) -> str:
    """The user whose profile to use: ``explicit``, else ``config["configurable"]["user_id"]``.

    Raises:
        MissingUserIdError: when neither names a user.

    Example:
        ```python
        user_id_from_config(None, {"configurable": {"user_id": "ana"}})  # "ana"
        ```
    """
    if explicit is not None:
        return validate_user_id(explicit)
    found = ((config or {}).get("configurable") or {}).get("user_id")
    if found is None or found == "":
        raise MissingUserIdError(
            "no user_id: pass config={'configurable': {'user_id': ...}} to invoke, or give "
            "user_id= when creating the injector (there is no shared profile)"
        )
    return validate_user_id(found)


def check_placement(placement: object) -> Placement:
    """Return a valid placement or raise :class:`InvalidInputError`.

    Example:
        ```python
        check_placement("separate")  # "separate"
        ```
    """
    if placement not in ("merge", "separate"):
        raise InvalidInputError(f"placement must be 'merge' or 'separate'; got {placement!r}")
    return placement


@dataclass(frozen=True)
class SurfaceSettings:
    """Whose block a surface reads and how it is chosen, checked when the surface is built.

    Example:
        ```python
        settings = SurfaceSettings.resolve(memory, max_tokens=300, order="stable")
        settings.options.max_tokens  # 300
        ```
    """

    user_id: str | None
    placement: Placement
    options: SelectionOptions

    @classmethod
    def resolve(
        cls,
        source: ProfileSource,
        *,
        user_id: str | None = None,
        placement: Placement = "merge",
        options: SelectionOptions | None = None,
        max_tokens: int | None = None,
        task: str | None = None,
        **changes: Any,
    ) -> SurfaceSettings:
        """Validate a surface's arguments now rather than on its first call."""
        chosen = (options or source.options).with_changes(
            max_tokens=max_tokens, task=task, **changes
        )
        return cls(
            user_id=None if user_id is None else validate_user_id(user_id),
            placement=check_placement(placement),
            options=chosen,
        )

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """Declares ``user_id`` unless it is fixed."""
        return [] if self.user_id is not None else [USER_ID_SPEC]

    def user_for(self, config: RunnableConfig | None) -> str:
        """The user of one call (see :func:`user_id_from_config`)."""
        return user_id_from_config(self.user_id, config)
