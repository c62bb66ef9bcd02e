"""LinUCB throughput and regret: banditroute against MABWiser, contextualbandits and Vowpal Wabbit.

Every library sees the same rounds: a well-specified disjoint linear bandit with a shared
context (the setting of Li et al. 2010, eq. 1), ``M`` arms and contexts that, like sentence
embeddings, are unit vectors concentrated near a low-dimensional subspace:

    x_t = normalise(U z_t + σ g_t / √d),   μ_a(x) = (1 + θ_aᵀx) / 2,   r_{t,a} ~ Bernoulli(μ_a(x_t)),

with ``U`` a random ``d × rank`` orthonormal basis, ``θ_a = U φ_a`` and ``‖φ_a‖ = 1`` (so
``μ ∈ [0, 1]``), ``z, g`` standard normal. The reward of every arm is drawn up front; a library
is shown only the one it chose. Regret is exact: ``Σ_t max_a μ_a(x_t) − μ_{a_t}(x_t)``.

LinUCB is the same algorithm in banditroute, MABWiser and contextualbandits (ridge regression
per arm, score ``θ̂ᵀx + α·sqrt(xᵀA⁻¹x)``), run with the same ``α`` and ``λ``; they differ only in
how ties between untried arms are broken, so their regrets should agree closely. Vowpal Wabbit
has no LinUCB: ``--cb_explore_adf --squarecb`` (Foster & Rakhlin 2020) with one indicator feature
per arm crossed with the context (``-q sa``) learns the same per-arm linear scores by online
gradient steps, O(M·d) per round instead of LinUCB's O(M·d²).

APIs: *per-round* calls ``act`` then ``learn`` every round; *batch B* decides ``B`` contexts with
frozen parameters, then learns from all ``B`` rewards (``act_batch``/``learn_batch``; the peers'
``predict``/``partial_fit`` on ``B`` rows). VW's Python API has no batch call for ADF examples.
The context text VW parses is formatted before timing starts (optimistic for VW).

Timing: the libraries of one API *race in lockstep* (each plays a round, or a batch, in turn;
:func:`race`), each timed with ``time.perf_counter`` around its own steps only, so the load of a
busy machine falls on all of them alike. A 64-round warm-up race comes first; races in which
every library took under one second are repeated and the median kept; a library whose clock
passes the per-run budget drops out and reports rounds/s over the rounds it played (regret
shown as "stopped"). BLAS is limited to one thread (``--threads``) for every library: on a small shared
machine multi-threaded OpenBLAS matrix-vector products were 10-60x slower than single-threaded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

import numpy as np

from banditroute.core.sampling import sample_categorical
from banditroute.core.types import BatchDecision, FloatArray, IntArray
from banditroute.envs.base import Rounds
from banditroute.policies.ridge import LinUCB
from benchmarks._common import blas_limit

DEFAULT_DIMS = (16, 128, 768)
# Horizon per dimension: LinUCB costs O(M·d²) per round, so larger d gets fewer rounds.
DEFAULT_ROUNDS = {16: 4000, 128: 2000, 768: 500}


# ---------------------------------------------------------------------------------- workload
def make_workload(dim: int, n_arms: int, T: int, seed: int, *, rank: int = 8, noise: float = 0.3) -> Rounds:
    """``T`` rounds of the low-rank linear bandit described in the module docstring."""
    rng = np.random.default_rng(seed)
    r = min(rank, dim)
    U = np.linalg.qr(rng.standard_normal((dim, r)))[0]
    phi = rng.standard_normal((n_arms, r))
    theta = (phi / np.linalg.norm(phi, axis=1, keepdims=True)) @ U.T  # (M, d), unit rows in span(U)
    X = rng.standard_normal((T, r)) @ U.T + noise / np.sqrt(dim) * rng.standard_normal((T, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    mu = 0.5 * (1.0 + X @ theta.T)
    rewards = (rng.random((T, n_arms)) < mu).astype(np.float64)
    return Rounds(contexts=X, rewards=rewards, expected=mu)


def regret(w: Rounds, actions: IntArray) -> float:
    """Cumulative expected regret of ``actions`` over the first ``len(actions)`` rounds."""
    mu = w.expected[: len(actions)]
    return float(np.sum(mu.max(axis=1) - mu[np.arange(len(actions)), actions]))


# ---------------------------------------------------------------------------------- adapters
@dataclass(frozen=True)
class Settings:
    """What every library is configured with."""

    alpha: float = 1.0
    lam: float = 1.0
    seed: int = 0


class Adapter(Protocol):
    """One library's model, fed the rows of a workload by index."""

    def act(self, i: int) -> int: ...
    def learn(self, i: int, action: int, reward: float) -> None: ...
    def act_batch(self, lo: int, hi: int) -> IntArray: ...
    def learn_batch(self, lo: int, hi: int, actions: IntArray, rewards: FloatArray) -> None: ...


