"""Experiments: several policies on one environment over several seeds, with results on disk.

A run directory holds::

    config.json                      the experiment and each policy's resolved configuration
    runs/<policy label>/seed<s>.parquet   one file per (policy, seed): the per-round trace
    summary.csv, regret.png          written once every run is complete

A run that is interrupted resumes where it stopped: complete files are kept (they are written
atomically) and only the missing (policy, seed) runs are computed. Resuming into a directory made
with a different configuration is refused, so files never mix experiments.

The environment is rebuilt for every seed with ``seed=<run seed>`` (a new problem instance per
seed, so confidence intervals cover instance variation) unless ``env_options`` fixes ``seed``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from banditroute.core.files import TMP_GLOB, atomic_write
from banditroute.core.validation import InputError, check_int, check_unit_interval
from banditroute.envs.base import Environment
from banditroute.envs.registry import ENV_REGISTRY, make_env
from banditroute.policies.registry import REGISTRY
from banditroute.simulate.parallel import check_backend
from banditroute.simulate.results import plot_curves, read_trace, summarise, summary_table, write_trace
from banditroute.simulate.runner import Trace, check_seeds, registry_factory, run_seed

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


@dataclass(frozen=True)
class PolicyRun:
    """A registry policy under a label (the label names its result files and table row)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class EnvFactory:
    """Picklable ``seed -> Environment`` for a registry name and options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, seed: int) -> Environment:
        takes_seed = "seed" in ENV_REGISTRY[self.name].options()
        return make_env(self.name, **({"seed": seed} if takes_seed else {}), **self.options)


@dataclass(frozen=True)
class Experiment:
    """Configuration of an experiment; it is also what ``config.json`` holds.

    Attributes:
        env: environment registry name; ``env_options`` its keyword options.
        policies: the policies to compare.
        T: rounds per run; ``seeds``: run seeds.
        batch_size: decisions between updates (1 = fully online).
        chunk_size: rounds generated per environment block (``None``: automatic).
        final_fraction: share of final rounds averaged for the "final gap".
    """

    env: str
    policies: tuple[PolicyRun, ...]
    T: int
    seeds: tuple[int, ...]
    env_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    chunk_size: int | None = None
    final_fraction: float = 0.1

    def __post_init__(self) -> None:
        ENV_REGISTRY.lookup(self.env)
        if not self.policies:
            raise InputError("an experiment needs at least one policy")
        for p in self.policies:
            REGISTRY.lookup(p.name)
            if not _LABEL.match(p.key):
                raise InputError(f"policy label {p.key!r} must be letters, digits and ._+=- only")
        keys = [p.key for p in self.policies]
        if len(set(keys)) != len(keys):
            raise InputError(f"policy labels must be distinct, got {keys}; give repeated policies a label")
        check_int(self.T, "T")
        object.__setattr__(self, "seeds", tuple(check_seeds(list(self.seeds))))
        check_int(self.batch_size, "batch_size")
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size")
        check_unit_interval(self.final_fraction, "final_fraction")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready configuration (lists for tuples)."""
        out: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        try:
            kwargs = dict(data)
            kwargs["policies"] = tuple(PolicyRun(**p) for p in kwargs["policies"])
            kwargs["seeds"] = tuple(kwargs["seeds"])
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise InputError(f"not an experiment configuration: {exc}") from None

    def env_factory(self) -> EnvFactory:
        return EnvFactory(self.env, dict(self.env_options))

    def tasks(self) -> Iterator[tuple[PolicyRun, int]]:
        for policy in self.policies:
            for seed in self.seeds:
                yield policy, seed


@dataclass(frozen=True)
class ExperimentResult:
    """Where an experiment's outputs are, its traces by policy label, and its summary table."""

    out_dir: Path
    runs: dict[str, list[Trace]]
    summary: pd.DataFrame
    arm_names: tuple[str, ...]

    @property
    def summary_csv(self) -> Path:
        return self.out_dir / "summary.csv"

    @property
    def figure(self) -> Path:
        return self.out_dir / "regret.png"

    def table(self, title: str = "") -> Any:
        return summary_table(self.summary, title)


def run_path(out_dir: Path, label: str, seed: int) -> Path:
    return out_dir / "runs" / label / f"seed{seed}.parquet"


