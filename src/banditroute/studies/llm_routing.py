"""The LLM-routing benchmark: every method over budgets / trade-offs / seeds on one dataset.

Per seed ``s`` a :class:`~banditroute.llm.protocols.SeedInputs` gives the table and its split: a
random split (``train_frac`` for training), or a given one — separate training and test files, a
split by question, a held-out task (:mod:`banditroute.llm.protocols`). The test rows are an online
stream served in a seeded random order; everything a method fits offline — the shared PCA contexts,
the cost model, PILOT's preference prior, MixLLM's quality predictors, the knapsack's ratio
bounds — sees the training split only. The *reference* is the best single LLM on the training
split (highest mean quality); a run's quality and cost are reported as percentages of that LLM's
on the same stream, and budgets as fractions of what that LLM would spend on the stream
(estimated from training costs, so the budget never peeks at the stream).

Methods (each a family of operating points, one curve):

- references: the oracle (hindsight), every LLM alone, uniformly random;
- cost-unaware bandits on the shared contexts — ``linucb`` (LinUCB without prior), ``egreedy``,
  ``hpg`` — over cost penalties ``μ`` (reward ``quality − μ cost / c_ref``);
- ``pilot`` over budgets (knapsack), with ablations ``pilot-noprior`` (LinUCB on ψ without the
  prior) and ``pilot-offline`` (the prior, never updated);
- ``mixllm`` over ``λ``; ``mixllm-budget`` over budgets (λ set online by dual pacing) and
  ``mixllm-knapsack`` (PILOT's knapsack on MixLLM's predictions: predictor vs budget rule);
  ``mixllm-feedback`` over ``λ`` with the REINFORCE feedback scores on (an ablation); a congested
  queue without and with the waiting-time penalty (``mixllm-queue``);
- ``cascade-greedy`` over ``H``, ``cascade-budget`` and ``cascade-knapsack`` over budgets;
- ``knn`` / ``knn-online`` (per-LLM kNN quality estimates, :mod:`banditroute.llm.neighbours`) and
  ``task`` / ``task-online`` (soft task classifier × per-task quality, :mod:`banditroute.llm.tasks`)
  over budgets (:class:`~banditroute.costaware.predicted.PredictedRouter`): the warm start alone, and
  the warm start learning online from bandit feedback; their settings (k, weighting, the
  classifier's regularisation) are chosen by 5-fold validation on the training split only.

Results: ``runs/seed<s>.jsonl`` (one line per finished run, so an interrupted benchmark resumes
at the next run), then ``summary.csv`` (mean ± 95% CI over seeds per operating point),
``aiq.csv`` and the figures. Every budgeted run asserts that spend never exceeded its budget.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_int, check_unit_interval
from banditroute.costaware.cascade import CascadeRouter
from banditroute.costaware.features import CostModel, Featurizer
from banditroute.costaware.online import OnlineRouter, RunRecord, Split, run_online
from banditroute.costaware.predicted import PredictedRouter, QualityEstimator, select
from banditroute.costaware.quality_cost import aiq, best_quality_within, hull
from banditroute.costaware.routers import OracleRouter, PolicyRouter, fixed_router, reference_cost
from banditroute.llm.datasets import load_llm_dataset
from banditroute.llm.dedup import similarity_profile
from banditroute.llm.mixllm import MixLLMRouter
from banditroute.llm.neighbours import KNNEstimator
from banditroute.llm.pilot import PilotRouter, PreferencePrior, fit_preference_prior
from banditroute.llm.protocols import Protocol, SeedInputs, embed
from banditroute.llm.splits import question_split, write_split
from banditroute.llm.tasks import TaskEstimator, structure_features
from banditroute.simulate.parallel import check_backend, unordered_map
from banditroute.studies.figures import new_figure

FAMILIES = (
    "oracle",
    "single",
    "random",
    "linucb",
    "egreedy",
    "hpg",
    "pilot",
    "pilot-noprior",
    "pilot-offline",
    "mixllm",
    "mixllm-queue",
    "mixllm-budget",
    "mixllm-knapsack",
    "mixllm-feedback",
    "cascade-greedy",
    "cascade-budget",
    "cascade-knapsack",
    "knn",
    "knn-online",
    "task",
    "task-online",
)
BUDGETED = (
    "pilot",
    "pilot-noprior",
    "pilot-offline",
    "mixllm-budget",
    "mixllm-knapsack",
    "cascade-budget",
    "cascade-knapsack",
    "knn",
    "knn-online",
    "task",
    "task-online",
)
CHECKPOINTS = 50


@dataclass(frozen=True)
class LLMBenchConfig:
    """What the benchmark runs (its JSON is the run directory's ``config.json``).

    Attributes:
        dataset: name of the table (provenance only; the table itself is passed in).
        train_frac: share of queries for offline training in a random split (0 < train_frac < 1); the
            rest is the online stream. Unused when the split is given (:class:`SeedInputs`).
        seeds: the seeds (split + stream order + policy draws); an integer ``n`` means ``0 … n-1``.
        budgets: budgets as fractions of the reference LLM's cost on the stream.
        mus: cost penalties of the cost-unaware bandits (``hpg_mus`` for HPG, whose runs are slow).
        lams: MixLLM trade-offs ``λ``.
        horizons: ``H`` of the greedy cascade.
        k, clusters: PCA dimensions and k-means clusters of the shared contexts; ``pilot_dim``: of
            PILOT's projection.
        families: method families to run (default: all).
        linucb_alpha, hpg_eta, pilot_alpha, pilot_strength, pilot_triplets, pilot_max_iter, n_bins, cascade_alpha,
            success: method knobs.
        max_queries: cap on the number of queries (``0``: all); the caller subsamples the data
            with :func:`~banditroute.llm.protocols.subsample` before embedding, the field records it.
        knn_ks, knn_weightings, task_regs, select_folds: the candidates of the kNN and task routers'
            settings, and the folds of their validation on the training split.
        protocol: how the split was made (provenance, e.g. ``train/test files``).
    """

    dataset: str = "llmrouter"
    train_frac: float = 0.5
    seeds: tuple[int, ...] | int = (0, 1, 2, 3, 4)
    budgets: tuple[float, ...] = (0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0)
    mus: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    hpg_mus: tuple[float, ...] = (0.0, 0.25, 1.0, 4.0)
    lams: tuple[float, ...] = (0.25, 0.5, 1.0, 1.4, 2.0, 4.0, 10.0, float("inf"))
    horizons: tuple[int, ...] = (1, 2, 3)
    k: int = 32
    clusters: int = 32
    pilot_dim: int = 32
    families: tuple[str, ...] = FAMILIES
    linucb_alpha: float = 0.3
    hpg_eta: float = 0.3
    pilot_alpha: float = 0.1
    pilot_strength: float = 100.0
    pilot_triplets: int = 20_000
    pilot_max_iter: int = 200
    n_bins: int = 10
    cascade_alpha: float = 0.3
    success: float = 0.5
    max_queries: int = 0
    knn_ks: tuple[int, ...] = (10, 20, 40, 80)
    knn_weightings: tuple[str, ...] = ("uniform", "similarity")
    task_regs: tuple[float, ...] = (1e-3, 1e-2)
    select_folds: int = 5
    protocol: str = "random split"

    def __post_init__(self) -> None:
        if not 0 < check_unit_interval(self.train_frac, "train_frac") < 1:
            raise InputError(f"train_frac must lie strictly between 0 and 1 (some queries to train on, some to route), "
                             f"got {self.train_frac}")  # fmt: skip
        seeds = tuple(range(check_int(self.seeds, "seeds"))) if isinstance(self.seeds, int) else tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(check_int(x, "seed", minimum=0) != x for x in seeds):
            raise InputError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        object.__setattr__(self, "seeds", seeds)
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise InputError(f"unknown method families {unknown}; known: {', '.join(FAMILIES)}")
        if not self.budgets or any(not b > 0 for b in self.budgets):
            raise InputError(f"budgets must be positive fractions of the reference cost, got {self.budgets}")

    @property
    def seed_list(self) -> tuple[int, ...]:
        return self.seeds if isinstance(self.seeds, tuple) else tuple(range(self.seeds))

    def to_json(self) -> dict[str, Any]:
        # inf is not JSON: write it as a string
        return {k: _jsonable(v) for k, v in asdict(self).items()}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return "inf"
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def load_inputs(
    protocol: Protocol, seeds: tuple[int, ...], embedder: str, cache_dir: Path | None, *, progress: bool = True
) -> dict[int, SeedInputs]:
    """Every seed's inputs under ``protocol``, the queries embedded by the named local embedder through the
    on-disk embedding cache (a rerun encodes nothing)."""
    return protocol.build(seeds, _cached(embedder, cache_dir, progress))


def write_question_splits(
    dataset: str,
    data: Path,
    out: Path,
    test_frac: float,
    seeds: tuple[int, ...],
    embedder: str,
    cache_dir: Path | None,
    *,
    threshold: float,
    similarity_report: bool = False,
    progress: bool = True,
) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``data`` by question once per seed into ``out/<seed>/`` (:func:`~banditroute.llm.splits.write_split`).

    Returns one line per seed (the split, its files) and, with ``similarity_report``, per kind of pair the
    ``n``, 1/5/50/95/99 % quantiles, max and share at or above ``threshold`` of
    :func:`~banditroute.llm.dedup.similarity_profile` (formatted)."""
    table = load_llm_dataset(dataset, data)
    cached = _cached(embedder, cache_dir, progress)
    E = embed(table, cached)
    profile: dict[str, list[str]] = {}
    if similarity_report:
        for name, sims in similarity_profile(table.queries, E, cached.encode_queries).items():
            qs = np.quantile(sims, [0.01, 0.05, 0.5, 0.95, 0.99])
            share = f"{100 * float((sims >= threshold).mean()):.3g}%"
            profile[name] = [str(sims.size), *(f"{q:.3f}" for q in qs), f"{sims.max():.3f}", share]
    written = []
    for s in seeds:
        tt = question_split(table, E, test_frac, s, threshold=threshold)
        paths = write_split(table, tt, out / str(s))
        written.append(f"seed {s}: {tt.describe()} -> {paths['train']}, {paths['test']}")
    return written, profile


def _cached(embedder: str, cache_dir: Path | None, progress: bool) -> Any:
    from banditroute.data.cache import CachedEmbedder, EmbeddingCache
    from banditroute.data.embedders import make_embedder

    return CachedEmbedder(make_embedder(embedder), EmbeddingCache(cache_dir), progress=progress)


# ---------------------------------------------------------------------------------------------- one seed
@dataclass
class SeedSetup:
    """Everything fitted on one seed's training split, shared by that seed's runs."""

    seed: int
    inputs: SeedInputs
    config: LLMBenchConfig
    train_idx: np.ndarray = field(init=False)
    test_idx: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.table, self.tokens, self.cost_known = self.inputs.table, self.inputs.tokens, self.inputs.cost_known
        rng = np.random.default_rng([self.seed, 0])
        if self.inputs.split is not None:
            train, test = (np.asarray(i, dtype=np.int64) for i in self.inputs.split)
            self.train_idx, self.test_idx = np.sort(train), rng.permutation(test)
        else:
            order = rng.permutation(self.table.n_rows)
            n_train = round(self.config.train_frac * len(order))
            if not 0 < n_train < len(order):
                raise InputError(f"train_frac={self.config.train_frac} leaves an empty split of {len(order)} queries")
            self.train_idx, self.test_idx = np.sort(order[:n_train]), order[n_train:]  # the stream keeps its order
        if self.train_idx.size < 2 or self.test_idx.size < 1 or np.intersect1d(self.train_idx, self.test_idx).size:
            raise InputError("a split needs at least 2 training and 1 test rows, disjoint")

    @cached_property
    def featurizer(self) -> Featurizer:
        return Featurizer(self.config.k, self.config.clusters, seed=self.seed).fit(self.table.contexts[self.train_idx])

    @cached_property
    def cost_model(self) -> CostModel:
        tr = self.train_idx
        assert self.table.costs is not None
        return CostModel.fit(
            self.featurizer.transform(self.table.contexts[tr]), self.tokens[tr], self.table.costs[tr],
            known=self.cost_known,
        )  # fmt: skip

    def _split(self, idx: np.ndarray) -> Split:
        t = self.table
        assert t.costs is not None
        est, upper = self.cost_model.predict(self.featurizer.transform(t.contexts[idx]), self.tokens[idx], t.costs[idx])
        return Split(t.contexts[idx], t.rewards[idx], t.costs[idx], est, upper)

    @cached_property
    def train(self) -> Split:
        return self._split(self.train_idx)

    @cached_property
    def stream(self) -> Split:
        return self._split(self.test_idx)

    @cached_property
    def prior(self) -> PreferencePrior:
        return fit_preference_prior(
            self.train.contexts,
            self.train.quality,
            np.random.default_rng([self.seed, 1]),
            dim=self.config.pilot_dim,
            n_triplets=self.config.pilot_triplets,
            max_iter=self.config.pilot_max_iter,
        )

    @cached_property
    def reference(self) -> int:
        """The best single LLM on the training split."""
        return int(np.argmax(self.train.quality.mean(axis=0)))

    @cached_property
    def knn(self) -> tuple[KNNEstimator, FloatArray]:
        """The kNN estimator with the validated (k, weighting), fitted on the training split, and its
        out-of-fold training predictions."""
        E, Q = self.table.contexts[self.train_idx], self.train.quality
        cands = {
            (k, w): (lambda rows, k=k, w=w: KNNEstimator(k, w).fit(E[rows], Q[rows]))
            for k in self.config.knn_ks
            for w in self.config.knn_weightings
        }
        return self._validated(cands, E)  # type: ignore[return-value]

    @cached_property
    def task_features(self) -> FloatArray:
        """The task classifier's inputs: embedding and :func:`~banditroute.llm.tasks.structure_features`."""
        return np.hstack([self.table.contexts, structure_features(self.inputs.queries)])

    @cached_property
    def task(self) -> tuple[TaskEstimator, FloatArray]:
        X, Q = self.task_features[self.train_idx], self.train.quality
        groups = [self.inputs.groups[i] for i in self.train_idx]
        cands = {
            (reg,): (lambda rows, reg=reg: TaskEstimator(reg).fit(X[rows], [groups[i] for i in rows], Q[rows]))
            for reg in self.config.task_regs
        }
        return self._validated(cands, X)  # type: ignore[return-value]

    def _validated(self, cands: dict[Any, Any], X: FloatArray) -> tuple[QualityEstimator, FloatArray]:
        labels = {str(k): k for k in cands}
        best, oof, _ = select(
            {str(k): b for k, b in cands.items()}, X, self.train.quality, self.train.est_cost,
            folds=self.config.select_folds, seed=self.seed,
        )  # fmt: skip
        return cands[labels[best]](np.arange(len(self.train_idx))), oof

    def budget(self, fraction: float) -> float:
        """``fraction`` × what the reference LLM would spend on the stream, from its training cost."""
        return fraction * self.stream.n_rows * float(self.train.cost[:, self.reference].mean())


@dataclass(frozen=True)
class MethodRun:
    """One operating point: a family, the knob that moves along its curve, and how to build its router."""

    family: str
    label: str
    knob: str
    value: float
    build: Callable[[SeedSetup], OnlineRouter]
    budget: float | None = None  # fraction of the reference cost


def method_runs(config: LLMBenchConfig, arm_names: tuple[str, ...]) -> list[MethodRun]:
    """Every run of the benchmark, in a fixed order (only the configured families)."""
    c = config
    runs: list[MethodRun] = [
        MethodRun("oracle", "oracle", "-", 0.0, _oracle),
        *(MethodRun("single", name, "arm", a, partial(_single, arm=a, name=name)) for a, name in enumerate(arm_names)),
        MethodRun("random", "random", "-", 0.0, _random),
    ]
    for policy, mus in (("linucb", c.mus), ("egreedy", c.mus), ("hpg", c.hpg_mus)):
        runs += [
            MethodRun(policy, f"{policy} μ={mu:g}", "mu", mu, partial(_bandit, policy=policy, mu=mu)) for mu in mus
        ]
    for family in ("pilot", "pilot-noprior", "pilot-offline"):
        runs += [
            MethodRun(family, f"{family} B={100 * b:g}%", "budget", b, partial(_pilot, family=family), budget=b)
            for b in c.budgets
        ]
    runs += [MethodRun("mixllm", f"mixllm λ={lam:g}", "lambda", lam, partial(_mixllm, lam=lam)) for lam in c.lams]
    runs += [
        MethodRun(
            "mixllm-feedback", f"mixllm-feedback λ={lam:g}", "lambda", lam, partial(_mixllm, lam=lam, feedback=1.0)
        )
        for lam in c.lams
    ]
    runs += [
        MethodRun("mixllm-queue", f"mixllm-queue λ=1.4 β={beta:g}", "beta", beta, partial(_queued_mixllm, beta=beta))
        for beta in (0.0, 0.2)
    ]
    runs += [
        MethodRun(family, f"{family} B={100 * b:g}%", "budget", b, partial(_budgeted_mixllm, rule=rule), budget=b)
        for family, rule in (("mixllm-budget", "dual"), ("mixllm-knapsack", "knapsack"))
        for b in c.budgets
    ]
    runs += [
        MethodRun(family, f"{family} B={100 * b:g}%", "budget", b, partial(_predicted, family=family), budget=b)
        for family in ("knn", "knn-online", "task", "task-online")
        for b in c.budgets
    ]
    runs += [
        MethodRun("cascade-greedy", f"cascade-greedy H={H}", "H", H, partial(_cascade, mode="greedy", H=H))
        for H in c.horizons
    ]
    for mode in ("budget", "knapsack"):
        runs += [
            MethodRun(
                f"cascade-{mode}", f"cascade-{mode} B={100 * b:g}%", "budget", b, partial(_cascade, mode=mode), budget=b
            )
            for b in c.budgets
        ]
    return [run for run in runs if run.family in c.families]


# Builders: one per family, ``(seed setup, knobs) -> a fresh router``.
def _oracle(s: SeedSetup) -> OnlineRouter:
    return OracleRouter()


def _single(s: SeedSetup, arm: int, name: str) -> OnlineRouter:
    return fixed_router(arm, name, s.featurizer)


def _random(s: SeedSetup) -> OnlineRouter:
    return PolicyRouter("uniform", s.featurizer, name="random")


def _bandit(s: SeedSetup, policy: str, mu: float) -> OnlineRouter:
    options: dict[str, dict[str, Any]] = {
        "linucb": {"alpha": s.config.linucb_alpha},
        # HPG with its tuned η = 1 and no baseline locks onto one LLM within the first rounds here.
        "hpg": {"eta": s.config.hpg_eta, "baseline": "mean"},
    }
    params = options.get(policy, {})
    return PolicyRouter(policy, s.featurizer, c_ref=reference_cost(s.train), mu=mu, params=params)


def _pilot(s: SeedSetup, family: str) -> OnlineRouter:
    c = s.config
    return PilotRouter(
        s.prior, s.train, strength=c.pilot_strength, alpha=c.pilot_alpha, n_bins=c.n_bins, name=family,
        use_prior=family != "pilot-noprior", learn=family != "pilot-offline",
    )  # fmt: skip


def _mixllm(s: SeedSetup, lam: float, feedback: float = 0.0) -> OnlineRouter:
    name = f"mixllm{'-feedback' if feedback else ''} λ={lam:g}"
    return MixLLMRouter(s.featurizer, s.train, lam=lam, feedback=feedback, name=name)


def _budgeted_mixllm(s: SeedSetup, rule: str) -> OnlineRouter:
    name = {"dual": "mixllm-budget", "knapsack": "mixllm-knapsack"}[rule]
    # λ = ∞: the knapsack's values are predicted qualities; dual pacing sets its own λ_t.
    return MixLLMRouter(s.featurizer, s.train, lam=float("inf"), budget_rule=rule, n_bins=s.config.n_bins, name=name)


def _queued_mixllm(s: SeedSetup, beta: float) -> OnlineRouter:
    """MixLLM (λ = 1.4) on a congested queue [ours]: one query per second, and every call occupies its
    LLM for 2 s, so an LLM that gets more than half of the traffic builds an ever longer queue.
    ``beta = 0``: the queue is only measured; ``beta > 0``: the waiting-time penalty (τ = 5 s)."""
    return MixLLMRouter(
        s.featurizer, s.train, lam=1.4, beta=beta, gamma=1.0, xi=1.0, tau=5.0,
        service=np.full(s.train.n_arms, 2.0), interval=1.0, name=f"mixllm-queue λ=1.4 β={beta:g}",
    )  # fmt: skip


def _cascade(s: SeedSetup, mode: str, H: int = 3) -> OnlineRouter:
    c = s.config
    return CascadeRouter(
        s.featurizer, s.train, H=min(H, s.train.n_arms), mode=mode, alpha=c.cascade_alpha, success=c.success
    )


def _predicted(s: SeedSetup, family: str) -> OnlineRouter:
    kind = family.removesuffix("-online")
    estimator, oof = s.knn if kind == "knn" else s.task
    X = s.table.contexts if kind == "knn" else s.task_features
    return PredictedRouter(
        copy.deepcopy(estimator), X[s.test_idx], s.train, oof, learn=family.endswith("-online"), name=family
    )


def summarise_run(record: RunRecord, setup: SeedSetup, router: OnlineRouter) -> dict[str, Any]:
    """The numbers one run contributes (plain JSON)."""
    stream = setup.stream
    ref = setup.reference
    ref_q, ref_c = float(stream.quality[:, ref].mean()), float(stream.cost[:, ref].mean())
    regret = np.cumsum(record.best - record.quality)
    marks = np.unique(np.linspace(1, len(regret), CHECKPOINTS).round().astype(int)) - 1
    answered = record.answer[record.answer >= 0]
    out: dict[str, Any] = {
        "quality": float(record.quality.mean()),
        "cost": float(record.cost.mean()),
        "quality_pct": 100 * float(record.quality.mean()) / ref_q,
        "cost_pct": 100 * float(record.cost.mean()) / ref_c,
        "spent": record.spent,
        "budget": record.budget,
        "regret": float(regret[-1]),
        "regret_curve": regret[marks].round(4).tolist(),
        "calls_per_query": float(record.n_calls.mean()),
        "unanswered": int((record.answer < 0).sum()),
        "overrides": record.overrides,
        "decide_us": 1e6 * float(record.decide_seconds.mean()),
        "decide_us_p99": 1e6 * float(np.quantile(record.decide_seconds, 0.99)),
        "shares": (np.bincount(answered, minlength=stream.n_arms) / max(len(answered), 1)).round(4).tolist(),
        "reference": ref,
    }
    if isinstance(router, MixLLMRouter) and router.waits:
        out["mean_wait_s"] = float(np.mean(router.waits))
    return out


def run_seed(inputs: SeedInputs, config: LLMBenchConfig, seed: int, out_file: Path,
             progress: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Every not-yet-finished run of one seed, appending one JSON line per run to ``out_file``."""
    _drop_torn_tail(out_file)
    done = {row["label"] for row in read_rows(out_file)}
    setup = SeedSetup(seed, inputs, config)
    for run in method_runs(config, inputs.table.arm_names):
        if run.label in done:
            if progress:
                progress(run.label)
            continue
        router = run.build(setup)
        budget = None if run.budget is None else setup.budget(run.budget)
        rng = np.random.default_rng([seed, 2])
        record = run_online(router, setup.stream, rng, budget=budget)
        if budget is not None:
            assert record.spent <= budget * (1 + 1e-12), f"{run.label}: spent {record.spent} > budget {budget}"
        row = {"seed": seed, "family": run.family, "label": run.label, "knob": run.knob, "value": _jsonable(run.value),
               "split": inputs.label, "n_train": len(setup.train_idx), "n_test": len(setup.test_idx)}  # fmt: skip
        row.update(summarise_run(record, setup, router))
        if run.family == "pilot" and run.value == config.budgets[0]:
            row["preference_accuracy"] = setup.prior.preference_accuracy
        if run.family in ("knn", "task"):
            row["estimator"] = setup.knn[0].name if run.family == "knn" else setup.task[0].name
        with out_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if progress:
            progress(run.label)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left unfinished by an interrupt, so the next appended run starts on a fresh line."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The finished runs in a ``seed<s>.jsonl`` (a torn last line from an interrupt is ignored)."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


# ---------------------------------------------------------------------------------------------- aggregate
def summary_frame(rows: list[dict[str, Any]]) -> Any:
    """Mean and 95% CI half-width over seeds per operating point (a pandas DataFrame)."""
    import pandas as pd

    from banditroute.simulate.metrics import mean_ci

    df = pd.DataFrame(rows)
    metrics = ["quality", "cost", "quality_pct", "cost_pct", "regret", "decide_us", "decide_us_p99", "calls_per_query"]
    out = []
    for (family, label), g in df.groupby(["family", "label"], sort=False):
        rec: dict[str, Any] = {"family": family, "label": label, "knob": g["knob"].iloc[0], "value": g["value"].iloc[0]}
        rec["seeds"] = len(g)
        for m in metrics:
            mean, half = mean_ci(g[m].to_numpy(dtype=float))
            rec[m], rec[f"{m}_ci"] = float(mean), float(half)
        has_budget = not g["budget"].isna().all()
        rec["budget_ok"] = bool((g["spent"] <= g["budget"] * (1 + 1e-12)).all()) if has_budget else None
        rec["unanswered"] = float(g["unanswered"].mean())
        if "mean_wait_s" in g:
            rec["mean_wait_s"] = float(g["mean_wait_s"].mean())
        out.append(rec)
    return pd.DataFrame(out)


def aiq_frame(rows: list[dict[str, Any]]) -> Any:
    """AIQ per family and seed over the cost range of the single LLMs (in % of the reference), mean ± CI."""
    import pandas as pd

    from banditroute.simulate.metrics import mean_ci

    df = pd.DataFrame(rows)
    out = []
    for family, g in df.groupby("family", sort=False):
        if family in ("oracle", "random"):
            continue
        per_seed = []
        for seed, gs in g.groupby("seed"):
            singles = df[(df.family == "single") & (df.seed == seed)]
            lo, hi = float(singles.cost_pct.min()), float(singles.cost_pct.max())
            per_seed.append(aiq(gs.cost_pct.to_numpy(), gs.quality_pct.to_numpy(), lo, hi))
        mean, half = mean_ci(np.array(per_seed))
        within = [
            best_quality_within(gs.cost_pct.to_numpy(), gs.quality_pct.to_numpy(), 30.0) for _, gs in g.groupby("seed")
        ]
        best30 = float(np.nanmean(within)) if not np.all(np.isnan(within)) else float("nan")
        out.append(
            {"family": family, "aiq_pct": float(mean), "aiq_ci": float(half), "points": int(g.label.nunique()),
             "best_quality_pct_at_cost_le_30": best30}
        )  # fmt: skip
    return pd.DataFrame(out)


def plot_results(summary: Any, rows: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """Quality–cost curves (points and non-decreasing hulls) and cumulative regret of the learners."""
    from matplotlib import colormaps

    paths = []
    fig = new_figure((15, 6.5))
    axes = fig.subplots(1, 2, sharey=True)
    singles = summary[summary.family == "single"]
    cmap = colormaps["tab20"]
    families = [f for f in summary.family.unique() if f not in ("single", "oracle", "random")]
    colors = {f: cmap(i % 20) for i, f in enumerate(families)}
    panels = (
        ("one call per query", [f for f in families if not f.startswith("cascade")]),
        ("cascades (calls until an answer succeeds) vs the best one-call routers",
         [f for f in families if f.startswith("cascade")] + [f for f in ("mixllm-budget", "pilot") if f in families]),
    )  # fmt: skip
    for ax, (subtitle, shown) in zip(axes, panels, strict=True):
        ax.scatter(singles.cost_pct, singles.quality_pct, marker="s", color="black", zorder=5, label="single LLMs")
        for _, r in singles.iterrows():
            ax.annotate(str(r.label)[:24], (r.cost_pct, r.quality_pct), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        for family in shown:
            g = summary[summary.family == family]
            # budgeted: solid; trade-off sweeps: dashed; cascades: dotted
            style = ":" if family.startswith("cascade") else "-" if family in BUDGETED else "--"
            ax.scatter(g.cost_pct, g.quality_pct, color=colors[family], s=14)
            hc, hq = hull(g.cost_pct.to_numpy(), g.quality_pct.to_numpy())
            ax.plot(np.append(hc, max(hc[-1], 100.0)), np.append(hq, hq[-1]), style, color=colors[family],
                    label=family)  # fmt: skip
        for family, marker in (("random", "x"), ("oracle", "*")):
            g = summary[summary.family == family]
            if len(g):
                ax.scatter(g.cost_pct, g.quality_pct, marker=marker, s=60, color="gray", label=family)
        ax.axhline(100, color="gray", lw=0.8, ls=":")
        ax.axvline(30, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("cost, % of the best single LLM")
        ax.set_title(subtitle, fontsize=10)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        ax.grid(alpha=0.3)
    routed = summary[~summary.family.isin(["single", "random"])].quality_pct
    axes[0].set_ylim(max(0.0, min(routed.min(), singles.quality_pct.max()) - 8), summary.quality_pct.max() + 3)
    axes[0].set_ylabel("quality, % of the best single LLM (single LLMs below the axis are off the chart)")
    fig.suptitle(f"{title}: quality–cost operating points, mean over seeds; lines are non-decreasing hulls")
    paths.append(out_dir / "quality_cost.png")
    fig.savefig(paths[-1], dpi=120)

    fig = new_figure((8, 5))
    ax = fig.subplots()
    picks = {
        ("linucb", 0.0), ("egreedy", 0.0), ("hpg", 0.0), ("mixllm", "inf"), ("mixllm-feedback", "inf"),
        ("pilot", 1.0), ("pilot-noprior", 1.0), ("pilot-offline", 1.0),
    }  # fmt: skip
    by_label: dict[str, list[list[float]]] = {}
    for r in rows:
        if (r["family"], r["value"]) in picks:
            by_label.setdefault(r["label"], []).append(r["regret_curve"])
    for label, curves in by_label.items():
        arr = np.array(curves)
        x = np.linspace(0, 100, arr.shape[1])
        ax.plot(x, arr.mean(axis=0), label=label)
    ax.set_xlabel("position in the online stream, %")
    ax.set_ylabel("cumulative regret vs the per-query oracle")
    ax.set_title(f"{title}: cumulative regret (quality-only settings; PILOT at B = 100%)", fontsize=10)
    if by_label:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(out_dir / "regret.png")
    fig.savefig(paths[-1], dpi=120)
    return paths


# ---------------------------------------------------------------------------------------------- entry point
@dataclass(frozen=True)
class BenchResult:
    out_dir: Path
    summary: Any
    aiq: Any
    figures: list[Path]


def run_benchmark(
    inputs: SeedInputs | Mapping[int, SeedInputs],
    config: LLMBenchConfig,
    out_dir: Path,
    *,
    n_jobs: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    backend: str = "local",
) -> BenchResult:
    """Run (or resume) the benchmark into ``out_dir`` and write summary.csv, aiq.csv and figures.

    ``inputs``: one :class:`SeedInputs` for every seed, or one per seed of ``config.seed_list``."""
    per_seed = {s: inputs for s in config.seed_list} if isinstance(inputs, SeedInputs) else dict(inputs)
    if sorted(per_seed) != sorted(config.seed_list):
        raise InputError(f"inputs are given for seeds {sorted(per_seed)}, the configuration runs {config.seed_list}")
    table = per_seed[config.seed_list[0]].table
    if any(i.table.costs is None for i in per_seed.values()):
        raise InputError("the LLM routing benchmark needs a reward table with costs")
    out_dir = Path(out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    cfg_file = out_dir / "config.json"
    cfg = {"config": config.to_json(), "digest": config.digest(), "table": dict(table.metadata)}
    if cfg_file.is_file() and json.loads(cfg_file.read_text())["digest"] != config.digest():
        if not overwrite:
            raise InputError(f"{out_dir} holds results of a different configuration; pass --overwrite or another --out")
        for f in (out_dir / "runs").glob("seed*.jsonl"):
            f.unlink()
    cfg_file.write_text(json.dumps(cfg, indent=2))
    seeds = list(config.seed_list)
    n_runs = len(method_runs(config, table.arm_names))
    files = {s: out_dir / "runs" / f"seed{s}.jsonl" for s in seeds}
    if n_jobs == 1 and check_backend(backend) == "local":
        from rich.progress import Progress

        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("LLM routing runs", total=n_runs * len(seeds))
            for s in seeds:
                run_seed(per_seed[s], config, s, files[s], lambda _: bar.advance(task))
    else:
        for _ in unordered_map(run_seed, [(per_seed[s], config, s, files[s]) for s in seeds], n_jobs, backend):
            pass
    rows = [r for s in seeds for r in read_rows(files[s])]
    summary = summary_frame(rows)
    aiqs = aiq_frame(rows)
    summary.to_csv(out_dir / "summary.csv", index=False)
    aiqs.to_csv(out_dir / "aiq.csv", index=False)
    figures = plot_results(summary, rows, out_dir, str(table.metadata.get("dataset", config.dataset)))
    return BenchResult(out_dir, summary, aiqs, figures)
