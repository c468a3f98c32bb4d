"""A `chroma run` server as the store: many app processes share one profile collection.

Starts nothing itself. Start a server (``chroma run --path ./chroma-data --port 8000``),
then ``OUTPROFILE_CHROMA_URL=http://127.0.0.1:8000 python examples/chroma_server.py``.
Without ``OUTPROFILE_CHROMA_URL`` it says so and exits 0.
"""

from __future__ import annotations

import os
import sys
import uuid

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_outprofile import OutputProfileMemory
from langchain_outprofile.local import default_chat_model
from langchain_outprofile.store import http_client


def main() -> int:
    url = os.environ.get("OUTPROFILE_CHROMA_URL")
    if not url:
        print("OUTPROFILE_CHROMA_URL is not set: start `chroma run --port 8000` and set it to")
        print("http://127.0.0.1:8000 to run this example against a server. Nothing to do.")
        return 0
    collection = f"example-{uuid.uuid4().hex[:8]}"
    memory = OutputProfileMemory.from_client(http_client(url), collection_name=collection)
    print(f"store: {url}, collection {collection}")
    try:
        memory.add("- tl;dr first\n- then details\n- no jargon", user_id="ana")
        memory.add("Done. Rollout at 10, rollback ready.", user_id="ana", signal="endorsed")
        print(f"entries for ana on the server: {memory.stats('ana').entries}")
        model, described = default_chat_model(max_tokens=40)
        print(f"model: {described}")
        prompt = ChatPromptTemplate.from_messages([("human", "{request}")])
        chain = prompt | memory.injector(max_tokens=150) | model | StrOutputParser()
        reply = chain.invoke(
            {"request": "Summarize today's deploy."}, config={"configurable": {"user_id": "ana"}}
        )
        print(f"answer: {reply.strip()}")
    finally:
        memory.store.drop()  # leave the server as found
    return 0


if __name__ == "__main__":
    sys.exit(main())
