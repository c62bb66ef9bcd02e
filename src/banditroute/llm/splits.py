"""Train/test protocols for LLM routing: separate files joined by model name, question splits, unseen tasks.

Every protocol returns a :class:`TrainTest`: one :class:`~banditroute.llm.datasets.LLMRoutingData`
holding the training rows then the test rows, the two index sets, and how many test queries were
dropped as duplicates of training queries (:mod:`banditroute.llm.dedup`).

- :func:`join_by_name`: a training table and a test table of the same LLMs, listed in any order —
  columns are matched by model name, never by position; LLMs present on one side only are dropped
  (and reported).
- :func:`train_test`: the two tables, with the test queries that occur in training removed (by
  default) and counted.
- :func:`question_split`: one table split by question group — duplicates and near-duplicates always
  land on the same side — so the sides share no question.
- :func:`task_holdout`: leave one task out — train on every other task, test on that one (out of
  distribution: the router never saw the task).
- :func:`write_split`: the rows of a split written back in the dataset's own file format (LLMRouter's
  JSON scores with each record's task, ParetoBandit's JSONL), so a split runs through the same
  ``--train``/``--test`` path as any outside test file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError
from banditroute.data.datasets.common import read_json
from banditroute.llm.datasets import LLMRoutingData
from banditroute.llm.dedup import NEAR_DUPLICATE_COSINE, overlap, question_groups, split_by_question


@dataclass(frozen=True, eq=False)
class TrainTest:
    """Training rows ``train_idx`` and test rows ``test_idx`` (in file order) of ``data``.

    ``removed``: test queries dropped as duplicates of training ones, by level
    (:meth:`~banditroute.llm.dedup.Overlap.counts`); ``dropped_arms``: LLMs not on both sides.
    """

    data: LLMRoutingData
    train_idx: IntArray
    test_idx: IntArray
    removed: dict[str, int] = field(default_factory=dict)
    dropped_arms: tuple[str, ...] = ()
    label: str = ""

    def describe(self) -> str:
        r = self.removed
        dup = (
            f"; removed {r['total']} of {r['of']} test queries found in training "
            f"({r['exact']} exact, {r['normalised']} normalised text, {r['near']} near-duplicates)"
            if r
            else ""
        )
        arms = f"; LLMs not on both sides, dropped: {', '.join(self.dropped_arms)}" if self.dropped_arms else ""
        head = f"{self.label}: " if self.label else ""
        return f"{head}{len(self.train_idx)} train, {len(self.test_idx)} test{dup}{arms}"


def _columns(data: LLMRoutingData, arms: Sequence[str]) -> LLMRoutingData:
    cols = [data.arm_names.index(a) for a in arms]
    return LLMRoutingData(
        name=data.name, queries=data.queries, quality=data.quality[:, cols], cost=data.cost[:, cols],
        arm_names=tuple(arms), groups=data.groups, input_tokens=data.input_tokens, cost_known=data.cost_known,
        meta=data.meta,
    )  # fmt: skip


def join_by_name(train: LLMRoutingData, test: LLMRoutingData) -> tuple[LLMRoutingData, LLMRoutingData, tuple[str, ...]]:
    """``(train, test, dropped)``: both restricted to the LLMs they share, in the training file's order."""
    shared = [a for a in train.arm_names if a in test.arm_names]
    if not shared:
        raise InputError(f"the training and test files share no LLM: {train.arm_names} vs {test.arm_names}")
    dropped = tuple(sorted(set(train.arm_names) ^ set(test.arm_names)))
    return _columns(train, shared), _columns(test, shared), dropped


def concat(first: LLMRoutingData, second: LLMRoutingData) -> LLMRoutingData:
    """``first``'s rows then ``second``'s (same LLMs in the same order)."""
    if first.arm_names != second.arm_names:
        raise InputError(f"concat needs the same LLMs in the same order, got {first.arm_names} and {second.arm_names}")
    return LLMRoutingData(
        name=first.name,
        queries=first.queries + second.queries,
        quality=np.vstack([first.quality, second.quality]),
        cost=np.vstack([first.cost, second.cost]),
        arm_names=first.arm_names,
        groups=first.groups + second.groups,
        input_tokens=np.concatenate([first.input_tokens, second.input_tokens]),
        cost_known=first.cost_known and second.cost_known,
        meta={"train": dict(first.meta), "test": dict(second.meta)},
    )


