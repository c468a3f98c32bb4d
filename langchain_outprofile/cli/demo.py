"""Demo: an offline run-through of the whole data flow, for ``outprofile demo``.

Three made-up users whose writing clearly differs (a terse engineer, a warm chatty friend,
a formal academic) are stored in a temporary Chroma store; each one's profile block is
printed; then the same request goes through a real LCEL chain,
``prompt | memory.injector() | model``, for two of them, and both answers are printed side
by side. The model is :func:`~langchain_outprofile.local.default_chat_model` (the embedded
SmolLM2-135M unless an OpenAI-compatible endpoint is configured). All texts below were
written for this demo.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from langchain_outprofile.cli.terminal import visible
from langchain_outprofile.local import default_chat_model, token_counter_for
from langchain_outprofile.memory import OutputProfileMemory
from langchain_outprofile.model_server import ServedModel
from langchain_outprofile.types import Signal

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

__all__ = ["DEMO_PROFILES", "DEMO_REQUEST", "DemoRun", "run_demo"]

DEMO_PROFILES: dict[str, list[tuple[str, Signal]]] = {
    "dana_dev": [
        ("- deploy done\n- p95 down 40ms\n- rollback plan: revert tag v2.3", Signal.AUTHORED),
        ("Root cause: stale cache key. Fix: add version prefix. Shipped.", Signal.AUTHORED),
        ("- standup moved 9:30\n- bring blockers only\n- no slides", Signal.AUTHORED),
        ("Short version: works on staging, not prod. Checking env vars.", Signal.EDITED),
        ("- PR #412 ready\n- needs 1 review\n- tests green", Signal.ENDORSED),
    ],
    "mia_warm": [
        (
            "Hiii everyone!! 🌸 Just wanted to say you all made my week so much brighter, "
            "thank you thank you! 💛",
            Signal.AUTHORED,
        ),
        (
            "Omg congrats on the new place!! 🏡✨ Can't wait to see it, I'm bringing cookies "
            "for sure 🍪😄",
            Signal.AUTHORED,
        ),
        (
            "Aww no worries at all, take all the time you need, sending big hugs your way 🤗💕",
            Signal.AUTHORED,
        ),
        (
            "Sooo excited for Saturday!! 🎉 Who's in for brunch after? I know a cute spot ☕🥐",
            Signal.EDITED,
        ),
        ("Hope your day is as lovely as you are!! 😊🌈", Signal.ENDORSED),
    ],
    "prof_okafor": [
        (
            "Dear colleagues, I write to inform you that the seminar scheduled for Thursday "
            "has been postponed. A revised date will be circulated in due course.",
            Signal.AUTHORED,
        ),
        (
            "It should be noted that the preliminary findings, while encouraging, do not yet "
            "warrant firm conclusions; further replication is required.",
            Signal.AUTHORED,
        ),
        (
            "I am grateful for your thoughtful comments on the manuscript. Please find my "
            "responses to each point enumerated below.",
            Signal.AUTHORED,
        ),
        (
            "With respect to the proposed methodology, I would respectfully suggest that the "
            "sampling frame be reconsidered prior to data collection.",
            Signal.EDITED,
        ),
        ("Kind regards,\nProfessor A. Okafor\nDepartment of Linguistics", Signal.ENDORSED),
    ],
}
"""Per user: (text, signal) pairs, written for this demo."""

DEMO_REQUEST = "Write a short message to my team: the Friday meeting moves to Monday at 10."
DEMO_ANSWERED = ("dana_dev", "mia_warm")
SYSTEM_PROMPT = "Write as this user writes: same tone, length and formatting."
BLOCK_TOKENS = 320  # every demo profile fits whole, counted with the GGUF tokenizer
ANSWER_TOKENS = 64
NOTE = (
    "SmolLM2-135M is tiny: it shows the mechanism (each user's block is the first thing the "
    "model reads), not the quality a larger model gets from it. Set OPENAI_API_KEY (and "
    "install langchain-openai) to run the same chain on a real model."
)


@dataclass
class DemoRun:
    """What the demo showed: each user's block, each answer, the model, and the time taken."""

    model: str
    blocks: dict[str, str] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    model_inputs: dict[str, list[BaseMessage]] = field(default_factory=dict)
    seconds: float = 0.0


class ModelInputRecorder(BaseCallbackHandler):
    """Keeps the messages each chat-model call received, keyed by the run's ``user_id``."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[BaseMessage]] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the first prompt of the call under the user it was made for."""
        self.inputs[str((metadata or {}).get("user_id", ""))] = list(messages[0])


