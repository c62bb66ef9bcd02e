"""Routing contexts of chat requests: the LLM-routing benchmark's features of the last user message.

The text of the last ``user`` message is embedded by the configured offline embedder
(``[gateway] embedder``, e.g. ``minilm-l6-int8``, the benchmark's default) and, when ``[gateway]
features`` names a fitted :class:`~banditroute.costaware.features.Featurizer` (:func:`save_featurizer`),
reduced to the benchmark's contexts (unit PCA projection, cluster one-hot, bias) — so a policy
trained offline on the benchmark's table sees the same vectors online. Embeddings are cached by
text in an LRU of ``embed_cache`` entries (repeated prompts cost nothing). :func:`prompt_tokens`
counts tokens locally (``ceil(characters / 4)``, :func:`banditroute.llm.datasets.estimate_tokens`)
for cost bounds and for upstreams that omit usage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError
from banditroute.costaware.features import Featurizer
from banditroute.data.interfaces import Embedder
from banditroute.llm.datasets import estimate_tokens


def save_featurizer(featurizer: Featurizer, path: str | os.PathLike[str]) -> None:
    """Write a fitted :class:`Featurizer` as ``.npz`` (what ``[gateway] features`` reads)."""
    if featurizer.components is None or featurizer.mean is None:
        raise InputError("Featurizer is not fitted")
    np.savez(
        path, mean=featurizer.mean, components=featurizer.components, centres=featurizer.centres,
        shape=np.array([featurizer.k, featurizer.clusters, featurizer.seed]),
    )  # fmt: skip


def load_featurizer(path: str | os.PathLike[str]) -> Featurizer:
    try:
        with np.load(Path(path)) as z:
            k, clusters, seed = (int(v) for v in z["shape"])
            featurizer = Featurizer(k, clusters, seed)
            featurizer.mean, featurizer.components, featurizer.centres = z["mean"], z["components"], z["centres"]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a saved Featurizer: {type(exc).__name__}") from None
    return featurizer


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the ``text`` parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return message_text(messages[-1].get("content")) if messages else ""


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Local estimate of the input tokens of ``messages`` (their texts, plus 4 per message for the roles)."""
    return sum(estimate_tokens(message_text(m.get("content"))) + 4 for m in messages)


def prompt_hash(messages: Sequence[dict[str, Any]]) -> str:
    """``sha256:<hex>`` of the messages' canonical JSON: what the log keeps instead of the prompt."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return "sha256:" + hashlib.sha256(blob).hexdigest()


class RequestFeaturizer:
    """Embedder (+ optional fitted Featurizer) with an LRU cache of embeddings by text (module docstring)."""

    def __init__(self, embedder: Embedder, featurizer: Featurizer | None, cache_size: int) -> None:
        self.embedder = embedder
        self.featurizer = featurizer
        self.cache_size = cache_size
        self._cache: OrderedDict[str, FloatArray] = OrderedDict()
        self._lock = Lock()

    @property
    def dim(self) -> int:
        return self.featurizer.dim if self.featurizer is not None else int(self.embedder.dim)

    def embed(self, text: str) -> FloatArray:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        e = np.asarray(self.embedder.encode_queries([text])[0], dtype=np.float64)
        if self.cache_size:
            with self._lock:
                self._cache[text] = e
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return e

    def context(self, messages: Sequence[dict[str, Any]]) -> FloatArray:
        e = self.embed(last_user_text(messages) or " ")
        if self.featurizer is None:
            return e
        out: FloatArray = self.featurizer.transform(e[None])[0]
        return out
