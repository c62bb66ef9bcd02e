"""Atomic file writes: a killed process leaves either the whole new file or the old one, never half.

The content goes to a hidden temporary file in the same directory (``.<name>.<pid>.tmp``, so the
rename stays on one file system and two processes never share a temporary name), which then replaces
the target in one ``os.replace``. Readers that resume interrupted work delete leftover ``.*.tmp``
files (:data:`TMP_GLOB`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TMP_GLOB = ".*.tmp"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
