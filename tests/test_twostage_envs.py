"""Two-stage data: Proposition 2's fixed items, Yeast from river, the AmazonCat-13K loader on a tiny
file in the Extreme Classification Repository's format, and multi-label data as a bandit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.envs.reward_table import RewardTableEnv
from banditroute.twostage.envs import (
    AMAZONCAT_ENV,
    PROPOSITION_2,
    FixedItems,
    MultiLabel,
    load_amazoncat,
    multilabel_table,
    read_xc_file,
)
from banditroute.twostage.regret import run_regret
from banditroute.twostage.system import TwoStage

# 6 points, 8 BoW features, 5 labels; point 3 has no label, point 5 only the rare label 4.
XC_TINY = """6 8 5
0,2 0:1.0 3:2.0
1,2 1:0.5 2:1.5 7:1.0
2 4:3.0
 5:1.0
0,1,2 0:1.0 6:1.0
4 2:2.0
"""


@pytest.fixture
def xc_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(XC_TINY)
    return path


def test_fixed_items_repeat_the_same_round() -> None:
    c = PROPOSITION_2["on-all-fails"]
    rounds = c.env(noise=0.5).rounds(4, np.random.default_rng(0))
    assert rounds.contexts.shape == (4, 3, 3) and np.all(rounds.contexts == np.array(c.features))
    assert np.all(rounds.expected == np.array(c.means)) and not np.allclose(rounds.rewards, rounds.expected)
    with pytest.raises(InputError):
        FixedItems(np.ones((3, 2)), np.ones(2))
    with pytest.raises(InputError):
        FixedItems(np.full((3, 2), np.nan), np.ones(3))


def test_read_xc_file_parses_the_published_format(xc_file: Path) -> None:
    X, labels, n_labels = read_xc_file(xc_file)
    assert X.shape == (6, 8) and n_labels == 5
    assert labels == [[0, 2], [1, 2], [2], [], [0, 1, 2], [4]]
    assert X[1, 2] == 1.5 and X[3, 5] == 1.0 and X.nnz == 10


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("six 8 5\n", "first line"),
        ("1 8 5\n0 0:x\n", "expected"),
        ("1 8 5\n9 0:1\n", "label id"),
        ("1 8 5\n0 8:1\n", "feature id"),
        ("2 8 5\n0 0:1\n", "announces 2 points"),
    ],
)
def test_read_xc_file_rejects_damaged_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_xc_file(path)


def test_load_amazoncat_keeps_frequent_categories_and_their_examples(xc_file: Path, tmp_path: Path) -> None:
    data = load_amazoncat(xc_file, n_categories=2, n_features=3, seed=1)
    # labels 2 (4 points) and 0 (2 points) are the most frequent; points 3 and 5 have neither
    assert data.label_names == ("cat0", "cat2")
    assert data.Y.tolist() == [[True, True], [False, True], [False, True], [True, True]]
    assert data.X.shape == (4, 3)
    np.testing.assert_array_equal(data.X, load_amazoncat(xc_file, n_categories=2, n_features=3, seed=1).X)
    # user-supplied embeddings (the paper's BERT vectors): first n_features columns of the kept rows
    E = np.arange(6 * 5, dtype=float).reshape(6, 5)
    np.save(tmp_path / "emb.npy", E)
    with_emb = load_amazoncat(xc_file, n_categories=2, n_features=3, embeddings=tmp_path / "emb.npy")
    np.testing.assert_array_equal(with_emb.X, E[[0, 1, 2, 4], :3])
    with pytest.raises(InputError, match="embeddings"):
        load_amazoncat(xc_file, n_categories=2, n_features=6, embeddings=tmp_path / "emb.npy")
    with pytest.raises(InputError, match="categories"):
        load_amazoncat(xc_file, n_categories=6)


def test_load_amazoncat_reads_the_path_from_the_environment(xc_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AMAZONCAT_ENV, raising=False)
    with pytest.raises(InputError, match=AMAZONCAT_ENV):
        load_amazoncat()
    monkeypatch.setenv(AMAZONCAT_ENV, str(xc_file))
    assert load_amazoncat(n_categories=3, n_features=4).Y.shape == (4, 3)  # labels 2, 0, 1; point 5 has label 4 only
    with pytest.raises(InputError, match="not found"):
        load_amazoncat(xc_file.with_name("missing.txt"))


def test_multilabel_table_is_the_bandit_of_the_labels() -> None:
    rng = np.random.default_rng(0)
    data = MultiLabel(rng.normal(3.0, 2.0, (50, 4)), rng.random((50, 3)) < 0.3, "toy", ("a", "b", "c"))
    table = multilabel_table(data)
    np.testing.assert_allclose(table.contexts.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(table.contexts.std(axis=0), 1)
    np.testing.assert_array_equal(table.rewards, data.Y.astype(float))
    train, test = data.split(0.2, seed=0)
    assert len(train.X) == 40 and len(test.X) == 10
    with pytest.raises(InputError):
        MultiLabel(np.ones((3, 2)), np.ones((2, 2), dtype=bool), "bad", ("a", "b"))


def test_yeast_as_a_two_stage_bandit() -> None:
    pytest.importorskip("river")
    from banditroute.twostage.envs import load_yeast

    data = load_yeast()
    assert data.X.shape == (2417, 103) and data.Y.shape == (2417, 14)
    assert data.Y.sum(axis=1).mean() == pytest.approx(4.24, abs=0.01)  # MULAN's label cardinality
    env = RewardTableEnv(multilabel_table(data), order="iid")

    def factory(spec):  # type: ignore[no-untyped-def]
        return TwoStage(spec.n_arms, spec.dim, n_nominators=2, n_features=51, shared=False, lam=1.0, alpha=0.001)

    trace = run_regret(factory, env, 600, seed=0)
    assert trace.summary()["relative"] < 0.75  # learns: well below the uniformly random agent
