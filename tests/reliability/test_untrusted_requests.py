# ruff: noqa: E501  (one row of the request table per line reads best)
"""Values that arrive from an untrusted request: typed errors, never a surprise.

A web app passes query strings, form fields and headers straight into the surfaces' config:
``profile_fill_from_profile="false"`` (a string, and truthy), thread and run ids with lone
surrogates (what a JSON body's ``"\\ud800"`` decodes to). Each must be refused with an
:class:`InvalidInputError` that says what to pass, and change nothing stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import chromadb
import pytest
from langchain_core.runnables import ConfigurableField, RunnableConfig, RunnableLambda

from langchain_outprofile import (
    CallLimits,
    InvalidInputError,
    OutputProfileMemory,
    ProfileEntry,
    RequestLimitError,
    SelectionOptions,
)
from tests.conftest import ManualClock, unique_name

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


# -- far-future times -------------------------------------------------------------------------

NOW = 1_800_000_000.0
YEAR_33658 = 1_000_000_000_000.0  # what an import file carried: datetime cannot show it


@pytest.fixture
def clocked() -> OutputProfileMemory:
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name("time"), clock=ManualClock(NOW)
    )
    memory.add("Short answer first.", user_id="ana", created_at=NOW - 86_400)
    memory.add("Cheers, Bob", user_id="bob", created_at=NOW - 86_400)
    return memory


def _snapshot(memory: OutputProfileMemory) -> tuple[Any, ...]:
    return memory.export("ana"), memory.export("bob"), memory.store.total()


def _record(created_at: float, **fields: Any) -> dict[str, Any]:
    return {"text": "From the future.", "user_id": "ana", "signals": ["authored"],
            "created_at": created_at, **fields}  # fmt: skip


FAR_FUTURE: list[tuple[str, Callable[[OutputProfileMemory, float], Any]]] = [
    ("add", lambda m, t: m.add("From the future.", user_id="ana", created_at=t)),
    ("add_many", lambda m, t: m.add_many([{"text": "x", "user_id": "ana", "created_at": t}])),
    ("import created_at", lambda m, t: m.import_([_record(t)])),
    ("import updated_at", lambda m, t: m.import_([_record(NOW - 5, updated_at=t)])),
]


@pytest.mark.parametrize("when", [NOW + 2 * 86_400, NOW + 10 * 365 * 86_400, YEAR_33658])
@pytest.mark.parametrize(("path", "write"), FAR_FUTURE, ids=[r[0] for r in FAR_FUTURE])
def test_a_time_past_the_skew_bound_is_refused_and_changes_nothing(
    clocked: OutputProfileMemory,
    path: str,
    write: Callable[[OutputProfileMemory, float], Any],
    when: float,
) -> None:
    before = _snapshot(clocked)
    with pytest.raises(InvalidInputError, match=r"in the future|before the year 10000"):
        write(clocked, when)
    assert _snapshot(clocked) == before


@pytest.mark.parametrize(("path", "write"), FAR_FUTURE, ids=[r[0] for r in FAR_FUTURE])
def test_a_time_within_the_skew_allowance_is_clamped_to_now(
    clocked: OutputProfileMemory, path: str, write: Callable[[OutputProfileMemory, float], Any]
) -> None:
    write(clocked, NOW + 3_600)  # a worker whose clock runs an hour ahead
    (stored,) = [r for r in clocked.export("ana") if r["text"] in ("From the future.", "x")]
    assert max(stored["created_at"], stored["updated_at"]) == NOW  # the future one, now


def test_the_langgraph_store_shows_a_stored_far_future_time(clocked: OutputProfileMemory) -> None:
    """Rows written before the bound (by an older release) must still be readable."""
    row = ProfileEntry.create("Old import.", user_id="ana", created_at=NOW)
    clocked.store.write([replace(row, created_at=YEAR_33658, updated_at=YEAR_33658)])
    store = clocked.as_store()
    items = store.search(("profile", "ana"))
    assert "Old import." in [i.value["text"] for i in items]
    found = store.get(("profile", "ana"), row.id)
    assert found is not None and found.created_at.year == 9999


# -- per-call settings bounded by the app -----------------------------------------------------

HUGE_BUDGET = 530_031  # the block an attacker's profile_max_tokens built


def _config(**configurable: Any) -> RunnableConfig:
    return {"configurable": {"user_id": "ana", **configurable}}


REQUESTS: list[tuple[str, Callable[[OutputProfileMemory], Any], str]] = [
    ("injector config budget", lambda m: m.injector().invoke("hi", config=_config(profile_max_tokens=HUGE_BUDGET)), "profile_max_tokens=530031 is over"),
    ("injector config mmr_lambda", lambda m: m.injector().invoke("hi", config=_config(profile_mmr_lambda=0.6999)), "may not change ['profile_mmr_lambda']"),
    ("retriever config budget", lambda m: m.as_retriever().invoke("q", config=_config(profile_max_tokens=HUGE_BUDGET)), "profile_max_tokens=530031 is over"),
    ("retriever config pool_size", lambda m: m.as_retriever().invoke("q", config=_config(profile_pool_size=399)), "may not change ['profile_pool_size']"),
    ("retriever configurable field", lambda m: m.as_retriever().configurable_fields(max_tokens=ConfigurableField(id="budget")).invoke("q", config=_config(budget=HUGE_BUDGET)), "max_tokens=530031 is over"),
    ("store config budget", lambda m: m.as_store().settings_for(_config(profile_max_tokens=HUGE_BUDGET)), "profile_max_tokens=530031 is over"),
    ("store config pool_size", lambda m: m.as_store().settings_for(_config(profile_pool_size=399)), "may not change ['profile_pool_size']"),
    ("store under a lower limit", lambda m: m.as_store(max_tokens=5_000, limits=CallLimits(max_tokens=4_000)), "max_tokens=5000 is over"),
    ("middleware config budget", lambda m: m.middleware().settings_for(_config(profile_max_tokens=HUGE_BUDGET)), "profile_max_tokens=530031 is over"),
    ("middleware config max_entry_tokens", lambda m: m.middleware().settings_for(_config(profile_max_entry_tokens=199)), "may not change ['profile_max_entry_tokens']"),
    ("tracked config budget", lambda m: m.track(RunnableLambda(str)).invoke("hi", config=_config(profile_max_tokens=HUGE_BUDGET)), "profile_max_tokens=530031 is over"),
    ("tracked config mmr_lambda", lambda m: m.track(RunnableLambda(str)).invoke("hi", config=_config(profile_mmr_lambda=0.6999)), "may not change ['profile_mmr_lambda']"),
    ("middleware under a lower limit", lambda m: m.middleware(max_tokens=5_000, limits=CallLimits(max_tokens=4_000)), "max_tokens=5000 is over"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "says"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_a_request_past_the_apps_limits_is_refused(
    filled: OutputProfileMemory, case: str, call: Callable[[OutputProfileMemory], Any], says: str
) -> None:
    before = filled.export("ana")
    with pytest.raises(RequestLimitError) as raised:
        call(filled)
    assert says in str(raised.value), f"{case}: {raised.value}"
    assert "limits=CallLimits(" in str(raised.value)  # says what to change
    assert filled.export("ana") == before


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.injector().invoke("hi", config=_config(), max_tokens=HUGE_BUDGET),
        lambda m: m.injector().bind(max_tokens=HUGE_BUDGET).invoke("hi", config=_config()),
        lambda m: m.as_retriever().invoke("q", config=_config(), max_tokens=HUGE_BUDGET),
    ],
    ids=["injector invoke", "injector bind", "retriever invoke"],
)
def test_a_setting_as_an_invoke_keyword_is_refused(
    filled: OutputProfileMemory, call: Callable[[OutputProfileMemory], Any]
) -> None:
    """Keywords were a second route past the config keys: now refused, naming the key."""
    with pytest.raises(InvalidInputError, match="profile_max_tokens") as raised:
        call(filled)
    assert not isinstance(raised.value, RequestLimitError)


def test_within_the_limits_a_request_still_sets_its_call(filled: OutputProfileMemory) -> None:
    injector = filled.injector(max_tokens=100)
    assert injector.settings.limits.max_tokens == 4_000
    assert injector.settings_for(_config(profile_max_tokens=4_000)).options.max_tokens == 4_000
    assert injector.settings_for(_config(profile_task="email")).options.task == "email"
    assert filled.injector(max_tokens=10_000).settings.limits.max_tokens == 10_000  # the app's


def test_the_app_can_let_a_request_change_more(filled: OutputProfileMemory) -> None:
    limits = CallLimits(max_tokens=200, settable=frozenset({"max_tokens", "mmr_lambda"}))
    injector = filled.injector(max_tokens=100, limits=limits)
    chosen = injector.settings_for(_config(profile_mmr_lambda=0.5, profile_max_tokens=200))
    assert (chosen.options.mmr_lambda, chosen.options.max_tokens) == (0.5, 200)
    with pytest.raises(RequestLimitError):
        injector.settings_for(_config(profile_task="email"))
    declared = {spec.id for spec in injector.config_specs}
    assert declared == {"user_id", "profile_max_tokens", "profile_mmr_lambda"}
