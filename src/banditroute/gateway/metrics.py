"""The gateway's Prometheus series, in the router's registry (so ``GET /metrics`` shows both).

Per upstream: requests by outcome, tokens by kind (prompt, completion), cost, fallbacks by cause
(counters, ``_total``); latency of whole answers and time to first token of streams (histograms,
``_seconds``); whether the circuit breaker is open (gauge). Reward hook runs by outcome (counter).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "banditroute_gateway_requests", "Upstream attempts by outcome", ["upstream", "outcome"], registry=r
        )
        self.tokens = Counter(
            "banditroute_gateway_tokens", "Tokens by upstream and kind", ["upstream", "kind"], registry=r
        )
        self.cost = Counter(
            "banditroute_gateway_cost", "Cost (currency of the prices) by upstream", ["upstream"], registry=r
        )
        self.fallbacks = Counter(
            "banditroute_gateway_fallbacks",
            "Failed attempts that fell back, by cause",
            ["upstream", "cause"],
            registry=r,
        )
        self.latency = Histogram(
            "banditroute_gateway_latency_seconds", "Time to the whole answer", ["upstream"], buckets=BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "banditroute_gateway_ttft_seconds", "Time to the first streamed token", ["upstream"], buckets=BUCKETS,
            registry=r,
        )  # fmt: skip
        self.breaker_open = Gauge(
            "banditroute_gateway_breaker_open",
            "1 while the upstream's circuit breaker is open",
            ["upstream"],
            registry=r,
        )
        self.budget_refusals = Counter("banditroute_gateway_budget_refusals", "Requests refused with 429", registry=r)
        self.reward_hook = Counter(
            "banditroute_gateway_reward_hook",
            "Reward hook runs by outcome: accepted, duplicate, no_reward, failed, timeout, refused, skipped",
            ["outcome"],
            registry=r,
        )

    def answered(
        self, upstream: str, prompt: int, completion: int, cost: float, seconds: float, outcome: str = "ok"
    ) -> None:
        """A paid attempt: ``ok``, or a stream ``dropped`` by its upstream or ``cancelled`` by its client."""
        self.requests.labels(upstream, outcome).inc()
        self.tokens.labels(upstream, "prompt").inc(prompt)
        self.tokens.labels(upstream, "completion").inc(completion)
        self.cost.labels(upstream).inc(cost)
        self.latency.labels(upstream).observe(seconds)
