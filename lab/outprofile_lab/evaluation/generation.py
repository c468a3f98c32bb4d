"""Secondary metric: generate with any LangChain chat model, score ROUGE-1 / ROUGE-L vs gold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from outprofile_lab.evaluation.scoring import Message

__all__ = ["RougeScore", "generate_and_score", "rouge"]


@dataclass(frozen=True)
class RougeScore:
    """LaMP's generation metrics (F-measure) of one generated text against the gold."""

    rouge1: float
    rougeL: float
    generated: str


def rouge(generated: str, gold: str) -> tuple[float, float]:
    """ROUGE-1 and ROUGE-L F-measures (with stemming, as LaMP reports them).

    Example:
        ```python
        rouge("the cat sat", "the cat sat down")  # (0.857..., 0.857...)
        ```
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = scorer.score(gold, generated)
    return scores["rouge1"].fmeasure, scores["rougeL"].fmeasure


def generate_and_score(model: BaseChatModel, messages: Sequence[Message], gold: str) -> RougeScore:
    """Ask ``model`` to answer ``messages`` and score its reply against ``gold``.

    Example:
        ```python
        score = generate_and_score(chat_model, messages_for(request, block, "leading"), gold)
        score.rougeL
        ```
    """
    reply = model.invoke(_to_langchain(messages))
    text = str(reply.text)
    rouge1, rouge_l = rouge(text, gold)
    return RougeScore(rouge1, rouge_l, text)


def _to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[role](content=content) for role, content in messages]
