"""LLM routing with budgets: route each query to one of several LLMs, paying per call.

Layering (imports point down):

- ``pilot`` (preference prior + LinUCB + knapsack), ``mixllm`` (meta decision maker), ``cascade``
  (multi-step greedy LinUCB) and ``routers`` (cost-unaware policies, oracle, fixed) — routers
  that all run in the one online loop of ``online`` (budget guard, decision latency);
- ``knapsack`` (online multiple-choice knapsack threshold, 0/1 knapsack), ``quality_cost`` (quality
  and cost relative to the best single LLM, quality–cost hull, AIQ) and ``datasets`` (the three
  datasets -> per-query quality and cost, then :class:`~banditroute.envs.reward_table.RewardTable`).

Policies come from :mod:`banditroute.policies` (LinUCB, ridge, EXP3, log-linear PG, HPG); this
package adds only what LLM routing needs on top: costs, budgets, priors and cascades. The
benchmark (splits, methods, budgets, seeds -> results table, curves, AIQ) is a study:
:mod:`banditroute.studies.llm_routing`.
"""
