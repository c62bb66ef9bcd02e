"""PILOT: pseudo-preferences, triplets, analytic gradients, the prior, PriorLinUCB and the value of a good prior."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import approx_fprime

from banditroute.core.types import Decision
from banditroute.core.validation import InputError
from banditroute.costaware.features import unit_rows
from banditroute.costaware.online import run_online
from banditroute.llm.pilot import (
    PilotRouter,
    PriorLinUCB,
    fit_preference_prior,
    preference_loss,
    pseudo_preferences,
    sample_triplets,
    triplet_loss,
)
from banditroute.policies.ridge import LinUCB
from llm_fakes import clustered_problem


def test_pseudo_preferences_match_a_loop_reference() -> None:
    S = np.array([[0.1, 0.5, 0.5], [1.0, 0.0, 0.3]])
    prefs = pseudo_preferences(S)
    expected = set()
    for q in range(2):
        for i in range(3):
            for j in range(i + 1, 3):
                if S[q, i] != S[q, j]:
                    expected.add((q, i, j, float(S[q, i] > S[q, j])))
    got = set(zip(prefs.query.tolist(), prefs.i.tolist(), prefs.j.tolist(), prefs.y.tolist(), strict=True))
    assert got == expected and len(prefs) == len(expected)  # the tie (0.5, 0.5) gives no preference
    with pytest.raises(InputError):
        pseudo_preferences(np.ones((3, 1)))


def test_triplets_pair_two_winners_of_a_side_with_a_loser(rng: np.random.Generator) -> None:
    S = rng.random((60, 4))
    prefs = pseudo_preferences(S)
    T = sample_triplets(prefs, 500, rng)
    a, p, n = T.T
    assert np.all(a != p)
    # Each triplet has some ordered pair (i, j): i beat j on the anchor and the positive, j beat i on the negative.
    wins = S[:, :, None] > S[:, None, :]  # wins[q, i, j]
    ok = wins[a] & wins[p] & wins[n].transpose(0, 2, 1)
    assert ok.any(axis=(1, 2)).all()


def test_triplet_and_preference_gradients_match_finite_differences(rng: np.random.Generator) -> None:
    n, d, k, M = 12, 5, 3, 4
    Phi = rng.standard_normal((n, d))
    triplets = sample_triplets(pseudo_preferences(rng.random((n, M))), 30, rng)
    x = rng.standard_normal(k * d + k)
    loss, grad = triplet_loss(x, Phi, triplets, k, margin=5.0, weight_decay=0.01)  # margin 5: every hinge active
    fd = approx_fprime(x, lambda v: triplet_loss(v, Phi, triplets, k, 5.0, 0.01)[0], 1e-7)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)

    Psi_hat = unit_rows(rng.standard_normal((n, k)))
    prefs = pseudo_preferences(rng.random((n, M)))
    theta = rng.standard_normal(M * k)
    loss, grad = preference_loss(theta, Psi_hat, prefs, scale=3.0)
    fd = approx_fprime(theta, lambda v: preference_loss(v, Psi_hat, prefs, 3.0)[0], 1e-7)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)
    assert loss > 0


def test_prior_orders_llms_like_the_training_scores(rng: np.random.Generator) -> None:
    train, _ = clustered_problem(400, rng)
    prior = fit_preference_prior(train.contexts, train.quality, rng, dim=6, n_triplets=3000, max_iter=60)
    assert prior.preference_accuracy > 0.8
    test, _ = clustered_problem(200, rng)
    pred = prior.predict(test.contexts)
    # The prior's favourite LLM is (nearly always) the cluster's best one.
    assert np.mean(pred.argmax(axis=1) == test.quality.argmax(axis=1)) > 0.8
    assert prior.features(test.contexts).shape == (200, prior.dim)
    np.testing.assert_allclose(np.linalg.norm(prior.features(test.contexts)[:, :-1], axis=1), 1.0)


def test_prior_linucb_starts_at_the_prior_and_keeps_the_contract(rng: np.random.Generator) -> None:
    prior = rng.standard_normal((3, 4))
    pol = PriorLinUCB(3, 4, prior=prior, strength=[1.0, 5.0, 50.0], alpha=0.0)
    np.testing.assert_allclose(pol.theta, prior)
    x = rng.standard_normal(4)
    assert pol.act(x, rng).action == int(np.argmax(prior @ x))
    # learning moves a weakly trusted arm further than a strongly trusted one
    for a in (0, 2):
        probs = np.eye(3)[a]
        for _ in range(5):
            pol.learn(x, Decision(a, probs), 1.0)
    moved = np.linalg.norm(pol.theta - prior, axis=1)
    assert moved[0] > moved[2] > 0 and moved[1] == 0
    clone = PriorLinUCB(3, 4, prior=prior, strength=[1.0, 5.0, 50.0], alpha=0.0)
    clone.load_state_dict(pol.state_dict())
    np.testing.assert_allclose(clone.theta, pol.theta)
    # zero prior and strength λ is plain LinUCB with lam = λ
    plain, zero = LinUCB(3, 4, lam=2.0), PriorLinUCB(3, 4, prior=np.zeros((3, 4)), strength=2.0)
    np.testing.assert_allclose(plain.A_inv, zero.A_inv)
    for bad in ({"prior": np.zeros((2, 4))}, {"prior": np.full((3, 4), np.nan)}, {"prior": prior, "strength": 0.0}):
        with pytest.raises(InputError):
            PriorLinUCB(3, 4, **bad)


def test_pilot_with_a_good_prior_beats_linucb_without_it_on_a_small_bucket() -> None:
    """Fixed seeds: on a 150-query online bucket the prior's head start is worth quality (paired t-test)."""
    with_prior, without = [], []
    for seed in range(8):
        rng = np.random.default_rng(1000 + seed)
        train, _ = clustered_problem(400, rng)
        stream, _ = clustered_problem(150, rng)
        prior = fit_preference_prior(train.contexts, train.quality, rng, dim=6, n_triplets=3000, max_iter=60)
        for use_prior, out in ((True, with_prior), (False, without)):
            router = PilotRouter(prior, train, use_prior=use_prior, alpha=0.5)
            out.append(run_online(router, stream, np.random.default_rng(seed)).quality.mean())
    diff = np.array(with_prior) - np.array(without)
    assert diff.mean() > 0.05
    assert stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue < 0.01
