"""A mixed-domain query stream: several datasets' queries, each answered from its OWN corpus.

This is the setting where "no model is best for every query type" should bite (issue: the
mixed-domain stream): lexical matching wins on some domains, dense models on others. A
:class:`MixedDataset` keeps its parts separate; the table builder indexes each part's corpus and
retrieves each query only there, and labels each row with its domain (the part's name).
"""

from __future__ import annotations

from dataclasses import dataclass

from banditroute.core.validation import InputError
from banditroute.data.interfaces import RetrievalDataset


@dataclass(frozen=True)
class MixedDataset:
    """Datasets whose queries form one stream (concatenated in ``parts`` order); part names are domains."""

    name: str
    parts: tuple[RetrievalDataset, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.parts]
        if not names or len(set(names)) != len(names):
            raise InputError(f"a mixed dataset needs parts with distinct names, got {names}")

    @property
    def domains(self) -> list[str]:
        """The domain of every query, in stream order."""
        return [p.name for p in self.parts for _ in p.query_ids]

    @property
    def query_ids(self) -> list[str]:
        """``domain:query id`` for every query, in stream order (unique across parts)."""
        return [f"{p.name}:{q}" for p in self.parts for q in p.query_ids]

    @property
    def queries(self) -> list[str]:
        return [q for p in self.parts for q in p.queries]


def mix(parts: list[RetrievalDataset], name: str = "mixed") -> MixedDataset:
    """Concatenate datasets' query streams, keeping each one's corpus (see :class:`MixedDataset`)."""
    return MixedDataset(name=name, parts=tuple(parts))


def parts_of(dataset: RetrievalDataset | MixedDataset) -> tuple[RetrievalDataset, ...]:
    """The single-corpus pieces of a dataset: itself, or a mixed dataset's parts."""
    return dataset.parts if isinstance(dataset, MixedDataset) else (dataset,)
