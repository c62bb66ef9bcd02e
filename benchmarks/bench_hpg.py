"""HPG throughput and regret: exact mode (dense eigh) against fast mode (factored low-rank store).

Workload: the synthetic low-rank experts of docs/results/hpg.md at ``M = 8`` — ``LowRankExperts(n_arms=8, dim=d,
rank=2, queries="clustered", query_noise=0.1)`` — with HPG's default ``η``, ``τ``, ``β`` (``TUNED``).
Both modes are driven by the same runner (:func:`banditroute.simulate.runner.run_seed`) on the
same rounds (same seeds): ``act_batch`` on ``B`` contexts with frozen parameters, then
``learn_batch`` on their rewards.

* exact: :class:`~banditroute.policies.hpg.ExactDualStore`, one dense ``eigh`` of every
  ``(d+1)×(d+1)`` dual matrix after each round, the projection after each round;
* fast: :class:`~banditroute.policies.hpg_fast.FactoredDualStore` with ``rank`` eigen-pairs per
  model and ``batch = B``: the ``B`` rank-one terms of a chunk are folded in by one eigen-update,
  then one projection — HPG with one projection per chunk (see that module's docstring).

Regret is ``Σ_t max_m μ_m(x_t) − Σ_m π_t(m|x_t) μ_m(x_t)`` (expected, against the per-query oracle).
Exact mode costs ``O(M d³)`` per round (about a second at ``d = 768``), so its regret is measured
only where that is feasible (``d <= --exact-max-dim``); beyond, its rounds/s comes from a short
timed run (``--probe`` rounds) and is labelled "probe". BLAS is limited to one thread
(``--threads``): on a small shared machine multi-threaded OpenBLAS made small products several
times slower.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditroute.core.types import EnvSpec
from banditroute.envs.lowrank import LowRankExperts
from banditroute.policies.hpg import HPG
from banditroute.simulate.runner import Trace, run_seed
from benchmarks._common import blas_limit

DEFAULT_DIMS = (64, 256, 768)


@dataclass(frozen=True)
class Result:
    """Rounds/s (wall clock and per CPU-second) and regret over the seeds (``None`` for timing probes)."""

    rounds_per_s: float
    rounds_per_cpu_s: float
    regret: np.ndarray | None
    rounds: int
    rank: float | None = None


def _hpg(spec: EnvSpec, *, mode: str, fast_kwargs: dict[str, int] | None) -> HPG:
    return HPG(spec.n_arms, spec.dim, mode=mode, fast_kwargs=fast_kwargs)


def run(mode: str, dim: int, args: argparse.Namespace, T: int, seeds: Sequence[int]) -> Result:
    """``T`` rounds per seed; rounds/s is total rounds over total (wall, CPU) seconds."""
    fast_kwargs = {"rank": args.rank, "batch": args.batch} if mode == "fast" else None
    built: list[HPG] = []

    def factory(spec: EnvSpec) -> HPG:
        built.append(_hpg(spec, mode=mode, fast_kwargs=fast_kwargs))
        return built[-1]

    traces: list[Trace] = []
    cpu = time.process_time()
    for seed in seeds:
        env = LowRankExperts(args.arms, dim, 2, queries="clustered", query_noise=0.1, seed=seed)
        traces.append(run_seed(factory, env, T, seed, batch_size=args.batch))
    cpu = time.process_time() - cpu  # includes drawing the rounds (small next to learning)
    seconds = sum(t.seconds for t in traces)
    regret = np.array([float((t.best - t.value).sum()) for t in traces])
    rank = float(np.mean([p.store.rank.mean() for p in built])) if mode == "fast" else None  # type: ignore[attr-defined]
    return Result(T * len(seeds) / seconds, T * len(seeds) / cpu, regret, T, rank)


def bench_dim(dim: int, args: argparse.Namespace) -> tuple[Result, Result]:
    seeds = range(args.seed, args.seed + args.seeds)
    # Warm-up: imports, allocations, BLAS start-up.
    run("fast", dim, args, args.batch * 2, [args.seed])
    fast = run("fast", dim, args, args.rounds, seeds)
    if dim <= args.exact_max_dim:
        exact = run("exact", dim, args, args.rounds, seeds)
    else:
        probe = run("exact", dim, args, args.probe, [args.seed])
        exact = Result(probe.rounds_per_s, probe.rounds_per_cpu_s, None, probe.rounds)
    return exact, fast


def _mean_sd(x: np.ndarray) -> str:
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if x.size > 1 else f"{x.mean():.1f}"


def table(rows: list[tuple[int, Result, Result]]) -> str:
    lines = [
        "| d | exact rounds/s | fast rounds/s | fast / exact | exact regret | fast regret "
        "| fast − exact (per seed; total) | fast live rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dim, exact, fast in rows:
        assert fast.regret is not None
        probe = "" if exact.regret is not None else f" (probe, {exact.rounds} rounds)"
        speedup = fast.rounds_per_cpu_s / exact.rounds_per_cpu_s
        if exact.regret is not None:
            rel = (fast.regret - exact.regret) / exact.regret
            total = fast.regret.sum() / exact.regret.sum() - 1
            diff = ", ".join(f"{r:+.1%}" for r in rel) + f"; {total:+.1%}"
            exact_regret = _mean_sd(exact.regret)
        else:
            diff, exact_regret = "n/a (exact infeasible)", "n/a"
        lines.append(
            f"| {dim} | {_rates(exact)}{probe} | {_rates(fast)} | {speedup:,.0f}× "
            f"| {exact_regret} | {_mean_sd(fast.regret)} | {diff} | {fast.rank:.1f} |"
        )
    return "\n".join(lines)


def _rates(r: Result) -> str:
    """``wall (CPU)`` rounds/s: on a shared machine the CPU-time rate is the one that compares."""
    fmt = ",.1f" if r.rounds_per_s < 100 else ",.0f"
    return f"{r.rounds_per_s:{fmt}} ({r.rounds_per_cpu_s:{fmt}})"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_hpg", description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS))
    p.add_argument("--rounds", type=int, default=2048, help="horizon T per seed (a multiple of --batch)")
    p.add_argument("--arms", type=int, default=8)
    p.add_argument("--rank", type=int, default=32, help="eigen-pairs kept per model by the fast store")
    p.add_argument("--batch", type=int, default=32, help="chunk size B: act_batch size and fast-store batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--exact-max-dim", type=int, default=64, help="largest d at which exact mode runs all rounds")
    p.add_argument("--probe", type=int, default=16, help="rounds timed for exact mode beyond --exact-max-dim")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (0: library default)")
    p.add_argument("--quick", action="store_true", help="smoke run: d=16, T=256, 1 seed")
    args = p.parse_args(list(argv))
    if args.quick:
        args.dims, args.rounds, args.seeds, args.exact_max_dim = [16], 256, 1, 16
    return args


def main(argv: Sequence[str] = ()) -> None:
    """Run the benchmark and print one Markdown table (exact and fast side by side, same run)."""
    args = parse(argv)
    threads = args.threads or None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {cpus} CPUs, "
        f"BLAS threads: {threads or 'library default'}.\n"
        f"LowRankExperts(M={args.arms}, s=2, clustered, noise 0.1); HPG defaults; T = {args.rounds} per seed, "
        f"{args.seeds} seed(s) from {args.seed}; chunks of B = {args.batch}; fast store rank = {args.rank}, "
        f"batch = {args.batch}."
    )
    rows = []
    with blas_limit(threads):
        for dim in args.dims:
            exact, fast = bench_dim(dim, args)
            rows.append((dim, exact, fast))
            print(f"d = {dim}: done", flush=True)
    print("\nRounds/s as wall clock (per CPU-second); fast / exact is the ratio of CPU-time rates.\n")
    print(table(rows), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
