"""Coverage: how much of a user's recurring vocabulary a block shows.

A query-free block cannot know which words the next request will need, but it can show the
words the user keeps coming back to. Each word of the candidate pool weighs ``log(1 + n)``,
``n`` being how many of the pool's entries use it (a word every entry uses weighs most; a
word used once still counts a little). An entry's coverage gain is the weight of its words
the block does not show yet; packing divides it by the entry's cost, so a pick adds the most
new recurring vocabulary per token. Gains depend only on the pool's texts, so a ranking that
took a delta and a fresh one cover alike.

Example:
    ```python
    coverage = Coverage([words_of("sooo tired"), words_of("so tired of rain")])
    coverage.gains  # array([1.79..., 3.17...])
    coverage.cover(0)
    coverage.gains  # array([0.  , 2.07...]): "tired" is shown now
    ```
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["Coverage", "words_in", "words_of"]

_WORD = re.compile(r"[#@]?\w+(?:'\w+)?")
"""A word, a hashtag or a mention, with an inner apostrophe (``don't``)."""


def words_in(text: str) -> list[str]:
    """The lower-cased words of ``text`` in order, repeats kept (hashtags and mentions keep
    their sign).

    Example:
        ```python
        words_in("Don't stop, don't! #Mondays @ana")
        # ["don't", 'stop', "don't", '#mondays', '@ana']
        ```
    """
    return [word.lower() for word in _WORD.findall(text)]


def words_of(text: str) -> frozenset[str]:
    """The distinct words of ``text`` (:func:`words_in`).

    Example:
        ```python
        sorted(words_of("Don't stop! #Mondays @ana"))  # ['#mondays', '@ana', "don't", 'stop']
        ```
    """
    return frozenset(words_in(text))


class Coverage:
    """Greedy vocabulary-coverage gains over a pool of entries' word sets.

    Args:
        word_sets: each pool entry's :func:`words_of`, in pool order.

    Attributes:
        gains: each entry's weight of words not covered yet (updated by :meth:`cover`).
    """

    def __init__(self, word_sets: Sequence[frozenset[str]]) -> None:
        uses = Counter(word for words in word_sets for word in words)
        self._weight = {word: math.log1p(count) for word, count in uses.items()}
        self._holders: defaultdict[str, list[int]] = defaultdict(list)
        for index, words in enumerate(word_sets):
            for word in words:
                self._holders[word].append(index)
        self._word_sets = word_sets
        self._covered: set[str] = set()
        self.gains = np.array(
            [sum(self._weight[word] for word in words) for words in word_sets], dtype=np.float64
        )

    def cover(self, index: int) -> None:
        """Show the words of entry ``index``: no entry gains from them any more."""
        for word in self._word_sets[index] - self._covered:
            self._covered.add(word)
            self.gains[self._holders[word]] -= self._weight[word]
        np.maximum(self.gains, 0.0, out=self.gains)  # float rounding never makes a gain < 0
