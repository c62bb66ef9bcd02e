"""HPG experiments on synthetic low-rank experts : learning, dimension-free, grid, rank check.

Setting: ``LowRankExperts(n_arms=4, dim=d, rank=2, queries="clustered", query_noise=σ)``, noise-free
rewards ``||U_mᵀx||²``, a new problem instance per seed, fully online (act on one query, learn,
repeat). Metrics (``banditroute.simulate.metrics``), mean and 95 % Student-t interval over seeds:

* run-average gap: ``mean_t [max_m μ_t(m) − Σ_m π_t(m|x_t) μ_t(m)]`` over the ``T`` rounds;
* final gap: the same averaged over the last 10 % of the rounds.

Sections (``python -m benchmarks.hpg_experiments SECTION ... [--seeds N] [--T T] [--jobs J]``):

* ``main``: d = 32, σ = 0.1 — HPG (tuned, fast, free, theory), its ablations, log-linear PG,
  LinUCB, EXP3, uniform; checks the acceptance criterion of docs/results/hpg.md (HPG's final gap ≥ 50 % below log-linear
  PG's and below LinUCB's);
* ``dimfree``: d ∈ {16, 64, 256} at two noise levels, under two query designs — "norm" keeps the
  noise *norm* fixed (``σ_d = σ₀·sqrt(16/d)``, the same problem at every d) and "coord" keeps the
  per-coordinate noise ``σ₀`` (the noise norm grows as ``σ₀·sqrt(d)``, so the problem changes with
  d) — HPG (tuned, β = 0.5, free) and the Euclidean unconstrained variant. ``mode="fast"``, rank
  32, batch 1 for d ≥ 64;
* ``rank``: the fast store's rank cap against exact HPG (d = 64) and rank 64 (d = 256), paired by
  seed with the rank-32 runs of ``dimfree`` (run that first; ``--seeds`` may be fewer);
* ``grid``: one-at-a-time sweep of β, η, τ around the tuned point at d = 32 (σ = 0.1 and 1.5).

Every (cell, policy) is one :func:`~banditroute.simulate.experiment.run_experiment` directory under
``--out`` (default ``runs/hpg``): an interrupted run resumes where it stopped, finished runs are
reused, and adding a policy recomputes nothing else. Each section prints a Markdown table, writes
``<out>/<section>/summary.csv`` and a figure ``<figures>/hpg_<section>.png`` (default
``docs/results/figures``). BLAS is pinned to one thread: the per-round matrices are small and
threads only add contention; use ``--jobs 2`` to run seeds in parallel processes.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from banditroute.simulate.experiment import Experiment, PolicyRun, run_experiment, run_path  # noqa: E402
from banditroute.simulate.metrics import mean_ci  # noqa: E402
from banditroute.simulate.results import plot_curves, read_trace  # noqa: E402
from banditroute.simulate.runner import Trace  # noqa: E402

D_REF = 16  # the "norm" design holds the noise norm at its value for d = 16
FAST: dict[str, Any] = {"mode": "fast", "fast_kwargs": {"rank": 32, "batch": 1}}


@dataclass(frozen=True)
class Cell:
    """One environment setting and the policies run on it."""

    name: str
    dim: int
    noise: float
    policies: tuple[PolicyRun, ...]
    tags: dict[str, Any] = field(default_factory=dict)

    def env_options(self) -> dict[str, Any]:
        return {"n_arms": 4, "dim": self.dim, "rank": 2, "queries": "clustered", "query_noise": self.noise}


@dataclass
class Context:
    T: int
    seeds: tuple[int, ...]
    jobs: int
    out: Path
    figures: Path
    progress: bool


def run_cells(
    ctx: Context, section: str, cells: Sequence[Cell]
) -> tuple[pd.DataFrame, dict[str, dict[str, list[Trace]]]]:
    """Run (or resume) every (cell, policy); return one summary row per pair and the traces by cell."""
    rows: list[dict[str, Any]] = []
    traces: dict[str, dict[str, list[Trace]]] = {}
    for cell in cells:
        traces[cell.name] = {}
        for policy in cell.policies:
            exp = Experiment("lowrank", (policy,), ctx.T, ctx.seeds, env_options=cell.env_options())
            result = run_experiment(
                exp, ctx.out / section / cell.name / policy.key, n_jobs=ctx.jobs, progress=ctx.progress
            )
            row = result.summary.iloc[0].to_dict()
            rows.append({"cell": cell.name, "dim": cell.dim, "noise": cell.noise, **cell.tags, **row})
            traces[cell.name][policy.key] = result.runs[policy.key]
            print(markdown_row(rows[-1]), flush=True)
    summary = pd.DataFrame(rows)
    summary.to_csv(ctx.out / section / "summary.csv", index=False)
    return summary, traces


def fmt(mean: float, half: float) -> str:
    digits = max(2, 1 - math.floor(math.log10(abs(half)))) if half and np.isfinite(half) else 4
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown_row(row: dict[str, Any]) -> str:
    return (
        f"| {row['cell']} | {row['policy']} | {fmt(row['gap'], row['gap_ci'])} "
        f"| {fmt(row['final_gap'], row['final_gap_ci'])} | {row['seconds']:.1f} |"
    )


def header(title: str, ctx: Context) -> None:
    print(f"\n### {title} (T = {ctx.T}, seeds {list(ctx.seeds)}, M = 4, s = 2; mean ± 95 % CI)\n")
    print("| setting | policy | run-average gap | final gap (last 10 %) | s / seed |")
    print("|---|---|---|---|---|")


def run(name: str, label: str = "", **params: Any) -> PolicyRun:
    return PolicyRun(name, params, label or name)


# ------------------------------------------------------------------------------ sections
def main_section(ctx: Context) -> None:
    header("Learning: HPG vs baselines, clustered queries, d = 32, σ = 0.1", ctx)
    policies = (
        run("hpg"),
        run("hpg-fast"),
        run("hpg-free"),
        run("hpg-theory", horizon=ctx.T),
        run("hpg-euclid"),
        run("loglinear-omd"),
        run("loglinear"),
        run("linucb"),
        run("constant"),
        run("uniform"),
    )
    summary, traces = run_cells(ctx, "main", [Cell("d32-s0.1", 32, 0.1, policies)])
    final = summary.set_index("policy")["final_gap"]
    ok = final["hpg"] <= 0.5 * final["loglinear"] and final["hpg"] < final["linucb"]
    print(
        f"\nIssue criterion (final gap): hpg {final['hpg']:.4f} vs 0.5 × loglinear {0.5 * final['loglinear']:.4f} "
        f"and linucb {final['linucb']:.4f}: {'PASS' if ok else 'FAIL'}"
    )
    shown = ("hpg", "hpg-free", "hpg-euclid", "loglinear-omd", "loglinear", "linucb", "uniform")
    path = ctx.figures / "hpg_main.png"
    plot_curves(
        {k: traces["d32-s0.1"][k] for k in shown}, path, title=f"Low-rank experts, d = 32, σ = 0.1, T = {ctx.T}"
    )
    print(f"figure: {path}")


def dimfree_cells() -> list[Cell]:
    cells = []
    for sigma0 in (0.1, 1.5):
        for dim in (16, 64, 256):
            fast = FAST if dim >= 64 else {}
            designs = ("norm", "coord") if dim != D_REF else ("norm+coord",)
            for design in designs:
                noise = sigma0 * math.sqrt(D_REF / dim) if design == "norm" else sigma0
                policies = [run("hpg", **fast), run("hpg-euclid"), run("uniform")]  # uniform: the problem's scale
                # The candidate "principled" settings; at heavy noise only β = 0.5 on one design (for time).
                beta, free = run("hpg", "hpg-beta=0.5", beta=0.5, **fast), run("hpg-free", **fast)
                if sigma0 < 1:
                    policies[1:1] = [beta, free]
                elif design != "coord":
                    policies.insert(1, beta)
                tags = {"design": design, "sigma0": sigma0}
                cells.append(Cell(f"{design}-s{sigma0:g}-d{dim}", dim, round(noise, 6), tuple(policies), tags))
    return cells


def dimfree_section(ctx: Context) -> None:
    header("Dimension-free check (fast mode, rank 32, for d ≥ 64)", ctx)
    summary, traces = run_cells(ctx, "dimfree", dimfree_cells())
    print(
        "\nRatio of run-average gaps, d = 256 / d = 16 (issue target ≤ 1.25), and of gaps normalised by the "
        "uniform policy's gap on the same rounds; 95 % bootstrap intervals over seeds:\n"
    )
    print("| design | σ₀ | policy | gap d=16 | gap d=64 | gap d=256 | ratio 256/16 | normalised ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for (design, sigma0, policy), g in _by_design(summary).groupby(["design", "sigma0", "policy"], sort=False):
        if policy == "uniform":
            continue
        rows = {int(r["dim"]): r for r in g.to_dict("records")}
        cols = [fmt(rows[d]["gap"], rows[d]["gap_ci"]) for d in (16, 64, 256)]
        raw = {d: run_average_gaps(traces[rows[d]["cell"]][str(policy)]) for d in (16, 256)}
        norm = {d: raw[d] / run_average_gaps(traces[rows[d]["cell"]]["uniform"]) for d in (16, 256)}
        ratios = []
        for per_seed in (raw, norm):
            lo, hi = ratio_interval(per_seed[256], per_seed[16])
            ratios.append(f"{per_seed[256].mean() / per_seed[16].mean():.2f} [{lo:.2f}, {hi:.2f}]")
        print(f"| {design} | {sigma0:g} | {policy} | {' | '.join(cols)} | {' | '.join(ratios)} |")
    _plot_dimfree(summary, ctx.figures / "hpg_dimfree.png")


def run_average_gaps(runs: Sequence[Trace]) -> np.ndarray:
    """One run-average gap per seed."""
    return np.array([np.mean(t.best - t.value) for t in runs])


def ratio_interval(num: np.ndarray, den: np.ndarray, n: int = 20_000) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``mean(num) / mean(den)`` (seeds resampled independently)."""
    g = np.random.default_rng(0)
    ratios = g.choice(num, (n, num.size)).mean(axis=1) / g.choice(den, (n, den.size)).mean(axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def _by_design(summary: pd.DataFrame) -> pd.DataFrame:
    """Duplicate the shared d = 16 rows into both designs."""
    shared = summary[summary["design"] == "norm+coord"]
    parts = [summary[summary["design"] != "norm+coord"]]
    parts += [shared.assign(design=design) for design in ("norm", "coord")]
    both = pd.concat(parts)
    keep = both.groupby(["design", "sigma0", "policy"])["dim"].transform("nunique") == 3
    return both[keep].sort_values(["design", "sigma0", "policy", "dim"])


def _plot_dimfree(summary: pd.DataFrame, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter, NullLocator

    data = _by_design(summary)
    colors: dict[str, str] = {}  # one colour per policy across panels
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True)
    titles = {"norm": "noise norm fixed: σ = σ₀·√(16/d)", "coord": "per-coordinate noise σ₀ fixed"}
    for i, design in enumerate(("norm", "coord")):
        for j, sigma0 in enumerate((0.1, 1.5)):
            ax = axes[j, i]
            part = data[(data["design"] == design) & (data["sigma0"] == sigma0)]
            for policy, g in part.groupby("policy", sort=False):
                style = {"ls": "--"} if policy == "uniform" else {}
                color = colors.setdefault(str(policy), f"C{len(colors)}" if policy != "uniform" else "grey")
                ax.errorbar(
                    g["dim"], g["gap"], yerr=g["gap_ci"], marker="o", capsize=3, label=policy, color=color, **style
                )
            ax.set(xscale="log", yscale="log", title=f"{titles[design]}, σ₀ = {sigma0:g}", ylabel="run-average gap")
            ax.set_xticks([16, 64, 256], ["16", "64", "256"])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel("d")
    fig.suptitle("HPG vs Euclidean log-quadratic as d grows (s = 2, M = 4; mean ± 95 % CI)")
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def rank_section(ctx: Context) -> None:
    """Exact HPG (d = 64) and rank 64 (d = 256) on the seeds of ``dimfree``'s rank-32 runs, paired by seed."""
    header("Fast store's rank cap: exact (d = 64) and rank 64 (d = 256) against dimfree's rank 32", ctx)
    cells = []
    for design in ("norm", "coord"):
        for dim in (64, 256):
            if dim == 64:
                other = run("hpg", "hpg-exact")
            else:
                other = run("hpg", "hpg-fast-r64", mode="fast", fast_kwargs={"rank": 64, "batch": 1})
            noise = 0.1 * math.sqrt(D_REF / dim) if design == "norm" else 0.1
            cells.append(Cell(f"{design}-s0.1-d{dim}", dim, round(noise, 6), (other,)))
    _, traces = run_cells(ctx, "rank", cells)
    print("\nPaired by seed (same rounds): rank 32 minus the reference, run-average and final gap\n")
    print("| setting | reference | rank-32 gap | reference gap | difference | final-gap difference |")
    print("|---|---|---|---|---|---|")
    for cell in cells:
        ref_key = cell.policies[0].key
        ref = traces[cell.name][ref_key]
        dimfree_dir = ctx.out / "dimfree" / cell.name / "hpg"
        r32 = [read_trace(run_path(dimfree_dir, "hpg", seed), ctx.T) for seed in ctx.seeds]
        gaps = {k: run_average_gaps(v) for k, v in (("r32", r32), ("ref", ref))}
        finals = {
            k: np.array([np.mean((t.best - t.value)[-ctx.T // 10 :]) for t in v])
            for k, v in (("r32", r32), ("ref", ref))
        }
        cols = [fmt(*mean_ci(gaps[k])) for k in ("r32", "ref")]
        cols += [fmt(*mean_ci(gaps["r32"] - gaps["ref"])), fmt(*mean_ci(finals["r32"] - finals["ref"]))]
        print(f"| {cell.name} | {ref_key} | {' | '.join(cols)} |")


def grid_section(ctx: Context) -> None:
    header("Hyper-parameter grid around the tuned point (one at a time), d = 32", ctx)
    cells = []
    for noise in (0.1, 1.5):
        policies = [run("hpg", "hpg-tuned")]
        policies += [run("hpg", f"hpg-beta={b:g}", beta=b) for b in (0.001, 0.1, 0.5, 1.0)]
        policies += [run("hpg", f"hpg-eta={e:g}", eta=e) for e in (0.3, 3.0)]
        policies += [run("hpg", f"hpg-tau={t:g}", tau=t) for t in (8.0, 30.0, 300.0, 1000.0)]
        policies += [run("hpg-euclid", f"hpg-euclid-eta={e:g}", eta=e) for e in (0.3, 1.0, 3.0)]
        policies += [run("hpg-free"), run("uniform")]
        cells.append(Cell(f"d32-s{noise:g}", 32, noise, tuple(policies), {"sigma0": noise}))
    summary, _ = run_cells(ctx, "grid", cells)
    _plot_grid(summary, ctx.figures / "hpg_grid.png")


def _plot_grid(summary: pd.DataFrame, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, NullLocator

    tuned = {"beta": 0.01, "eta": 1.0, "tau": 100.0}
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, param in zip(fig.subplots(1, 3), ("beta", "eta", "tau"), strict=True):
        for sigma0, g in summary.groupby("sigma0"):
            pts = []
            for _, row in g.iterrows():
                label = str(row["policy"])
                if label == "hpg-tuned":
                    pts.append((tuned[param], row))
                elif label.startswith(f"hpg-{param}="):
                    pts.append((float(label.split("=")[1]), row))
            pts.sort(key=lambda p: p[0])
            xs = [p[0] for p in pts]
            ax.errorbar(
                xs,
                [p[1]["final_gap"] for p in pts],
                yerr=[p[1]["final_gap_ci"] for p in pts],
                marker="o",
                capsize=3,
                label=f"σ = {sigma0:g}",
            )
            color = ax.lines[-1].get_color()
            for other, ls in (("hpg-free", ":"), ("uniform", "--")):
                level = g[g["policy"] == other]["final_gap"]
                if len(level):
                    ax.axhline(level.iloc[0], ls=ls, color=color, lw=1, label=f"{other}, σ = {sigma0:g}")
        ax.axvline(tuned[param], color="grey", lw=0.8)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=param,
            ylabel="final gap",
            title=f"HPG: final gap vs {param} (others tuned)",
        )
        ticks = sorted({tuned[param], *xs})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


SECTIONS: dict[str, Callable[[Context], None]] = {
    "main": main_section,
    "dimfree": dimfree_section,
    "rank": rank_section,
    "grid": grid_section,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], help="default: all")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--T", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes over seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/hpg"), help="run directories (resumable)")
    parser.add_argument("--figures", type=Path, default=Path("docs/results/figures"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.figures.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.T, tuple(range(args.seeds)), args.jobs, args.out, args.figures, not args.quiet)
    for section in args.sections or list(SECTIONS):
        (ctx.out / section).mkdir(parents=True, exist_ok=True)
        SECTIONS[section](ctx)


if __name__ == "__main__":
    main()
