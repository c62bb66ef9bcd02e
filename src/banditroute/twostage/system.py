"""A two-stage recommender — ``N`` nominators and a ranker — behind the ordinary policy contract.

Hron, Krauth, Jordan, Kilbertus, "On component interactions in two-stage recommender systems",
NeurIPS 2021; spec: two_stage.md. Each round:

1. nominator ``n`` scores the items of its pool ``A_n`` using only its feature subset ``S_n``
   (``s`` of the ``d`` features: misspecification) and proposes one item ``a_{n,t}``;
2. the ranker scores the candidate set ``C_t = {a_{1,t}, …, a_{N,t}}`` with all ``d`` features
   and serves one item ``a_t``; only its reward ``r_t`` is observed;
3. the ranker learns from ``(x_{a_t}, r_t)``; nominator ``n`` learns from ``(x_{a_t}[S_n], r_t)``
   with weight ``w_{n,t}`` set by the training mode:

   * ``"all"`` (training-on-all): ``w = 1`` — every nominator learns from every observation, also
     of items outside its pool (a shared-``θ`` model can; with disjoint per-item models a
     nominator has no parameters for foreign items, so there ``"all"`` equals ``"own"``);
   * ``"own"`` (training-on-own): ``w = 1{a_t ∈ A_n}``;
   * ``"proposal"`` (training-on-own, second definition): ``w = 1{a_t = a_{n,t}}``. With the
     default partition into pools the two "own" modes coincide (exactly one candidate comes from
     each pool); they differ when user-given pools overlap.

A policy-gradient nominator updated on an item outside its pool takes the REINFORCE step for the
softmax over ``A_n ∪ {a_t}`` at its current parameters [ours: the paper leaves it open, docs/specs/two-stage.md].

**Decisions.** The item actually served is drawn as follows: draw ``K = n_prob_samples``
candidate sets from the nominators (independently), pick one of them uniformly and let the ranker
draw from it; ``probs`` is the resulting distribution over items, ``mean_k ρ(· | C_k)``, exactly
the vector the item is drawn from (as LinTS does with its Monte-Carlo win probabilities). The
behaviour is that of the two-stage system for every ``K``; ``K`` only sets the resolution of the
logged propensities. ``info`` carries the served candidate set, the ranker's slot and both stages'
distributions, which ``learn`` needs (policy gradients use the logged distributions).

Pools and feature subsets come from :mod:`banditroute.twostage.allocation` (seeded by
``allocation_seed``) unless given explicitly. Ridge regularisation is ``λ`` times each
component's input dimension (``s`` for nominators, ``d`` for the ranker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from banditroute.core.sampling import sample_categorical
from banditroute.core.types import BatchDecision, FloatArray, IntArray
from banditroute.core.validation import (
    PROB_TOL,
    InputError,
    check_context,
    check_int,
    check_positive,
    check_unit_interval,
)
from banditroute.policies.base import Policy
from banditroute.twostage.allocation import allocate, check_index_sets
from banditroute.twostage.components import FAMILIES, Component, RidgeComponent, Segments, make_component

TRAINING_MODES = ("all", "own", "proposal")
INFO_KEYS = ("candidates", "slot", "ranker_probs", "nominator_probs")


class TwoStage(Policy):
    """``N`` nominators over item pools and feature subsets, and a ranker over their candidates.

    Args:
        n_arms: number of items ``|A|``.
        dim: feature dimension ``d``.
        n_nominators: ``N`` (``<= n_arms``).
        n_features: ``s``, features seen by each nominator (default ``d``: no misspecification).
        nominator, ranker: ``"ucb"``, ``"greedy"`` or ``"pg"``.
        training: ``"all"``, ``"own"`` or ``"proposal"`` (module docstring).
        shared: one ``θ`` for all items, which carry their own feature rows (the synthetic setting),
            or ``False``: one ``θ_a`` per item over shared query features (classification).
        lam: ridge ``λ`` (times each component's input dimension); alpha: UCB width ``α``;
        lr: policy-gradient step size; epsilon: ε-exploration of the ridge stages.
        n_prob_samples: ``K`` candidate sets averaged into each decision's probability vector.
        allocation_seed: seed of the random pool and feature allocation.
        pools, feature_sets: explicit allocations (lists of index lists) instead of random ones.
    """

    name = "two-stage"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        n_nominators: int = 2,
        n_features: int | None = None,
        nominator: str = "ucb",
        ranker: str = "ucb",
        training: str = "all",
        shared: bool = True,
        lam: float = 0.01,
        alpha: float = 0.01,
        lr: float = 1.0,
        epsilon: float = 0.0,
        n_prob_samples: int = 16,
        allocation_seed: int = 0,
        pools: Sequence[Sequence[int]] | None = None,
        feature_sets: Sequence[Sequence[int]] | None = None,
        reward_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(n_arms, dim, reward_range=reward_range)
        for label, family in (("nominator", nominator), ("ranker", ranker)):
            if family not in FAMILIES:
                raise InputError(f"{label} must be one of {FAMILIES}, got {family!r}")
        if training not in TRAINING_MODES:
            raise InputError(f"training must be one of {TRAINING_MODES}, got {training!r}")
        N = check_int(n_nominators, "n_nominators")
        s = self.dim if n_features is None else check_int(n_features, "n_features")
        if s > self.dim:
            raise InputError(f"n_features ({s}) must not exceed dim ({self.dim})")
        seed = check_int(allocation_seed, "allocation_seed", minimum=0)
        params = {
            "lam": check_positive(lam, "lam"),
            "alpha": check_positive(alpha, "alpha", allow_zero=True),
            "lr": check_positive(lr, "lr"),
            "epsilon": check_unit_interval(epsilon, "epsilon"),
        }
        self.n_prob_samples = check_int(n_prob_samples, "n_prob_samples")

        if pools is None or feature_sets is None:
            if self.n_arms < N:
                raise InputError(f"n_nominators ({N}) must not exceed the number of items ({self.n_arms})")
            auto_pools, auto_features = allocate(self.n_arms, self.dim, N, s, seed)
        self.pools = auto_pools if pools is None else check_index_sets(pools, self.n_arms, "pools", cover=True)
        self.feature_sets = (
            auto_features
            if feature_sets is None
            else check_index_sets(feature_sets, self.dim, "feature_sets", cover=False)
        )
        if len(self.pools) != N or len(self.feature_sets) != N:
            raise InputError(f"pools and feature_sets must each hold n_nominators = {N} lists")

        self.shared = bool(shared)
        self.training = training
        self.config.update(
            n_nominators=N,
            n_features=n_features,
            nominator=nominator,
            ranker=ranker,
            training=training,
            shared=self.shared,
            **params,
            n_prob_samples=self.n_prob_samples,
            allocation_seed=seed,
            pools=None if pools is None else [p.tolist() for p in self.pools],
            feature_sets=None if feature_sets is None else [f.tolist() for f in self.feature_sets],
        )
        sizes = {len(f) for f in self.feature_sets}
        if len(sizes) != 1:
            raise InputError(f"every nominator must see the same number of features, got sizes {sorted(sizes)}")
        # position[n, a] = index of item a in pool n, or -1 when a is not in it.
        self.position = np.full((N, self.n_arms), -1, dtype=np.int64)
        for n, pool in enumerate(self.pools):
            self.position[n, pool] = np.arange(len(pool))
        # The nominators as one bank: their pools laid end to end (segments), features as an (N, s) matrix,
        # one model per nominator (shared θ) or per (nominator, item) (disjoint models).
        self.segments = Segments(np.array([len(p) for p in self.pools]))
        self.pool_items = np.concatenate(self.pools)
        self.features = np.stack(self.feature_sets)
        owner = self.segments.owner
        self.pool_models = owner.copy() if self.shared else np.arange(len(self.pool_items))
        n_models = N if self.shared else len(self.pool_items)
        self.nominators: Component = make_component(nominator, n_models, self.features.shape[1], **params)
        self.ranker: Component = make_component(ranker, 1 if self.shared else self.n_arms, self.dim, **params)

    @property
    def n_nominators(self) -> int:
        return len(self.pools)

    # ------------------------------------------------------------------ features
    def _pool_rows(self, x: FloatArray, shared_context: bool) -> FloatArray:
        """``(Σ|A_n|, s)``: every pool item's features as its nominator sees them, pools end to end."""
        owner = self.segments.owner
        if shared_context:
            return x[0, self.features][owner]
        out: FloatArray = x[self.pool_items[:, None], self.features[owner]]
        return out

    def _ranker_rows(self, x: FloatArray, items: IntArray, shared_context: bool) -> FloatArray:
        if shared_context:
            return np.broadcast_to(x[0], (len(items), self.dim))
        out: FloatArray = x[items]
        return out

    def _ranker_models(self, items: IntArray) -> IntArray:
        return np.zeros_like(items) if self.shared else items

    def nominator_scores(self, x: Any) -> list[FloatArray]:
        """Each nominator's score of every item of its pool (pool order) for context ``x``; read-only."""
        X = self._broadcast(check_context(x, self.n_arms, self.dim)[None])
        scores = self.nominators.scores(self._pool_rows(X[0], self._shared_context(X)), self.pool_models)
        return np.split(scores, self.segments.starts[1:])

    # ------------------------------------------------------------------ acting
    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        n_rows, N, K = X.shape[0], self.n_nominators, self.n_prob_samples
        shared_context = self._shared_context(X)
        actions = np.empty(n_rows, dtype=np.int64)
        probs = np.zeros((n_rows, self.n_arms))
        info = {
            "candidates": np.empty((n_rows, N), dtype=np.int64),
            "slot": np.empty(n_rows, dtype=np.int64),
            "ranker_probs": np.empty((n_rows, N)),
            "nominator_probs": np.empty((n_rows, len(self.pool_items))),
        }
        for i in range(n_rows):
            x = X[i]
            scores = self.nominators.scores(self._pool_rows(x, shared_context), self.pool_models)
            pool_probs = self.nominators.distribution(scores, self.segments)
            sets = self.pool_items[self.segments.sample(pool_probs, K, rng)]  # (K, N) candidate sets
            items, inverse = np.unique(sets, return_inverse=True)
            ranker_scores = self.ranker.scores(self._ranker_rows(x, items, shared_context), self._ranker_models(items))
            rho = self.ranker.distribution(ranker_scores[inverse.reshape(K, N)])  # (K, N): ρ(slot | C_k)
            joint = (rho / K).ravel()
            k, slot = divmod(int(sample_categorical(joint, rng)), N)
            np.add.at(probs[i], sets.ravel(), joint)
            actions[i] = sets[k, slot]
            info["candidates"][i], info["slot"][i], info["ranker_probs"][i] = sets[k], slot, rho[k]
            info["nominator_probs"][i] = pool_probs
        return BatchDecision(actions=actions, probs=probs, info=info)

    # ------------------------------------------------------------------ learning
    def _check_info(self, info: Mapping[str, Any], n: int, *, batched: bool) -> dict[str, Any]:
        """The decision's candidate set, slot and stage distributions must be this system's own."""
        missing = [k for k in INFO_KEYS if k not in info]
        if missing:
            raise InputError(f"decision info lacks {missing}: pass back the decision this system returned")
        N, L = self.n_nominators, len(self.pool_items)
        lead = (n,) if batched else ()
        try:
            arrays = {k: np.asarray(info[k]) for k in INFO_KEYS}
            rprobs = arrays["ranker_probs"].astype(np.float64)
            nprobs = arrays["nominator_probs"].astype(np.float64)
        except (TypeError, ValueError):
            raise InputError("decision info holds non-numeric values") from None
        want = {"candidates": (*lead, N), "slot": lead, "ranker_probs": (*lead, N), "nominator_probs": (*lead, L)}
        for key, shape in want.items():
            if arrays[key].shape != shape:
                raise InputError(f"decision info[{key!r}] has shape {arrays[key].shape}, expected {shape}")
        cand, slot = arrays["candidates"].reshape(-1, N), arrays["slot"].reshape(-1)
        rprobs, nprobs = rprobs.reshape(-1, N), nprobs.reshape(-1, L)
        if cand.dtype.kind not in "iu" or slot.dtype.kind not in "iu":
            raise InputError("decision info candidates and slot must be integers")
        if np.any(cand < 0) or np.any(cand >= self.n_arms) or np.any(slot < 0) or np.any(slot >= N):
            raise InputError("decision info names an unknown item or slot")
        pos = self.position[np.arange(N), cand]  # (rows, N)
        if np.any(pos < 0):
            raise InputError("decision info: a candidate is not in the pool of the nominator that proposed it")
        sums = np.concatenate([rprobs.sum(axis=1), np.add.reduceat(nprobs, self.segments.starts, axis=1).ravel()])
        finite = np.all(np.isfinite(rprobs)) and np.all(np.isfinite(nprobs))
        if not finite or min(rprobs.min(), nprobs.min()) < 0 or np.any(np.abs(sums - 1.0) > PROB_TOL):
            raise InputError("decision info: ranker_probs and each pool's nominator_probs must be probability vectors")
        rows = np.arange(len(slot))
        if np.any(rprobs[rows, slot] <= 0) or np.any(nprobs[rows[:, None], self.segments.starts + pos] <= 0):
            raise InputError("decision info: a choice in it had probability zero")
        return {"candidates": cand, "slot": slot, "ranker_probs": rprobs, "nominator_probs": nprobs}

    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        cand, slot = info["candidates"], info["slot"]
        if np.any(cand[np.arange(len(slot)), slot] != actions):
            raise InputError("decision action is not the candidate in the ranker's slot")
        shared_context = self._shared_context(X)
        for i in range(X.shape[0]):
            self._learn_row(X[i], int(actions[i]), float(rewards[i]), info, i, shared_context)

    def _weights(self, a: int, candidates: IntArray) -> np.ndarray:
        """Which nominators learn from the served item ``a`` (the training mode)."""
        if self.training == "all":
            return np.ones(self.n_nominators, dtype=bool)
        if self.training == "own":
            return self.position[:, a] >= 0
        return candidates == a

    def _learn_row(
        self, x: FloatArray, a: int, r: float, info: Mapping[str, Any], i: int, shared_context: bool
    ) -> None:
        cand, slot = info["candidates"][i], int(info["slot"][i])
        # The ranker is trained on what it served.
        G, models = self._ranker_rows(x, cand, shared_context), self._ranker_models(cand)
        if self.ranker.needs_all_options:
            self.ranker.update(G, models, info["ranker_probs"][i], slot, r)
        else:
            self.ranker.update(G[slot : slot + 1], models[slot : slot + 1], np.ones(1), 0, r)

        learns = self._weights(a, cand)
        pos = self.position[:, a]
        own = np.flatnonzero(learns & (pos >= 0))  # a_t is in their pool
        foreign = np.flatnonzero(learns & (pos < 0)) if self.shared else np.empty(0, dtype=np.int64)
        row = x[0] if shared_context else x[a]
        if isinstance(self.nominators, RidgeComponent):
            # Ridge statistics need only the served item's features: one validated batch for the bank.
            nominators = np.concatenate([own, foreign])
            models = np.concatenate([self.pool_models[self.segments.starts[own] + pos[own]], foreign])
            if len(nominators):
                self.nominators.observe(row[self.features[nominators]], models, np.full(len(nominators), r))
            return
        # Policy gradient: the act-time distribution over the pool for an in-pool item, and the
        # softmax over A_n ∪ {a_t} at the current parameters for a foreign one; every learning
        # nominator's step in one call (they touch disjoint parameter vectors).
        F_pool, sizes, owner = self._pool_rows(x, shared_context), self.segments.sizes, self.segments.owner
        if len(own):
            sel = learns[owner] & (pos >= 0)[owner]
            first = np.cumsum(np.concatenate([[0], sizes[own][:-1]]))
            self.nominators.update(
                F_pool[sel], self.pool_models[sel], info["nominator_probs"][i][sel], first + pos[own], r
            )
        if len(foreign):
            sel = learns[owner] & (pos < 0)[owner]
            ends = np.cumsum(sizes[foreign])
            F = np.insert(F_pool[sel], ends, row[self.features[foreign]], axis=0)
            extended = Segments(sizes[foreign] + 1)
            models = np.repeat(self.pool_models[self.segments.starts[foreign]], sizes[foreign] + 1)
            p = self.nominators.distribution(self.nominators.scores(F, models), extended)
            self.nominators.update(F, models, p, extended.starts + extended.sizes - 1, r)

    # ------------------------------------------------------------------ state
    def _components(self) -> dict[str, Component]:
        return {"ranker": self.ranker, "nominators": self.nominators}

    def _get_state(self) -> dict[str, np.ndarray]:
        return {f"{name}.{k}": v for name, comp in self._components().items() for k, v in comp.state().items()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        for name, comp in self._components().items():
            comp.load({k.partition(".")[2]: v for k, v in state.items() if k.partition(".")[0] == name})