class BanditrouteAdapter:
    """``policies.ridge.LinUCB`` through its public, validated API."""

    def __init__(self, w: Rounds, s: Settings) -> None:
        self.X = w.contexts
        self.policy = LinUCB(w.expected.shape[1], self.X.shape[1], alpha=s.alpha, lam=s.lam)
        self.rng = np.random.default_rng(s.seed)

    def act(self, i: int) -> int:
        self.decision = self.policy.act(self.X[i], self.rng)
        return self.decision.action

    def learn(self, i: int, action: int, reward: float) -> None:
        self.policy.learn(self.X[i], self.decision, reward)

    def act_batch(self, lo: int, hi: int) -> IntArray:
        self.batch = self.policy.act_batch(self.X[lo:hi], self.rng)
        return self.batch.actions

    def learn_batch(self, lo: int, hi: int, actions: IntArray, rewards: FloatArray) -> None:
        self.policy.learn_batch(self.X[lo:hi], self.batch, rewards)


class MabwiserAdapter:
    """``MAB(LearningPolicy.LinUCB(alpha, l2_lambda))``. MABWiser starts ``A⁻¹`` at ``λI`` (not
    ``I/λ``) until an arm's first fit, so the default ``λ = 1`` keeps it identical to the rest."""

    def __init__(self, w: Rounds, s: Settings) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.X = w.contexts
        M = w.expected.shape[1]
        self.mab = MAB(list(range(M)), LearningPolicy.LinUCB(alpha=s.alpha, l2_lambda=s.lam), seed=s.seed)
        self.mab.fit(np.empty(0, dtype=np.int64), np.empty(0), np.empty((0, self.X.shape[1])))  # allow predict

    def act(self, i: int) -> int:
        return int(self.mab.predict(self.X[i : i + 1]))

    def learn(self, i: int, action: int, reward: float) -> None:
        self.mab.partial_fit([action], [reward], self.X[i : i + 1])

    def act_batch(self, lo: int, hi: int) -> IntArray:
        return np.atleast_1d(np.asarray(self.mab.predict(self.X[lo:hi]), dtype=np.int64))

    def learn_batch(self, lo: int, hi: int, actions: IntArray, rewards: FloatArray) -> None:
        self.mab.partial_fit(actions, rewards, self.X[lo:hi])


class ContextualBanditsAdapter:
    """``contextualbandits.online.LinUCB`` in double precision, no intercept, Sherman–Morrison
    updates, and the textbook UCB for untried arms (``ucb_from_empty``, random tie-breaks)."""

    def __init__(self, w: Rounds, s: Settings) -> None:
        from contextualbandits.online import LinUCB as CBLinUCB

        self.X = w.contexts
        self.model = CBLinUCB(
            w.expected.shape[1],
            alpha=s.alpha,
            lambda_=s.lam,
            fit_intercept=False,
            use_float=False,
            method="sm",
            ucb_from_empty=True,
            random_state=s.seed + 1,  # it rejects seed 0
        )

    def act(self, i: int) -> int:
        return int(self.model.predict(self.X[i : i + 1])[0])

    def learn(self, i: int, action: int, reward: float) -> None:
        self.model.partial_fit(self.X[i : i + 1], np.array([action]), np.array([reward]))

    def act_batch(self, lo: int, hi: int) -> IntArray:
        return np.asarray(self.model.predict(self.X[lo:hi]), dtype=np.int64)

    def learn_batch(self, lo: int, hi: int, actions: IntArray, rewards: FloatArray) -> None:
        self.model.partial_fit(self.X[lo:hi], actions, rewards)


