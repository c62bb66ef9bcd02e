"""The embedding cache: hits cost nothing, a crash loses at most one batch, corruption is caught."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.data.cache import CachedEmbedder, EmbeddingCache, default_cache_dir, model_key
from fake_embedder import CountingEmbedder

TEXTS = [f"text number {i}" + " pad" * (i % 5) for i in range(10)]


def test_miss_then_hit_costs_nothing(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingEmbedder()
    first = cache.encode(model, [*TEXTS, TEXTS[0]], role="document")  # a duplicate is encoded once
    assert sorted(model.encoded) == sorted(TEXTS)
    np.testing.assert_array_equal(first[0], first[-1])
    expected = np.stack([model._vec(t, "document") for t in TEXTS])
    np.testing.assert_array_equal(first[:-1], expected)  # rows in the caller's order

    again = CountingEmbedder()
    second = EmbeddingCache(tmp_path).encode(again, TEXTS[::-1], role="document")  # a new process, same files
    assert again.encoded == []
    np.testing.assert_array_equal(second, expected[::-1])
    assert cache.count(model) == len(TEXTS)


def test_roles_and_versions_are_separate_keys(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingEmbedder()
    q = cache.encode(model, TEXTS[:3], role="query")
    d = cache.encode(model, TEXTS[:3], role="document")
    assert len(model.encoded) == 6 and not np.allclose(q, d)
    newer = CountingEmbedder(version="2")
    cache.encode(newer, TEXTS[:3], role="query")
    assert len(newer.encoded) == 3
    assert cache.path_for(newer) != cache.path_for(model)
    assert model_key(newer) == "fake@2"


def test_interrupted_build_resumes_losing_at_most_one_batch(tmp_path):
    crashing = CountingEmbedder(batch_size=3, fail_on_batch=3)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path).encode(crashing, TEXTS, role="document")
    assert len(crashing.encoded) == 6  # two batches of three committed before the crash

    resumed = CountingEmbedder(batch_size=3)
    out = EmbeddingCache(tmp_path).encode(resumed, TEXTS, role="document")
    assert len(resumed.encoded) == len(TEXTS) - 6
    assert not set(resumed.encoded) & set(crashing.encoded)
    np.testing.assert_array_equal(out, np.stack([resumed._vec(t, "document") for t in TEXTS]))


def test_corrupted_row_is_recomputed(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingEmbedder()
    good = cache.encode(model, TEXTS, role="query")
    path = cache.path_for(model)
    cache.close()
    with sqlite3.connect(path) as db:  # flip a byte of one vector (CRC mismatch) and truncate another
        rows = db.execute("SELECT id, vec FROM vectors LIMIT 2").fetchall()
        flipped = bytearray(rows[0][1])
        flipped[5] ^= 0xFF
        db.execute("UPDATE vectors SET vec = ? WHERE id = ?", (bytes(flipped), rows[0][0]))
        db.execute("UPDATE vectors SET vec = ? WHERE id = ?", (rows[1][1][:-4], rows[1][0]))
    fresh = CountingEmbedder()
    with pytest.warns(UserWarning, match="2 corrupted cached vectors"):
        out = EmbeddingCache(tmp_path).encode(fresh, TEXTS, role="query")
    assert len(fresh.encoded) == 2
    np.testing.assert_array_equal(out, good)
    assert EmbeddingCache(tmp_path).encode(CountingEmbedder(), TEXTS, role="query").shape == good.shape


def test_corrupted_file_is_a_clear_error(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingEmbedder()
    cache.encode(model, TEXTS, role="query")
    path = cache.path_for(model)
    cache.close()
    for extra in path.parent.glob(path.name + "-*"):  # WAL side files
        extra.unlink()
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match=r"corrupted.*delete it"):
        EmbeddingCache(tmp_path).encode(CountingEmbedder(), TEXTS, role="query")


def test_file_of_another_model_is_refused(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingEmbedder(dim=8)
    cache.encode(model, TEXTS[:2], role="query")
    cache.close()
    with pytest.raises(InputError, match="dim 8"):
        EmbeddingCache(tmp_path).encode(CountingEmbedder(dim=4), TEXTS[:2], role="query")


def test_measured_cost_survives_reruns(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingEmbedder()
    assert cache.seconds_per_text(model, "query") is None
    wrapped = CachedEmbedder(model, cache, progress=True)
    wrapped.encode_queries(TEXTS)
    first = wrapped.seconds_per_text("query")
    assert first is not None and first > 0
    wrapped.encode_queries(TEXTS)  # all hits: nothing encoded, the measurement unchanged
    assert wrapped.seconds_per_text("query") == first
    assert wrapped.seconds_per_text("document") is None
    assert (wrapped.name, wrapped.dim, wrapped.version) == ("fake", 8, "1")


@pytest.mark.parametrize("texts", [[], "one string", [1, "x"], None])
def test_bad_texts(tmp_path, texts):
    with pytest.raises(InputError):
        EmbeddingCache(tmp_path).encode(CountingEmbedder(), texts, role="query")


def test_bad_role_and_model_output(tmp_path):
    with pytest.raises(InputError, match="role"):
        EmbeddingCache(tmp_path).encode(CountingEmbedder(), TEXTS, role="passage")  # type: ignore[arg-type]

    class Broken(CountingEmbedder):
        def encode_queries(self, texts):
            return np.full((len(texts), self.dim), np.nan, np.float32)

    with pytest.raises(RuntimeError, match="non-finite"):
        EmbeddingCache(tmp_path).encode(Broken(), TEXTS, role="query")


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BANDITROUTE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert EmbeddingCache().root == tmp_path / "c" / "embeddings"


def test_cache_pickles_for_worker_processes(tmp_path):
    import pickle

    cache, model = EmbeddingCache(tmp_path), CountingEmbedder()
    cache.encode(model, TEXTS, role="query")
    clone = pickle.loads(pickle.dumps(cache))
    again = CountingEmbedder()
    np.testing.assert_array_equal(clone.encode(again, TEXTS, role="query"), cache.encode(model, TEXTS, role="query"))
    assert again.encoded == []
