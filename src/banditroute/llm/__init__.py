"""LLM routing with budgets: LLM datasets, evaluation on unseen queries and the LLM papers' routers.

Layering (imports point down):

- ``pilot`` (preference prior + LinUCB + knapsack) and ``mixllm`` (meta decision maker) — the
  LLM papers' routers — and the quality estimators ``neighbours`` (per-LLM kNN) and ``tasks``
  (task-aware) for :class:`~banditroute.costaware.predicted.PredictedRouter`;
- ``datasets`` (the three datasets -> per-query quality and cost, then
  :class:`~banditroute.envs.reward_table.RewardTable`), ``dedup``, ``splits`` and ``protocols``
  (train/test files, duplicates, splits by question or task).

The online loop, budgets, cascades, cost-penalised policy routers and the quality–cost metrics are
not LLM-specific and live one layer down, in :mod:`banditroute.costaware`, where retrieval tables
use them too. The benchmark (splits, methods, budgets, seeds -> results table, curves, AIQ) is a
study: :mod:`banditroute.studies.llm_routing`.
"""
