"""``banditroute demo``: routing among real retrieval pipelines on a real table shipped in the package.

The table (``studies/data/retrieval_demo.npz``, provenance in ``studies/data/README.md``) holds, for
queries of two real collections, the nDCG@10 and the measured cost of every arm — single retrievers
(BM25, three embedding models) and fusion / re-scoring pipelines over them
(:mod:`banditroute.data.pipelines`) — built by ``banditroute build-table`` with the real models. The
demo replays it as a stream, learning from bandit feedback only and from scratch, and prints every
router's quality and cost against the best single retriever, the best fixed pipeline and the per-query
oracle, with 95% CIs over seeds (each seed another arrival order), then writes a figure.

Everything runs through the embedding-routing study (:mod:`banditroute.studies.embed_routing`), so
``banditroute bench embed-routing --table T`` on any other table gives the same comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.simulate.experiment import PolicyRun
from banditroute.simulate.metrics import running_mean
from banditroute.studies.embed_routing import EmbedRoutingResult, run_embed_routing
from banditroute.studies.figures import new_figure
from banditroute.studies.pipeline_routing import BEST_FIXED, BEST_SINGLE

DEMO_POLICIES: tuple[PolicyRun, ...] = (
    PolicyRun("safe-linucb"),
    PolicyRun("safe-hpg"),
    PolicyRun("linucb"),
    PolicyRun("hpg"),
    PolicyRun("exp3"),
    PolicyRun("uniform"),
)
DEMO_SEEDS = 5


def demo_table() -> Path:
    """Where the shipped demo table is (inside the installed package)."""
    return Path(str(resources.files("banditroute.studies") / "data" / "retrieval_demo.npz"))


@dataclass(frozen=True)
class DemoResult:
    study: EmbedRoutingResult
    figure: Path


def run_demo(
    out: Path,
    *,
    table: Path | None = None,
    seeds: int = DEMO_SEEDS,
    policies: Sequence[PolicyRun] = DEMO_POLICIES,
    jobs: int = -1,
    progress: bool = True,
) -> DemoResult:
    """Run the demo's policies on ``table`` (default: the shipped one) and draw its figure under ``out``."""
    study = run_embed_routing(
        table or demo_table(),
        out,
        seeds=seeds,
        orders=("shuffle",),
        policies=policies,
        jobs=jobs,
        progress=progress,
        expressiveness=False,
    )
    return DemoResult(study, plot_demo(study, out / "demo.png"))


def demo_rows(study: EmbedRoutingResult) -> list[dict[str, Any]]:
    """The references (oracle, best fixed arm, best single retriever), then the online policies by
    quality, then the budgeted routers: name, mean reward ± CI, % of the best fixed arm, cost ± CI."""
    room, refs = study.headroom, study.references
    outcomes = {o.label: o for o in study.outcomes["shuffle"]}
    best = room.arm_means[refs.best_fixed].mean
    rows: list[dict[str, Any]] = [
        {"name": "per-query oracle (ceiling)", "reward": (room.oracle.mean, 0.0), "quality": room.oracle.mean / best}
    ]
    names = {BEST_FIXED: f"best fixed arm: {room.arm_names[refs.best_fixed]}"}
    if refs.best_single is not None:
        names[BEST_SINGLE] = f"best single retriever: {room.arm_names[refs.best_single]}"
    ordered = [o for o in (outcomes.get(BEST_FIXED), outcomes.get(BEST_SINGLE)) if o is not None]
    ordered += sorted((o for o in outcomes.values() if o.label not in names), key=lambda o: -o.quality[0])
    for o in ordered:
        rows.append(
            {
                "name": names.get(o.label, o.label),
                "reward": o.reward,
                "quality": o.quality[0],
                "cost": o.cost,
                "below": "" if o.label in names else (str(o.last_below) if o.last_below else "never"),
            }
        )
    for b in study.budget:
        rows.append(
            {
                "name": f"{b.router}, budget {b.fraction:.0%} of best fixed",
                "reward": (b.quality[0] * best, b.quality[1] * best),
                "quality": b.quality[0],
                "cost": b.cost,
            }
        )
    return rows


def plot_demo(study: EmbedRoutingResult, path: Path) -> Path:
    """Running average reward per policy (mean over seeds) and each policy's quality against its cost."""
    runs = study.online["shuffle"].runs
    fig = new_figure((11.0, 4.2))
    curve, scatter = fig.subplots(1, 2)
    for label, traces in runs.items():
        mean_curve = np.mean([running_mean(t.expected) for t in traces], axis=0)
        style = "--" if label in (BEST_FIXED, BEST_SINGLE) else "-"
        curve.plot(np.arange(1, len(mean_curve) + 1), mean_curve, style, label=label, lw=1.2)
        costs = [t.cost.mean() for t in traces if t.cost is not None]
        if costs:
            scatter.scatter(np.mean(costs) * 1e3, np.mean([t.expected.mean() for t in traces]), label=label)
    curve.set_ylim(bottom=max(0.0, curve.get_ylim()[0]))
    curve.set_xlabel("queries served")
    curve.set_ylabel("running average nDCG@10")
    curve.legend(fontsize="x-small")
    scatter.set_xlabel("mean cost (ms / query)")
    scatter.set_ylabel("mean nDCG@10 over the run")
    scatter.set_xscale("log")
    scatter.tick_params(axis="x", which="minor", labelbottom=False)  # minor labels of a short log axis overlap
    scatter.set_title("quality against cost (colours as on the left)", fontsize="small")
    fig.suptitle(f"Routing among retrieval pipelines: {study.n_queries} real queries, bandit feedback")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
