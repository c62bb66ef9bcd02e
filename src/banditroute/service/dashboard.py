"""What the dashboard shows (``GET /v1/stats``): the router's decisions over time and off-policy
estimates of other policies on its log, refreshed in the background.

The :class:`~banditroute.service.router.Router` only decides, logs and learns; this module reads
what it wrote. :meth:`Dashboard.stats` builds model shares and mean reward over the last
:data:`STATS_ROWS` decisions (on the writer thread's connection, like every request), and a
background thread re-estimates, every ``[ope] interval_s``, the current policy, uniform routing,
each active model alone and the configured candidate policies on the last ``[ope] window`` logged
rows with feedback (:func:`~banditroute.ope.comparison.evaluate_targets`, doubly robust, 95%
normal intervals) on a connection of its own. A refresh that fails keeps the last estimates.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np

from banditroute.ope.comparison import Target, TargetEstimate, evaluate_targets
from banditroute.ope.reward_model import cross_fit
from banditroute.policies.registry import make_policy
from banditroute.service.router import Router
from banditroute.service.storage import Storage, StorageUnavailable

log = logging.getLogger("banditroute.service")

STATS_ROWS = 20_000  # decisions the dashboard's time series are computed from
STATS_BUCKETS = 40
STATS_MIN_BUCKET = 10  # decisions per point at least, so a young log is not all noise


class Dashboard:
    """The dashboard's data for one started ``router``; :meth:`start` / :meth:`stop` the refresh thread."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.ope_results: dict[str, Any] = {"updated_at": None, "rows": 0, "skipped_rows": 0, "candidates": []}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._ope_loop, name="banditroute-ope", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def stats(self) -> dict[str, Any]:
        """Shares and reward over time, totals, off-policy estimates (on the writer thread)."""
        router = self.router
        recent = router.storage.recent(STATS_ROWS)
        n_dec, n_fb = router.storage.counts()
        series: dict[str, Any] = {"t": [], "count": [], "reward": [], "shares": {}}
        t = recent["created_at"]
        if t.size:  # buckets of equal numbers of decisions, placed at their first decision's time
            size = max(math.ceil(t.size / STATS_BUCKETS), STATS_MIN_BUCKET)
            bucket = np.arange(t.size) // size
            nb = int(bucket[-1]) + 1
            counts = np.bincount(bucket, minlength=nb)
            has = ~np.isnan(recent["reward"])
            r_sum = np.bincount(bucket[has], weights=recent["reward"][has], minlength=nb)
            r_n = np.bincount(bucket[has], minlength=nb)
            series["t"] = t[::size].tolist()
            series["count"] = counts.tolist()
            series["reward"] = [float(s / n) if n else None for s, n in zip(r_sum, r_n, strict=True)]
            for m in router.models:
                per = np.bincount(bucket[recent["action"] == m.slot], minlength=nb)
                series["shares"][m.name] = (per / counts).tolist()
        published = router.published
        return {
            "models": router.list_models(),
            "decisions": n_dec,
            "feedback": n_fb,
            "policy": router.config.policy.name,
            "policy_version": published[1] if published else 0,
            "series": series,
            "ope": self.ope_results,
        }

    def _ope_loop(self) -> None:
        store = self.router.storage.clone()
        try:
            while not self._stop.wait(self.router.config.ope.interval_s):
                try:
                    self.ope_results = self.estimate(store)
                except StorageUnavailable as exc:  # logged by the storage layer; retried next interval
                    log.warning("off-policy refresh skipped: %s", exc)
                except Exception:  # a failed refresh keeps the last estimates; the service goes on
                    log.exception("off-policy refresh failed")
        finally:
            store.close()

    def estimate(self, store: Storage) -> dict[str, Any]:
        """DR estimates over the last ``window`` logged rows with feedback, read through ``store``:
        the current policy, uniform and each active model (on the rows where it was allowed) on
        every row; the configured candidates trained on the first half and evaluated on the second.
        Invalid rows of a damaged log are left out and counted (``skipped_rows``)."""
        router, cfg = self.router, self.router.config.ope
        blog, skipped = store.export_log(router.reward_range, last=cfg.window)
        out: dict[str, Any] = {
            "updated_at": time.time(),
            "rows": 0 if blog is None else blog.n,
            "skipped_rows": skipped,
            "candidates": [],
        }
        published = router.published
        if blog is None or blog.n < cfg.min_rows or published is None:
            return out
        q_hat, seed = cross_fit(blog), router.config.router.seed

        def dr(targets: list[Target], **split: int) -> list[TargetEstimate]:
            return evaluate_targets(
                blog, targets, estimators=("dr",), intervals=("normal",), q_hat=q_hat, seed=seed, **split
            )

        spec = router.spec
        targets = [Target("current policy", published[0]), Target("uniform", make_policy("uniform", spec))]
        targets += [
            Target(f"always {m.name}", make_policy("fixed", spec, arm=m.slot), arm=m.slot)
            for m in router.models
            if m.active
        ]
        found = dr(targets, min_rows=cfg.min_rows)
        half = blog.n // 2
        if cfg.candidates and half >= cfg.min_rows // 2:
            trained = [
                Target(f"{c.name} (trained)", make_policy(c.name, spec, **c.params), fit=True) for c in cfg.candidates
            ]
            found += dr(trained, train_rows=half)
        logged = {"name": "logged (on-policy mean)", "value": float(blog.rewards.mean()), "lo": None, "hi": None}
        out["candidates"] = [{**logged, "rows": blog.n}] + [_row(t) for t in found]
        return out


def _row(t: TargetEstimate) -> dict[str, Any]:
    est = t.estimates["dr"]
    lo, hi = est.intervals["normal"]
    return {"name": t.name, "value": est.value, "lo": lo, "hi": hi, "rows": t.rows}
