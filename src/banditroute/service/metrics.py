"""Prometheus metrics of one router (text exposition format at ``GET /metrics``).

Each router has its own :class:`prometheus_client.CollectorRegistry` (not the process-global one),
so several routers can live in one process (tests). With ``serve --workers N`` a scrape reaches
whichever worker accepts the connection, so every worker answers for the whole cluster: the supervisor
gives its children a fresh ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode: each
process writes its values to files there) and ``/metrics`` sums counters and histograms over all of
them, dead workers' counts included; gauges are per live process (``pid`` label: each worker's
``banditroute_policy_version``). The recent shares and rewards stay those of the answering worker, which
``banditroute_process`` names. Counters and histograms are updated on the
request path (a few microseconds each); the per-model shares and running rewards over the last
``window`` decisions are computed when Prometheus scrapes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 1.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # set by `serve --workers N` for its children

disable_created_metrics()  # no *_created series: a start timestamp per label set is noise here


class _Recent(Collector):
    """Per-model share of the last decisions and mean reward of the last feedback."""

    def __init__(self, names: Callable[[], dict[int, str]], window: int) -> None:
        self.names = names
        self.actions: deque[int] = deque(maxlen=window)
        self.rewards: deque[tuple[int, float]] = deque(maxlen=window)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        names = self.names()
        share = GaugeMetricFamily("banditroute_model_share", "Share of the recent decisions", labels=["model"])
        reward = GaugeMetricFamily(
            "banditroute_model_reward_mean", "Mean reward of the recent feedback", labels=["model"]
        )
        actions = np.fromiter(self.actions, dtype=np.int64)
        rewards = list(self.rewards)
        for slot, name in names.items():
            share.add_metric([name], float(np.mean(actions == slot)) if actions.size else 0.0)
            got = [r for a, r in rewards if a == slot]
            if got:
                reward.add_metric([name], float(np.mean(got)))
        overall = GaugeMetricFamily("banditroute_reward_mean", "Mean reward of the recent feedback")
        if rewards:
            overall.add_metric([], float(np.mean([r for _, r in rewards])))
        yield from (share, reward, overall)


class _Process(Collector):
    """``banditroute_process{role, worker, pid} 1``: which process answered this scrape."""

    def __init__(self) -> None:
        self.labels = ("single", "0", str(os.getpid()))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "banditroute_process", "The process that answered: its role, worker number and pid (value 1)",
            labels=["role", "worker", "pid"],
        )  # fmt: skip
        family.add_metric(list(self.labels), 1.0)
        yield family


class RouterMetrics:
    """The router's counters, histograms and gauges."""

    def __init__(self, names: Callable[[], dict[int, str]], window: int = 1000) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("banditroute_decisions", "Routing decisions", ["model", "kind"], registry=r)
        self.feedback = Counter("banditroute_feedback", "Feedback requests by outcome", ["outcome"], registry=r)
        self.route_latency = Histogram(
            "banditroute_route_seconds", "Time to decide and log one route (embedding excluded)",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.embed_latency = Histogram(
            "banditroute_embed_seconds", "Time to embed one query", buckets=LATENCY_BUCKETS, registry=r
        )
        self.feedback_latency = Histogram(
            "banditroute_feedback_seconds", "Time to validate and log one feedback", buckets=LATENCY_BUCKETS, registry=r
        )
        self.log_latency = Histogram(
            "banditroute_log_write_seconds",
            "Time to write one group of decisions or of feedback to the log and commit it (waiting for the write turn "
            "included): the share of banditroute_route_seconds that is storage",
            ["rows"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._log_writes = {rows: self.log_latency.labels(rows) for rows in ("decisions", "feedback")}  # bound once
        self.learn_latency = Histogram(
            "banditroute_learn_seconds", "Time of one learning step", buckets=LATENCY_BUCKETS, registry=r
        )
        self.learned = Counter("banditroute_learned_rows", "Feedback rows learned", registry=r)
        self.policy_version = Gauge(
            "banditroute_policy_version", "Rows learned by the serving policy", registry=r, multiprocess_mode="liveall"
        )
        self.learn_lag = Gauge(
            "banditroute_learn_lag_rows", "Accepted feedback not yet learned", registry=r, multiprocess_mode="livemax"
        )
        self.storage_unavailable = Counter(
            "banditroute_storage_unavailable", "Requests answered 503 because storage was unavailable", registry=r
        )
        self.process = _Process()
        self.recent = _Recent(names, window)
        r.register(self.process)
        r.register(self.recent)

    def on_decision(self, model: str, kind: str, slot: int, seconds: float) -> None:
        self.decisions.labels(model, kind).inc()
        self.route_latency.observe(seconds)
        self.recent.actions.append(slot)

    def on_feedback(self, outcome: str, slot: int | None = None, reward: float | None = None) -> None:
        self.feedback.labels(outcome).inc()
        if slot is not None and reward is not None:
            self.recent.rewards.append((slot, reward))

    def on_log_write(self, rows: str, seconds: float) -> None:
        """One group of ``rows`` (``"decisions"`` or ``"feedback"``) written to the log and committed."""
        self._log_writes[rows].observe(seconds)

    def on_learn(self, rows: int, seconds: float) -> None:
        self.learned.inc(rows)
        self.learn_latency.observe(seconds)

    def render(self) -> bytes:
        """The exposition: this router's registry, or every process of the cluster (module docstring)."""
        if not os.environ.get(MULTIPROC_DIR):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self.process)
        registry.register(self.recent)
        return generate_latest(registry)
