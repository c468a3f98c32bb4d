"""Vocabulary coverage gains, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from langchain_outprofile.coverage import Coverage, words_in, words_of


def test_words_are_lower_cased_and_keep_hashtags_mentions_and_apostrophes() -> None:
    assert words_of("Don't STOP, don't! #Mondays @Ana") == {"don't", "stop", "#mondays", "@ana"}
    assert words_of("?! 🔥") == frozenset()
    assert words_in("No, no: NO #no") == ["no", "no", "no", "#no"]


def test_gains_weigh_each_word_by_how_many_entries_use_it() -> None:
    coverage = Coverage([words_of("tea now"), words_of("tea later"), words_of("tea now please")])
    # tea: 3 entries, now: 2, later: 1, please: 1
    tea, now, once = math.log(4), math.log(3), math.log(2)
    assert coverage.gains.tolist() == pytest.approx([tea + now, tea + once, tea + now + once])


def test_covered_words_gain_nothing_any_more() -> None:
    coverage = Coverage([words_of("tea now"), words_of("tea later"), words_of("now tea")])
    coverage.cover(0)
    assert coverage.gains.tolist() == pytest.approx([0.0, math.log(2), 0.0])
    coverage.cover(1)
    assert coverage.gains.tolist() == [0.0, 0.0, 0.0]


def test_an_empty_pool_and_wordless_entries_gain_nothing() -> None:
    assert Coverage([]).gains.size == 0
    assert Coverage([words_of("!!!"), frozenset()]).gains.tolist() == [0.0, 0.0]
