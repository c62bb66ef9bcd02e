"""Conservative routing: a contextual policy that may only spend what a safe fallback has banked.

A contextual router learned from scratch can be worse than the best single model for a long time
(weak per-query signal, a policy-gradient learner locking onto a weaker model). :class:`Conservative`
wraps any registered policy — the *candidate* — with a non-contextual UCB over the arms — the
*fallback*, whose best arm is the baseline — and plays the candidate only while that cannot take
the running reward below ``(1 − ε)`` times the baseline's estimated cumulative reward. This is the
budget condition of conservative bandits (Wu, Shariff, Lattimore & Szepesvári 2016, "Conservative
Bandits", ICML; Kazerouni, Ghavamzadeh, Abbasi-Yadkori & Van Roy 2017, "Conservative Contextual
Linear Bandits", NeurIPS) with the baseline's reward estimated online, as in their
unknown-baseline variants; the choice between a context-free learner and a contextual one is the
model-selection problem of CORRAL (Agarwal, Luo, Neyshabur & Schapire 2017) and regret balancing
(Pacchiano et al. 2020), solved here by the budget rather than by a master bandit [ours].

Each round, after a warm-up of ``warmup`` rounds in which only the fallback plays:

* ``μ̂`` is the fallback's realised mean reward per round since the warm-up. The fallback learns
  from its own plays only: it chooses its arm without looking at the context, so those are unbiased
  samples of each arm's mean over the query stream (the candidate's context-selected plays are
  not), and it converges to the best fixed arm, so ``μ̂`` tends to the best fixed arm's mean. Its own
  exploration is part of the baseline, not charged to the candidate: measured against the best
  arm's estimated mean instead, that exploration kept the candidate from playing for 1,200–2,000
  of 3,000 rounds on a table where context pays (``tests/test_policies_conservative.py``);
* the budget is ``B = Σ r − (1 − ε)·n·μ̂`` over the ``n`` rounds since the warm-up (the realised
  rewards, the quantity a user sees, against ``(1 − ε)`` times the baseline's estimated total);
* the candidate plays iff ``B + r_low − (1 − ε) μ̂ ≥ 0``: even the lowest reward ``r_low`` of the
  declared ``reward_range`` leaves the running reward above the line; otherwise the fallback plays.

In a batch the same test admits the first ``k`` rows, each charged the worst case. So after the
warm-up the running reward stays within ``ε`` of the fallback's up to the estimation error of ``μ̂``
and one round; a candidate better than every fixed arm earns budget faster than it spends it and is
played ever more often (eventually always), a worse one only at the rate the slack ``ε`` pays for.

Probabilities and learning. Which side plays depends on the history only, never on the context, so
the decision's vector is the chosen side's vector: the distribution the action was really drawn
from, a valid propensity for off-policy evaluation. ``info["candidate"]`` records the side. The
candidate learns from its own rounds with its own vector (on-policy, exact for policy gradients);
with ``learn_from_fallback=True`` it also learns from the fallback's rounds, logged with the
fallback's vector — right for learners that are consistent under any context-dependent choice of
arm (ridge regression: LinUCB, LinTS, ε-greedy), wrong for policy gradients (HPG, log-linear), which
read the vector as their own policy. Restricted to allowed arms, the chosen side decides among them
by its own rule.

Args:
    base: registry name of the candidate (a policy whose decisions carry no ``info``).
    base_kwargs: its parameters.
    epsilon: the allowed shortfall ``ε`` relative to the best fixed arm, in ``[0, 1)``.
    warmup: rounds played by the fallback alone before the candidate may play (``>= 0``).
    fallback_alpha: the fallback's confidence multiplier (per-arm UCB ``μ̂ + α/sqrt(n)``).
    learn_from_fallback: whether the candidate also learns from the fallback's rounds (above).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from banditroute.core.types import BatchDecision, EnvSpec, FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_positive, check_unit_interval
from banditroute.policies.base import Policy
from banditroute.policies.registry import make_policy
from banditroute.policies.ridge import LinUCB

# The fallback is LinUCB on a constant feature: per-arm mean b/(λ + n), width 1/sqrt(λ + n). A tiny λ
# makes the means the plain sample means and gives every untried arm the widest bound (tried first).
FALLBACK_LAM = 1e-6
INFO_KEY = "candidate"


class Conservative(Policy):
    """A candidate policy played only within the conservative budget of a non-contextual UCB fallback
    (module docstring)."""

    name = "safe"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        base: str = "linucb",
        base_kwargs: Mapping[str, Any] | None = None,
        epsilon: float = 0.01,
        warmup: int = 100,
        fallback_alpha: float = 0.5,
        learn_from_fallback: bool = False,
        reward_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(n_arms, dim, reward_range=reward_range)
        if self.reward_range is None:
            raise InputError("a conservative policy needs a bounded reward_range (the worst case of a round)")
        self.epsilon = check_unit_interval(epsilon, "epsilon")
        if self.epsilon == 1.0:
            raise InputError("epsilon must be below 1 (epsilon = 1 puts no constraint on the candidate)")
        self.warmup = check_int(warmup, "warmup", minimum=0)
        alpha = check_positive(fallback_alpha, "fallback_alpha", allow_zero=True)
        self.learn_from_fallback = bool(learn_from_fallback)
        spec = EnvSpec(self.n_arms, self.dim, reward_range=self.reward_range)
        self.base = make_policy(base, spec, **dict(base_kwargs or {}))
        self.fallback = LinUCB(self.n_arms, 1, alpha=alpha, lam=FALLBACK_LAM, reward_range=self.reward_range)
        self.config.update(
            base=base,
            base_config=self.base.config,
            epsilon=self.epsilon,
            warmup=self.warmup,
            fallback_alpha=alpha,
            learn_from_fallback=self.learn_from_fallback,
        )
        self.rounds = np.zeros((), dtype=np.int64)  # rounds learned from, warm-up included
        self.reward_sum = np.zeros(())  # realised reward since the warm-up
        self.fallback_reward = np.zeros(())  # the fallback's realised reward since the warm-up
        self.fallback_rounds = np.zeros((), dtype=np.int64)  # and its rounds

    # -------------------------------------------------------------- the budget
    def baseline_mean(self) -> float:
        """``μ̂``: the fallback's realised mean reward per round since the warm-up (0 before any)."""
        rounds = int(self.fallback_rounds)
        return float(self.fallback_reward) / rounds if rounds else 0.0

    def budget(self) -> float:
        """``B = Σ r − (1 − ε) n μ̂`` over the ``n`` rounds since the warm-up (``-inf`` during it and
        until the fallback has played once after it)."""
        if int(self.rounds) < self.warmup or int(self.fallback_rounds) == 0:
            return -np.inf
        after = int(self.rounds) - self.warmup
        return float(self.reward_sum) - (1.0 - self.epsilon) * after * self.baseline_mean()

    def candidate_rows(self, n: int) -> int:
        """How many of the next ``n`` rows the candidate may take (the first ones): each is charged
        the worst case ``(1 − ε) μ̂ − r_low`` against the budget."""
        budget = self.budget()
        if budget == -np.inf:
            return 0
        assert self.reward_range is not None
        cost = (1.0 - self.epsilon) * self.baseline_mean() - self.reward_range[0]
        if cost <= 0:
            return n
        return int(min(n, max(0.0, np.floor(budget / cost))))

    # -------------------------------------------------------------- deciding
    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        return self._act_restricted(X, np.ones((X.shape[0], self.n_arms), dtype=bool), rng)

    def _act_restricted(self, X: FloatArray, mask: np.ndarray, rng: np.random.Generator) -> BatchDecision:
        """The first :meth:`candidate_rows` rows go to the candidate, the rest to the fallback; each side
        decides its rows among their allowed arms (candidate first, so the draws are reproducible)."""
        n = X.shape[0]
        k = self.candidate_rows(n)
        actions = np.empty(n, dtype=np.int64)
        probs = np.empty((n, self.n_arms))
        if k:
            Xc = X[:k, 0, :] if self._shared_context(X) else X[:k]
            side = self.base.act_batch(Xc, rng, allowed=mask[:k])
            if side.info:
                raise InputError(f"base policy {self.base.name!r} returns decision info; it cannot be wrapped")
            actions[:k], probs[:k] = side.actions, side.probs
        if k < n:
            side = self.fallback.act_batch(np.ones((n - k, 1)), rng, allowed=mask[k:])
            actions[k:], probs[k:] = side.actions, side.probs
        return BatchDecision(actions=actions, probs=probs, info={INFO_KEY: (np.arange(n) < k).astype(np.int64)})

    # -------------------------------------------------------------- learning
    def _check_info(self, info: Mapping[str, Any], n: int, *, batched: bool) -> dict[str, Any]:
        """``info["candidate"]``: 0/1 per row, which side decided it."""
        if INFO_KEY not in info:
            raise InputError(f"decision info lacks {INFO_KEY!r}: pass back the decision this policy returned")
        flags = np.asarray(info[INFO_KEY])
        if (
            flags.shape != ((n,) if batched else ())
            or flags.dtype.kind not in "iub"
            or np.any((flags != 0) & (flags != 1))
        ):
            raise InputError(f"decision info[{INFO_KEY!r}] must hold one 0 or 1 per row")
        return {INFO_KEY: flags.reshape(-1).astype(bool)}

    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        cand: np.ndarray = info[INFO_KEY]
        contexts = X[:, 0, :] if self._shared_context(X) else X
        learns = np.ones_like(cand) if self.learn_from_fallback else cand
        if np.any(learns):
            self.base.learn_batch(
                contexts[learns], BatchDecision(actions=actions[learns], probs=probs[learns]), rewards[learns]
            )
        if not np.all(cand):
            fb = ~cand
            self.fallback.learn_batch(
                np.ones((int(fb.sum()), 1)), BatchDecision(actions=actions[fb], probs=probs[fb]), rewards[fb]
            )
        after_warmup = int(self.rounds) + np.arange(len(rewards)) >= self.warmup
        self.reward_sum = self.reward_sum + rewards[after_warmup].sum()
        self.fallback_reward = self.fallback_reward + rewards[after_warmup & ~cand].sum()
        self.fallback_rounds = self.fallback_rounds + int(np.sum(after_warmup & ~cand))
        self.rounds = self.rounds + len(rewards)

    def _get_state(self) -> dict[str, np.ndarray]:
        base = {f"base.{k}": v for k, v in self.base.state_dict()["state"].items()}
        fallback = {f"fallback.{k}": v for k, v in self.fallback.state_dict()["state"].items()}
        counters = {"rounds": self.rounds, "reward_sum": self.reward_sum}
        fallback_counters = {"fallback_reward": self.fallback_reward, "fallback_rounds": self.fallback_rounds}
        return {**base, **fallback, **counters, **fallback_counters}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """The base first (it may still reject its arrays, e.g. HPG's eigenvectors); the fallback
        (LinUCB) and the counters cannot fail after the generic checks, so nothing changes on a rejection."""
        if state["rounds"] < 0 or state["fallback_rounds"] < 0 or state["fallback_rounds"] > state["rounds"]:
            raise InputError("state['rounds'] and state['fallback_rounds'] must satisfy 0 <= fallback_rounds <= rounds")
        for part in (self.base, self.fallback):
            prefix = "base." if part is self.base else "fallback."
            own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            part.load_state_dict({"policy": part.name, "config": part.config, "state": own})
        self.rounds, self.reward_sum = state["rounds"], state["reward_sum"]
        self.fallback_reward, self.fallback_rounds = state["fallback_reward"], state["fallback_rounds"]
