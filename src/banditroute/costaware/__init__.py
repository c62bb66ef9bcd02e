"""Cost-aware routing: route each query to one of several arms that each cost something per call.

One layer for LLMs (USD per call) and retrieval (encode + search time) alike: the routers see a
:class:`~banditroute.costaware.online.Split` — per-query contexts, the quality and cost of every arm,
the cost estimate known before a call and the bound that admits it — and never which kind of arm
they route. :mod:`banditroute.llm` builds one from its datasets; :mod:`banditroute.gateway` prices
requests with the pacing here (docs/architecture.md, "Cost-aware routing").

Layering (imports point down):

- ``cascade`` (multi-step greedy LinUCB), ``predicted`` (any quality estimator minus a dual-paced
  price on cost) and ``routers`` (registry policies, optionally on a cost-penalised reward; the
  hindsight oracle) — routers that all run in the one online loop of ``online`` (budget guard,
  decision latency);
- ``knapsack`` (online multiple-choice knapsack threshold, dual pacing, 0/1 knapsack),
  ``quality_cost`` (quality and cost relative to the best single arm, quality–cost hull, AIQ) and
  ``features`` (shared contexts, cost estimates before the call);
- ``tables`` (a retrieval :class:`~banditroute.envs.reward_table.RewardTable` -> a ``Split``, with
  optional post-call features for cascades) beside the loop's ``Split`` itself.

Policies come from :mod:`banditroute.policies`; this package adds only what costs and budgets
need on top.
"""