def train_test(
    train: LLMRoutingData,
    test: LLMRoutingData,
    E_train: FloatArray | None = None,
    E_test: FloatArray | None = None,
    *,
    dedup: bool = True,
    threshold: float = NEAR_DUPLICATE_COSINE,
    label: str = "",
) -> TrainTest:
    """Separate training and test tables joined by model name; test queries found in training are
    counted and, with ``dedup``, removed (near-duplicates only when both embeddings are given)."""
    train, test, dropped = join_by_name(train, test)
    found = overlap(train.queries, test.queries, E_train, E_test, threshold=threshold)
    keep = np.flatnonzero(~found.any) if dedup else np.arange(test.n_rows)
    if keep.size == 0:
        raise InputError("every test query occurs in the training file: nothing left to test on")
    data = concat(train, test.subset(keep))
    n = train.n_rows
    return TrainTest(data, np.arange(n), n + np.arange(keep.size), found.counts() if dedup else {}, dropped, label)


def question_split(
    data: LLMRoutingData, E: FloatArray | None, test_frac: float, seed: int, *, threshold: float = NEAR_DUPLICATE_COSINE
) -> TrainTest:
    """Split ``data`` by question group (:func:`~banditroute.llm.dedup.question_groups`): no question, and no
    near-duplicate of one, is on both sides."""
    groups = question_groups(data.queries, E, threshold=threshold)
    tr, te = split_by_question(groups, test_frac, seed)
    merged = int(data.n_rows - np.unique(groups).size)
    return TrainTest(data, tr, te, {}, (), f"question split {seed} ({merged} queries merged into duplicate groups)")


def task_holdout(
    data: LLMRoutingData, task: str, E: FloatArray | None = None, *, threshold: float = NEAR_DUPLICATE_COSINE
) -> TrainTest:
    """Train on every task but ``task``, test on ``task`` (its queries duplicated in training removed)."""
    is_test = np.array([g == task for g in data.groups])
    if not is_test.any() or is_test.all():
        raise InputError(f"task {task!r} must hold some but not all queries; tasks: {sorted(set(data.groups))}")
    tr, te = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    train, test = data.subset(tr), data.subset(te)
    out = train_test(
        train,
        test,
        None if E is None else E[tr],
        None if E is None else E[te],
        threshold=threshold,
        label=f"task {task}",
    )
    return out


def tasks_of(data: LLMRoutingData, min_queries: int = 20) -> tuple[str, ...]:
    """The tasks (groups) with at least ``min_queries`` queries, sorted."""
    names, counts = np.unique(np.asarray(data.groups, dtype=str), return_counts=True)
    return tuple(str(n) for n, c in zip(names, counts, strict=True) if c >= min_queries)


# ---------------------------------------------------------------------------------------------- writing
WRITABLE = ("llmrouter", "paretobandit")


def write_split(data: LLMRoutingData, split: TrainTest, out_dir: Path) -> dict[str, Path]:
    """Write ``split``'s training and test rows of ``data`` (as loaded from ``data.meta['source']``) in the
    dataset's own format under ``out_dir``; returns ``{"train": path, "test": path}``.

    LLMRouter: ``train.json`` / ``test.json`` (the source records, each with its ``"task"``) and a
    copy of the price file; ParetoBandit: ``train.jsonl`` / ``test.jsonl`` (the source lines)."""
    if data.name not in WRITABLE:
        raise InputError(f"writing split files is supported for {', '.join(WRITABLE)}; for {data.name} use --test-frac")
    source = Path(str(data.meta.get("source", "")))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if data.name == "llmrouter":
        records: list[dict[str, Any]] = read_json(source)
        if len(records) != data.n_rows:
            raise InputError(f"{source} holds {len(records)} records, the table {data.n_rows}: pass the loaded file")
        for side, idx in (("train", split.train_idx), ("test", split.test_idx)):
            rows = [{**records[i], "task": data.groups[i]} for i in idx]
            paths[side] = out_dir / f"{side}.json"
            paths[side].write_text(json.dumps(rows), encoding="utf-8")
        shutil.copyfile(Path(str(data.meta["prices"])), out_dir / "default_llm.json")
    else:
        # split on "\n" only: str.splitlines would also cut at U+2028 and friends inside a JSON string
        lines = [ln.rstrip("\r") for ln in source.read_text(encoding="utf-8").split("\n") if ln.strip()]
        if len(lines) != data.n_rows:
            raise InputError(f"{source} holds {len(lines)} records, the table {data.n_rows}: pass the loaded file")
        for side, idx in (("train", split.train_idx), ("test", split.test_idx)):
            paths[side] = out_dir / f"{side}.jsonl"
            paths[side].write_text("".join(lines[i] + "\n" for i in idx), encoding="utf-8")
    return paths
