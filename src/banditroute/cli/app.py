"""The shared pieces of the ``banditroute`` command line.

Every command module (``cli/main.py`` for simulate/demo/listing, one module per feature for the
``bench`` group and the rest) registers on :data:`app` or :data:`bench_app` from here, so the
error handling and option parsing are written once. Bad input (an unknown name, a malformed
``key=value``, a value a component rejects) ends with a one-line message and exit status 2,
never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from banditroute.core.validation import InputError

app = typer.Typer(
    help="Route each query to the best of several models, learning online from bandit feedback.\n\n"
    "Simulate routing policies on synthetic or replayed problems and compare their regret.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console()
if not console.is_terminal:  # piped or captured output: wide enough for the summary table on one line per row
    console.width = 120
err_console = Console(stderr=True)

bench_app = typer.Typer(
    help="Benchmarks on real data: each builds or loads its reward tables, runs every policy over seeds "
    "and writes a results table and figures.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="Parallel processes over (policy, seed) runs; -1 = all.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
BackendOpt = Annotated[
    str,
    typer.Option(
        help="Where runs execute: local (joblib processes, --jobs) or ray (the cluster at $RAY_ADDRESS, or a local "
        "one; extra [ray]). Results are the same."
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input into a one-line message and exit status 2 (an interrupt: 130)."""
    try:
        yield
    except (InputError, OSError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: finished runs are saved; run the same command again to resume")
        raise typer.Exit(130) from None


def parse_value(text: str) -> Any:
    """A ``key=value`` value: JSON (numbers, true/false/null, lists) when it parses, else a string."""
    aliases = {"none": None, "true": True, "false": False}
    if text.lower() in aliases:
        return aliases[text.lower()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_options(items: Sequence[str], what: str) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: parsed value}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} must look like key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_policy_options(items: Sequence[str], policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["name.key=value", ...]`` -> ``{name: {key: value}}`` for names among ``policies``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            raise InputError(f"--policy-opt must look like name.key=value, got {item!r}")
        if name not in policies:
            raise InputError(f"--policy-opt {item!r} names policy {name!r}, which is not in --policies")
        out.setdefault(name, {}).update(parse_options([rest], "--policy-opt"))
    return out
