"""Agents: ``create_agent`` with ``memory.middleware()`` leads every model call with the block.

The middleware changes only the request each model call sees; the agent's own system
prompt stays after the block and nothing is written to graph state. Needs the ``agents``
extra (``langchain``).

Run: ``python examples/agent_middleware.py``
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.local import default_chat_model


@dataclass
class Context:
    """Per-invocation context: whose profile to use."""

    user_id: str


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        memory = OutputProfileMemory.from_path(path)
        memory.add("Dear colleagues, please note the revised schedule below.", user_id="okafor")
        memory.add("Kind regards,\nProfessor A. Okafor", user_id="okafor")

        model, described = default_chat_model(max_tokens=48)
        print(f"model: {described}")
        agent = create_agent(
            model,
            tools=[],
            system_prompt="You draft short messages for the user.",
            middleware=[memory.middleware(max_tokens=150)],
            context_schema=Context,
        )
        result = agent.invoke(
            {"messages": [HumanMessage("Draft a note: the library closes early on Friday.")]},
            context=Context(user_id="okafor"),
        )
        print(f"agent answer: {result['messages'][-1].text.strip()}")
        # the block never enters the agent's state: only the user's and model's messages do
        print(f"messages in state: {[m.type for m in result['messages']]}")


if __name__ == "__main__":
    main()
