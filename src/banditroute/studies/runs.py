"""Resumable runs, the one mechanism every study uses to survive an interrupt.

A study is a list of independent runs; each finished run is one JSON record in its own file, written
atomically (temporary file, then rename), so a killed process leaves either the whole record or
nothing. :func:`run_missing` reads the records that are already there and valid, runs the rest in
worker processes, and returns every record: running the same command again resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from banditroute.core.files import TMP_GLOB, atomic_write
from banditroute.simulate.parallel import progress_bar, unordered_map

Record = dict[str, Any]


def write_record(path: Path, record: Record) -> Record:
    """Write ``record`` to ``path`` atomically; return it."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record)))
    return record


def read_record(path: Path) -> Record | None:
    """The record at ``path``, or ``None`` when it is missing or damaged."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_missing(
    tasks: Sequence[tuple[Path, tuple[Any, ...]]],
    fn: Callable[..., Record],
    *,
    valid: Callable[[Record, tuple[Any, ...]], bool],
    n_jobs: int = 1,
    progress: bool = True,
    label: str = "runs",
    backend: str = "local",
) -> list[Record]:
    """Every task's record: read from its path when there and ``valid(record, args)``, else computed.

    Each task is ``(path, args)``; a missing run calls ``fn(*args, path)``, which must write its record
    to ``path`` (:func:`write_record`) and return it. Missing runs go to ``n_jobs`` processes (or the
    Ray cluster: ``backend``, :mod:`banditroute.simulate.parallel`) and are collected as they finish;
    stale temporary files of an interrupted writer are removed first.
    """
    for folder in {path.parent for path, _ in tasks}:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(TMP_GLOB):
            stale.unlink()
    records: list[Record] = []
    todo: list[tuple[Any, ...]] = []
    for path, args in tasks:
        record = read_record(path)
        if record is not None and valid(record, args):
            records.append(record)
        else:  # missing, damaged, or written for another run or an older version: recompute
            todo.append((*args, path))
    with progress_bar(progress) as bar:
        task = bar.add_task(label, total=len(tasks), completed=len(records))
        for record in unordered_map(fn, todo, n_jobs, backend):
            records.append(record)
            bar.update(task, advance=1)
    return records
