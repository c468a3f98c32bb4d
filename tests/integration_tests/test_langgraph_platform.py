"""The README's LangGraph Platform recipe in LangGraph's own server: ``langgraph dev`` (the
in-memory runtime of ``langgraph-api``) on a free loopback port, serving the README's
``langgraph.json``, ``auth.py``, ``store.py`` and ``agent.py`` as written, driven by
``langgraph_sdk``'s store and run clients with two users' tokens.

Skipped when ``langgraph-api`` / ``langgraph-cli`` are not installed
(``pip install "langgraph-cli[inmem]"``); the in-process check of the same handler and
factory is ``tests/unit_tests/surfaces/test_langgraph_platform.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("langgraph_api") is None
        or importlib.util.find_spec("langgraph_cli") is None,
        reason="LangGraph's server is not installed: pip install 'langgraph-cli[inmem]'",
    ),
]

README = Path(__file__).resolve().parents[2] / "README.md"
STARTUP_S = 90.0
"""How long the server may take to answer /ok (it starts in about 2 s here)."""
ANA, BOB = "token-ana", "token-bob"  # the README's auth.py maps them to e-mail identities
ANA_LABEL, BOB_LABEL = "ana@example%2Ecom", "bob@example%2Ecom"


def recipe_files() -> dict[str, str]:
    """The README's recipe: the json block naming a store, and each python block whose first
    line is ``# <file>.py: ...``."""
    text = README.read_text("utf-8")
    files = {
        name: code
        for code in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
        if (name := _file_name(code))
    }
    configs = [c for c in re.findall(r"```json\n(.*?)```", text, re.DOTALL) if '"store"' in c]
    assert len(configs) == 1, "the README has one langgraph.json with a store"
    files["langgraph.json"] = configs[0]
    return files


def _file_name(code: str) -> str | None:
    found = re.match(r"# (\w+\.py):", code)
    return found.group(1) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"langgraph dev exited ({process.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"langgraph dev did not answer /ok in {STARTUP_S} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-40:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server this test started (its own process group, nothing else)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def platform_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``langgraph dev`` serving the README's recipe, on loopback."""
    project = tmp_path_factory.mktemp("platform")
    files = recipe_files()
    assert set(files) == {"langgraph.json", "store.py", "auth.py", "agent.py"}
    assert json.loads(files["langgraph.json"])["store"]["path"] == "./store.py:profile_store"
    for name, code in files.items():
        (project / name).write_text(code, "utf-8")
    port = _free_port()
    log = project / "server.log"
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(README.parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", "from langgraph_cli.cli import cli; cli()", "dev"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


async def test_each_caller_reaches_their_own_profile_only(platform_url: str) -> None:
    ana = get_client(url=platform_url, headers={"Authorization": f"Bearer {ANA}"})
    bob = get_client(url=platform_url, headers={"Authorization": f"Bearer {BOB}"})
    await ana.store.put_item(["profile"], "tone", {"text": "Short answer first, then bullets."})
    await ana.store.put_item(["profile", "notes"], "units", {"text": "Metric units."})
    await bob.store.put_item(["profile"], "tone", {"text": "Kind regards, Robert."})

    item = await ana.store.get_item(["profile"], "tone")
    assert item is not None and item["value"]["text"] == "Short answer first, then bullets."
    assert item["namespace"] == [ANA_LABEL, "profile"]
    found = await bob.store.search_items(["profile"])
    assert [i["value"]["text"] for i in found["items"]] == ["Kind regards, Robert."]
    found = await ana.store.search_items(["profile"])
    assert sorted(i["value"]["text"] for i in found["items"]) == [
        "Metric units.",
        "Short answer first, then bullets.",
    ]
    listed = await ana.store.list_namespaces()
    assert listed["namespaces"] == [[ANA_LABEL, "profile"], [ANA_LABEL, "profile", "notes"]]
    assert (await bob.store.list_namespaces())["namespaces"] == [[BOB_LABEL, "profile"]]


async def test_a_caller_cannot_name_another_users_namespace(platform_url: str) -> None:
    ana = get_client(url=platform_url, headers={"Authorization": f"Bearer {ANA}"})
    bob = get_client(url=platform_url, headers={"Authorization": f"Bearer {BOB}"})
    await ana.store.put_item(["profile"], "secret", {"text": "Ana's private tone."})
    # The rewrite puts Bob's label first: (bob, ana, "profile") follows no template.
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await bob.store.get_item([ANA_LABEL, "profile"], "secret")
    assert 400 <= refused.value.response.status_code < 500  # the store's InvalidNamespaceError
    found = await bob.store.search_items(["profile"])
    assert "Ana's private tone." not in [i["value"]["text"] for i in found["items"]]
    stranger = get_client(url=platform_url, headers={"Authorization": "Bearer nobody"})
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await stranger.store.search_items(["profile"])
    assert refused.value.response.status_code == 401


async def test_a_run_reads_the_callers_profile_from_the_store(platform_url: str) -> None:
    ana = get_client(url=platform_url, headers={"Authorization": f"Bearer {ANA}"})
    await ana.store.put_item(["profile"], "tone", {"text": "Short answer first, then bullets."})
    output = await ana.runs.wait(None, "agent", input={})
    assert isinstance(output, dict)
    assert "Short answer first, then bullets." in output["profile"]
    assert "Kind regards, Robert." not in output["profile"]
