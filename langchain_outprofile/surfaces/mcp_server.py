"""MCP server: a memory's profiles as Model Context Protocol tools (the ``mcp`` extra).

``outprofile mcp`` serves four tools over stdio (a desktop host spawns it) or streamable HTTP
on a loopback address, built on the official ``mcp`` SDK's ``MCPServer``:

- ``get_profile``: the user's query-free profile block within ``max_tokens``, exactly as a
  model should read it ('' while the user has no selectable entries);
- ``remember``: store a text with the signal saying how it came to be the user's (authored,
  edited, endorsed, accepted, rejected);
- ``feedback``: the user's verdict on an assistant output: endorsed, accepted, rejected, a
  1-5 ``rating`` or an ``edited`` correction, given on the output's ``text`` (what an MCP host
  has) or on the ``run_id`` of a run tracked with ``memory.track`` (an app that tracks its
  chain and hands the id to its host); a rating of 1-2 or a rejection keeps the text out of
  every later block;
- ``forget``: delete everything stored for the user.

User identity. MCP has no notion of "the user" a server could trust, so every tool takes a
``user_id`` argument and a host that serves several people must set it itself, never let the
model choose it (a model told "user bob" would read bob's profile). A host serving one person
starts the server with ``--user ana``: the tools then have no ``user_id`` argument at all (a
call passing one is refused), and no call can reach another user. A call always names one
user, and reads and writes only that user's rows (the store keys every row by user); feedback
on another user's run id is refused as an unknown run, revealing nothing about it.

Bad arguments (an empty text, an unknown signal, a budget out of 1..``MAX_BUDGET``, a value of
the wrong type, an argument the tool does not take) come back as MCP tool errors (``isError``)
whose message names what to fix, and nothing is stored: every argument is checked before the
first write.

Example:
    ```bash
    outprofile --path ./profiles mcp --user ana                       # stdio, one user
    outprofile --path ./profiles mcp --transport http --port 8765     # http://127.0.0.1:8765/mcp
    ```
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import ipaddress
import socket
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    get_args,
)

from pydantic import Field

from langchain_outprofile.capture import feedback_signal
from langchain_outprofile.errors import (
    BudgetTooSmallWarning,
    InvalidInputError,
    MissingExtraError,
    OutprofileError,
)
from langchain_outprofile.types import EntryFields, ProfileEntry, ProfileSelection, Signal
from langchain_outprofile.validation import validate_user_id

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
    from mcp.server.mcpserver import MCPServer

__all__ = [
    "MAX_BUDGET",
    "Forgotten",
    "ProfileKeeper",
    "ProfileTools",
    "Remembered",
    "build_server",
    "serve",
]

MAX_BUDGET = 100_000
"""Largest ``max_tokens`` ``get_profile`` takes: a block leads a prompt, so a larger budget is
a mistake (or an attempt to dump a whole profile), not a need."""

Transport = Literal["stdio", "http"]
RememberSignal = Literal["authored", "edited", "endorsed", "accepted", "rejected"]
FeedbackSignal = Literal["endorsed", "accepted", "rejected", "rating", "edited"]

_INSTALL_HINT = (
    "`outprofile mcp` needs the `mcp` extra (the official MCP Python SDK): "
    "pip install 'langchain-outprofile[mcp]'"
)


class ProfileKeeper(Protocol):
    """What the tools use of a memory (``OutputProfileMemory`` is one): async reads, writes,
    feedback and forgetting, each confined to the user it names."""

    async def aselect(
        self, user_id: str, *, max_tokens: int | None = None, task: str | None = None
    ) -> ProfileSelection:
        """The user's block."""
        ...

    async def aadd(self, text: str, *, user_id: str, **fields: Unpack[EntryFields]) -> ProfileEntry:
        """Store one text of the user with a signal."""
        ...

    async def afeedback(
        self,
        run_id: str,
        signal: Signal | str | None = None,
        *,
        rating: float | None = None,
        edited: str | None = None,
        user_id: str | None = None,
    ) -> ProfileEntry:
        """Feedback on a tracked run's output."""
        ...

    async def aforget(self, user_id: str) -> int:
        """Delete everything stored for the user."""
        ...


class Remembered(TypedDict):
    """What a ``remember`` or ``feedback`` call stored: the entry as it now stands."""

    user_id: str
    entry_id: str
    signal: str
    strength: float
    selectable: bool


class Forgotten(TypedDict):
    """What ``forget`` deleted."""

    user_id: str
    deleted: int


