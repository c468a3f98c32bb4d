"""The one retry rule of a store's Chroma calls (``store/clients.py``, ``Retries``): which
failures are sent again, for how long, and the typed error after. The
real server restart is ``tests/integration_tests/test_server_restart.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from chromadb.errors import InternalError

from langchain_outprofile.errors import StoreUnavailableError
from langchain_outprofile.store.clients import (
    AsyncGuardedCollection,
    GuardedCollection,
    LocationLock,
    Retries,
)

URL = "http://127.0.0.1:9"


def test_a_refused_connection_is_retried_for_any_call() -> None:
    for method in ("get", "count", "add", "delete", "upsert", "update", "open"):
        assert Retries(URL, method, 5.0).pause(httpx.ConnectError("refused")) is not None


def test_a_broken_response_is_retried_only_for_calls_whose_repeat_is_safe() -> None:
    broken = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    for method in ("get", "count", "add", "delete", "open"):
        assert Retries(URL, method, 5.0).pause(broken) is not None, method
    for method in ("upsert", "update"):  # a repeat could undo another client's later write
        retries = Retries(URL, method, 5.0)
        assert retries.pause(broken) is None
        assert "may or may not have been applied" in str(retries.failure(broken))


def test_the_wait_for_an_unreachable_server_is_bounded() -> None:
    assert Retries(URL, "get", 0.0).pause(httpx.ConnectError("refused")) is None
    retries = Retries(URL, "get", 0.3)
    pauses = []
    while (pause := retries.pause(httpx.ConnectError("refused"))) is not None:
        pauses.append(pause)
        assert len(pauses) < 100
    assert 0 < sum(pauses) <= 0.3 + 1e-9
    assert pauses[1] == 2 * pauses[0]  # backoff


def test_a_read_racing_a_write_keeps_its_short_retries_and_others_are_not_retried() -> None:
    racing = InternalError("Error executing plan: Internal error: Error finding id")
    retries = Retries(URL, "get", 60.0)
    pauses = [retries.pause(racing) for _ in range(7)]
    assert pauses[:6] == [0.01, 0.02, 0.05, 0.1, 0.2, 0.4] and pauses[6] is None
    assert Retries("/some/path", "get", 60.0).pause(racing) is None  # embedded: no race
    assert Retries(URL, "get", 60.0).pause(ValueError("bad argument")) is None


class _Flaky:
    """A collection whose calls fail with ``error`` ``failures`` times, then succeed."""

    name = "flaky"
    id = "flaky-id"

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    def get(self, **query: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {"ids": ["a"]}

    def upsert(self, **rows: Any) -> None:
        self.get()


class _AsyncFlaky(_Flaky):
    async def get(self, **query: Any) -> dict[str, Any]:  # type: ignore[override]
        return super().get(**query)


def _lock() -> LocationLock:
    return LocationLock(URL, None, free=True)


def test_a_call_succeeds_once_the_server_answers_again() -> None:
    flaky = _Flaky(httpx.ConnectError("refused"), failures=3)
    guarded = GuardedCollection(flaky, _lock(), lambda: flaky, retry_s=30.0)
    assert guarded.get(ids=["a"]) == {"ids": ["a"]}
    assert flaky.calls == 4


def test_past_the_bound_the_error_is_typed_and_names_the_server() -> None:
    flaky = _Flaky(httpx.ConnectError("[Errno 111] Connection refused"), failures=10**9)
    guarded = GuardedCollection(flaky, _lock(), lambda: flaky, retry_s=0.2)
    with pytest.raises(StoreUnavailableError) as raised:
        guarded.get(ids=["a"])
    message = str(raised.value)
    assert URL in message and "heartbeat" in message and "ConnectError" in message
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


def test_an_upsert_whose_response_broke_is_typed_at_once() -> None:
    flaky = _Flaky(httpx.RemoteProtocolError("Server disconnected"), failures=1)
    guarded = GuardedCollection(flaky, _lock(), lambda: flaky, retry_s=30.0)
    with pytest.raises(StoreUnavailableError, match="may or may not"):
        guarded.upsert(ids=["a"])
    assert flaky.calls == 1


def test_the_async_guard_follows_the_same_rule() -> None:
    async def flaky_reopen() -> Any:
        return flaky

    flaky = _AsyncFlaky(httpx.ReadError("reset"), failures=2)
    guarded = AsyncGuardedCollection(flaky, _lock(), flaky_reopen, retry_s=30.0)
    assert asyncio.run(guarded.get(ids=["a"])) == {"ids": ["a"]}
    down = _AsyncFlaky(httpx.ConnectError("refused"), failures=10**9)
    guarded = AsyncGuardedCollection(down, _lock(), flaky_reopen, retry_s=0.2)
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        asyncio.run(guarded.get(ids=["a"]))