_vw_text: tuple[FloatArray, list[str]] | None = None


def vw_shared_lines(w: Rounds) -> list[str]:
    """``shared |s 0:x0 1:x1 ...`` for every round, formatted once per workload (not timed)."""
    global _vw_text
    if _vw_text is None or _vw_text[0] is not w.contexts:
        lines = ["shared |s " + " ".join(f"{j}:{v:.7g}" for j, v in enumerate(x)) for x in w.contexts]
        _vw_text = (w.contexts, lines)
    return _vw_text[1]


class VowpalWabbitAdapter:
    """``--cb_explore_adf --squarecb -q sa``: arm ``k`` is the action example ``|a k<k>``; the
    cost VW minimises is ``1 - reward``; the arm is drawn from VW's pmf with our generator."""

    def __init__(self, w: Rounds, s: Settings) -> None:
        import vowpalwabbit

        self.shared = vw_shared_lines(w)
        self.arms = [f"|a k{m}" for m in range(w.expected.shape[1])]
        self.vw = vowpalwabbit.Workspace(f"--cb_explore_adf --squarecb -q sa -b 20 --quiet --random_seed {s.seed}")
        self.rng = np.random.default_rng(s.seed)

    def act(self, i: int) -> int:
        self.pmf = np.asarray(self.vw.predict("\n".join([self.shared[i], *self.arms])))
        return int(sample_categorical(self.pmf, self.rng))

    def learn(self, i: int, action: int, reward: float) -> None:
        lines = [self.shared[i], *self.arms]
        lines[1 + action] = f"{action}:{1.0 - reward}:{self.pmf[action]} {self.arms[action]}"
        self.vw.learn("\n".join(lines))

    def act_batch(self, lo: int, hi: int) -> IntArray:
        raise NotImplementedError("VW's Python API has no batch call for ADF examples")

    def learn_batch(self, lo: int, hi: int, actions: IntArray, rewards: FloatArray) -> None:
        raise NotImplementedError("VW's Python API has no batch call for ADF examples")


@dataclass(frozen=True)
class Library:
    name: str
    package: str  # distribution name, for the import check and the version line
    module: str
    make: Callable[[Rounds, Settings], Adapter]
    batched: bool = True
    linucb: bool = True  # runs exactly LinUCB (so must match banditroute's choices on equal history)


LIBRARIES = (
    Library("banditroute", "banditroute", "banditroute", BanditrouteAdapter),
    Library("MABWiser", "mabwiser", "mabwiser", MabwiserAdapter),
    Library("contextualbandits", "contextualbandits", "contextualbandits", ContextualBanditsAdapter),
    Library("Vowpal Wabbit", "vowpalwabbit", "vowpalwabbit", VowpalWabbitAdapter, batched=False, linucb=False),
)


# ---------------------------------------------------------------------------------- measuring
def play(model: Adapter, w: Rounds, lo: int, hi: int, batch: int) -> IntArray:
    """Rounds ``lo:hi`` through one API: per-round act/learn (``batch == 1``) or one batch."""
    if batch == 1:
        a = model.act(lo)
        model.learn(lo, a, w.rewards[lo, a])
        return np.array([a], dtype=np.int64)
    actions = model.act_batch(lo, hi)
    model.learn_batch(lo, hi, actions, w.rewards[np.arange(lo, hi), actions])
    return actions


def race(libs: Sequence[Library], w: Rounds, s: Settings, batch: int, budget: float) -> list[tuple[float, IntArray]]:
    """Play ``w`` with every library *in lockstep*, step by step, rotating who goes first.

    Each library's clock runs only during its own steps, so load from anything else on the
    machine hits all of them alike and the ratios stay meaningful on a busy machine. A library
    whose clock passes ``budget`` seconds drops out. Returns ``(rounds/s, actions)`` per library
    (construction is not timed; ``actions`` is shorter than ``w`` when it dropped out).
    """
    models = [lib.make(w, s) for lib in libs]
    T, n = len(w), len(libs)
    actions = np.zeros((n, T), dtype=np.int64)
    spent = np.zeros(n)
    played = np.zeros(n, dtype=np.int64)
    live = np.ones(n, dtype=bool)
    for step, lo in enumerate(range(0, T, batch)):
        hi = min(lo + batch, T)
        for j in np.roll(np.arange(n), -step):
            if live[j]:
                start = time.perf_counter()
                actions[j, lo:hi] = play(models[j], w, lo, hi, batch)
                spent[j] += time.perf_counter() - start
                played[j] = hi
                live[j] = spent[j] <= budget
    return [(played[j] / spent[j], actions[j, : played[j]]) for j in range(n)]


