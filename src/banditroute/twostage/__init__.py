"""Two-stage recommenders: nominators over item pools and feature subsets, and a ranker (Hron et al. 2021).

``system`` (the two-stage policy), ``components`` (the linear models inside it), ``allocation``
(pools and feature subsets), ``envs`` (synthetic and multi-label data), ``regret`` (the exact
nominator/ranker decomposition), ``sweep`` (the paper's grids and figures; ``[cli]`` extra) and
``moe`` (learned pools with a Mixture-of-Experts; ``[torch]`` extra, import it explicitly).

Importing the package registers the ``two-stage`` policy in :data:`banditroute.policies.registry.REGISTRY`.
"""

from banditroute.policies.registry import REGISTRY, PolicyEntry
from banditroute.twostage.system import TRAINING_MODES, TwoStage

REGISTRY.register(
    TwoStage.name,
    PolicyEntry(
        "banditroute.twostage.system:TwoStage",
        summary="two-stage recommender: N nominators (item pools, feature subsets) + ranker (Hron et al. 2021)",
    ),
)

__all__ = ["TRAINING_MODES", "TwoStage"]
