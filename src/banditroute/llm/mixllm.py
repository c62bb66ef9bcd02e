"""A MixLLM-style meta decision maker (Wang et al. 2025, arXiv 2502.18482; docs/specs/llm-routing.md, MixLLM).

For query embedding ``e`` (here the shared :class:`~banditroute.costaware.features.Featurizer`
contexts; the paper fine-tunes BERT, which is out of scope) the score of LLM ``l`` is

    s_l = λ/(λ+1) · p̂_l(e) − 1/(λ+1) · ĉ_l / c_ref + α · eᵀA_l⁻¹e − β · exp(γ (w_l − ξ τ))

- ``p̂_l``: a ridge quality predictor per LLM, fitted on the training split and updated online
  with each observed quality; ``A_l`` is its design matrix, so ``eᵀA_l⁻¹e`` is the uncertainty
  bonus and ``A_l ← A_l + e eᵀ`` after each call (a :class:`~banditroute.policies.ridge.LinUCB`
  warm-started by :func:`~banditroute.costaware.routers.warm_start` holds both).
- ``ĉ_l``: the cost estimate — prompt tokens × price plus predicted answer length × price, i.e.
  :class:`~banditroute.costaware.features.CostModel`'s estimate; ``c_ref`` scales it to quality units.
- ``w_l``: the waiting time of LLM ``l`` in a simulated queue (:class:`QueueSim`), ``τ`` the
  latency limit; the penalty grows exponentially once the wait nears ``ξ τ``.
- Online feedback: a softmax policy over scores ``s^df_l = f^df(e)`` — the registry's log-linear
  policy — trained by REINFORCE on binary feedback (quality ≥ ``success``); the final score is
  ``s'_l = s_l + κ_l s^df_l`` with ``κ_l = 1 / (Var(s^df_l) + ε)`` over queries seen so far.
  [ours] The router, not the feedback policy, picks the LLM (argmax ``s'``), so the REINFORCE
  step uses the feedback policy's own probabilities for the routed LLM without importance
  weights. That loop is self-reinforcing — the routed LLM collects the positive feedback, its
  feedback score grows, it is routed more — and on LLMRouter's table it herds traffic onto one
  LLM and loses quality at every λ (docs/results/llm-routing.md), so it is off by default
  (``feedback=0``) and benchmarked as an ablation.

Sweeping ``λ`` traces the quality–cost curve (``λ → ∞``: quality only).

Budgeted [ours], ``budget_rule``:

- ``"dual"``: ``λ`` is not fixed but set by dual pacing — ``λ_t = 1/μ_t`` with ``μ_t`` the price
  of cost from :class:`~banditroute.costaware.knapsack.DualPacer`, started at the price that would have
  met the budget on the training split — and only LLMs whose cost bound fits the remaining
  budget are candidates.
- ``"knapsack"``: PILOT's budget policy (:class:`~banditroute.costaware.knapsack.KnapsackPacer`) on
  MixLLM's quality predictions — an ablation that separates PILOT's predictor from its budget rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditroute.core.sampling import softmax
from banditroute.core.types import Decision, FloatArray
from banditroute.core.validation import InputError, check_finite, check_int, check_positive, check_unit_interval
from banditroute.costaware.features import Featurizer
from banditroute.costaware.knapsack import ABSTAIN, DualPacer, KnapsackPacer, calibrate_price, ratio_bounds
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.costaware.routers import reference_cost, ucb_scores, warm_start
from banditroute.policies.loglinear import LogLinearPG
from banditroute.policies.ridge import LinUCB

BUDGET_RULES = ("none", "dual", "knapsack")


class QueueSim:
    """One FIFO server per LLM: a call adds its service time to that LLM's backlog, and the backlog
    drains by ``interval`` seconds between consecutive queries. ``wait`` is what a new call would wait.

    Args:
        service: ``(M,)`` seconds one call occupies each LLM.
        interval: seconds between query arrivals.
    """

    def __init__(self, service: FloatArray, interval: float = 1.0) -> None:
        self.service = check_finite(np.asarray(service, dtype=np.float64), "service")
        if self.service.ndim != 1 or np.any(self.service < 0):
            raise InputError("service must be a 1-D array of non-negative seconds")
        self.interval = check_positive(interval, "interval")
        self.wait = np.zeros_like(self.service)

    def serve(self, arm: int) -> float:
        """Queue a call to ``arm``; returns how long it waited."""
        waited = float(self.wait[arm])
        self.wait[arm] += self.service[arm]
        return waited

    def tick(self) -> None:
        """The next query arrives ``interval`` seconds later."""
        self.wait = np.maximum(self.wait - self.interval, 0.0)


class MixLLMRouter(OnlineRouter):
    """MixLLM's meta decision maker (module docstring).

    Args:
        featurizer: fitted shared contexts ``e``.
        train: training split (quality predictors, cost scale).
        lam: quality/cost trade-off ``λ > 0`` (``inf``: quality only).
        alpha: uncertainty bonus weight.
        ridge: ridge regulariser of the quality predictors.
        beta, gamma, xi, tau: waiting-time penalty ``β exp(γ (w − ξ τ))`` (``beta=0``: off).
        service, interval: the simulated queue (:class:`QueueSim`); default: no waiting.
        feedback: weight of the REINFORCE feedback scores (0: off).
        feedback_eta: the feedback policy's step size.
        success: quality at or above which the binary feedback is positive.
        eps: ``ε`` of ``κ``.
        budget_rule: with a budget, ``"dual"`` or ``"knapsack"`` (module docstring); ``"none"``: fixed λ
            (a budget is then enforced only by the online loop's guard).
        pace_eta: step of the dual pacing; n_bins: bins of the knapsack.
    """

    def __init__(
        self,
        featurizer: Featurizer,
        train: Split,
        *,
        lam: float = 1.0,
        alpha: float = 0.01,
        ridge: float = 10.0,
        beta: float = 0.0,
        gamma: float = 1.0,
        xi: float = 1.0,
        tau: float = 5.0,
        service: FloatArray | None = None,
        interval: float = 1.0,
        feedback: float = 0.0,
        feedback_eta: float = 0.1,
        success: float = 0.5,
        eps: float = 1.0,
        budget_rule: str = "none",
        pace_eta: float = 0.01,
        n_bins: int = 10,
        name: str | None = None,
    ) -> None:
        self.featurizer = featurizer
        self.lam = check_positive(lam, "lam") if np.isfinite(lam) else float("inf")
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.gamma, self.xi, self.tau = (check_positive(v, n) for v, n in ((gamma, "gamma"), (xi, "xi"), (tau, "tau")))
        self.feedback = check_positive(feedback, "feedback", allow_zero=True)
        self.feedback_eta = check_positive(feedback_eta, "feedback_eta")
        self.success = check_unit_interval(success, "success")
        self.eps = check_positive(eps, "eps")
        if budget_rule not in BUDGET_RULES:
            raise InputError(f"budget_rule must be one of {BUDGET_RULES}, got {budget_rule!r}")
        self.budget_rule = budget_rule
        self.pace_eta = check_positive(pace_eta, "pace_eta", allow_zero=True)
        self.n_bins = check_int(n_bins, "n_bins")
        self.c_ref = reference_cost(train)
        self.service = np.zeros(train.n_arms) if service is None else np.asarray(service, dtype=np.float64)
        self.interval = interval
        self.name = name or f"mixllm λ={self.lam:g}"
        # Quality predictors: ridge per LLM on the training split (A_l = ridge·I + Σ e eᵀ).
        E = featurizer.transform(train.contexts)
        self.base = LinUCB(train.n_arms, E.shape[1], alpha=0.0, lam=check_positive(ridge, "ridge"))
        warm_start(self.base, E, train.quality)
        self._train_pred = E @ self.base.theta.T  # in-sample predictions, to calibrate pacing
        self._train_cost = train.est_cost

    def start(self, stream: Split, budget: float | None) -> None:
        self.X = self.featurizer.transform(stream.contexts)
        self.est = stream.est_cost
        M, d = stream.n_arms, self.X.shape[1]
        self.predictor = LinUCB(M, d, alpha=0.0, lam=self.base.config["lam"])
        self.predictor.load_state_dict(self.base.state_dict())
        self.queue = QueueSim(self.service, self.interval)
        self.feedback_policy = LogLinearPG(M, d, eta=self.feedback_eta)
        # Welford running mean / M2 of the feedback scores, per LLM.
        self.df_n = 0
        self.df_mean = np.zeros(M)
        self.df_m2 = np.zeros(M)
        self.waits: list[float] = []
        self.upper = stream.upper_cost
        self.pacer: DualPacer | None = None
        self.knapsack: KnapsackPacer | None = None
        if self.budget_rule == "dual" and budget is not None:
            mu0 = calibrate_price(self._train_pred, self._train_cost, budget / stream.n_rows, self.c_ref)
            self.pacer = DualPacer(budget, stream.n_rows, mu0, eta=self.pace_eta, scale=self.c_ref)
        elif self.budget_rule == "knapsack" and budget is not None:
            L, U = ratio_bounds(np.clip(self._train_pred, 0.0, 1.0), self._train_cost)
            self.knapsack = KnapsackPacer(budget, stream.n_rows, min(self.n_bins, stream.n_rows), L, U)

    def scores(self, t: int) -> FloatArray:
        """``s'_l`` for query ``t``, every LLM."""
        e = self.X[t]
        mean, width = ucb_scores(self.predictor, e)
        if self.pacer is not None:
            w = 1.0 / (1.0 + self.pacer.mu)  # λ_t = 1 / μ_t
        else:
            w = 1.0 if np.isinf(self.lam) else self.lam / (self.lam + 1.0)
        s = w * mean - (1.0 - w) * self.est[t] / self.c_ref + self.alpha * width**2
        if self.beta > 0:
            s = s - self.beta * np.exp(self.gamma * (self.queue.wait - self.xi * self.tau))
        if self.feedback > 0:
            s_df = self._feedback_logits(e)
            kappa = 1.0 / (self._df_var() + self.eps)
            s = s + self.feedback * kappa * s_df
        return s

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        if called:
            return STOP
        s = self.scores(t)
        if self.knapsack is not None:
            arm = self.knapsack.choose(np.clip(s, 0.0, 1.0), self.est[t], self.upper[t])
            if arm == ABSTAIN:
                self.knapsack.charge(0.0)
                return STOP
            return arm
        if self.pacer is not None:
            arm = self.pacer.choose(s, self.upper[t])
            return STOP if arm == ABSTAIN else arm
        return int(np.argmax(s))

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        e = self.X[t]
        for pacer in (self.pacer, self.knapsack):
            if pacer is not None:
                pacer.charge(cost)
        self.predictor.learn(e, Decision.certain(arm, self.predictor.n_arms), quality)
        self.waits.append(self.queue.serve(arm))
        self.queue.tick()
        if self.feedback > 0:
            s_df = self._feedback_logits(e)
            self.feedback_policy.learn(e, Decision(arm, softmax(s_df)), float(quality >= self.success))
            self.df_n += 1
            delta = s_df - self.df_mean
            self.df_mean += delta / self.df_n
            self.df_m2 += delta * (s_df - self.df_mean)

    def _feedback_logits(self, e: FloatArray) -> FloatArray:
        M = self.feedback_policy.n_arms
        out: FloatArray = self.feedback_policy.logits(np.broadcast_to(e, (1, M, e.shape[0])))[0]
        return out

    def _df_var(self) -> FloatArray:
        return self.df_m2 / self.df_n if self.df_n > 1 else np.zeros_like(self.df_m2)
