"""Run independent tasks in worker processes or on a Ray cluster, and show progress as each finishes.

Every long job (experiments over (policy, seed), two-stage sweeps, MoE comparisons, LLM-routing seeds)
has the same shape: a list of missing tasks, each writing its own result, run in parallel and reported
in completion order so a progress bar moves and an interrupt loses only the tasks in flight.

Backends (one seam, :func:`unordered_map`):

- ``"local"``: joblib processes on this machine (``n_jobs``; in-process when 1);
- ``"ray"`` (extra ``[ray]``): Ray tasks on the cluster at ``$RAY_ADDRESS`` (e.g. one started with
  ``ray start --head``), or on a local one Ray starts when none is set. A task whose worker dies is
  retried by Ray (``max_retries``). Tasks write their results to the output folder themselves, so a
  cluster spanning several hosts needs that folder on a shared filesystem.

Results do not depend on the backend: every task derives its seeds from its own arguments, never from
which worker runs it or when (``tests/test_ray_backend.py`` checks bit-identity against joblib).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from banditroute.core.validation import InputError

BACKENDS = ("local", "ray")
RAY_RETRIES = 3


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def unordered_map(
    fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], n_jobs: int, backend: str = "local"
) -> Iterator[Any]:
    """``fn(*task)`` for every task, yielded as each finishes (module docstring for the backends).

    ``n_jobs`` is the local backend's process count; Ray schedules on every CPU of its cluster.
    """
    if check_backend(backend) == "ray":
        return _ray_map(fn, tasks)
    if n_jobs == 1 or len(tasks) <= 1:
        return (fn(*t) for t in tasks)
    from joblib import Parallel, delayed

    results: Iterable[Any] = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(fn)(*t) for t in tasks)
    return iter(results)


def _ray_map(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
    try:
        import ray
    except ImportError:
        raise InputError("backend 'ray' needs the [ray] extra: pip install 'banditroute[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False, configure_logging=False)
    remote = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(fn)
    pending = [remote.remote(*t) for t in tasks]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def progress_bar(enabled: bool) -> Progress:
    """The progress bar long jobs share: description, bar, done/total, elapsed time."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=not enabled)
