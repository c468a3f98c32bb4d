"""Values that arrive from an untrusted request: typed errors, never a surprise (issue 24).

A web app passes query strings, form fields and headers straight into the surfaces' config:
``profile_fill_from_profile="false"`` (a string, and truthy), thread and run ids with lone
surrogates (what a JSON body's ``"\\ud800"`` decodes to). Each must be refused with an
:class:`InvalidInputError` that says what to pass, and change nothing stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from langchain_outprofile import InvalidInputError, OutputProfileMemory, SelectionOptions

RUN = "6f1c0f9e-2222-4c1e-9f00-000000000002"


@pytest.fixture
def filled(ephemeral_memory: OutputProfileMemory) -> OutputProfileMemory:
    ephemeral_memory.add("Short answer first.", user_id="ana", created_at=1_700_000_000.0)
    ephemeral_memory.add("Email only.", user_id="ana", task="email", created_at=1_700_000_001.0)
    ephemeral_memory.record_output("A tracked answer.", user_id="ana", run_id=RUN)
    return ephemeral_memory


@pytest.mark.parametrize("value", ["false", "0", "true", "", 0, 1])
def test_string_and_number_booleans_are_refused(value: Any) -> None:
    with pytest.raises(InvalidInputError, match="fill_from_profile must be True or False"):
        SelectionOptions(fill_from_profile=value)


@pytest.mark.parametrize("value", ["false", "0"])
def test_a_string_boolean_from_a_request_is_refused_by_the_injector(
    filled: OutputProfileMemory, value: str
) -> None:
    before = filled.export("ana")
    config = {"configurable": {"user_id": "ana", "profile_fill_from_profile": value}}
    with pytest.raises(InvalidInputError, match="profile_fill_from_profile"):
        filled.injector().invoke("hi", config=config)  # type: ignore[arg-type]
    assert filled.export("ana") == before


def test_a_lone_surrogate_thread_id_is_refused_on_every_read(filled: OutputProfileMemory) -> None:
    before = filled.export("ana")
    config = {"configurable": {"user_id": "ana", "thread_id": "t-\ud800"}}
    with pytest.raises(InvalidInputError, match="thread_id"):
        filled.select("ana", thread_id="t-\ud800")
    with pytest.raises(InvalidInputError, match="thread_id"):
        filled.injector().invoke("hi", config=config)  # type: ignore[arg-type]
    assert filled.export("ana") == before


def test_a_lone_surrogate_run_id_is_refused(filled: OutputProfileMemory) -> None:
    before = filled.export("ana")
    with pytest.raises(InvalidInputError, match="run_id"):
        filled.feedback("r-\ud800", "endorsed")
    with pytest.raises(InvalidInputError, match="run_id"):
        filled.record_output("x", user_id="ana", run_id="r-\ud800")
    assert filled.export("ana") == before
