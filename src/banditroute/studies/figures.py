"""Figures for the studies: Agg-backed figures (no pyplot state, safe in worker processes) and the
panel grid the multi-setting plots share."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def new_figure(figsize: tuple[float, float]) -> Any:
    """A ``matplotlib.figure.Figure`` with constrained layout, drawn by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panel_grid(n_panels: int) -> tuple[Any, Any]:
    """A figure with up to 3 panels per row and its flat array of axes (one per panel, maybe spare ones)."""
    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = new_figure((4.6 * cols, 3.6 * rows))
    return fig, np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()


def finish_panels(fig: Any, axes: Any, n_panels: int, title: str, path: Path) -> None:
    """Hide spare axes, put the legend on the first panel, title and save."""
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
