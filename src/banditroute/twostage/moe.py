"""Learning pool allocations with a Mixture-of-Experts, against fixed random pools (PyTorch, ``[torch]`` extra).

Spec: two_stage.md, "Learning pool allocations with a Mixture-of-Experts" (Hron et al. 2021, §5).
``N`` experts play the nominators: expert ``n`` is a **two-tower** model — learned ``d_e``-dim item
embeddings ``E_n`` and a matrix ``W_n`` mapping its ``s``-feature subset ``x[S_n]`` of the context
to ``R^{d_e}`` — predicting ``r̂_n(x, a) = <W_nᵀ x[S_n], E_n[a]>``. The **gate** decides which expert
serves item ``a`` in context ``x``: ``log p_n(x, a) = log softmax_n(U x + V[a])`` (a user embedding
plus an item embedding: cheap at serving time). Training maximises the Gaussian MoE likelihood

    (1/B) Σ_t log Σ_n p_{n,t} exp(−(r_t − r̂_{n,t})² / (2σ²))

with Adam. The baseline is the same experts with a fixed random pool allocation
(:func:`~banditroute.twostage.allocation.allocate_pools`): item ``a`` is predicted by its pool's
expert only, trained with RMSProp on the same likelihood with one expert per item.

**Evaluation** on a held-out split of a multi-label data set: every item is scored for every
test context, the top 5 are recommended; precision@5 = hits / 5, recall@5 = hits / positives (0
for contexts without positive labels). Three scorers: the random pools; the MoE (the gate's
mixture ``Σ_n p_n r̂_n``); and **distilled hard pools** — item ``a`` goes to
``argmax_n mean_x p_n(x, a)`` over training contexts, then the experts are fine-tuned on those
fixed pools (RMSProp), which ordinary nominators can serve. For reference the record also holds
the scores of recommending the 5 most common labels of the training split to everyone.

Training data: ``c`` examples per item (``per_item``), sampled with replacement from the training
split, each giving one ``(x, a, r = 1[label a applies])`` triple.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.twostage.allocation import allocate_features, allocate_pools
from banditroute.twostage.envs import MultiLabel

TOP_K = 5


@dataclass(frozen=True)
class MoEConfig:
    """One training configuration (defaults: a CPU-sized version of the paper's grid point, docs/specs/two-stage.md).

    The paper trains 50,000 steps with batch 4,096; on a multi-label set of a few thousand
    examples ``steps = 2000`` at batch 1,024 reaches the same plateau on CPU in seconds.
    """

    n_experts: int = 5
    n_features: int = 10
    embed_dim: int = 10
    per_item: int = 500
    sigma2: float = 1.0
    steps: int = 2000
    finetune_steps: int = 500
    batch_size: int = 1024
    lr: float = 0.01
    test_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_experts", "n_features", "embed_dim", "per_item", "steps", "batch_size"):
            check_int(getattr(self, name), name)
        check_int(self.finetune_steps, "finetune_steps", minimum=0)
        check_int(self.seed, "seed", minimum=0)
        check_positive(self.sigma2, "sigma2")
        check_positive(self.lr, "lr")


class Experts(nn.Module):
    """``N`` two-tower experts over their own feature subsets ``features`` (``(N, s)`` indices).

    The user tower is affine, ``W_nᵀ x[S_n] + b_n`` [ours: with centred features a purely linear
    tower predicts 0 on average for every item and cannot express how common an item is].
    """

    def __init__(self, features: torch.Tensor, n_items: int, embed_dim: int, generator: torch.Generator) -> None:
        super().__init__()
        N, s = features.shape
        self.features: torch.Tensor
        self.register_buffer("features", features)
        self.W = nn.Parameter(torch.randn(N, s, embed_dim, generator=generator) / s**0.5)
        self.b = nn.Parameter(torch.zeros(N, embed_dim))
        self.E = nn.Parameter(torch.randn(N, n_items, embed_dim, generator=generator) / embed_dim**0.5)

    def users(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d_e)``: each expert's embedding ``W_nᵀ x[S_n] + b_n`` of its feature subset of the contexts."""
        return torch.einsum("bns,nse->bne", x[:, self.features], self.W) + self.b

    def forward(self, x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(B, N)``: every expert's prediction for the pairs ``(x_b, items_b)``."""
        return torch.einsum("bne,nbe->bn", self.users(x), self.E[:, items])

    def all_items(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, M)``: every expert's prediction for every item."""
        return torch.einsum("bne,nme->bnm", self.users(x), self.E)


class Gate(nn.Module):
    """``log p_n(x, a) = log softmax_n(U x + V[a])``; starts uniform."""

    def __init__(self, dim: int, n_items: int, n_experts: int) -> None:
        super().__init__()
        self.user = nn.Linear(dim, n_experts)
        self.item = nn.Embedding(n_items, n_experts)
        for p in (self.user.weight, self.user.bias, self.item.weight):
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.user(x) + self.item(items), dim=-1)

    def all_items(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, M, N)`` log gate weights for every item."""
        return torch.log_softmax(self.user(x)[:, None, :] + self.item.weight[None], dim=-1)


def moe_nll(pred: torch.Tensor, log_gate: torch.Tensor, r: torch.Tensor, sigma2: float) -> torch.Tensor:
    """Negative Gaussian-MoE log-likelihood per example (constants dropped), averaged."""
    return -torch.logsumexp(log_gate - (r[:, None] - pred) ** 2 / (2 * sigma2), dim=1).mean()


def pooled_nll(pred: torch.Tensor, pool: torch.Tensor, r: torch.Tensor, sigma2: float) -> torch.Tensor:
    """The same likelihood with a hard allocation: item ``a`` belongs to expert ``pool[a]``."""
    chosen = pred.gather(1, pool[:, None])[:, 0]
    return ((r - chosen) ** 2 / (2 * sigma2)).mean()


def triples(data: MultiLabel, per_item: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_item`` ``(example, item, reward)`` triples per item, examples drawn with replacement."""
    n, M = data.Y.shape
    rows = rng.integers(0, n, size=(M, per_item)).ravel()
    items = np.repeat(np.arange(M), per_item)
    return rows, items, data.Y[rows, items].astype(np.float32)


def precision_recall_at_k(scores: np.ndarray, Y: np.ndarray, k: int = TOP_K) -> tuple[float, float]:
    """Mean precision@k and recall@k of the top-``k`` items by ``scores`` (recall 0 without positives)."""
    top = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
    hits = np.take_along_axis(Y, top, axis=1).sum(axis=1)
    positives = Y.sum(axis=1)
    recall = np.where(positives > 0, hits / np.maximum(positives, 1), 0.0)
    return float(np.mean(hits / k)), float(np.mean(recall))


def _train(
    params: list[nn.Parameter],
    loss_fn: Any,
    optimizer: str,
    steps: int,
    n_triples: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.RMSprop(params, lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = torch.randint(0, n_triples, (batch_size,), generator=generator)
        opt.zero_grad()
        loss = loss_fn(idx)
        loss.backward()
        opt.step()
    return float(loss.detach())


def compare_pools(train: MultiLabel, test: MultiLabel, config: MoEConfig) -> dict[str, Any]:
    """Train the MoE and the random-pool model with the same experts; precision@5 / recall@5 of each on ``test``.

    Returns a flat record: the configuration, ``{random,moe,distilled}_{precision,recall}``, the final
    training losses, the distilled pools' sizes and the seconds taken.
    """
    M, d = train.Y.shape[1], train.X.shape[1]
    N, s = config.n_experts, config.n_features
    if N > M:
        raise InputError(f"n_experts ({N}) must not exceed the number of items ({M}) for random pools")
    if s > d:
        raise InputError(f"n_features ({s}) must not exceed the context dimension ({d})")
    start = time.perf_counter()
    seq = np.random.SeedSequence(config.seed).spawn(4)
    features = torch.as_tensor(np.stack(allocate_features(d, N, s, np.random.default_rng(seq[0]))))
    random_pool = np.empty(M, dtype=np.int64)
    for n, pool in enumerate(allocate_pools(M, N, np.random.default_rng(seq[1]))):
        random_pool[pool] = n
    rows, items, rewards = triples(train, config.per_item, np.random.default_rng(seq[2]))
    X = torch.as_tensor(train.X, dtype=torch.float32)
    x_all, a_all, r_all = X[torch.as_tensor(rows)], torch.as_tensor(items), torch.as_tensor(rewards)
    torch_seed = int(np.random.default_rng(seq[3]).integers(2**62))

    def fresh_experts() -> Experts:  # the same initial experts for both models
        return Experts(features, M, config.embed_dim, torch.Generator().manual_seed(torch_seed))

    def pooled(experts: Experts, pool: np.ndarray) -> Any:
        pool_t = torch.as_tensor(pool)
        return lambda idx: pooled_nll(experts(x_all[idx], a_all[idx]), pool_t[a_all[idx]], r_all[idx], config.sigma2)

    def run(params: list[nn.Parameter], loss_fn: Any, optimizer: str, steps: int, salt: int) -> float:
        gen = torch.Generator().manual_seed(torch_seed + salt)
        return _train(params, loss_fn, optimizer, steps, len(rows), config.batch_size, config.lr, gen)

    # Fixed random pools, RMSProp.
    random_experts = fresh_experts()
    random_loss = run(
        list(random_experts.parameters()), pooled(random_experts, random_pool), "rmsprop", config.steps, 1
    )

    # Mixture of Experts, Adam.
    experts, gate = fresh_experts(), Gate(d, M, N)

    def moe_loss(idx: torch.Tensor) -> torch.Tensor:
        x, a = x_all[idx], a_all[idx]
        return moe_nll(experts(x, a), gate(x, a), r_all[idx], config.sigma2)

    moe_loss_value = run([*experts.parameters(), *gate.parameters()], moe_loss, "adam", config.steps, 2)

    # Distil hard pools from the gate: per item, the expert with the largest average gate weight.
    with torch.no_grad():
        mean_gate = torch.exp(gate.all_items(X)).mean(dim=0)  # (M, N)
        moe_scores = _moe_scores(experts, gate, test)
    distilled_pool = mean_gate.argmax(dim=1).numpy()
    distilled = fresh_experts()
    distilled.load_state_dict(experts.state_dict())
    if config.finetune_steps:
        run(list(distilled.parameters()), pooled(distilled, distilled_pool), "rmsprop", config.finetune_steps, 3)

    record: dict[str, Any] = {**asdict(config), "n_items": M, "dim": d}
    popularity = np.broadcast_to(train.Y.mean(axis=0), test.Y.shape)  # reference: no model, the same top 5 for all
    record["popular_precision"], record["popular_recall"] = precision_recall_at_k(popularity, test.Y)
    with torch.no_grad():
        for name, scores in (
            ("random", _pooled_scores(random_experts, random_pool, test)),
            ("moe", moe_scores),
            ("distilled", _pooled_scores(distilled, distilled_pool, test)),
        ):
            record[f"{name}_precision"], record[f"{name}_recall"] = precision_recall_at_k(scores, test.Y)
    record.update(
        random_loss=random_loss,
        moe_loss=moe_loss_value,
        distilled_pool_sizes=np.bincount(distilled_pool, minlength=N).tolist(),
        seconds=time.perf_counter() - start,
    )
    return record


def _pooled_scores(experts: Experts, pool: np.ndarray, data: MultiLabel) -> np.ndarray:
    """``(n, M)``: each item scored by its own pool's expert."""
    pred = experts.all_items(torch.as_tensor(data.X, dtype=torch.float32))  # (B, N, M)
    out: np.ndarray = pred[:, torch.as_tensor(pool), torch.arange(pred.shape[2])].numpy()
    return out


def _moe_scores(experts: Experts, gate: Gate, data: MultiLabel) -> np.ndarray:
    """``(n, M)``: the gate's mixture of the experts' predictions."""
    x = torch.as_tensor(data.X, dtype=torch.float32)
    mix = torch.exp(gate.all_items(x)) * experts.all_items(x).transpose(1, 2)  # (B, M, N)
    out: np.ndarray = mix.sum(dim=2).numpy()
    return out
