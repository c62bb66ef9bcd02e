"""Two-stage recommenders: nominators over item pools and feature subsets, and a ranker (Hron et al. 2021).

``system`` (the two-stage policy), ``components`` (the linear models inside it), ``allocation``
(pools and feature subsets), ``envs`` (synthetic and multi-label data), ``regret`` (the exact
nominator/ranker decomposition), ``sweep`` (the paper's grids and figures; ``[cli]`` extra) and
``moe`` (learned pools with a Mixture-of-Experts; ``[torch]`` extra, import it explicitly).
"""

from banditroute.twostage.system import TRAINING_MODES, TwoStage

__all__ = ["TRAINING_MODES", "TwoStage"]
