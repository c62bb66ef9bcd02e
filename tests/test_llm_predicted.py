"""kNN and task-aware quality estimates, validation of their settings, and the router that spends a budget on them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.optimize import check_grad

from banditroute.core.validation import InputError
from banditroute.costaware.online import Split, run_online
from banditroute.costaware.predicted import PredictedRouter, cross_fit, routing_score, select
from banditroute.llm.neighbours import KNNEstimator
from banditroute.llm.tasks import STRUCTURE_FEATURES, SoftmaxClassifier, TaskEstimator, structure_features
from llm_fakes import clustered_problem


def slow_knn(X: np.ndarray, Q: np.ndarray, x: np.ndarray, k: int, weighting: str) -> np.ndarray:
    """Reference: sort every training row by cosine, average the first k (weighted by cosine)."""
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = [float(u @ x / np.linalg.norm(x)) for u in U]
    order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
    w = np.array([max(sims[i], 1e-6) if weighting == "similarity" else 1.0 for i in order])
    return (w[:, None] * Q[order]).sum(axis=0) / w.sum()


@pytest.mark.parametrize("weighting", ["uniform", "similarity"])
def test_knn_matches_a_slow_reference_and_learns_per_llm(weighting: str) -> None:
    rng = np.random.default_rng(0)
    X, Q, Z = rng.standard_normal((50, 6)), rng.uniform(size=(50, 3)), rng.standard_normal((7, 6))
    est = KNNEstimator(5, weighting).fit(X, Q)
    want = np.array([slow_knn(X, Q, z, 5, weighting) for z in Z])
    np.testing.assert_allclose(est.predict(Z), want, atol=1e-12)
    before = est.predict(Z[:1])[0]
    est.update(Z[0] * 3.0, arm=1, quality=1.0)  # the query itself joins LLM 1's memory only
    after = est.predict(Z[:1])[0]
    assert after[0] == before[0] and after[2] == before[2] and after[1] > before[1]
    np.testing.assert_allclose(after[1], slow_knn(np.vstack([X, Z[:1]]), np.vstack([Q, [[0, 1, 0]]]), Z[0], 5,
                                                  weighting)[1])  # fmt: skip
    with pytest.raises(InputError):
        KNNEstimator(5, "cosine")
    with pytest.raises(InputError):
        KNNEstimator().predict(Z)


def test_softmax_classifier_gradient_and_accuracy() -> None:
    split, labels = clustered_problem(300, np.random.default_rng(1))
    clf = SoftmaxClassifier(reg=1e-2).fit(split.contexts[:200], labels[:200], 4)
    assert (clf.probs(split.contexts[200:]).argmax(axis=1) == labels[200:]).mean() > 0.9
    np.testing.assert_allclose(clf.probs(split.contexts).sum(axis=1), 1.0)
    # The fit is the optimum of the documented objective: mean cross-entropy + reg/2 ‖W‖² (biases free)
    # on standardised inputs; the gradient written here is checked by finite differences first.
    rng = np.random.default_rng(2)
    X, y, reg = rng.standard_normal((30, 3)) * [1, 5, 0.1] + 2, rng.integers(0, 3, 30), 0.1
    Y, mask = np.eye(3)[y], np.vstack([np.ones((3, 3)), np.zeros((1, 3))])

    def loss_grad(w: np.ndarray, Z: np.ndarray) -> tuple[float, np.ndarray]:
        W = w.reshape(4, 3)
        L = Z @ W
        logp = L - L.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        loss = -(Y * logp).sum() / 30 + 0.5 * reg * ((W * mask) ** 2).sum()
        return float(loss), (Z.T @ (np.exp(logp) - Y) / 30 + reg * W * mask).ravel()

    Z0 = np.hstack([X, np.ones((30, 1))])
    assert check_grad(lambda w: loss_grad(w, Z0)[0], lambda w: loss_grad(w, Z0)[1], rng.standard_normal(12)) < 1e-5
    fitted = SoftmaxClassifier(reg=reg).fit(X, y, 3)
    assert fitted.W is not None
    Zs = np.hstack([(X - X.mean(axis=0)) / X.std(axis=0), np.ones((30, 1))])
    assert np.linalg.norm(loss_grad(fitted.W.ravel(), Zs)[1]) < 1e-4


def test_task_estimator_weights_per_task_means_and_learns_one_column() -> None:
    split, labels = clustered_problem(400, np.random.default_rng(3))
    tasks = [f"t{k}" for k in labels]
    est = TaskEstimator(reg=1e-2).fit(split.contexts[:300], tasks[:300], split.quality[:300])
    means = np.array([split.quality[:300][labels[:300] == k].mean(axis=0) for k in range(4)])
    P = est.classifier.probs(split.contexts[300:])
    np.testing.assert_allclose(est.predict(split.contexts[300:]), P @ means, atol=1e-12)
    before = est.predict(split.contexts[300:301])[0]
    est.update(split.contexts[300], arm=2, quality=1.0)
    after = est.predict(split.contexts[300:301])[0]
    assert after[2] > before[2] and np.allclose(np.delete(after, 2), np.delete(before, 2))


def test_structure_features_see_the_format() -> None:
    F = structure_features(["Q: 2+2?\nA:", "Which?\nA. one\nB. two\nC. three", "def f(x):\n    return x"])
    assert F.shape == (3, len(STRUCTURE_FEATURES))
    col = {name: F[:, i] for i, name in enumerate(STRUCTURE_FEATURES)}
    assert col["qa_prefix"].tolist() == [1, 0, 0] and col["lettered_options"].tolist() == [0, 1, 0]
    assert col["code"].tolist() == [0, 0, 1] and col["question_mark"].tolist() == [1, 1, 0]


def _problem() -> tuple[Split, Split, np.ndarray]:
    split, labels = clustered_problem(600, np.random.default_rng(4))
    tr, te = np.arange(400), np.arange(400, 600)

    def part(i: np.ndarray) -> Split:
        return Split(split.contexts[i], split.quality[i], split.cost[i], split.cost[i], split.cost[i])

    return part(tr), part(te), labels


def test_validation_prefers_the_informative_estimator() -> None:
    train, _, _ = _problem()
    X, Q = train.contexts, train.quality
    cands = {"k=15": lambda rows: KNNEstimator(15).fit(X[rows], Q[rows]),
             "blind": lambda rows: KNNEstimator(10_000).fit(X[rows], Q[rows])}  # fmt: skip
    best, oof, scores = select(cands, X, Q, train.est_cost, folds=3)
    assert best == "k=15" and scores["k=15"] > scores["blind"] + 3
    np.testing.assert_allclose(oof, cross_fit(cands["k=15"], X, len(Q), folds=3))
    assert routing_score(Q, Q, train.est_cost) > scores["blind"]  # the truth routes better than no information


@pytest.mark.parametrize("learn", [False, True])
def test_predicted_router_spends_within_budget_and_beats_uniform(learn: bool) -> None:
    train, stream, _ = _problem()
    est = KNNEstimator(15).fit(train.contexts, train.quality)
    oof = cross_fit(lambda rows: KNNEstimator(15).fit(train.contexts[rows], train.quality[rows]), train.contexts, 400)
    ref = int(np.argmax(train.quality.mean(axis=0)))
    for fraction in (0.3, 0.6):
        budget = fraction * stream.n_rows * float(train.cost[:, ref].mean())
        router = PredictedRouter(copy.deepcopy(est), stream.contexts, train, oof, learn=learn)
        rec = run_online(router, stream, np.random.default_rng(0), budget=budget)
        assert rec.spent <= budget
        affordable = stream.cost.mean(axis=0) <= budget / stream.n_rows
        assert rec.quality.mean() > stream.quality[:, affordable].mean(axis=0).max()  # beats any single LLM it can pay
    grown = PredictedRouter(copy.deepcopy(est), stream.contexts, train, oof, learn=learn)
    run_online(grown, stream, np.random.default_rng(0))
    assert isinstance(grown.estimator, KNNEstimator)
    assert sum(v.size for v in grown.estimator.extra_values) == (stream.n_rows if learn else 0)
    with pytest.raises(InputError):
        PredictedRouter(est, stream.contexts, train, oof[:10])
