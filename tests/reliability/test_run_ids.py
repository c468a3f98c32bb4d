"""A run id identifies one run of one user: feedback can never land in another profile.

The attack: run ids come from the caller (``config["run_id"]``: an app's request id, a
retried UUID). When user B tracks a run under the id user A used, A's later feedback used
to resolve the id across all users, land in B's profile, and put A's private text in B's
block. Now the second ``track`` is refused, and feedback on an id several users hold (a
store written before the check) is a typed error, never a guess.
"""

from __future__ import annotations

import chromadb
import pytest
from langchain_core.runnables import RunnableConfig

from langchain_outprofile import (
    AmbiguousRunError,
    OutputProfileMemory,
    RunIdConflictError,
)
from tests.conftest import unique_name
from tests.fakes import RecordingChatModel

RID = "req-42"  # an app's request id, reused


def _cfg(user: str) -> RunnableConfig:
    # LangChain types run_id as a UUID; apps pass their own strings too (the attack here)
    return {"configurable": {"user_id": user}, "run_id": RID}  # type: ignore[typeddict-item]


@pytest.fixture
def memory() -> OutputProfileMemory:
    return OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name("rid")
    )


def test_a_run_id_of_another_user_is_refused_and_feedback_stays_with_its_user(
    memory: OutputProfileMemory,
) -> None:
    memory.track(RecordingChatModel()).invoke("Draft my note", config=_cfg("ana"))
    with pytest.raises(RunIdConflictError, match="fresh uuid4"):
        memory.track(RecordingChatModel()).invoke("Draft mine", config=_cfg("bob"))
    assert memory.stats("bob").entries == 0  # nothing of bob's run was stored
    private = "Transfer to account no. 12345, thanks."
    stored = memory.feedback(RID, edited=private)
    assert stored.user_id == "ana"
    assert private in memory.select("ana").text
    assert private not in memory.select("bob").text
    assert all(r["text"] != private for r in memory.export("bob"))


def test_the_same_user_may_track_again_under_its_own_run_id(memory: OutputProfileMemory) -> None:
    tracked = memory.track(RecordingChatModel())
    tracked.invoke("first", config=_cfg("ana"))
    tracked.invoke("retry", config=_cfg("ana"))  # a retried request of the same user
    assert memory.feedback(RID, "endorsed").user_id == "ana"


def test_feedback_on_an_id_several_users_hold_is_a_typed_error(
    memory: OutputProfileMemory,
) -> None:
    # a store written before run ids were checked: the same id on two users' pending outputs
    memory.add("ana's tracked answer", user_id="ana", signal="pending", run_id=RID)
    memory.add("bob's tracked answer", user_id="bob", signal="pending", run_id=RID)
    before = (memory.export("ana"), memory.export("bob"))
    with pytest.raises(AmbiguousRunError, match="user_id="):
        memory.feedback(RID, "endorsed")
    assert (memory.export("ana"), memory.export("bob")) == before
    assert memory.feedback(RID, "endorsed", user_id="bob").text == "bob's tracked answer"
    assert [e.text for e in memory.select("ana").entries] == []
