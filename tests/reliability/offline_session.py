"""Child process of the no-network test: a guard on every socket, then a whole session.

Usage: ``python offline_session.py MODE STORE_PATH RESULT_FILE``. Before anything else is
imported, the guard replaces the ways Python reaches the network (name lookups and
``connect`` of non-Unix sockets) with a function that records the attempt and raises
``OSError``, as an unplugged machine would. Then, in the same fresh process, the package is
imported, a memory is created (the first tiktoken load happens here), and a session adds,
selects, tracks, gives feedback, exports, forgets and imports. MODE ``api`` does that with
the ``gpt-4`` encoding; MODE ``cli`` uses the default model and also runs CLI commands.
Last, a deliberate request shows that the guard sees attempts in this process.
RESULT_FILE receives JSON: the attempts during the session, the probe's, and what the
session returned.
"""

from __future__ import annotations

import socket
from typing import Any, NoReturn

ATTEMPTS: list[str] = []


def _refuse(what: str) -> NoReturn:
    ATTEMPTS.append(what)
    raise OSError(f"network attempt blocked by the test guard: {what}")


def _install_guard() -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def lookup(host: Any, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(f"lookup {host}")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        _refuse(f"connect {address!r}")

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect_ex(self, address)
        _refuse(f"connect {address!r}")

    socket.getaddrinfo = lookup
    socket.gethostbyname = lookup
    socket.gethostbyname_ex = lookup
    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]


_install_guard()  # before any other import: nothing below runs unguarded

import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402


def session(mode: str, path: str) -> dict[str, Any]:
    """Everything a user does in one process; returns what the calls gave back."""
    from langchain_core.runnables import RunnableLambda

    from langchain_outprofile import OutputProfileMemory

    model = {"api": "gpt-4", "cli": "gpt-4o-mini"}[mode]
    memory = OutputProfileMemory.from_path(path, tokens=model)  # first tiktoken load
    memory.add("Short answer first.", user_id="ana", task="email")
    memory.add_many([{"text": f"Note {i}.", "user_id": "ana"} for i in range(5)])
    memory.add("Bullets, no fluff.", user_id="ana", signal="endorsed")
    tracked = memory.track(RunnableLambda(lambda q: f"Answer to {q}"))
    run = uuid.uuid4()
    tracked.invoke("hi", config={"configurable": {"user_id": "ana"}, "run_id": run})
    memory.feedback(run, "endorsed")
    block = memory.select("ana", max_tokens=400).text
    by_query = memory.select("ana", relevance_weight=0.5, query="notes", max_tokens=400).text
    records = memory.export("ana")
    forgotten = memory.forget("ana")
    after_forget = memory.export("ana")
    restored = memory.import_(records)
    result: dict[str, Any] = {
        "encoding": memory.counter.encoding_name,
        "exact": memory.counter.exact,
        "block": block,
        "by_query": by_query,
        "exported": len(records),
        "forgotten": forgotten,
        "after_forget": after_forget,
        "restored": restored,
        "reexported": len(memory.export("ana")),
        "cli": [],
    }
    if mode == "cli":
        from typer.testing import CliRunner

        from langchain_outprofile.cli import app

        for args in (["stats"], ["preview", "--user", "ana"], ["export", "--user", "ana"]):
            ran = CliRunner().invoke(app, ["--path", path, *args])
            result["cli"].append([ran.exit_code, ran.output])
    return result


def main(mode: str, path: str, result_file: str) -> None:
    """Run the session under the guard, then probe the guard, and write the JSON result."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = session(mode, path)
    during = list(ATTEMPTS)
    with contextlib.suppress(OSError):
        urllib.request.urlopen("http://example.com/", timeout=5)
    outcome["attempts"] = during
    outcome["probe"] = ATTEMPTS[len(during) :]
    outcome["warnings"] = sorted({type(w.message).__name__ for w in caught})
    with open(result_file, "w", encoding="utf-8") as out:
        json.dump(outcome, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