def fill(memory: OutputProfileMemory) -> None:
    """Store :data:`DEMO_PROFILES` (one batched write)."""
    memory.add_many(
        {"text": text, "user_id": user, "signal": signal.value}
        for user, entries in DEMO_PROFILES.items()
        for text, signal in entries
    )


def answer(
    memory: OutputProfileMemory,
    model: BaseChatModel,
    users: Sequence[str],
    callbacks: list[BaseCallbackHandler] | None = None,
) -> dict[str, str]:
    """The same request for each user, through ``prompt | memory.injector() | model``."""

    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM_PROMPT), ("human", "{request}")])
    chain = prompt | memory.injector(max_tokens=BLOCK_TOKENS) | model | StrOutputParser()
    answers = {}
    for user in users:
        config: Any = {
            "configurable": {"user_id": user},
            "metadata": {"user_id": user},
            "callbacks": callbacks or [],
        }
        answers[user] = chain.invoke({"request": DEMO_REQUEST}, config=config).strip()
    return answers


def run_demo(
    console: Console | None = None,
    *,
    model: BaseChatModel | None = None,
    callbacks: list[BaseCallbackHandler] | None = None,
    served: ServedModel | None = None,
) -> DemoRun:
    """Run the demo in a temporary store and print it; return what was shown.

    Args:
        console: where to print (default: a new rich console on stdout).
        model: the chat model (default: :func:`~langchain_outprofile.local.default_chat_model`).
        callbacks: LangChain callbacks for the two chain runs (e.g. to record model inputs).
        served: the embedded model behind its OpenAI-compatible server
            (:func:`~langchain_outprofile.model_server.serve_local_model`): answers come
            through ``ChatOpenAI`` from it.

    Example:
        ```python
        from langchain_outprofile.cli.demo import run_demo

        run = run_demo()
        print(run.answers["mia_warm"])
        ```
    """
    console = console or Console()
    started = time.perf_counter()
    described = "the model you passed"
    if model is None and served is not None:
        model = served.chat_model(max_tokens=ANSWER_TOKENS)
        described = f"ChatOpenAI {served.model} at {served.base_url}"
    if model is None:
        model, described = default_chat_model(max_tokens=ANSWER_TOKENS)
    run = DemoRun(model=described)
    with tempfile.TemporaryDirectory(prefix="outprofile-demo-") as path:
        # budgets counted with the answering model's own tokenizer (the GGUF's, locally)
        memory = OutputProfileMemory.from_path(path, tokens=token_counter_for(model))
        fill(memory)
        console.rule("1. three users, three profiles (what each one wrote or approved)")
        for user in DEMO_PROFILES:
            selection = memory.select(user, max_tokens=BLOCK_TOKENS)
            run.blocks[user] = selection.text
            title = f"{user}: {len(selection.entries)} entries, {selection.tokens} tokens"
            console.print(Panel(Text(selection.text), title=title))
        console.rule("2. the same request, through prompt | memory.injector() | model")
        console.print(Text(f"request: {DEMO_REQUEST}\nmodel: {described}"))
        recorder = ModelInputRecorder()
        run.answers = answer(memory, model, DEMO_ANSWERED, [recorder, *(callbacks or [])])
        run.model_inputs = recorder.inputs
        console.print(side_by_side(run))
        console.print(Text(NOTE, style="dim"))
    run.seconds = time.perf_counter() - started
    console.print(Text(f"done in {run.seconds:.1f} s, offline; the store was temporary."))
    return run


def side_by_side(run: DemoRun) -> Table:
    """The answers in columns, each under what its model call read first."""
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in DEMO_ANSWERED:
        grid.add_column(ratio=1)
    answers = (visible(run.answers[u], keep="\n") for u in DEMO_ANSWERED)  # a model's text
    grid.add_row(
        *(
            Panel(Text(a), title=f"answer for {u}")
            for a, u in zip(answers, DEMO_ANSWERED, strict=True)
        )
    )
    grid.add_row(*(Text(_block_read(run, u), style="dim") for u in DEMO_ANSWERED))
    return grid


def _block_read(run: DemoRun, user: str) -> str:
    """Where the model read the user's block: after how many of the app's messages."""
    messages = run.model_inputs.get(user) or []
    if not messages:
        return "(the model's input was not recorded)"
    block = run.blocks.get(user)
    at = next((i for i, m in enumerate(messages) if block and m.text.startswith(block)), None)
    if block is None or at is None:
        return f"the model's input did not carry {user}'s block"
    entries = block.count("<entry ")
    where = "first" if at == 0 else f"after the app's {at} system message{'s' * (at > 1)}"
    kind = messages[at].type
    return f"the model read {user}'s block ({entries} entries) {where}, as a {kind} message"
