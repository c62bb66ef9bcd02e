"""HPG experiments on synthetic low-rank experts (issue 3): learning, dimension-free, grid, parameter-free.

Setting: ``LowRankExperts(n_arms=4, dim=d, rank=2, queries="clustered", query_noise=σ)``, noise-free
rewards ``||U_mᵀx||²``; one run per seed, fully online (act on one query, learn, repeat). Numbers:

* run-average gap: ``mean_t [max_m r̄_t(m) − Σ_m π_t(m|x_t) r̄_t(m)]`` over the ``T`` rounds;
* final gap: the same for the final policy, averaged over 4,000 fresh queries.

Sections (``python benchmarks/hpg_experiments.py SECTION [--seeds N] [--T T]``):

* ``main``: d = 32, σ = 0.1 — HPG (tuned, free, theory), its ablations, log-linear PG, LinUCB, uniform;
* ``dimfree``: d ∈ {16, 64, 256}, σ ∈ {0.1, 1.5} — HPG and the Euclidean unconstrained variant
  (``mode="fast"`` for d ≥ 64: exact ``eigh`` of 257×257 blocks every round is too slow);
* ``grid``: one-at-a-time sweep of β, η, τ around the tuned point at d = 32 (σ = 0.1 and 1.5).

Prints one table row per configuration (mean ± standard deviation over seeds). BLAS is pinned to
one thread: the per-round matrices are small and threading only adds contention.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from banditroute.envs.lowrank import LowRankExperts  # noqa: E402
from banditroute.policies.base import Policy  # noqa: E402
from banditroute.policies.registry import make_policy  # noqa: E402

TEST_QUERIES = 4000


def run(policy: Policy, env: LowRankExperts, T: int, seed: int) -> tuple[float, float]:
    """One online run; returns (run-average gap, final gap)."""
    rounds = env.rounds(T, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    best = rounds.expected.max(axis=1)
    gaps = np.empty(T)
    for t in range(T):
        x = rounds.contexts[t]
        decision = policy.act(x, rng)
        gaps[t] = best[t] - decision.probs @ rounds.expected[t]
        policy.learn(x, decision, rounds.rewards[t, decision.action])
    test = env.rounds(TEST_QUERIES, np.random.default_rng([seed, 3]))
    probs = policy.act_batch(test.contexts, rng).probs
    final = np.mean(test.expected.max(axis=1) - (probs * test.expected).sum(axis=1))
    return float(gaps.mean()), float(final)


def row(label: str, name: str, d: int, noise: float, T: int, seeds: int, **params: Any) -> None:
    avg, fin = [], []
    start = time.perf_counter()
    for seed in range(seeds):
        env = LowRankExperts(4, d, 2, queries="clustered", query_noise=noise, seed=seed)
        a, f = run(make_policy(name, env.spec, **params), env, T, seed)
        avg.append(a)
        fin.append(f)
    secs = (time.perf_counter() - start) / seeds
    print(
        f"| {label:<34} | {d:>3} | {noise:>4} | {np.mean(avg):.4f} ± {np.std(avg):.4f} "
        f"| {np.mean(fin):.5f} ± {np.std(fin):.5f} | {secs:7.1f} |",
        flush=True,
    )


def header(title: str, T: int, seeds: int) -> None:
    print(f"\n### {title} (T = {T}, {seeds} seeds, M = 4, s = 2)\n")
    print("| policy                             |   d |    σ | run-average gap   | final gap           | s/seed  |")
    print("|------------------------------------|-----|------|-------------------|---------------------|---------|")


def main_section(T: int, seeds: int) -> None:
    header("Learning: HPG vs baselines, clustered queries", T, seeds)
    for label, name, params in [
        ("hpg (tuned)", "hpg", {}),
        ("hpg-free", "hpg-free", {}),
        (f"hpg-theory (horizon {T})", "hpg-theory", {"horizon": T}),
        ("hpg-euclid (unconstrained)", "hpg-euclid", {}),
        ("loglinear-omd (hypentropy, ℓ1 ball)", "loglinear-omd", {}),
        ("loglinear (PG, Euclidean)", "loglinear", {}),
        ("linucb", "linucb", {}),
        ("constant (EXP3)", "constant", {}),
        ("uniform", "uniform", {}),
    ]:
        row(label, name, 32, 0.1, T, seeds, **params)


def dimfree_section(T: int, seeds: int) -> None:
    header("Dimension-free check", T, seeds)
    for noise in (0.1, 1.5):
        for d in (16, 64, 256):
            fast = {"mode": "fast", "fast_kwargs": {"rank": 32}} if d >= 64 else {}
            row("hpg (tuned)" + (" fast r=32" if fast else ""), "hpg", d, noise, T, seeds, **fast)
            row("hpg β=0.5" + (" fast r=32" if fast else ""), "hpg", d, noise, T, seeds, beta=0.5, **fast)
            row("hpg-euclid (unconstrained)", "hpg-euclid", d, noise, T, seeds)


def grid_section(T: int, seeds: int) -> None:
    header("Hyper-parameter grid around the tuned point (one at a time)", T, seeds)
    for noise in (0.1, 1.5):
        for beta in (0.01, 0.1, 0.5, 1.0):
            row(f"hpg β={beta}", "hpg", 32, noise, T, seeds, beta=beta)
        for eta in (0.3, 3.0):
            row(f"hpg η={eta}", "hpg", 32, noise, T, seeds, eta=eta)
        for tau in (8.0, 30.0, 300.0, 1000.0):
            row(f"hpg τ={tau:g}", "hpg", 32, noise, T, seeds, tau=tau)
        for eta in (0.3, 1.0, 3.0):
            row(f"hpg-euclid η={eta}", "hpg-euclid", 32, noise, T, seeds, eta=eta)
        row("hpg-free", "hpg-free", 32, noise, T, seeds)


SECTIONS = {"main": main_section, "dimfree": dimfree_section, "grid": grid_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--T", type=int, default=20_000)
    args = parser.parse_args()
    for section in args.sections:
        SECTIONS[section](args.T, args.seeds)


if __name__ == "__main__":
    main()