@dataclass(frozen=True)
class ProfileTools:
    """The tools' logic over a memory, free of MCP: each method validates every argument
    before it reads or writes, and raises :class:`InvalidInputError` (or another
    :class:`OutprofileError`) naming what to fix.

    Example:
        ```python
        tools = ProfileTools(memory)
        await tools.remember("ana", "Short answer first.", "authored")
        (await tools.get_profile("ana", max_tokens=300)).startswith("<user_profile")
        ```
    """

    memory: ProfileKeeper

    async def get_profile(
        self, user_id: str, max_tokens: int | None = None, task: str | None = None
    ) -> str:
        """The user's block text ('' without selectable entries); a budget too small for
        the block's frame is an error, not a silently empty block."""
        selection = await self.memory.aselect(user_id, max_tokens=_budget(max_tokens), task=task)
        if selection.choice.note:  # also warned (BudgetTooSmallWarning); this reaches the caller
            raise InvalidInputError(selection.choice.note)
        return selection.text

    async def remember(
        self, user_id: str, text: str, signal: str = "authored", task: str | None = None
    ) -> Remembered:
        """Store ``text`` as the user's with ``signal`` (see :data:`RememberSignal`)."""
        chosen = _remember_signal(signal)
        return _remembered(await self.memory.aadd(text, user_id=user_id, signal=chosen, task=task))

    async def feedback(
        self,
        user_id: str,
        *,
        text: str | None = None,
        run_id: str | None = None,
        signal: str | None = None,
        rating: int | None = None,
        edited: str | None = None,
    ) -> Remembered:
        """The user's verdict on one assistant output, named by its ``text`` or by the
        ``run_id`` it was tracked under (exactly one of them)."""
        chosen = feedback_signal(signal, _rating(rating), edited)
        if (text is None) == (run_id is None):
            raise InvalidInputError(
                "feedback needs exactly one of text= (the assistant output the user judged) "
                "or run_id= (the run it was tracked under)"
            )
        if run_id is not None:
            entry = await self.memory.afeedback(
                run_id, chosen, rating=rating, edited=edited, user_id=user_id
            )
        elif edited is not None:  # the correction is what the user stands behind
            entry = await self.memory.aadd(edited, user_id=user_id, signal=Signal.EDITED)
        else:
            assert text is not None
            entry = await self.memory.aadd(text, user_id=user_id, signal=chosen, rating=rating)
        return _remembered(entry)

    async def forget(self, user_id: str) -> Forgotten:
        """Delete everything stored for the user."""
        return {"user_id": user_id, "deleted": await self.memory.aforget(user_id)}


def _budget(max_tokens: int | None) -> int | None:
    if max_tokens is None:
        return None
    if type(max_tokens) is not int or not 1 <= max_tokens <= MAX_BUDGET:
        raise InvalidInputError(
            f"max_tokens must be a whole number of tokens from 1 to {MAX_BUDGET:,}; "
            f"got {max_tokens!r:.40}"
        )
    return max_tokens


def _rating(rating: int | None) -> int | None:
    if rating is not None and (type(rating) is not int or not 1 <= rating <= 5):
        raise InvalidInputError(
            f"rating must be a whole number of stars, 1 to 5; got {rating!r:.40}"
        )
    return rating


def _remember_signal(signal: str) -> Signal:
    allowed = get_args(RememberSignal)
    if signal not in allowed:
        raise InvalidInputError(
            f"signal must be one of {', '.join(allowed)} (a rating goes through feedback); "
            f"got {signal!r:.40}"
        )
    return Signal(signal)


def _remembered(entry: ProfileEntry) -> Remembered:
    return {
        "user_id": entry.user_id,
        "entry_id": entry.id,
        "signal": entry.signal.value,
        "strength": entry.strength,
        "selectable": entry.selectable,
    }


# -- the MCP server ----------------------------------------------------------------------------

UserId = Annotated[str, Field(description="Whose profile: the host sets it, never the model.")]
# strict: JSON true or "5" is a mistake to report, not a budget of 1 or 5 tokens
Budget = (
    Annotated[
        int,
        Field(
            strict=True,
            ge=1,
            le=MAX_BUDGET,
            description="Token budget of the whole block (default: 600).",
        ),
    ]
    | None
)
Rating = Annotated[int, Field(strict=True, ge=1, le=5, description="1-5 stars.")] | None
Task = Annotated[str | None, Field(description="Prefer the user's entries of this task.")]
Text = Annotated[str, Field(description="The text, exactly as written or approved.")]

