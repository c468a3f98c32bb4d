"""scripts/credit_offline.py: the credit rule, the pick and the rebuilt draws, on hand-computed
numbers and an invented POPQUORN-shaped file the test writes (no dataset text)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "credit_offline.py"
_spec = importlib.util.spec_from_file_location("credit_offline", SCRIPT)
assert _spec is not None and _spec.loader is not None
credit_offline = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = credit_offline  # its dataclass looks its module up there
_spec.loader.exec_module(credit_offline)

# one user, four draws; the same blocks on both held-out texts (one profile)
BLOCKS = (("a", "b"), ("b", "c"), ("a",), ("c",))
FIRST = credit_offline.Text(BLOCKS, (1.0, 2.0, 1.5, 3.0), none=2.5, default=1.8)
SECOND = credit_offline.Text(BLOCKS, (2.0, 1.0, 1.2, 1.6), none=2.2, default=1.5)


def test_feedback_credits_the_entries_of_approved_draws_and_debits_the_rest() -> None:
    # median 1.75: draws 0 and 2 approved
    median = credit_offline.verdicts(FIRST.draws, "median", FIRST.none)
    assert median == [True, False, True, False]
    assert credit_offline.entry_credit(BLOCKS, median) == {"a": 3 / 4, "b": 2 / 4, "c": 1 / 4}
    # beating none (2.5): every draw but the last
    beat_none = credit_offline.verdicts(FIRST.draws, "none", FIRST.none)
    assert beat_none == [True, True, True, False]
    assert credit_offline.entry_credit(BLOCKS, beat_none) == {"a": 3 / 4, "b": 3 / 4, "c": 2 / 4}
    # a draw that only ties the bar does not beat it
    assert credit_offline.verdicts((1.0, 2.0, 3.0), "median", 9.0) == [True, False, False]
    assert credit_offline.verdicts((1.0, 2.0), "none", 2.0) == [True, False]
    with pytest.raises(ValueError, match="unknown rule"):
        credit_offline.verdicts(FIRST.draws, "mean", FIRST.none)


def test_the_pick_is_the_highest_mean_log_credit_and_the_lower_draw_on_a_tie() -> None:
    credit = {"a": 3 / 4, "b": 1 / 2, "c": 1 / 4}
    # mean log2(2 credit): 0.29, -0.5, 0.58, -1
    assert credit_offline.block_score(BLOCKS[0], credit) == pytest.approx(math.log2(1.5) / 2)
    assert credit_offline.credit_pick(BLOCKS, credit) == 2
    # an entry without feedback counts as credit 0.5, an empty block as 0
    assert credit_offline.block_score(("z",), credit) == 0.0
    assert credit_offline.block_score((), credit) == 0.0
    # log2(1.5) + log2(2/3) is -1e-16 in floats: still a tie with an entry of credit 0.5
    tied = {"a": 3 / 4, "c": 1 / 3, "b": 1 / 2}
    assert credit_offline.credit_pick((("a", "c"), ("b",)), tied) == 0
    assert credit_offline.credit_pick((("b",), ("a", "c")), tied) == 0


def test_each_direction_learns_on_one_text_and_is_scored_on_the_other() -> None:
    # learned on the first text (credits a 3/4, b 1/2, c 1/4): draw 2 (1.2 on the second)
    got = credit_offline.direction_gains(FIRST, SECOND, "median")
    assert got == pytest.approx(
        {
            "random mean": 1.45 - 1.2,
            "default": 1.5 - 1.2,
            "best-on-A pick": 2.0 - 1.2,
            "oracle best": 1.0 - 1.2,
        }
    )
    # learned on the second (median 1.4: draws 1, 2 approved): every entry 1/2, all tie,
    # draw 0 (1.0 on the first)
    back = credit_offline.direction_gains(SECOND, FIRST, "median")
    assert back == pytest.approx(
        {
            "random mean": 1.875 - 1.0,
            "default": 1.8 - 1.0,
            "best-on-A pick": 2.0 - 1.0,
            "oracle best": 0.0,
        }
    )
    # beating none on the first: a 3/4, b 3/4, c 1/2; draws 0 and 2 tie at log2(1.5)
    assert credit_offline.direction_gains(FIRST, SECOND, "none")["random mean"] == pytest.approx(
        1.45 - 2.0
    )


def _rows(
    user: str, text: str, draws: tuple[float, ...], none: float, default: float
) -> list[dict[str, Any]]:
    target = f"{user}{text}"
    cells = [("none", 0, none), ("output-profile", 200, default)]
    cells += [(f"random-{k}", 200, x) for k, x in enumerate(draws)]
    return [
        {
            "user": target,
            "group": user,
            "strategy": s,
            "budget": b,
            "fields": "output",
            "nll": 10 * x,
            "tokens": 10,
        }
        for s, b, x in cells
    ]


def test_cache_rows_make_texts_only_for_users_with_every_cell_on_both_texts() -> None:
    rows = _rows("pq-1", "#0", FIRST.draws, FIRST.none, FIRST.default)
    rows += _rows("pq-1", "#1", SECOND.draws, SECOND.none, SECOND.default)
    rows += _rows("pq-2", "#0", FIRST.draws, FIRST.none, FIRST.default)  # one text only
    rows += _rows("pq-3", "#0", FIRST.draws, FIRST.none, FIRST.default)
    rows += _rows("pq-3", "#1", SECOND.draws[:3], SECOND.none, SECOND.default)  # a draw missing
    blocks = {f"pq-{u}#{n}": BLOCKS for u in (1, 2, 3) for n in (0, 1)}
    texts = credit_offline.load_texts(rows, blocks, 4, 200)
    assert set(texts) == {"pq-1"}
    assert texts["pq-1"]["#0"] == FIRST and texts["pq-1"]["#1"] == SECOND
    gains = credit_offline.gains(texts, "median")
    assert gains["both"]["random mean"][0] == pytest.approx((0.25 + 0.875) / 2)
    conflicting = [*rows, {**rows[0], "nll": 99.0}]
    with pytest.raises(SystemExit, match="two different scores"):
        credit_offline.load_texts(conflicting, blocks, 4, 200)


POPQUORN_USERS = [
    {
        "user": user,
        "pairs": [
            {
                "input": f"Invented email number {i} about topic {i}.",
                "output": f"{user} rewrote email {i} " + "word " * (3 + i),
                "instance_id": f"{user}-{i}",
            }
            for i in range(6)
        ],
    }
    for user in ("u1", "u2")
]


def test_rebuilt_draws_are_the_tasks_blocks_and_a_wrong_cache_row_is_named(
    tmp_path: Path,
) -> None:
    data = tmp_path / "pq.jsonl"
    data.write_text("".join(json.dumps(u) + "\n" for u in POPQUORN_USERS), encoding="utf-8")

    def words(text: str) -> int:
        return len(text.split())

    task = credit_offline.popquorn_task(data, words, seed=0, holdout=2)
    targets = task.targets()
    assert sorted(t.id for t in targets) == ["pq-u1#0", "pq-u1#1", "pq-u2#0", "pq-u2#1"]
    rebuilt = credit_offline.rebuild_blocks(task, targets, 3, 30)
    held = {t.gold for t in targets}
    for target in targets:
        for block in rebuilt[target.id]:
            assert block and all(e.text not in held for e in block)  # never a held-out text
            assert words(" ".join(e.text for e in block)) <= 30
    # one profile per user: the same draw holds the same entries on both texts
    assert rebuilt["pq-u1#0"] == rebuilt["pq-u1#1"]
    rows = []
    for target in targets:
        for k, block in enumerate(rebuilt[target.id]):
            text = credit_offline.render_block(block, "output", task.memory.template)
            rows.append(
                {
                    "user": target.id,
                    "strategy": f"random-{k}",
                    "budget": 30,
                    "entries": len(block),
                    "block_tokens": words(text),
                }
            )
    assert credit_offline.check_rows(rows, rebuilt, task.memory, 30) == []
    rows[0] = {**rows[0], "entries": rows[0]["entries"] + 1}
    bad = credit_offline.check_rows(rows, rebuilt, task.memory, 30)
    assert len(bad) == 1 and bad[0].startswith(f"{rows[0]['user']} random-0:")
