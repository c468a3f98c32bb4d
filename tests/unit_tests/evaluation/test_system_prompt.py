"""``--system-prompt-tokens``: the prompts the evaluation builds around an app's static
system prompt, and the keys they are cached under (no model is called)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.tokens import TokenCounter
from outprofile_lab.evaluation.command import run_command
from outprofile_lab.evaluation.prefix import INSTRUCTIONS, SHARED_PROMPT, static_prefix
from outprofile_lab.evaluation.runner import PREFIX_GROUP, EvalConfig, _jobs, placed_where
from outprofile_lab.evaluation.scoring import Message, NllScore
from outprofile_lab.evaluation.strategies import BASE_SYSTEM, messages_for
from outprofile_lab.evaluation.tasks import Target

WHOLE = "\n\n".join(INSTRUCTIONS)


def words(text: str) -> int:
    return len(text.split())


@dataclass
class RecordingScorer:
    """Scores every gold output 1 nat per token and keeps the messages it was given."""

    name: str = "recording"
    seen: list[list[Message]] = field(default_factory=list)

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        self.seen.append(list(messages))
        return NllScore(nll=float(len(gold.split())), tokens=max(1, len(gold.split())))


@pytest.mark.parametrize("tokens", [1, 40, 300, 800])
def test_a_static_prefix_is_the_start_of_the_instructions_within_its_budget(tokens: int) -> None:
    prefix = static_prefix(words, tokens)
    assert WHOLE.startswith(prefix)
    assert tokens - 60 < words(prefix) <= tokens  # cut at a word, inside a paragraph
    assert not prefix.endswith((" ", "\n"))


def test_whole_paragraphs_are_kept_when_they_fit_and_zero_is_no_prefix() -> None:
    assert static_prefix(words, words(INSTRUCTIONS[0])) == INSTRUCTIONS[0]
    assert static_prefix(words, 0) == ""
    assert static_prefix(words, words(WHOLE)) == WHOLE
    assert "\n\n".join(INSTRUCTIONS[:11]) == SHARED_PROMPT


def test_a_prefix_longer_than_the_instructions_or_negative_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="more than the static instructions hold"):
        static_prefix(words, words(WHOLE) + 1)
    with pytest.raises(InvalidInputError, match=">= 0"):
        static_prefix(words, -1)


def test_messages_with_a_prefix_for_every_placement() -> None:
    system = f"{BASE_SYSTEM}\n\nBe brief."
    assert messages_for("Q", "", "after-system", "Be brief.") == [
        ("system", system),
        ("user", "Q"),
    ]
    assert messages_for("Q", "B", "leading", "Be brief.") == [
        ("system", f"B\n\n{system}"),
        ("user", "Q"),
    ]
    assert messages_for("Q", "B", "after-system", "Be brief.") == [
        ("system", system),
        ("system", "B"),
        ("user", "Q"),
    ]
    assert messages_for("Q", "B", "after-system") == [
        ("system", BASE_SYSTEM),
        ("system", "B"),
        ("user", "Q"),
    ]


def test_placement_keys_keep_old_caches_and_name_the_prefix() -> None:
    assert EvalConfig().placement_key("leading") == "leading"
    assert EvalConfig(system_prompt_tokens=300).placement_key("after-system") == (
        "after-system@sys300"
    )
    assert placed_where("after-system@sys300") == "after-system"
    assert placed_where("-@sys300") == placed_where("-") == "leading"


def test_a_run_scores_every_prompt_after_the_static_prefix(
    tiny_lamp7: Path, tmp_path: Path
) -> None:
    scorer = RecordingScorer()
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline tokenizer stands in for gpt-4o-mini
        run_command(
            tiny_lamp7,
            strategies="none,output-profile",
            budgets="100",
            placement="leading,after-system",
            system_prompt_tokens=300,
            limit=1,
            seed=0,
            out=out,
            backend="openai",
            model="gpt-4o-mini",
            scorer=scorer,
            quiet=True,
        )
        prefix = static_prefix(TokenCounter("gpt-4o-mini").count, 300)
    system = f"{BASE_SYSTEM}\n\n{prefix}"
    none, after, leading = scorer.seen  # the prompts sharing the static prefix first
    assert none == [("system", system), none[1]] and none[1][0] == "user"
    assert leading[0][1].startswith("<user_profile>") and leading[0][1].endswith(system)
    assert after[0] == ("system", system) and after[1][1].startswith("<user_profile>")
    assert after[2] == none[1]
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [r["placement"] for r in rows] == ["-@sys300", "after-system@sys300", "leading@sys300"]
    report = json.loads((out / "report.json").read_text())
    assert set(report["placements"]) == {"leading@sys300", "after-system@sys300"}
    assert report["meta"]["system_prompt_tokens"] == 300
    # RecordingScorer gives every prompt the same score: the two placements tie at 0
    (pair,) = report["placement_pairs"]
    assert (pair["a"], pair["b"], pair["mean"], pair["n"]) == (
        "after-system@sys300",
        "leading@sys300",
        0.0,
        1,
    )
    assert "| after-system@sys300 | leading@sys300 |" in (out / "report.md").read_text()


def test_a_negative_system_prompt_is_refused_before_any_work(
    tiny_lamp7: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="--system-prompt-tokens"):
        run_command(
            tiny_lamp7,
            strategies="none",
            budgets="100",
            placement="leading",
            system_prompt_tokens=-5,
            limit=1,
            seed=0,
            out=tmp_path / "x",
            scorer=RecordingScorer(),
        )
    assert not (tmp_path / "x").exists()


def test_prompts_sharing_the_static_prefix_are_scored_together_per_group_of_targets() -> None:
    targets = [Target(id=f"t{i}", user=f"u{i}", request="r", gold="g") for i in range(40)]
    config = EvalConfig(
        strategies=("none", "output-profile"),
        budgets=(100, 200),
        placements=("leading", "after-system"),
        system_prompt_tokens=300,
    )
    plain = dataclasses.replace(config, system_prompt_tokens=0)
    jobs = [(t.id, *rest) for t, *rest in _jobs(targets, config, replays=False)]
    in_order = [(t.id, *rest) for t, *rest in _jobs(targets, config, replays=True)]
    assert sorted(jobs) == sorted(in_order) and len(set(jobs)) == len(jobs) == 40 * 5
    first_group = {f"t{i}" for i in range(PREFIX_GROUP)}
    leading_at = [i for i, job in enumerate(jobs) if job[4] == "leading@sys300"]
    shared_at = [i for i, job in enumerate(jobs) if job[4] != "leading@sys300"]
    assert all(jobs[i][0] in first_group for i in shared_at[: PREFIX_GROUP * 3])
    assert max(shared_at[: PREFIX_GROUP * 3]) < min(leading_at)
    assert {jobs[i][0] for i in leading_at[: PREFIX_GROUP * 2]} == first_group
    # In time order (a replaying task) or without a static prompt, each target stays whole.
    for ordered in (in_order, [(t.id, *r) for t, *r in _jobs(targets, plain, replays=False)]):
        assert [job[0] for job in ordered] == [f"t{i}" for i in range(40) for _ in range(5)]
