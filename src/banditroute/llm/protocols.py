"""From data paths to the benchmark's per-seed inputs, under one of four evaluation protocols.

- **files** (``train`` and ``test`` given): a training file and a test file, joined by model
  name; a ``{seed}`` in either path is replaced by each seed (one split per seed, e.g. written by
  ``banditroute llm-split``), so seeds vary both the split and the routers' randomness;
- **question split** (``test_frac`` given): one file split by question per seed, duplicates and
  near-duplicates kept on one side (:func:`~banditroute.llm.splits.question_split`);
- **held-out task** (``holdout_task``: a task name or ``"all"``): train on the other tasks, test
  on one; with ``"all"`` seed ``i`` holds out the ``i``-th task;
- **random split** (none of those): a random share ``train_frac`` of the rows (duplicates not removed).

Test queries that duplicate a training query (exact, normalised text, embedding cosine ≥
``threshold``) are removed by default and counted (:mod:`banditroute.llm.dedup`). Every query is
embedded by the embedder given (through the embedding cache when the caller wraps it so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError
from banditroute.data.interfaces import Embedder
from banditroute.envs.reward_table import RewardTable
from banditroute.llm.datasets import LLMRoutingData, load_llm_dataset
from banditroute.llm.dedup import NEAR_DUPLICATE_COSINE
from banditroute.llm.splits import TrainTest, question_split, task_holdout, tasks_of, train_test

SEED_PLACEHOLDER = "{seed}"


@dataclass(frozen=True, eq=False)
class SeedInputs:
    """What one seed runs on: the embedded table, per-query prompt tokens, texts and task labels, and the
    split (``None``: a random split by ``train_frac``; else ``(train rows, test rows)``)."""

    table: RewardTable
    tokens: FloatArray
    cost_known: bool
    queries: tuple[str, ...]
    groups: tuple[str, ...]
    split: tuple[IntArray, IntArray] | None = None
    label: str = ""

    def __post_init__(self) -> None:
        n = self.table.n_rows
        if len(self.queries) != n or len(self.groups) != n or np.shape(self.tokens) != (n,):
            raise InputError(f"queries, groups and tokens must have one entry per table row ({n})")


def subsample(data: LLMRoutingData, max_queries: int, seed: int = 0) -> LLMRoutingData:
    """At most ``max_queries`` rows, drawn without replacement (seeded, in their original order); 0: all."""
    if max_queries <= 0 or data.n_rows <= max_queries:
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(data.n_rows, max_queries, replace=False)))


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"5"``: seeds 0–4 (a count); ``"0-4"``: a range, both ends included; ``"0,3,7"``: a list."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d+", text) and int(text) > 0:
            return tuple(range(int(text)))
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
            lo, hi = int(m[1]), int(m[2])
            if lo <= hi:
                return tuple(range(lo, hi + 1))
        elif re.fullmatch(r"\d+(\s*,\s*\d+)+", text):
            seeds = tuple(int(x) for x in text.split(","))
            if len(set(seeds)) == len(seeds):
                return seeds
    except ValueError:
        pass
    raise InputError(
        f"--seeds must be a positive count (5: seeds 0-4), a range (0-4; 3-3 for seed 3 alone) or a list of "
        f"distinct seeds (0,3,7), got {text!r}"
    )


def default_budgets(inputs: SeedInputs, n: int = 8) -> tuple[float, ...]:
    """``n`` budgets, as fractions of the best training LLM's mean cost, spread geometrically from just above
    the cheapest LLM's cost fraction to 1 — inside the dataset's own cost range (training rows only)."""
    t = inputs.table
    rows = np.arange(t.n_rows) if inputs.split is None else np.asarray(inputs.split[0])
    assert t.costs is not None
    mean_cost = t.costs[rows].mean(axis=0)
    ref = float(mean_cost[int(np.argmax(t.rewards[rows].mean(axis=0)))])
    lo = min(float(mean_cost.min()) / ref, 1.0) if ref > 0 else 1.0
    return tuple(sorted({float(f"{b:.3g}") for b in np.geomspace(min(1.2 * lo, 1.0), 1.0, n)}))


def embed(data: LLMRoutingData, embedder: Embedder) -> FloatArray:
    """``(n, d)`` embeddings of ``data``'s queries."""
    return np.asarray(data.to_reward_table(embedder).contexts, dtype=np.float64)


