"""Run independent tasks in worker processes and show progress as each finishes.

Every long job (experiments over (policy, seed), two-stage sweeps, MoE comparisons) has the same
shape: a list of missing tasks, each writing its own result, run in parallel and reported in
completion order so a progress bar moves and an interrupt loses only the tasks in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def unordered_map(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], n_jobs: int) -> Iterator[Any]:
    """``fn(*task)`` for every task, yielded as each finishes (in-process when ``n_jobs == 1``)."""
    if n_jobs == 1 or len(tasks) <= 1:
        return (fn(*t) for t in tasks)
    from joblib import Parallel, delayed

    results: Iterable[Any] = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(fn)(*t) for t in tasks)
    return iter(results)


def progress_bar(enabled: bool) -> Progress:
    """The progress bar long jobs share: description, bar, done/total, elapsed time."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=not enabled)