@dataclass
class Run:
    """Every timed run of one library and API, over all seeds."""

    library: Library
    batch: int  # 1 = per-round API
    rates: list[float] = field(default_factory=list)  # rounds/s of each timed run
    regrets: list[float] = field(default_factory=list)  # one per seed, complete runs only
    stopped_at: int | None = None  # rounds done when the time budget ran out

    @property
    def api(self) -> str:
        return "per-round" if self.batch == 1 else f"batch {self.batch}"


def bench_dim(
    libs: Sequence[Library],
    workloads: Sequence[Rounds],
    s: Settings,
    batches: Sequence[int],
    budget: float,
    repeats: int,
) -> list[Run]:
    """Race the libraries on every workload (seed ``s.seed + i`` for workload ``i``), per API.

    The first workload is preceded by a 64-round warm-up race; a race in which every library
    needed under one second is repeated up to ``repeats`` times and each keeps its median rate.
    A library stopped by the budget is not run on later seeds.
    """
    runs = [Run(lib, batch) for batch in (1, *batches) for lib in libs if lib.batched or batch == 1]
    for i, w in enumerate(workloads):
        si = replace(s, seed=s.seed + i)
        for batch in (1, *batches):
            group = [run for run in runs if run.batch == batch and run.stopped_at is None]
            group_libs = [run.library for run in group]
            if not group:
                continue
            if i == 0:
                race(group_libs, Rounds(w.contexts[:64], w.rewards[:64], w.expected[:64]), si, batch, budget)
            first = race(group_libs, w, si, batch, budget)
            rates = [[rate] for rate, _ in first]
            for _ in range(repeats - 1):
                if max(len(w) / r[0] for r in rates) >= 1.0:
                    break
                again = race(group_libs, w, si, batch, budget)
                for run, r, (rate, actions), (_, ref) in zip(group, rates, again, first, strict=True):
                    r.append(rate)
                    if not np.array_equal(actions, ref):
                        print(f"> note: {run.library.name} ({run.api}) is not deterministic across repeats")
            for run, (_, actions), r in zip(group, first, rates, strict=True):
                run.rates.append(float(np.median(r)))
                if len(actions) < len(w):
                    run.stopped_at = len(actions)
                else:
                    run.regrets.append(regret(w, actions))
    return runs


def same_choices(libs: Sequence[Library], w: Rounds, s: Settings, block: int = 50) -> dict[str, float]:
    """Fraction of held-out rounds on which each peer's LinUCB picks banditroute's arm after all
    learned the same uniformly logged first half of ``w`` (in blocks of ``block``); equal maths gives 1.

    This is the regret comparison without path noise: in the live runs a different tie-break
    between untried arms in the first rounds sends two identical algorithms down different paths.
    """
    M, n_hist = w.expected.shape[1], len(w) // 2
    logged = np.random.default_rng(s.seed).integers(0, M, n_hist)
    ours = LinUCB(M, w.contexts.shape[1], alpha=s.alpha, lam=s.lam)
    peers = {lib.name: lib.make(w, s) for lib in libs if lib.linucb and lib.name != "banditroute"}
    for lo in range(0, n_hist, block):
        hi = min(lo + block, n_hist)
        a = logged[lo:hi]
        r = w.rewards[np.arange(lo, hi), a]
        ours.learn_batch(w.contexts[lo:hi], BatchDecision(a, np.full((hi - lo, M), 1.0 / M)), r)
        for peer in peers.values():
            peer.learn_batch(lo, hi, a, r)
    ref = ours.act_batch(w.contexts[n_hist:], np.random.default_rng(s.seed)).actions
    return {name: float(np.mean(peer.act_batch(n_hist, len(w)) == ref)) for name, peer in peers.items()}