_GET_PROFILE = (
    "The user's profile block: texts the user wrote or approved, framed and packed within "
    "max_tokens, to put before the conversation so answers match the user's style. Needs no "
    "query. Empty when nothing is stored yet."
)
_REMEMBER = (
    "Remember a text as the user's: signal 'authored' (the user wrote it), 'edited' (an "
    "answer the user corrected; pass the corrected text), 'endorsed' (explicitly approved), "
    "'accepted' (copied, sent or kept) or 'rejected' (never show it again)."
)
_FEEDBACK = (
    "The user's verdict on an assistant output, named by its text (or by run_id when the app "
    "tracked the run): signal 'endorsed', 'accepted' or 'rejected', or rating 1-5 (1-2 "
    "reject), or edited='the corrected text' (the correction is stored). Give one of them."
)
_FORGET = "Delete everything stored for the user. Cannot be undone."

_T = TypeVar("_T")


def build_server(memory: ProfileKeeper, *, user_id: str | None = None) -> MCPServer:
    """An ``MCPServer`` with the four profile tools over ``memory``.

    Args:
        memory: the memory holding the profiles (``OutputProfileMemory``).
        user_id: serve this one user only: the tools then take no ``user_id`` argument.

    Raises:
        InvalidInputError: ``user_id`` is not a valid user id.
        MissingExtraError: the ``mcp`` extra is not installed.

    Example:
        ```python
        server = build_server(OutputProfileMemory.from_path("./profiles"), user_id="ana")
        server.run("stdio")
        ```
    """
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.types import CallToolResult, TextContent, ToolAnnotations
    except ImportError as error:
        raise MissingExtraError(f"{_INSTALL_HINT} ({error})") from error
    fixed = None if user_id is None else validate_user_id(user_id)

    async def call(operation: Awaitable[_T]) -> _T:
        """The tool's result, or a tool error (``isError``) carrying the package's message."""
        try:
            return await operation
        except OutprofileError as error:
            raise ToolError(str(error)) from None

    tools = ProfileTools(memory)
    functions = _for_one_user(tools, call, fixed) if fixed else _for_any_user(tools, call)
    accepted = {f.__name__: set(inspect.signature(f).parameters) for f in functions}

    async def refuse_unknown_arguments(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """A tool error for an argument the tool does not take (the SDK would drop it): a
        misspelt ``signl="rejected"`` must not store an authored text, nor a ``user_id``
        given to a one-user server pass for a choice of user."""
        params = ctx.params if ctx.method == "tools/call" else None
        if params is not None and params.get("name") in accepted:
            unknown = sorted(set(params.get("arguments") or {}) - accepted[params["name"]])
            if unknown:
                known = ", ".join(sorted(accepted[params["name"]])) or "none"
                said = f"{params['name']} takes no argument {', '.join(map(repr, unknown))}"
                if "user_id" in unknown and fixed:
                    said += f" (this server serves user {fixed!r} only)"
                text = f"{said}; its arguments: {known}"
                return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
        return await call_next(ctx)

    server: MCPServer = MCPServer(
        name="outprofile",
        log_level="WARNING",  # a refused call is the caller's to read, not a server log line
        instructions="Profiles of users' own outputs: read one with get_profile before "
        "answering, and record what the user wrote or approved with remember and feedback.",
        middleware=[refuse_unknown_arguments],
    )
    hints = {
        "get_profile": ToolAnnotations(read_only_hint=True),
        "remember": ToolAnnotations(read_only_hint=False, idempotent_hint=False),
        "feedback": ToolAnnotations(read_only_hint=False, idempotent_hint=False),
        "forget": ToolAnnotations(read_only_hint=False, destructive_hint=True),
    }
    descriptions = {
        "get_profile": _GET_PROFILE,
        "remember": _REMEMBER,
        "feedback": _FEEDBACK,
        "forget": _FORGET,
    }
    for function in functions:
        name = function.__name__
        server.add_tool(function, description=descriptions[name], annotations=hints[name])
    return server


Call = Callable[[Awaitable[Any]], Awaitable[Any]]


def _for_any_user(tools: ProfileTools, call: Call) -> list[Callable[..., Any]]:
    """The tools with a ``user_id`` argument (the host scopes it)."""

    async def get_profile(user_id: UserId, max_tokens: Budget = None, task: Task = None) -> str:
        return str(await call(tools.get_profile(user_id, max_tokens, task)))

    async def remember(
        user_id: UserId, text: Text, signal: RememberSignal = "authored", task: Task = None
    ) -> Remembered:
        result: Remembered = await call(tools.remember(user_id, text, signal, task))
        return result

    async def feedback(
        user_id: UserId,
        text: Text | None = None,
        run_id: str | None = None,
        signal: FeedbackSignal | None = None,
        rating: Rating = None,
        edited: str | None = None,
    ) -> Remembered:
        result: Remembered = await call(
            tools.feedback(
                user_id, text=text, run_id=run_id, signal=signal, rating=rating, edited=edited
            )
        )
        return result

    async def forget(user_id: UserId) -> Forgotten:
        result: Forgotten = await call(tools.forget(user_id))
        return result

    return [get_profile, remember, feedback, forget]


def _for_one_user(tools: ProfileTools, call: Call, user_id: str) -> list[Callable[..., Any]]:
    """The tools fixed to ``user_id``: no argument names a user, so none can name another."""

    async def get_profile(max_tokens: Budget = None, task: Task = None) -> str:
        return str(await call(tools.get_profile(user_id, max_tokens, task)))

    async def remember(
        text: Text, signal: RememberSignal = "authored", task: Task = None
    ) -> Remembered:
        result: Remembered = await call(tools.remember(user_id, text, signal, task))
        return result

    async def feedback(
        text: Text | None = None,
        run_id: str | None = None,
        signal: FeedbackSignal | None = None,
        rating: Rating = None,
        edited: str | None = None,
    ) -> Remembered:
        result: Remembered = await call(
            tools.feedback(
                user_id, text=text, run_id=run_id, signal=signal, rating=rating, edited=edited
            )
        )
        return result

    async def forget() -> Forgotten:
        result: Forgotten = await call(tools.forget(user_id))
        return result

    return [get_profile, remember, feedback, forget]


# -- running it ---------------------------------------------------------------------------------


def serve(
    open_memory: Callable[[], ProfileKeeper],
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    user_id: str | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the memory ``open_memory()`` returns until the host closes stdin (stdio) or
    Ctrl-C (http). The options are checked, and the port bound, before the store is opened.

    With ``transport="http"`` the server listens on ``host:port`` (``port=0``: a free one)
    and calls ``announce`` with its URL once the socket accepts connections (they queue until
    the server answers them), so a caller can wait for that line instead of polling.

    Raises:
        InvalidInputError: an unknown transport, a bad ``user_id``, or a host that is not a
            loopback address (the server has no authentication: nothing else may reach it).
        MissingExtraError: the ``mcp`` extra is not installed.

    Example:
        ```python
        serve(lambda: OutputProfileMemory.from_path("./profiles"), transport="http", port=0,
              announce=lambda url: print("serving", url))
        ```
    """
    warnings.simplefilter("ignore", BudgetTooSmallWarning)  # get_profile raises the note
    if transport not in get_args(Transport):
        raise InvalidInputError(f"--transport must be stdio or http; got {transport!r:.40}")
    fixed = None if user_id is None else validate_user_id(user_id)
    if importlib.util.find_spec("mcp") is None:  # said before the store is opened
        raise MissingExtraError(_INSTALL_HINT)
    if transport == "stdio":
        build_server(open_memory(), user_id=fixed).run("stdio")
        return
    try:
        import uvicorn  # installed with the mcp extra
    except ImportError as error:
        raise MissingExtraError(f"{_INSTALL_HINT} ({error})") from error
    with _loopback_socket(host, port) as listening:
        server = build_server(open_memory(), user_id=fixed)
        app = server.streamable_http_app(host=host)  # DNS-rebinding protection on loopback
        config = uvicorn.Config(app, log_level="warning")
        bound_host, bound_port = listening.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        announce(f"http://{shown}:{bound_port}/mcp")
        asyncio.run(uvicorn.Server(config).serve(sockets=[listening]))


def _loopback_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, refusing anything but a loopback address."""
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise InvalidInputError(
            f"--host must be a loopback address (127.0.0.1, ::1 or localhost): the MCP server "
            f"has no authentication; got {host!r:.60}"
        )
    if not 0 <= port <= 65_535:
        raise InvalidInputError(f"--port must be 0 (a free port) to 65535; got {port}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((str(address), port))
        listening.listen(128)
    except OSError:
        listening.close()
        raise
    return listening