def to_inputs(tt: TrainTest, embedder: Embedder) -> SeedInputs:
    """The benchmark inputs of one split (its rows embedded again: a cached embedder makes that a lookup)."""
    data = tt.data
    table = data.to_reward_table(embedder)
    return SeedInputs(
        table, data.input_tokens, data.cost_known, data.queries, data.groups, (tt.train_idx, tt.test_idx), tt.describe()
    )


@dataclass(frozen=True)
class Protocol:
    """How to build the per-seed inputs (module docstring)."""

    dataset: str
    data: Path | None = None
    train: str | None = None
    test: str | None = None
    test_frac: float | None = None
    holdout_task: str | None = None
    dedup: bool = True
    threshold: float = NEAR_DUPLICATE_COSINE
    max_queries: int = 0

    def __post_init__(self) -> None:
        if self.max_queries and (self.train or self.test_frac is not None or self.holdout_task is not None):
            raise InputError("--max-queries applies to a random split only")
        modes = sum(x is not None for x in ((self.train or self.test), self.test_frac, self.holdout_task))
        if modes > 1:
            raise InputError("choose one protocol: --train/--test, --test-frac or --holdout-task")
        if (self.train is None) != (self.test is None):
            raise InputError("--train and --test go together")
        if self.train is None and self.data is None:
            raise InputError("pass --data-dir (or --train and --test)")

    @property
    def name(self) -> str:
        if self.train is not None:
            return "train/test files"
        if self.test_frac is not None:
            return f"question split, test share {self.test_frac:g}"
        if self.holdout_task is not None:
            return f"held-out task {self.holdout_task}"
        return "random split"

    def build(self, seeds: tuple[int, ...], embedder: Embedder) -> dict[int, SeedInputs]:
        """One :class:`SeedInputs` per seed (``holdout_task="all"``: one per task, so pass as many seeds)."""
        if self.train is not None and self.test is not None:
            return {s: self._files(s, embedder) for s in seeds}
        assert self.data is not None
        data = load_llm_dataset(self.dataset, self.data)
        if self.test_frac is None and self.holdout_task is None:
            data = subsample(data, self.max_queries)
            table = data.to_reward_table(embedder)
            one = SeedInputs(table, data.input_tokens, data.cost_known, data.queries, data.groups, None, "random split")
            return dict.fromkeys(seeds, one)
        E = embed(data, embedder)
        if self.test_frac is not None:
            splits = {s: question_split(data, E, self.test_frac, s, threshold=self.threshold) for s in seeds}
            return {s: to_inputs(tt, embedder) for s, tt in splits.items()}
        tasks = tasks_of(data) if self.holdout_task == "all" else (str(self.holdout_task),) * len(seeds)
        if len(seeds) != len(tasks):
            raise InputError(
                f"--holdout-task all runs one seed per task: pass --seeds {len(tasks)} ({', '.join(tasks)})"
            )
        return {
            s: to_inputs(task_holdout(data, task, E if self.dedup else None, threshold=self.threshold), embedder)
            for s, task in zip(seeds, tasks, strict=True)
        }

    def _files(self, seed: int, embedder: Embedder) -> SeedInputs:
        assert self.train is not None and self.test is not None
        paths = [Path(p.replace(SEED_PLACEHOLDER, str(seed))) for p in (self.train, self.test)]
        train = load_llm_dataset(self.dataset, paths[0])
        options = {}
        if self.dataset == "llmrouter" and not (paths[1].parent / "default_llm.json").is_file() and paths[1].is_file():
            options["prices"] = train.meta["prices"]  # a lone test file is priced like the training file
        test = load_llm_dataset(self.dataset, paths[1], **options)
        tt = train_test(
            train, test, embed(train, embedder), embed(test, embedder), dedup=self.dedup, threshold=self.threshold,
            label=f"{paths[0].name} -> {paths[1].name}",
        )  # fmt: skip
        return to_inputs(tt, embedder)
