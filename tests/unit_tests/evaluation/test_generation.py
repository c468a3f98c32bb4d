"""Secondary metric: a LangChain chat model's reply scored with ROUGE against the gold."""

from __future__ import annotations

import math
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from outprofile_lab.evaluation.generation import generate_and_score, rouge
from outprofile_lab.evaluation.strategies import messages_for


class RecordingChatModel(BaseChatModel):
    """Replies with a fixed text and records exactly the messages it received."""

    reply: str
    received: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.received.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])


def test_rouge_by_hand() -> None:
    # unigrams: precision 3/3, recall 3/4 -> F = 2 * 1 * 0.75 / 1.75; the LCS is the same 3 words
    r1, rl = rouge("the cat sat", "the cat sat down")
    assert math.isclose(r1, 1.5 / 1.75) and math.isclose(rl, 1.5 / 1.75)
    assert rouge("alpha beta", "gamma delta") == (0.0, 0.0)


def test_generate_and_score_sends_the_placed_block_and_scores_the_reply() -> None:
    model = RecordingChatModel(reply="ferry late again, meeting gone")
    block = '<user_profile>\n<entry n="1">\nlol ferry\n</entry>\n</user_profile>'
    messages = messages_for("Paraphrase: the ferry was late.", block, "leading")
    score = generate_and_score(model, messages, "ferry late AGAIN. meeting gone")
    (sent,) = model.received
    assert isinstance(sent[0], SystemMessage) and sent[0].text.startswith(block)
    assert isinstance(sent[1], HumanMessage) and sent[1].content == messages[1][1]
    assert score.generated == "ferry late again, meeting gone"
    assert (score.rouge1, score.rougeL) == rouge(score.generated, "ferry late AGAIN. meeting gone")
    assert score.rouge1 == 1.0  # same five words once lowercased and tokenized
