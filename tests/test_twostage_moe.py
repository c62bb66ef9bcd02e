"""Mixture-of-Experts pool learning (needs the [torch] extra; skipped without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from banditroute.core.validation import InputError  # noqa: E402
from banditroute.twostage.envs import MultiLabel  # noqa: E402
from banditroute.twostage.moe import (  # noqa: E402
    Experts,
    Gate,
    MoEConfig,
    compare_pools,
    moe_nll,
    pooled_nll,
    precision_recall_at_k,
)


def toy(n: int = 300, d: int = 12, M: int = 6, seed: int = 0) -> MultiLabel:
    """Labels driven by different feature blocks, so which expert sees which features matters."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = np.zeros((d, M))
    for a in range(M):
        W[2 * a : 2 * a + 2, a] = 2.0
    Y = X @ W + 0.5 * rng.standard_normal((n, M)) > 0.5
    return MultiLabel(X, Y, "toy", tuple(f"l{a}" for a in range(M)))


def test_precision_and_recall_at_k_match_a_slow_reference() -> None:
    rng = np.random.default_rng(1)
    scores, Y = rng.random((40, 9)), rng.random((40, 9)) < 0.3
    Y[0] = False  # no positives: recall 0
    precision, recall = precision_recall_at_k(scores, Y, k=5)
    ref_p, ref_r = [], []
    for s, y in zip(scores, Y, strict=True):
        top = sorted(range(9), key=lambda a: -s[a])[:5]
        hits = sum(y[a] for a in top)
        ref_p.append(hits / 5)
        ref_r.append(hits / y.sum() if y.sum() else 0.0)
    assert precision == pytest.approx(np.mean(ref_p)) and recall == pytest.approx(np.mean(ref_r))


def test_moe_likelihood_and_its_hard_pool_special_case() -> None:
    g = torch.Generator().manual_seed(0)
    pred, r = torch.randn(7, 3, generator=g), torch.rand(7, generator=g)
    log_gate = torch.log_softmax(torch.randn(7, 3, generator=g), dim=1)
    manual = -np.mean(
        [
            np.log(sum(np.exp(log_gate[t, n].item() - (r[t] - pred[t, n]).item() ** 2 / 2.0) for n in range(3)))
            for t in range(7)
        ]
    )
    assert moe_nll(pred, log_gate, r, 1.0).item() == pytest.approx(manual, rel=1e-5)
    pool = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    one_hot = torch.log(torch.nn.functional.one_hot(pool, 3).double()).float()  # a gate certain of the pool
    assert moe_nll(pred, one_hot, r, 0.5).item() == pytest.approx(pooled_nll(pred, pool, r, 0.5).item(), rel=1e-5)


def test_experts_are_two_tower_models_on_their_feature_subsets() -> None:
    g = torch.Generator().manual_seed(2)
    features = torch.tensor([[0, 3], [1, 2]])
    experts = Experts(features, n_items=4, embed_dim=3, generator=g)
    x, items = torch.randn(5, 4, generator=g), torch.tensor([0, 3, 1, 1, 2])
    pred = experts(x, items)
    n, b = 1, 2
    want = (x[b, features[n]] @ experts.W[n] + experts.b[n]) @ experts.E[n, items[b]]
    assert pred.shape == (5, 2) and pred[b, n].item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(experts.all_items(x)[torch.arange(5), :, items], pred, atol=1e-6)
    gate = Gate(4, 4, 2)
    assert torch.allclose(gate(x, items).exp(), torch.full((5, 2), 0.5))  # starts uniform


def test_compare_pools_is_reproducible_and_reports_every_model() -> None:
    train, test = toy().split(0.3, seed=0)
    config = MoEConfig(
        n_experts=3, n_features=4, embed_dim=4, per_item=100, steps=60, finetune_steps=20, batch_size=128
    )
    a, b = compare_pools(train, test, config), compare_pools(train, test, config)
    for model in ("random", "moe", "distilled"):
        for metric in ("precision", "recall"):
            assert 0 <= a[f"{model}_{metric}"] <= 1
            assert a[f"{model}_{metric}"] == b[f"{model}_{metric}"]
    assert sum(a["distilled_pool_sizes"]) == 6 and a["n_items"] == 6
    assert a["moe_precision"] > 0.3  # well above chance (label rate ≈ 0.3 → p@5 of a random ranking ≈ 0.3)
    with pytest.raises(InputError):
        compare_pools(train, test, MoEConfig(n_experts=7, n_features=4))
    with pytest.raises(InputError):
        MoEConfig(steps=0)


def test_bench_two_stage_runs_the_moe_comparison_on_yeast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("river")
    from typer.testing import CliRunner

    from banditroute.cli.main import app
    from banditroute.studies import moe_pools

    monkeypatch.setattr(moe_pools, "MOE_VARIATIONS", {"n_features": (5,)})
    args = ["bench", "two-stage", "--out", str(tmp_path), "--seeds", "1", "--T", "20", "--arms", "4", "--dims", "3"]
    args += ["--nominators", "1", "--rho", "1.0", "--methods", "ucb", "--real-T", "20", "--real-rho", "1.0"]
    args += ["--real-nominators", "2", "--moe-seeds", "1", "--moe-steps", "4", "--quiet", "--jobs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "yeast_moe_summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "random_precision" in summary[0]  # header + base + one variation
    assert (tmp_path / "twostage_yeast_moe.png").exists() and "MoE P@5" in result.output
