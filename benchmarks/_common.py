"""Helpers shared by the benchmark modules (not itself a benchmark: discovery runs ``bench_*``)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


def blas_limit(threads: int | None) -> AbstractContextManager[Any]:
    """Limit BLAS/OpenMP thread pools to ``threads`` inside the ``with`` block (``None``: leave them).

    Benchmarks pin BLAS to one thread by default: on a small shared machine multi-threaded
    OpenBLAS made small matrix products several times slower. Needs threadpoolctl (the
    ``bench`` extra); without it, says so and changes nothing.
    """
    if threads is None:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("> threadpoolctl not installed: BLAS thread count left at its default.")
        return nullcontext()
    return threadpool_limits(limits=threads)
