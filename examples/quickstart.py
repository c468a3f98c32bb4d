"""Quickstart: remember what a user wrote, see the block, and put it first in a chain.

Run: ``python examples/quickstart.py`` (offline: the embedded local model unless an
OpenAI-compatible endpoint is configured; see ``default_chat_model``). The budget is counted
with the chosen model's own tokenizer (``token_counter_for``), so it is exact for that model.
"""

from __future__ import annotations

import tempfile

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_outprofile import OutputProfileMemory, Signal
from langchain_outprofile.local import default_chat_model, token_counter_for


def main() -> None:
    # the model that will read the block: its name and endpoint, and its own tokenizer
    model, described = default_chat_model(max_tokens=64)
    print(f"model: {described}")

    with tempfile.TemporaryDirectory() as path:
        memory = OutputProfileMemory.from_path(path, tokens=token_counter_for(model))

        # 1. capture: texts the user wrote or approved (not what they asked)
        memory.add("Short answer first. Then three bullets, max.", user_id="ana")
        memory.add("- shipped\n- no regressions\n- next: docs", user_id="ana", task="status")
        memory.add(
            "Done. Two risks: quota, latency. Mitigation in the doc.",
            user_id="ana",
            signal="endorsed",
        )
        memory.add("Bleh, long emails.", user_id="ana", signal=Signal.REJECTED)

        # 2. select: by preference signal, packed under an exact token budget
        selection = memory.select("ana", max_tokens=200)
        print(f"block for ana: {len(selection.entries)} entries, {selection.tokens} tokens")
        print(f"tokens counted with: {memory.counter.name} (exact: {memory.counter.exact})")
        print(selection.text)
        print(selection.explain())

        # 3. inject: the block becomes the first thing the model reads
        prompt = ChatPromptTemplate.from_messages(
            [("system", "Write as this user writes."), ("human", "{request}")]
        )
        chain = prompt | memory.injector(max_tokens=200) | model | StrOutputParser()
        reply = chain.invoke(
            {"request": "Status update on the login bug fix."},
            config={"configurable": {"user_id": "ana"}},
        )
        print(f"answer: {reply.strip()}")


if __name__ == "__main__":
    main()
