"""Feedback: track a chain's outputs, then turn the user's reaction into preference signal.

``memory.track(chain)`` stores each output as ``pending`` under its run id (never
selected); ``memory.feedback(run_id, ...)`` endorses, rejects, rates, or replaces it with
the user's edit. The next block reflects it.

Run: ``python examples/feedback_loop.py``
"""

from __future__ import annotations

import tempfile
import uuid

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.local import default_chat_model


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        memory = OutputProfileMemory.from_path(path)
        memory.add("Thanks! Short and sweet works best for me.", user_id="ana")
        model, described = default_chat_model(max_tokens=40)
        print(f"model: {described}")

        prompt = ChatPromptTemplate.from_messages([("human", "{request}")])
        tracked = memory.track(prompt | memory.injector() | model | StrOutputParser())
        first, second = uuid.uuid4(), uuid.uuid4()
        for run_id, request in [
            (first, "Thank the team for the launch."),
            (second, "Decline the Friday meeting."),
        ]:
            config = RunnableConfig(configurable={"user_id": "ana"}, run_id=run_id)
            tracked.invoke({"request": request}, config)
        print(f"after two runs: {memory.stats('ana').by_signal}")

        memory.feedback(first, "endorsed")  # thumbs-up: the output joins the profile
        memory.feedback(second, edited="Can't make Friday, sorry. Notes please?")
        stats = memory.stats("ana")
        print(f"after feedback: {dict(sorted(stats.by_signal.items()))}, pending={stats.pending}")

        block = memory.select("ana", max_tokens=300)
        print(f"block now holds the edit: {'Notes please?' in block.text}")


if __name__ == "__main__":
    main()
