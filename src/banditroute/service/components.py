"""Embedders and retrievers the service owns, built from ``[embedder]`` and ``[[retrieval.arms]]``.

A component's ``factory`` is a built-in name or ``"package.module:callable"`` (called with
``params``; it must return an :class:`~banditroute.data.interfaces.Embedder` or
:class:`~banditroute.data.interfaces.Retriever`). Built-ins:

* embedders: every name of ``banditroute models`` (:func:`banditroute.data.embedders.registry.make_embedder`,
  e.g. ``"minilm-l3"``; ``params`` are its options);
* retrievers: ``"bm25"`` (:class:`~banditroute.data.retrievers.BM25Retriever`, params ``k1``, ``b``,
  ``stem``) and ``"dense"`` (:class:`~banditroute.data.retrievers.DenseRetriever` over the embedder
  named by ``params.embedder``, options in ``params.options``; corpus vectors go through the
  on-disk embedding cache unless ``params.cache = false``).

A ``[[retrieval.arms]]`` entry with ``pipeline = "..."`` instead of ``retriever`` is a fusion or
re-scoring pipeline over other arms (:func:`build_arms`).

The corpus is JSON lines, one document per line with ``id`` (or BEIR's ``_id``) and ``text``
(an optional ``title`` is prepended).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from banditroute.core.validation import InputError
from banditroute.data.interfaces import Embedder, Retriever
from banditroute.service.config import ComponentConfig, RetrievalArm


def _call(target: str, params: dict[str, Any]) -> Any:
    module, _, attr = target.partition(":")
    try:
        fn = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import component factory {target!r}: {exc}") from None
    try:
        return fn(**params)
    except TypeError as exc:
        raise InputError(f"bad params for component {target!r}: {exc}") from None


def build_embedder(cfg: ComponentConfig) -> Embedder:
    if ":" in cfg.factory:
        obj = _call(cfg.factory, dict(cfg.params))
    else:
        from banditroute.data.embedders.registry import make_embedder

        obj = make_embedder(cfg.factory, **cfg.params)
    if not isinstance(obj, Embedder):
        raise InputError(f"embedder factory {cfg.factory!r} did not return an Embedder")
    return obj


def build_retriever(cfg: ComponentConfig) -> Retriever:
    params = dict(cfg.params)
    if ":" in cfg.factory:
        obj = _call(cfg.factory, params)
    elif cfg.factory == "bm25":
        from banditroute.data.retrievers import BM25Retriever

        obj = BM25Retriever(**params)
    elif cfg.factory == "dense":
        from banditroute.data.cache import EmbeddingCache
        from banditroute.data.embedders.registry import make_embedder
        from banditroute.data.retrievers import DenseRetriever

        if "embedder" not in params:
            raise InputError("a 'dense' retriever needs params.embedder (a name from `banditroute models`)")
        embedder = make_embedder(params.pop("embedder"), **params.pop("options", {}))
        cache = EmbeddingCache() if params.pop("cache", True) else None
        obj = DenseRetriever(embedder, cache, **params)
    else:
        raise InputError(f"unknown retriever {cfg.factory!r}: use 'bm25', 'dense' or 'package.module:callable'")
    if not isinstance(obj, Retriever):
        raise InputError(f"retriever factory {cfg.factory!r} did not return a Retriever")
    return obj


def build_arms(arms: Sequence[RetrievalArm], texts: Sequence[str]) -> dict[str, Retriever]:
    """Every declared arm's retriever, indexed on ``texts``, in declared order: the plain retrievers first
    (each indexed once), then the pipelines over them (:class:`~banditroute.data.pipelines.PipelineRetriever`,
    whose components are the arms it names)."""
    from banditroute.data.pipelines import PipelineRetriever, parse_pipeline

    built: dict[str, Retriever] = {}
    for arm in arms:
        if arm.retriever is not None:
            built[arm.name] = build_retriever(arm.retriever)
            built[arm.name].index(texts)
    for arm in arms:
        if arm.pipeline is not None:
            pipeline = PipelineRetriever(
                parse_pipeline(arm.pipeline), {a.name: built[a.name] for a in arms if a.name in built}
            )
            pipeline.index(texts)
            built[arm.name] = pipeline
    return {arm.name: built[arm.name] for arm in arms}


def load_corpus(path: Path) -> tuple[list[str], list[str]]:
    """``(doc_ids, texts)`` from a JSON-lines corpus."""
    ids, texts = [], []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                doc = json.loads(line)
                doc_id = doc.get("id", doc.get("_id"))
                if doc_id is None or not isinstance(doc.get("text"), str):
                    raise InputError(f"{path}:{n}: each line needs 'id' (or '_id') and 'text'")
                ids.append(str(doc_id))
                title = doc.get("title")
                texts.append(f"{title}. {doc['text']}" if title else doc["text"])
    except FileNotFoundError:
        raise InputError(f"corpus file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise InputError(f"{path}: not a JSON-lines corpus: {exc}") from None
    if not ids:
        raise InputError(f"corpus {path} is empty")
    if len(set(ids)) != len(ids):
        raise InputError(f"corpus {path} has repeated document ids")
    return ids, texts
