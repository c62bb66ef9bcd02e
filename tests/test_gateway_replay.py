"""End-to-end replay: the llmrouter test stream through the gateway with the openai client, feedback from
the recorded quality, reproduces the offline LLM-routing benchmark for the same policy.

The offline side is the benchmark itself (:mod:`banditroute.studies.llm_routing`): ``linucb μ=0`` on the
shared contexts of a 1000-query subsample, seed 0's split. The gateway serves seed 0's stream: its
Featurizer is the one the benchmark fitted on seed 0's training split (``[gateway] features``), the
embedder the benchmark's (``minilm-l6-int8``, through the same on-disk cache), one fake upstream
plays the nine LLMs at the table's prices (input tokens only, as the table's costs), and each
answer's feedback is the table's quality of the upstream that answered. Asserted:

1. each answer's cost is the table's cost of that (query, LLM) — usage × price;
2. the logged contexts are the benchmark's features of the stream's queries, and every logged
   probability vector equals the benchmark's policy's after learning the same feedback rows — the
   gateway runs the same policy, decision by decision;
3. the run's quality and cost (% of the reference LLM's) lie in the 95% prediction interval of
   8 offline runs on the same stream (they differ only in how the policy's ties are broken: LinUCB's
   early ties send single runs anywhere between about 86% and 95% quality).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import openai
import pytest
from scipy import stats

from banditroute.core.types import Decision, EnvSpec
from banditroute.gateway.features import save_featurizer
from gateway_support import FakeUpstream
from service_support import CLIENT_KEY, Server, write_config

SHARED = Path(os.environ.get("BANDITROUTE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
N_QUERIES, RUNS = 1000, 8

pytestmark = pytest.mark.skipif(not (SHARED / "llmrouter").is_dir(), reason="the shared llmrouter data is not present")


def test_replay_of_the_llmrouter_stream_reproduces_the_offline_benchmark(tmp_path: Path) -> None:
    from banditroute.costaware.online import run_online
    from banditroute.data.cache import CachedEmbedder, EmbeddingCache
    from banditroute.data.embedders import make_embedder
    from banditroute.llm.datasets import load_llmrouter
    from banditroute.llm.protocols import SeedInputs, subsample
    from banditroute.policies.registry import make_policy
    from banditroute.studies.llm_routing import LLMBenchConfig, SeedSetup, method_runs, summarise_run

    data = subsample(load_llmrouter(SHARED / "llmrouter"), N_QUERIES)
    table = data.to_reward_table(CachedEmbedder(make_embedder("minilm-l6-int8"), EmbeddingCache()))
    cfg = LLMBenchConfig(families=("linucb",), mus=(0.0,), seeds=1, max_queries=N_QUERIES)
    (run,) = method_runs(cfg, data.arm_names)
    inputs = SeedInputs(table, data.input_tokens, data.cost_known, data.queries, data.groups)
    setup = SeedSetup(0, inputs, cfg)
    offline = []  # the benchmark's run on seed 0's stream, with RUNS draws of the policy's tie-breaking
    for r in range(RUNS):
        router = run.build(setup)
        offline.append(summarise_run(run_online(router, setup.stream, np.random.default_rng([0, 2, r])), setup, router))
    save_featurizer(setup.featurizer, tmp_path / "features.npz")
    prices = json.loads((SHARED / "llmrouter" / "default_llm.json").read_text())
    up = FakeUpstream("all", tmp_path / "upstream.log").wait()
    upstreams = [{"name": a, "base_url": up.url + "/v1", "model": a, "input_price": prices[a]["input_price"],
                  "output_price": 0.0} for a in data.arm_names]  # fmt: skip
    config = write_config(tmp_path / "router.toml", {
        "router": {"dim": setup.featurizer.dim, "max_models": data.n_arms, "publish_interval_s": 0.0},
        "policy": {"name": "linucb", "params": {"alpha": cfg.linucb_alpha}},
        "storage": {"url": "sqlite:///router.db"},
        "gateway": {"features": "features.npz", "embedder": {"factory": "minilm-l6-int8"}, "embed_disk_cache": True},
        "gateway.upstreams": upstreams,
    })  # fmt: skip
    server = Server(config, tmp_path / "gateway.log").start()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    arm = {a: i for i, a in enumerate(data.arm_names)}
    quality, cost = [], []
    try:
        for t in setup.test_idx:
            r = client.chat.completions.create(model="router", messages=[{"role": "user", "content": data.queries[t]}])
            info = r.model_extra["banditroute"]
            q = float(data.quality[t, arm[info["upstream"]]])
            assert info["cost"] == pytest.approx(data.cost[t, arm[info["upstream"]]], rel=1e-9)  # usage × price
            client.post("/feedback", body={"event_id": info["event_id"], "reward": q}, cast_to=object)
            quality.append(q)
            cost.append(info["cost"])
    finally:
        server.stop()
        up.stop()
    # 1. the gateway's contexts are the benchmark's, and each logged probability vector is what the
    #    benchmark's policy gives after learning the same feedback rows (policy_version of them)
    with sqlite3.connect(tmp_path / "router.db") as con:
        decisions = con.execute(
            "SELECT policy_version, action, probs, context FROM decisions ORDER BY event_id"
        ).fetchall()
        rewards = [r for (r,) in con.execute("SELECT reward FROM feedback ORDER BY seq")]
    X = np.stack([np.frombuffer(c) for *_, c in decisions])
    np.testing.assert_allclose(X, setup.featurizer.transform(table.contexts[setup.test_idx]), atol=1e-6)
    policy = make_policy("linucb", EnvSpec(data.n_arms, X.shape[1], (0.0, 1.0)), alpha=cfg.linucb_alpha)
    learned = 0
    for i, (version, _, probs, _) in enumerate(decisions):
        for j in range(learned, version):  # feedback row j+1 is decision j's (one answer, one feedback each)
            policy.learn(X[j], Decision(decisions[j][1], np.frombuffer(decisions[j][2])), rewards[j])
        learned = version
        np.testing.assert_allclose(policy.act(X[i], np.random.default_rng(0)).probs, np.frombuffer(probs), atol=1e-12)
    # 2. quality and cost (% of the reference LLM's) within the offline runs' 95% prediction interval
    ref = setup.reference
    gateway = {
        "quality_pct": 100 * np.mean(quality) / setup.stream.quality[:, ref].mean(),
        "cost_pct": 100 * np.mean(cost) / setup.stream.cost[:, ref].mean(),
    }
    summary = {"gateway": gateway}
    for k in ("quality_pct", "cost_pct"):
        values = np.array([r[k] for r in offline])
        half = stats.t.ppf(0.975, RUNS - 1) * values.std(ddof=1) * np.sqrt(1 + 1 / RUNS)
        summary[k] = {"offline_mean": values.mean(), "prediction_half_width": half}
        assert abs(gateway[k] - values.mean()) <= half, (k, gateway[k], values)
    (tmp_path / "replay.json").write_text(json.dumps(summary))
