"""Model server: the embedded GGUF behind an OpenAI-compatible server, on loopback.

:func:`serve_local_model` starts a server process for the SmolLM2 GGUF on a free
``127.0.0.1`` port, waits until ``/v1/models`` answers, and stops it
on exit: SIGTERM to the server's own process group (it is started as a session leader, so its
process id is the group's), SIGKILL if it has not stopped after a grace period. Its standard
input is a pipe from this process; when this process dies without stopping it (a killed test
run), the pipe closes and the server exits too. The demo, the examples, the tests and the
benchmarks use it to run the ``openai`` client path (``ChatOpenAI``, prompt logprobs) for real,
with no key and no network. :func:`run_model_server` is the blocking form a command uses.

The server is the runtime's (``model_file.local_runtime`` chooses): for cyllama (the
``local`` extra, no compiler), :mod:`langchain_outprofile.model_api`'s chat server on uvicorn;
for llama-cpp-python (the ``llama-cpp`` extra), ``python -m llama_cpp.server``, which also
answers ``/v1/completions`` with prompt logprobs (the evaluation's ``openai`` scorer) and keeps
a prompt cache (the benchmarks).

ChatOpenAI sends its ``max_tokens`` as ``max_completion_tokens`` (OpenAI's newer name), which
llama-cpp-python's server ignores: it would generate up to its whole context. The server
started here reads ``max_completion_tokens`` as ``max_tokens`` when a request gives only the
former (:func:`accept_max_completion_tokens`), so any OpenAI client's limit holds.

Every request must carry the server's API key, random per server unless one is given, so
other local users cannot use the port; :meth:`ServedModel.environ` holds the variables
(``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OUTPROFILE_OPENAI_MODEL``) that point
:func:`~langchain_outprofile.local.default_chat_model` at the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from langchain_outprofile.errors import LocalModelUnavailableError, ModelServerError
from langchain_outprofile.model_file import (
    COMPILED_HINT,
    INSTALL_HINT,
    SERVED_MODEL_NAME,
    local_model_path,
    local_runtime,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "SERVED_MODEL_NAME",
    "LocalModelServer",
    "ModelServerError",
    "ServedModel",
    "accept_max_completion_tokens",
    "run_model_server",
    "serve_local_model",
]

HOST = "127.0.0.1"
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")
"""What ``llama-cpp-python[server]`` brings; checked before its server is started."""

CYLLAMA_SERVER_MODULES = ("cyllama", "starlette", "uvicorn", "jinja2")
"""What the ``local`` extra brings for the cyllama server; checked before it is started."""

STOP_GRACE_S = 10.0
"""How long a stopped server may take to exit after SIGTERM before it is killed."""

# Runs in the server process: exit as soon as the parent's end of stdin closes (the parent
# stopped or died), then run the runtime's server as `python -m <module>` would.
_WATCH_PARENT = """\
import os, runpy, sys, threading

def _exit_with_parent():
    while sys.stdin.buffer.read(1 << 16):
        pass
    os._exit(0)

threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
"""

_CYLLAMA_LAUNCHER = (
    _WATCH_PARENT
    + """\
sys.argv[0] = "langchain_outprofile.model_api"
runpy.run_module("langchain_outprofile.model_api", run_name="__main__", alter_sys=True)
"""
)

_LAUNCHER = (
    _WATCH_PARENT
    + """\
# llama_cpp.server's __main__ imports create_app when it runs, so it gets this wrapped one.
import llama_cpp.server.app as _server_app
from langchain_outprofile.model_server import accept_max_completion_tokens

_create_app = _server_app.create_app
_server_app.create_app = lambda *a, **k: accept_max_completion_tokens(_create_app(*a, **k))
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
)