def table(runs: Sequence[Run], workloads: Sequence[Rounds]) -> str:
    """Markdown table: median rounds/s, ratios to banditroute, regret (mean ± sd over seeds)."""
    ours = {r.batch: float(np.median(r.rates)) for r in runs if r.library.name == "banditroute"}
    base = ours.get(1, float("nan"))
    n = len(workloads)
    lines = [
        f"| library | API | rounds/s | ÷ banditroute per-round | banditroute ÷ it, same API "
        f"| regret (T={len(workloads[0])}{f', {n} seeds' if n > 1 else ''}) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        v = float(np.median(r.rates))
        if r.stopped_at is not None:
            reg = f"stopped at {r.stopped_at}"
        else:
            reg = f"{np.mean(r.regrets):.1f}" + (f" ± {np.std(r.regrets, ddof=1):.1f}" if n > 1 else "")
        row = (
            f"| {r.library.name} | {r.api} | {v:,.0f} | {v / base:.2f} | {ours.get(r.batch, np.nan) / v:.2f} | {reg} |"
        )
        lines.append(row)
    uniform = [float(np.sum(w.expected.max(axis=1) - w.expected.mean(axis=1))) for w in workloads]
    lines.append(f"| *uniform random (reference)* | | | | | {np.mean(uniform):.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- entry point
def available(names: Sequence[str] | None) -> list[Library]:
    libs = []
    for lib in LIBRARIES:
        if names and lib.package not in names and lib.package != "banditroute":
            continue
        try:
            importlib.import_module(lib.module)
        except ImportError as exc:
            print(f"> **{lib.name} skipped**: cannot import {lib.module} ({exc}); `pip install -e '.[bench]'`.")
            continue
        libs.append(lib)
    return libs


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def header(libs: Sequence[Library], threads: int | None) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(f"{lib.name} {_version(lib.package)}" for lib in libs)
    return (
        f"Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {cpus} CPUs, "
        f"BLAS threads: {threads or 'library default'}.\n{versions}."
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_linucb", description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS))
    p.add_argument("--rounds", type=int, help=f"horizon T for every d (default: {DEFAULT_ROUNDS})")
    p.add_argument("--arms", type=int, default=8)
    p.add_argument("--batches", type=int, nargs="*", default=[32, 256])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="workloads (seeds seed, seed+1, ...) for mean ± sd regret")
    p.add_argument("--budget", type=float, default=10.0, help="seconds on a library's own clock before it is stopped")
    p.add_argument("--repeats", type=int, default=5, help="median of this many races for races under 1 s")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (0: library default)")
    p.add_argument("--libraries", nargs="*", help="peer packages to include, e.g. mabwiser (banditroute always runs)")
    p.add_argument("--quick", action="store_true", help="smoke run: d=16, T=300, one repeat")
    args = p.parse_args(list(argv))
    if args.quick:
        args.dims, args.rounds, args.repeats = [16], 300, 1
    return args


def main(argv: Sequence[str] = ()) -> None:
    """Run the benchmark and print one Markdown table per dimension."""
    args = parse(argv)
    threads = args.threads or None
    libs = available(args.libraries)
    settings = Settings(alpha=args.alpha, lam=args.lam, seed=args.seed)
    print(header(libs, threads))
    print(
        f"M = {args.arms} arms, alpha = {args.alpha}, lambda = {args.lam}, seed = {args.seed}, budget {args.budget} s."
    )
    with blas_limit(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peers' pandas/sklearn deprecation chatter
        for d in args.dims:
            T = args.rounds or DEFAULT_ROUNDS.get(d, 1000)
            workloads = [make_workload(d, args.arms, T, args.seed + i) for i in range(args.seeds)]
            runs = bench_dim(libs, workloads, settings, args.batches, args.budget, args.repeats)
            print(f"\n## d = {d}, M = {args.arms}, T = {T}\n\n{table(runs, workloads)}", flush=True)
            w = workloads[0]
            agree = same_choices(libs, w, settings)
            if agree:
                shares = ", ".join(f"{name} {share:.1%}" for name, share in agree.items())
                print(f"\nSame logged history ({len(w) // 2} rounds), same held-out choices as banditroute: {shares}.")


if __name__ == "__main__":
    main(sys.argv[1:])
