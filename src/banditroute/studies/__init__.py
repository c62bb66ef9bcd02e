"""Studies: the paper reproductions, one module per study, on top of the library.

``embed_routing`` (embedding-model routing on retrieval tables), ``llm_routing`` (LLM routing with
budgets), ``two_stage`` (the two-stage recommender grids of Hron et al. 2021), ``moe_pools``
(learned vs random nominator pools; ``[torch]``) and ``ope_evaluation`` (evaluate the off-policy
evaluators against known truth). They share :mod:`banditroute.studies.runs` (resumable runs, one
JSON record per finished run) and :mod:`banditroute.studies.figures` (panel grids). The CLI's
``bench`` commands parse options, call a study and print what it returns; ``make bench-*`` chain
them. A new study is one more module here.
"""
