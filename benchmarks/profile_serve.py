"""Run ``banditroute serve`` under cProfile in every thread and write the profiles at exit.

``python -m benchmarks.profile_serve OUT_DIR serve --config ...`` behaves as ``banditroute serve
...`` but profiles the event-loop thread, the writer thread and the learner thread (each thread its
own ``cProfile.Profile``, installed by ``threading.setprofile`` as the thread starts) and, when the
server exits (SIGTERM), writes ``OUT_DIR/<thread>.prof`` (pstats files) and ``OUT_DIR/threads.json``
(seconds in profiled calls per thread). ``bench_serve --profile OUT_DIR`` starts the server this way and prints
the breakdown (docs/benchmarks.md). py-spy is not used: it misbehaves on the 2-core test machine.
"""

from __future__ import annotations

import atexit
import cProfile
import io
import json
import pstats
import signal
import sys
import threading
from pathlib import Path
from typing import Any

_profiles: list[tuple[str, cProfile.Profile]] = []


def _track(name: str) -> cProfile.Profile:
    """A profiler on the wall clock (a Python-level CPU clock costs more than it measures): time a thread
    spends waiting shows as the waiting call (``select``/``epoll``, a lock's ``acquire``, a queue's ``get``)."""
    prof = cProfile.Profile()
    _profiles.append((name, prof))
    return prof


def _thread_hook(frame: Any, event: str, arg: Any) -> None:
    """First profile event of a new thread: replace this hook by the thread's own profiler."""
    _track(threading.current_thread().name).enable()


def _dump(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    for i, (name, prof) in enumerate(_profiles):
        prof.disable()
        key = f"{i:02d}-{name.replace('/', '_')}"
        prof.dump_stats(out / f"{key}.prof")
        seconds[key] = pstats.Stats(prof).total_tt  # type: ignore[attr-defined]
    (out / "threads.json").write_text(json.dumps(seconds, indent=1))


def report(out: Path, top: int = 25) -> str:
    """Per-thread seconds and each busy thread's top functions by cumulative CPU time."""
    seconds: dict[str, float] = json.loads((out / "threads.json").read_text())
    lines = [f"seconds in profiled calls by thread: {', '.join(f'{k} {v:.2f}' for k, v in seconds.items())}"]
    for key, cpu in seconds.items():
        if cpu < 0.05 * max(seconds.values()):
            continue
        text = io.StringIO()
        pstats.Stats(str(out / f"{key}.prof"), stream=text).sort_stats("cumulative").print_stats(top)
        lines += [f"\n## {key} ({cpu:.2f} s)", text.getvalue()]
    return "\n".join(lines)


def main() -> None:
    out = Path(sys.argv[1])
    from banditroute.cli.main import app

    main_prof = _track("main")
    atexit.register(_dump, out)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; exit normally then, so atexit runs
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    threading.setprofile(_thread_hook)
    main_prof.enable()
    app(sys.argv[2:], prog_name="banditroute")


if __name__ == "__main__":
    main()
