"""Retrieval datasets by name, read from a local path in their published formats.

``load_dataset(name, path, **options)``: the path is the ``path`` argument (CLI ``--data-dir``),
else the environment variable ``BANDITROUTE_DATA_<NAME>`` (e.g. ``BANDITROUTE_DATA_SQUAD``), else
``$BANDITROUTE_DATA/<folder>``. Nothing is downloaded: a missing file raises an
:class:`~banditroute.core.validation.InputError` with the dataset's canonical URL and layout.

The ``mixed`` dataset's path is a root folder holding each part's default folder (e.g.
``squad/``, ``scifact/``, ``cranfield/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditroute.core.registry import Registry
from banditroute.core.validation import InputError
from banditroute.data.datasets import beir, cranfield, esci, squad
from banditroute.data.datasets.common import Source, sample_queries
from banditroute.data.datasets.mixed import MixedDataset, mix, parts_of
from banditroute.data.interfaces import RetrievalDataset

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "MixedDataset",
    "dataset_path",
    "load_dataset",
    "load_mixed",
    "parts_of",
    "sample_queries",
]

DEFAULT_MIX = ("squad", "scifact", "cranfield")


@dataclass(frozen=True)
class DatasetEntry:
    """A loader (``loader(path, **options)``), the folder it expects under ``$BANDITROUTE_DATA``, its source."""

    loader: Callable[..., RetrievalDataset]
    folder: str
    source: Source
    summary: str


DATASETS: Registry[DatasetEntry] = Registry(
    "dataset",
    {
        "squad": DatasetEntry(
            squad.load_squad, "squad", squad.SOURCE, "SQuAD v1.1 dev: question -> its gold paragraph (10,570 queries)"
        ),
        "scifact": DatasetEntry(
            lambda path, **kw: beir.load_beir(path, name="scifact", **kw),
            "scifact",
            beir.SOURCE,
            "SciFact (BEIR layout): claims -> supporting abstracts; option splits=[train,test]",
        ),
        "beir": DatasetEntry(beir.load_beir, "beir", beir.SOURCE, "any BEIR-layout folder; option splits=[...]"),
        "cranfield": DatasetEntry(
            cranfield.load_cranfield, "cranfield", cranfield.SOURCE, "Cranfield 1400 abstracts, 225 queries, graded"
        ),
        "esci": DatasetEntry(
            esci.load_esci, "esci", esci.SOURCE, "Amazon ESCI shopping queries; options locale, version, split"
        ),
    },
)


def dataset_path(name: str, path: str | Path | None = None) -> Path:
    """Where to read dataset ``name`` from (argument > ``BANDITROUTE_DATA_<NAME>`` > ``$BANDITROUTE_DATA/<folder>``)."""
    if name not in DATASETS and name != "mixed":
        raise InputError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, 'mixed'])}")
    if path is not None:
        return Path(path)
    own = os.environ.get(f"BANDITROUTE_DATA_{name.upper()}")
    if own:
        return Path(own)
    root = os.environ.get("BANDITROUTE_DATA")
    folder = "" if name == "mixed" else DATASETS[name].folder
    if root:
        return Path(root) / folder
    where = "a data root folder" if name == "mixed" else DATASETS[name].source.layout
    url = "" if name == "mixed" else f" (download: {DATASETS[name].source.url})"
    raise InputError(
        f"no path for dataset {name!r}: pass --data-dir (or set BANDITROUTE_DATA_{name.upper()} or "
        f"BANDITROUTE_DATA) pointing at {where}{url}"
    )


def load_dataset(
    name: str, path: str | Path | None = None, *, max_queries: int | None = None, seed: int = 0, **options: Any
) -> RetrievalDataset | MixedDataset:
    """Load dataset ``name`` (a key of :data:`DATASETS`, or ``"mixed"``).

    ``max_queries`` keeps a seeded random sample of that many queries (per domain for ``mixed``);
    ``options`` go to the loader (for ``mixed``: ``parts=[...]``, default squad, scifact, cranfield).
    """
    if name == "mixed":
        return load_mixed(dataset_path(name, path), max_queries=max_queries, seed=seed, **options)
    where = dataset_path(name, path)  # checks the name
    try:
        dataset = DATASETS[name].loader(where, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InputError(f"bad option for dataset {name!r}: {exc}") from None
    return dataset if max_queries is None else sample_queries(dataset, max_queries, seed)


def load_mixed(
    root: str | Path, *, parts: Sequence[str] = DEFAULT_MIX, max_queries: int | None = None, seed: int = 0
) -> MixedDataset:
    """The datasets ``parts``, each read from ``root/<its folder>``, as one mixed-domain stream."""
    unknown = [p for p in parts if p not in DATASETS]
    if unknown or len(parts) < 2:
        raise InputError(f"mixed needs at least two known datasets ({', '.join(DATASETS)}), got {list(parts)}")
    loaded = []
    for part in parts:
        dataset = DATASETS[part].loader(Path(root) / DATASETS[part].folder)
        loaded.append(dataset if max_queries is None else sample_queries(dataset, max_queries, seed))
    return mix(loaded)
