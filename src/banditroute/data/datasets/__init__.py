"""Retrieval datasets by name, read from a local path in their published formats.

``load_dataset(name, path, **options)``: the path is the ``path`` argument (CLI ``--data-dir``),
else the environment variable ``BANDITROUTE_DATA_<NAME>`` (e.g. ``BANDITROUTE_DATA_SQUAD``), else
``$BANDITROUTE_DATA/<folder>``. Nothing is downloaded: a missing file raises an
:class:`~banditroute.core.validation.InputError` with the dataset's canonical URL and layout.

The ``mixed`` dataset (:func:`load_mixed`) takes parts ``name=path`` (a built-in dataset read
from ``path``, or any BEIR-layout folder named ``name``) or a bare built-in name, read from the
mixed path's sub-folder (e.g. ``squad/``, ``scifact/``, ``cranfield/``). Each part's name is its
domain label.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from banditroute.core.registry import Registry
from banditroute.core.validation import InputError
from banditroute.data.datasets import beir, cranfield, esci, squad
from banditroute.data.datasets.common import Source, describe, sample_queries
from banditroute.data.datasets.mixed import MixedDataset, mix, parts_of
from banditroute.data.interfaces import RetrievalDataset

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "MixedDataset",
    "dataset_path",
    "describe",
    "load_dataset",
    "load_mixed",
    "parts_of",
    "sample_queries",
]

DEFAULT_MIX = ("squad", "scifact", "cranfield")


@dataclass(frozen=True)
class DatasetEntry:
    """A loader (``loader(path, **options)``), the folder it expects under ``$BANDITROUTE_DATA``, its source;
    ``has_splits``: the loader takes ``splits=[...]`` (the BEIR layout)."""

    loader: Callable[..., RetrievalDataset]
    folder: str
    source: Source
    summary: str
    has_splits: bool = False


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
            "SciFact (BEIR layout): claims -> supporting abstracts; option splits=[train,test] (default test)",
            has_splits=True,
        ),
        "beir": DatasetEntry(
            beir.load_beir,
            "beir",
            beir.SOURCE,
            "any BEIR-layout folder; option splits=[...] (default test if present, else all)",
            has_splits=True,
        ),
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
    where = _configured_path(name, path)
    if where is not None:
        return where
    layout = "a data root folder" if name == "mixed" else DATASETS[name].source.layout
    url = "" if name == "mixed" else f"; download it from {DATASETS[name].source.download()}"
    raise InputError(
        f"no path for dataset {name!r}: pass --data-dir (or set BANDITROUTE_DATA_{name.upper()} or "
        f"BANDITROUTE_DATA) pointing at {layout}{url}"
    )


def _configured_path(name: str, path: str | Path | None) -> Path | None:
    """:func:`dataset_path`, or ``None`` when neither the argument nor the environment gives one."""
    if name not in DATASETS and name != "mixed":
        raise InputError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, 'mixed'])}")
    if path is not None:
        return Path(path)
    own = os.environ.get(f"BANDITROUTE_DATA_{name.upper()}")
    if own:
        return Path(own)
    root = os.environ.get("BANDITROUTE_DATA")
    if not root:
        return None
    return Path(root) / ("" if name == "mixed" else DATASETS[name].folder)


def load_dataset(
    name: str, path: str | Path | None = None, *, max_queries: int | None = None, seed: int = 0, **options: Any
) -> RetrievalDataset | MixedDataset:
    """Load dataset ``name`` (a key of :data:`DATASETS`, or ``"mixed"``).

    ``max_queries`` keeps a seeded random sample of that many queries (per domain for ``mixed``);
    ``options`` go to the loader (for ``mixed``: ``parts=[...]`` and ``splits=[...]``, see
    :func:`load_mixed`). What each loader used (split, queries dropped) is in the dataset's ``meta``
    (:func:`describe` words it).
    """
    try:
        if name == "mixed":
            root = _configured_path(name, path)
            return load_mixed(root, max_queries=max_queries, seed=seed, **options)
        where = dataset_path(name, path)  # checks the name
        dataset = DATASETS[name].loader(where, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InputError(f"bad option for dataset {name!r}: {exc}") from None
    return dataset if max_queries is None else sample_queries(dataset, max_queries, seed)


def load_mixed(
    root: str | Path | None,
    *,
    parts: Sequence[str] = DEFAULT_MIX,
    splits: Sequence[str] | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> MixedDataset:
    """The datasets ``parts`` as one mixed-domain stream, each part's name its domain label.

    A part is ``name=path`` (a built-in dataset read from ``path``; any other name reads ``path`` as
    a BEIR-layout folder) or a bare built-in name, read from ``root/<its folder>`` (``root`` ``None``:
    from that dataset's own :func:`dataset_path`). ``splits`` apply to every BEIR-layout part (each
    keeps its default otherwise); a part without splits is used whole and says so in its ``meta``
    (``splits_ignored``). ``max_queries`` samples each part.
    """
    specs = [_part(spec) for spec in parts]
    names = [name for name, _, _ in specs]
    if len(specs) < 2:
        raise InputError(f"mixed needs at least two parts, got {len(specs)}: {list(parts)}")
    if len(set(names)) != len(names):
        raise InputError(f"mixed parts need distinct names (each is a domain label), got {names}")
    loaded = []
    for name, entry, path in specs:
        if path is None:
            path = dataset_path(name) if root is None else Path(root) / entry.folder
        options: dict[str, Any] = {}
        if splits is not None and entry.has_splits:
            options["splits"] = list(splits)
        dataset = entry.loader(path, **options)
        if dataset.name != name:  # a built-in read from a folder named otherwise: the domain is the part's name
            dataset = replace(dataset, name=name)
        if splits is not None and not entry.has_splits:
            dataset = replace(dataset, meta={**dataset.meta, "splits_ignored": ",".join(splits)})
        loaded.append(dataset if max_queries is None else sample_queries(dataset, max_queries, seed))
    return mix(loaded)


PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _part(spec: str) -> tuple[str, DatasetEntry, Path | None]:
    """``"name=path"`` or ``"name"`` -> (domain name, the loader's entry, path or ``None``)."""
    name, sep, path = (t.strip() for t in spec.partition("="))
    if not PART_NAME.fullmatch(name):
        raise InputError(
            f"mixed part {spec!r}: the name must be letters, digits, '_', '.' or '-' (it labels the domain), "
            "as in name=path or a built-in dataset name"
        )
    if sep:
        if not path:
            raise InputError(f"mixed part {spec!r} has no path after '='")
        return name, DATASETS.get(name, DATASETS["beir"]), Path(path)
    if name not in DATASETS:
        raise InputError(
            f"mixed part {name!r} is not a built-in dataset ({', '.join(DATASETS)}); "
            f"give its BEIR-layout folder as {name}=/path/to/{name}"
        )
    return name, DATASETS[name], None
