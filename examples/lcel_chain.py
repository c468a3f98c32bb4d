"""LCEL: one chain serves every user; ``user_id`` travels in the run config.

``prompt | memory.injector() | model``: the injector sits between prompt and model, so the
model keeps ``bind_tools`` / ``with_structured_output``. The same selection is also
available as a retriever of Documents.

Run: ``python examples/lcel_chain.py``
"""

from __future__ import annotations

import tempfile

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.local import default_chat_model

PROFILES = {
    "ana": ["- shipped\n- p95 down 40ms\n- next: docs", "Root cause: stale cache. Fixed."],
    "ben": [
        "Hello all! 🎉 Huge thanks for the lovely send-off, you're the best 💛",
        "Sooo excited for the trip!! ☀️ Who's bringing snacks? 😄",
    ],
}


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        memory = OutputProfileMemory.from_path(path)
        memory.add_many(
            {"text": text, "user_id": user} for user, texts in PROFILES.items() for text in texts
        )
        model, described = default_chat_model(max_tokens=48)
        print(f"model: {described}")

        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Write as this user writes: same tone and formatting."),
                MessagesPlaceholder("history", optional=True),
                ("human", "{request}"),
            ]
        )
        chain = prompt | memory.injector(max_tokens=150) | model | StrOutputParser()
        for user in PROFILES:
            reply = chain.invoke(
                {"request": "Tell the team the demo is tomorrow at 3."},
                config={"configurable": {"user_id": user}},
            )
            print(f"answer for {user}: {reply.strip()}")

        # what the model reads, for one user (no model call): the app's system prompt first
        # and unchanged, then the block as a system message of its own, then the request
        messages = (prompt | memory.injector(max_tokens=150)).invoke(
            {"request": "..."}, config={"configurable": {"user_id": "ben"}}
        )
        for n, message in enumerate(messages):
            print(f"message {n} for ben: {message.type}, starts {message.text[:14]!r}")

        # the same selection as Documents (selection is by signal, not query similarity)
        docs = memory.as_retriever(user_id="ana", k=2).invoke("any query")
        for doc in docs:
            print(f"retriever: [{doc.metadata['signal']}] {doc.page_content.splitlines()[0]}")


if __name__ == "__main__":
    main()
