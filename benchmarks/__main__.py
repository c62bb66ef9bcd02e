"""Run every benchmark module: ``python -m benchmarks [NAME ...]``.

Modules are discovered as ``benchmarks/bench_*.py``; ``NAME`` selects some of them by their
short name (``linucb`` for ``bench_linucb``). Each module's ``main()`` runs with its defaults.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "bench_"


def discover() -> list[str]:
    """Short names of the benchmark modules next to this file, sorted."""
    return sorted(p.stem.removeprefix(PREFIX) for p in Path(__file__).parent.glob(f"{PREFIX}*.py"))


def main(argv: Sequence[str]) -> int:
    known = discover()
    wanted = [name.removeprefix(PREFIX) for name in argv] or known
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    for name in wanted:
        print(f"\n# benchmarks.{PREFIX}{name}\n", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{PREFIX}{name}").main()
        print(f"\n({PREFIX}{name} took {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