def _prepare_dir(out_dir: Path, config: dict[str, Any], overwrite: bool) -> None:
    """Create ``out_dir`` with ``config.json``, or check an existing one holds the same ``config``.

    ``overwrite`` replaces the results of a *different* experiment (only in a directory that has a
    ``config.json``, i.e. one this module made).
    """
    config_path = out_dir / "config.json"
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {config_path}: {exc}") from None
        if existing != config:
            if not overwrite:
                raise InputError(
                    f"{out_dir} holds results of a different experiment ({_difference(existing, config)}); "
                    "choose another output directory, delete it, or overwrite it"
                )
            shutil.rmtree(out_dir / "runs", ignore_errors=True)
            for name in ("summary.csv", "regret.png", "config.json"):
                (out_dir / name).unlink(missing_ok=True)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} exists, is not empty and has no config.json; choose another output directory")
    if not config_path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(config_path, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    for stale in out_dir.glob(f"runs/*/{TMP_GLOB}"):  # left by an interrupted writer
        stale.unlink()


def _difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Which settings differ between two ``config.json`` contents, for the refusal message."""
    old_exp, new_exp = old.get("experiment", {}), new.get("experiment", {})
    keys = sorted(k for k in set(old_exp) | set(new_exp) if old_exp.get(k) != new_exp.get(k))
    if keys:
        return f"differs in: {', '.join(keys)}"
    return "same settings, but the policies' resolved configurations differ (changed defaults?)"


def _run_task(exp: Experiment, policy: PolicyRun, seed: int, path: Path) -> tuple[str, int]:
    trace = run_seed(
        registry_factory(policy.name, **policy.params),
        exp.env_factory(),
        exp.T,
        seed,
        batch_size=exp.batch_size,
        chunk_size=exp.chunk_size,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trace(trace, path, {"policy": policy.key})
    return policy.key, seed


def run_experiment(
    exp: Experiment,
    out_dir: str | Path,
    *,
    n_jobs: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    title: str = "",
    backend: str = "local",
) -> ExperimentResult:
    """Run every missing (policy, seed) of ``exp`` into ``out_dir``, then write the summary and figure.

    ``config.json`` records the experiment and every policy's resolved configuration (defaults
    included), so results are reused only when they were produced by the same policies.

    Args:
        n_jobs: parallel processes over (policy, seed) tasks (joblib; ``-1`` = all cores).
        progress: show a rich progress bar over tasks.
        overwrite: discard the results of a different experiment found in ``out_dir``.
        title: the figure's title (default: environment, ``T`` and number of seeds).
        backend: ``"local"`` (joblib) or ``"ray"`` (:mod:`banditroute.simulate.parallel`); the results
            are the same.
    """
    out = Path(out_dir)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise InputError(f"n_jobs must be a positive integer or -1, got {n_jobs!r}")
    spec = exp.env_factory()(exp.seeds[0]).spec  # builds one instance: validates env options early
    resolved = {  # builds every policy once: validates parameters before any process starts
        p.key: registry_factory(p.name, **p.params)(spec).config for p in exp.policies
    }
    config = json.loads(json.dumps({"experiment": exp.to_dict(), "policies": resolved}, default=str))
    _prepare_dir(out, config, overwrite)

    todo = []
    for policy, seed in exp.tasks():
        path = run_path(out, policy.key, seed)
        if path.exists():
            read_trace(path, exp.T)  # a damaged file is reported now, not after hours of work
        else:
            todo.append((policy, seed, path))
    _execute(exp, todo, n_jobs, progress, len(exp.policies) * len(exp.seeds) - len(todo), check_backend(backend))

    runs = {p.key: [read_trace(run_path(out, p.key, s), exp.T) for s in exp.seeds] for p in exp.policies}
    arm_names = spec.names()
    summary = summarise(runs, arm_names, final_fraction=exp.final_fraction)
    summary.to_csv(out / "summary.csv", index=False)
    title = title or f"{exp.env}: T={exp.T}, {len(exp.seeds)} seeds"
    plot_curves(runs, out / "regret.png", title=f"{title} (mean ± 95% CI)")
    return ExperimentResult(out, runs, summary, arm_names)


def _execute(
    exp: Experiment, todo: Sequence[tuple[PolicyRun, int, Path]], n_jobs: int, progress: bool, done: int, backend: str
) -> None:
    """Run the missing tasks (in parallel when asked), advancing a progress bar as each finishes."""
    from banditroute.simulate.parallel import progress_bar, unordered_map

    with progress_bar(progress) as bar:
        task = bar.add_task("runs (policy × seed)", total=done + len(todo), completed=done)
        for label, seed in unordered_map(_run_task, [(exp, *t) for t in todo], n_jobs, backend):
            bar.update(task, advance=1, description=f"runs (policy × seed) · done {label} seed {seed}")
