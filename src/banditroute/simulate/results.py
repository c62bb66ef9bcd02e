"""Results on disk and their presentation: per-run Parquet files, summary table, CSV and figure.

Each (policy, seed) run is one Parquet file of per-round columns (see
:class:`~banditroute.simulate.runner.Trace`), written to a temporary name and renamed into place,
so a file under its final name is always complete. Reading validates the columns and length, so a
damaged file gives a clear :class:`InputError` naming it.

Uses the ``[cli]`` extra (pandas/pyarrow, matplotlib, rich); the runner and metrics do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from banditroute.core.files import atomic_write
from banditroute.core.validation import InputError
from banditroute.simulate.metrics import cumulative_regret, mean_ci, moving_average, routing_shares, run_metrics
from banditroute.simulate.runner import Trace, stack

COLUMNS = ("action", "prob", "reward", "expected", "best", "value")
METRICS = {
    "regret": "Regret (cum.)",
    "gap": "Gap (run avg)",
    "final_gap": "Gap (final)",
    "reward": "Avg reward",
}


def write_trace(trace: Trace, path: Path, meta: Mapping[str, str] | None = None) -> None:
    """Write ``trace`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    table = pa.table(trace.columns())
    metadata = {"seed": str(trace.seed), "seconds": repr(trace.seconds), **(meta or {})}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_trace(path: Path, T: int | None = None) -> Trace:
    """Read a file written by :func:`write_trace`; ``T`` checks the number of rounds."""
    try:
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        cols = {name: table.column(name).to_numpy() for name in table.column_names}
        seed, seconds = int(meta["seed"]), float(meta["seconds"])
    except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
        raise InputError(f"cannot read run file {path}: {exc}; delete it to recompute that run") from None
    missing = [c for c in COLUMNS if c not in cols]
    n = len(table)
    if missing or (T is not None and n != T):
        problem = f"missing columns {missing}" if missing else f"{n} rounds instead of {T}"
        raise InputError(f"run file {path} is incomplete ({problem}); delete it to recompute that run")
    return Trace(
        seed=seed,
        action=cols["action"].astype(np.int64),
        prob=cols["prob"],
        reward=cols["reward"],
        expected=cols["expected"],
        best=cols["best"],
        value=cols["value"],
        cost=cols.get("cost"),
        seconds=seconds,
    )


def summarise(
    runs: Mapping[str, Sequence[Trace]],
    arm_names: Sequence[str],
    *,
    final_fraction: float = 0.1,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per policy: each headline metric's mean and CI half-width over seeds, routing shares.

    Columns: ``policy, seeds, T``, then ``<metric>`` and ``<metric>_ci`` for ``regret, gap,
    final_gap, reward`` (and ``cost`` when the environment has costs), ``share_<arm>``, ``seconds``.
    """
    rows: list[dict[str, Any]] = []
    for label, traces in runs.items():
        best, expected, value, reward = (stack(traces, c) for c in ("best", "expected", "value", "reward"))
        per_seed = run_metrics(best, expected, value, reward, final_fraction=final_fraction)
        if all(t.cost is not None for t in traces):
            per_seed["cost"] = stack(traces, "cost").mean(axis=-1)
        row: dict[str, Any] = {"policy": label, "seeds": len(traces), "T": best.shape[-1]}
        for key, vals in per_seed.items():
            mean, half = mean_ci(vals, confidence)
            row[key], row[f"{key}_ci"] = float(mean), float(half)
        shares = routing_shares(stack(traces, "action"), len(arm_names)).mean(axis=0)
        row.update({f"share_{name}": float(s) for name, s in zip(arm_names, shares, strict=True)})
        row["seconds"] = float(np.mean([t.seconds for t in traces]))
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, half: float) -> str:
    digits = 1 if abs(mean) >= 100 else 3
    return f"{mean:.{digits}f}" if np.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def summary_table(summary: pd.DataFrame, title: str = "") -> Any:
    """A ``rich.table.Table`` of the summary (mean ± 95% CI over seeds)."""
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("Policy", style="bold")
    metrics = {k: v for k, v in METRICS.items() if k in summary}
    if "cost" in summary:
        metrics["cost"] = "Avg cost"
    for header in metrics.values():
        table.add_column(header, justify="right")
    table.add_column("s / seed", justify="right")
    for _, row in summary.iterrows():
        cells = [_fmt(row[k], row[f"{k}_ci"]) for k in metrics]
        table.add_row(str(row["policy"]), *cells, f"{row['seconds']:.1f}")
    return table


def plot_curves(
    runs: Mapping[str, Sequence[Trace]], path: Path, *, title: str = "", confidence: float = 0.95, points: int = 400
) -> None:
    """Cumulative regret and (smoothed) sub-optimality gap against rounds, mean with CI bands."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_regret, ax_gap = fig.subplots(1, 2)
    for label, traces in runs.items():
        best, expected, value = (stack(traces, c) for c in ("best", "expected", "value"))
        T = best.shape[-1]
        idx = np.unique(np.linspace(0, T - 1, min(points, T)).astype(int))
        rounds = idx + 1
        regret = cumulative_regret(best, expected)[:, idx]
        gap = moving_average(best - value, max(1, T // 50))[:, idx]
        for ax, curves in ((ax_regret, regret), (ax_gap, gap)):
            mean, half = mean_ci(curves, confidence)
            (line,) = ax.plot(rounds, mean, label=label, lw=1.5)
            if len(traces) > 1:
                ax.fill_between(rounds, mean - half, mean + half, color=line.get_color(), alpha=0.2, lw=0)
    ax_regret.set(xlabel="round", ylabel="cumulative regret", title="Cumulative regret vs per-context oracle")
    ax_gap.set(xlabel="round", ylabel="sub-optimality gap", title="Gap: oracle − E_π[reward] (moving avg)")
    ax_gap.set_ylim(bottom=0)
    for ax in (ax_regret, ax_gap):
        ax.grid(alpha=0.3)
    ax_regret.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