@dataclass(frozen=True)
class ServedModel:
    """A running local model server.

    Attributes:
        base_url: the OpenAI-compatible API root, ``http://127.0.0.1:<port>/v1``.
        model: the name the model is served under (``SmolLM2-135M-Instruct.Q4_1``).
        pid: the server's process id (also its process group's).
        api_key: the key every request must send (``Authorization: Bearer <key>``).
        model_path: the GGUF file served.
        log_path: the server's standard output and error.

    Example:
        ```python
        with serve_local_model() as served:
            print(served.base_url, served.model, served.pid)
        ```
    """

    base_url: str
    model: str
    pid: int
    api_key: str = field(repr=False)
    model_path: Path
    log_path: Path

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return int(self.base_url.rsplit(":", 1)[1].split("/", 1)[0])

    def environ(self) -> dict[str, str]:
        """The variables that point ``default_chat_model`` (and the ``openai`` client) here.

        Example:
            ```python
            import os

            with serve_local_model() as served:
                os.environ.update(served.environ())
            ```
        """
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": self.api_key,
            "OUTPROFILE_OPENAI_MODEL": self.model,
        }

    def chat_model(self, **kwargs: Any) -> BaseChatModel:
        """A ``ChatOpenAI`` for this server (needs ``langchain-openai``, in the ``local`` extra).

        Args:
            **kwargs: ``ChatOpenAI`` fields; ``max_tokens`` is also sent as the
                ``max_tokens`` llama-cpp-python reads (ChatOpenAI sends
                ``max_completion_tokens``, which this server maps to ``max_tokens``
                itself; the copy in the body keeps the limit on a plain llama-cpp-python
                server too).

        Example:
            ```python
            with serve_local_model() as served:
                print(served.chat_model(max_tokens=16).invoke("Name a colour.").text)
            ```
        """
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            raise LocalModelUnavailableError(
                f"langchain-openai is not installed: {INSTALL_HINT}"
            ) from None
        options: dict[str, Any] = {"temperature": 0.2, **kwargs}
        if options.get("max_tokens") is not None:
            extra = dict(options.get("extra_body") or {})
            options["extra_body"] = {"max_tokens": options["max_tokens"], **extra}
        key = SecretStr(self.api_key)
        return ChatOpenAI(model=self.model, base_url=self.base_url, api_key=key, **options)


class LocalModelServer:
    """One server process for the embedded GGUF: :meth:`start`, :meth:`stop`.

    Use :func:`serve_local_model` for a ``with`` block. A benchmark may keep one server
    across measurements and pass server options through ``extra_args`` (for example
    ``["--cache", "True"]`` for llama-cpp-python's prompt cache; with ``extra_args`` or
    ``logits_all`` the runtime defaults to llama-cpp-python, whose server they are for).

    Args:
        model_path: the GGUF file (default: the embedded SmolLM2-135M-Instruct).
        model: the name it is served under (default :data:`SERVED_MODEL_NAME`).
        port: a loopback port; default a free one (retried if another process takes it first).
        n_threads: CPU threads for generation and prompt processing (default 1: the machine
            may be shared).
        n_ctx: context window in tokens.
        seed: the server's sampling seed.
        logits_all: keep logits for every prompt token; needed for ``echo`` with
            ``logprobs`` (the prompt logprobs the evaluation's ``openai`` scorer reads);
            llama-cpp-python's server only (None: True there).
        api_key: the key requests must send (default: a random one per server).
        extra_args: more ``llama_cpp.server`` arguments, appended as given.
        env: more environment variables for the server process.
        startup_timeout_s: how long to wait for ``/v1/models`` to answer.
        log_path: where the server's output goes (default: a temporary file, deleted on stop).
        runtime: ``"cyllama"`` or ``"llama-cpp-python"``; default
            ``model_file.local_runtime()``, or llama-cpp-python when ``extra_args`` or
            ``logits_all`` is given.

    Example:
        ```python
        server = LocalModelServer(n_ctx=4096)
        served = server.start()
        try:
            print(served.base_url)
        finally:
            server.stop()
        ```
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: str = SERVED_MODEL_NAME,
        port: int | None = None,
        n_threads: int = 1,
        n_ctx: int = 2048,
        seed: int = 7,
        logits_all: bool | None = None,
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 180.0,
        log_path: str | Path | None = None,
        runtime: str | None = None,
    ) -> None:
        if n_threads < 1 or n_ctx < 1:
            raise ValueError("n_threads and n_ctx must be at least 1")
        self.model_path = Path(model_path) if model_path else None
        self.model = model
        self.port = port
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.seed = seed
        self.logits_all = True if logits_all is None else logits_all
        llama_only = bool(extra_args) or logits_all is not None
        self.runtime = runtime or ("llama-cpp-python" if llama_only else None)
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.served: ServedModel | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._own_log: Path | None = None
        self._log_start = 0

    def start(self) -> ServedModel:
        """Start the server and wait until it answers; returns where it is.

        Raises:
            LocalModelUnavailableError: when the model or ``llama-cpp-python[server]`` is
                missing (the message says what to install).
            ModelServerError: when the server exits or does not answer in time.
        """
        if self._process is not None:
            raise ModelServerError(f"this server is already running (pid {self._process.pid})")
        runtime = local_runtime(self.runtime)
        needed: tuple[str, ...]
        if runtime == "cyllama":
            needed, package, hint = CYLLAMA_SERVER_MODULES, "the `local` extra", INSTALL_HINT
        else:
            needed, package, hint = SERVER_MODULES, "llama-cpp-python[server]", COMPILED_HINT
        missing = [name for name in needed if importlib.util.find_spec(name) is None]
        if missing:
            raise LocalModelUnavailableError(
                f"serving the local model needs {package} ({', '.join(missing)} missing): {hint}"
            )
        path = self.model_path or local_model_path()
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            port = self.port or _free_port()
            try:
                self.served = self._launch(path, port, runtime)
                return self.served
            except _PortTaken:
                if attempt == attempts - 1:
                    raise ModelServerError(
                        f"no free loopback port after {attempts} tries"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, path: Path, port: int, runtime: str) -> ServedModel:
        log_path = self.log_path or self._temporary_log()
        args = [
            "--model", str(path),
            "--model_alias", self.model,
            "--host", HOST,
            "--port", str(port),
            "--n_threads", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
            "--seed", str(self.seed),
        ]  # fmt: skip
        launcher = _CYLLAMA_LAUNCHER
        if runtime != "cyllama":  # llama-cpp-python's server takes more
            launcher = _LAUNCHER
            args += [
                "--n_threads_batch", str(self.n_threads),
                "--logits_all", str(self.logits_all),
                "--verbose", "False",
                *self.extra_args,
            ]  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if k.upper() != "CONFIG_FILE"}
        environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle llama.cpp threads sleep
        environ.update(self.env)
        environ["API_KEY"] = self.api_key  # read by the server's settings; not on `ps`
        with log_path.open("ab") as log:
            self._log_start = log.tell()  # this launch's lines start here
            self._process = subprocess.Popen(
                [sys.executable, "-c", launcher, *args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                start_new_session=os.name == "posix",
            )
        served = ServedModel(
            base_url=f"http://{HOST}:{port}/v1",
            model=self.model,
            pid=self._process.pid,
            api_key=self.api_key,
            model_path=path,
            log_path=log_path,
        )
        try:
            self._wait_until_ready(served)
        except BaseException:
            self.stop()
            raise
        return served

    def _temporary_log(self) -> Path:
        if self._own_log is None:
            handle, name = tempfile.mkstemp(prefix="outprofile-model-server-", suffix=".log")
            os.close(handle)
            self._own_log = Path(name)
        return self._own_log

    def _wait_until_ready(self, served: ServedModel) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        request = urllib.request.Request(
            f"{served.base_url}/models", headers={"Authorization": f"Bearer {served.api_key}"}
        )
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = _tail(served.log_path, since=self._log_start)
                if "address already in use" in tail.lower() and self.port is None:
                    self._forget_process()
                    raise _PortTaken
                raise ModelServerError(
                    f"the local model server exited with code {process.returncode} before it "
                    f"answered; the end of {served.log_path}:\n{tail}"
                )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    listed = json.load(response)
                if any(m.get("id") == served.model for m in listed.get("data", [])):
                    return
            except (OSError, ValueError):  # not listening yet (URLError is an OSError)
                pass
            time.sleep(0.25)
        raise ModelServerError(
            f"the local model server did not answer at {served.base_url}/models within "
            f"{self.startup_timeout_s:.0f} s; the end of {served.log_path}:\n"
            f"{_tail(served.log_path, since=self._log_start)}"
        )

    def stop(self) -> int | None:
        """Stop the server (its process group), wait for it; returns its exit code.

        SIGTERM first, SIGKILL after :data:`STOP_GRACE_S`. Only the process this object
        started is signalled, and only while it has not been reaped (so its id cannot
        belong to another process). Calling it again does nothing.
        """
        process = self._process
        if process is None:
            return None
        try:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(process, getattr(signal, "SIGKILL", signal.SIGTERM))
                    process.wait(timeout=STOP_GRACE_S)
            return process.returncode
        finally:
            self._forget_process()
            if self._own_log is not None:
                self._own_log.unlink(missing_ok=True)
                self._own_log = None

    def _forget_process(self) -> None:
        process, self._process, self.served = self._process, None, None
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()

    def wait(self) -> int:
        """Block until the server exits by itself; returns its exit code."""
        if self._process is None:
            raise ModelServerError("the server is not running")
        return self._process.wait()

    def __enter__(self) -> ServedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_local_model(
    model_path: str | Path | None = None, **options: Any
) -> Iterator[ServedModel]:
    """Serve the embedded GGUF on a free loopback port for the ``with`` block.

    Args:
        model_path: the GGUF file (default: the embedded SmolLM2-135M-Instruct).
        **options: :class:`LocalModelServer`'s keywords (``port``, ``n_threads=1``,
            ``n_ctx=2048``, ``extra_args``, ``log_path`` ...).

    Raises:
        LocalModelUnavailableError: when the ``local`` extra (with the server) is missing.
        ModelServerError: when the server does not start.

    Example:
        ```python
        import os

        from langchain_outprofile.local import default_chat_model
        from langchain_outprofile.model_server import serve_local_model

        with serve_local_model() as served:
            os.environ.update(served.environ())
            model, described = default_chat_model(max_tokens=32)
            print(described)  # ChatOpenAI SmolLM2-135M-Instruct.Q4_1 at http://127.0.0.1:.../v1
            print(model.invoke("Say hello.").text)
        ```
    """
    server = LocalModelServer(model_path, **options)
    served = server.start()
    try:
        yield served
    finally:
        server.stop()


def run_model_server(
    on_ready: Callable[[ServedModel], None] | None = None,
    model_path: str | Path | None = None,
    **options: Any,
) -> int:
    """Serve the embedded GGUF until the server exits or the process is interrupted.

    The blocking form for a command (``outprofile serve-model``): starts the server, calls
    ``on_ready`` with where it is (to print the variables), waits, and stops the server on
    Ctrl-C or SIGTERM.

    Args:
        on_ready: called once the server answers.
        model_path: the GGUF file (default: the embedded SmolLM2-135M-Instruct).
        **options: :class:`LocalModelServer`'s keywords.

    Returns:
        0 after an interrupt, else the server's own exit code.

    Example:
        ```python
        def announce(served: ServedModel) -> None:
            for name, value in served.environ().items():
                print(f"export {name}={value}")

        raise SystemExit(run_model_server(announce, port=8080))
        ```
    """
    server = LocalModelServer(model_path, **options)
    served = server.start()
    previous = _stop_on_sigterm()
    try:
        if on_ready is not None:
            on_ready(served)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt (main thread only), so the server is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        return None


Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def accept_max_completion_tokens(app: ASGIApp) -> ASGIApp:
    """``app`` (an ASGI app: llama-cpp-python's server) reading a completion request's
    ``max_completion_tokens`` as ``max_tokens`` when it has no ``max_tokens`` of its own.

    ChatOpenAI sends only ``max_completion_tokens``; llama-cpp-python's request model knows
    only ``max_tokens`` and drops the other, so ``ChatOpenAI(max_tokens=5)`` generated
    hundreds of tokens. Other requests pass through untouched.
    """

    async def wrapped(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        is_completion = str(scope.get("path", "")).endswith("/completions")
        if scope.get("type") != "http" or scope.get("method") != "POST" or not is_completion:
            await app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                return  # the client left before its request was read: nothing to answer
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        rewritten = _with_max_tokens(bytes(body))
        headers = [
            (name, str(len(rewritten)).encode() if name.lower() == b"content-length" else value)
            for name, value in scope.get("headers", [])
        ]
        replayed = False

        async def receive_rewritten() -> Message:
            nonlocal replayed
            if replayed:  # later calls wait for the disconnect, as the app expects
                return await receive()
            replayed = True
            return {"type": "http.request", "body": rewritten, "more_body": False}

        await app({**scope, "headers": headers}, receive_rewritten, send)

    return wrapped


def _with_max_tokens(body: bytes) -> bytes:
    """The JSON request ``body`` with ``max_tokens`` copied from ``max_completion_tokens``
    when only the latter is set; any other body as it is (the server reports its errors)."""
    try:
        request = json.loads(body)
    except ValueError:
        return body
    if not isinstance(request, dict) or request.get("max_completion_tokens") is None:
        return body
    if request.get("max_tokens") is not None:
        return body
    request["max_tokens"] = request["max_completion_tokens"]
    return json.dumps(request).encode("utf-8")


class _PortTaken(Exception):
    """The chosen port was taken between choosing it and the server binding it."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Signal the server's process group (its pid is the group id), or the process alone."""
    with contextlib.suppress(ProcessLookupError):
        if os.name == "posix":
            os.killpg(process.pid, signum)
        elif signum == signal.SIGTERM:
            process.terminate()
        else:
            process.kill()


def _tail(path: Path, *, since: int = 0, lines: int = 20) -> str:
    """The last lines a launch wrote to its log (from byte ``since`` on)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(since, handle.tell() - 8192))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
