"""Loaders of the three LLM-routing datasets (tiny files in their published formats), costs, reward tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.llm.datasets import (
    ROUTELLM_MODELS,
    LLMRoutingData,
    estimate_tokens,
    load_llm_dataset,
    load_llmrouter,
    load_paretobandit,
    load_routellm,
)
from llm_fakes import HashedBowEmbedder

SHARED = Path(os.environ.get("BANDITROUTE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def write_llmrouter(root: Path) -> Path:
    root.mkdir()
    records = [
        {"question": "What is 2+2?", "scores": {"small": 1.0, "big": 1.0}, "cluster_id": 0},
        {"question": "Prove Fermat's last theorem in full.", "scores": {"small": 0.0, "big": 0.4}, "cluster_id": 1},
        {"question": "Name a colour.", "scores": {"small": 0.5, "big": 0.9}, "cluster_id": 2},
    ]
    (root / "dcrouter_train.json").write_text(json.dumps(records))
    prices = {
        "small": {"input_price": 0.2, "output_price": 0.4},
        "big": {"input_price": 0.9, "output_price": 1.8},
        "unused": {"input_price": 5.0, "output_price": 5.0},
    }
    (root / "default_llm.json").write_text(json.dumps(prices))
    tasks = [{"task_name": "math", "query": "What is 2+2?"}, {"task_name": "proof", "query": records[1]["question"]}]
    (root / "default_query_train.jsonl").write_text("\n".join(json.dumps(t) for t in tasks))
    return root


def test_llmrouter_loader_prices_prompt_tokens(tmp_path: Path) -> None:
    data = load_llmrouter(write_llmrouter(tmp_path / "llmrouter"))
    assert data.arm_names == ("small", "big") and data.n_rows == 3
    np.testing.assert_allclose(data.quality[1], [0.0, 0.4])
    tokens = np.array([estimate_tokens(q) for q in data.queries])
    np.testing.assert_allclose(data.cost, tokens[:, None] * np.array([0.2, 0.9]) / 1e6)
    assert data.groups == ("math", "proof", "cluster2")  # the query without a task falls back to its cluster
    assert data.cost_known
    with_answers = load_llmrouter(tmp_path / "llmrouter", output_tokens=100)
    np.testing.assert_allclose(with_answers.cost - data.cost, np.broadcast_to([0.4e-4, 1.8e-4], (3, 2)))


def test_llmrouter_loader_rejects_broken_files(tmp_path: Path) -> None:
    root = write_llmrouter(tmp_path / "llmrouter")
    with pytest.raises(InputError, match=r"github\.com/ulab-uiuc/LLMRouter"):
        load_llmrouter(tmp_path / "missing")
    records = json.loads((root / "dcrouter_train.json").read_text())
    records[2]["scores"] = {"small": 0.5}
    (root / "dcrouter_train.json").write_text(json.dumps(records))
    with pytest.raises(InputError, match="record 2"):
        load_llmrouter(root)
    records[2]["scores"] = {"small": "high", "big": 1.0}
    (root / "dcrouter_train.json").write_text(json.dumps(records))
    with pytest.raises(InputError, match="non-numeric"):
        load_llmrouter(root)
    (root / "dcrouter_train.json").write_text('[{"question": "q", "scores": {"nobody": 1.0}}]')
    with pytest.raises(InputError, match="no input_price"):
        load_llmrouter(root)
    (root / "dcrouter_train.json").write_text("[{broken")
    with pytest.raises(InputError, match="malformed JSON"):
        load_llmrouter(root)


def test_routellm_loader_counts_answer_tokens_on_gsm8k(tmp_path: Path) -> None:
    root = tmp_path / "routellm"
    (root / "mmlu").mkdir(parents=True)
    mix, gpt = ROUTELLM_MODELS
    (root / "mmlu" / "mmlu_anatomy.csv").write_text(f'prompt,{mix},{gpt}\n"Which bone?\nA. x",False,True\n')
    (root / "gsm8k_responses.csv").write_text(
        f"prompt,{mix},{gpt},{mix}_response,{gpt}_response\nAdd 1 and 1.,True,True,{'x' * 40},{'y' * 8}\n"
    )
    data = load_routellm(root)
    assert data.groups == ("anatomy", "gsm8k")
    np.testing.assert_allclose(data.quality, [[0.0, 1.0], [1.0, 1.0]])
    tok = [estimate_tokens("Which bone?\nA. x"), estimate_tokens("Add 1 and 1.")]
    np.testing.assert_allclose(data.cost[0], tok[0] * np.array([0.24, 24.7]) / 1e6)
    np.testing.assert_allclose(data.cost[1], (tok[1] + np.array([10, 2])) * np.array([0.24, 24.7]) / 1e6)
    assert not data.cost_known and load_routellm(root, subsets=["mmlu"]).cost_known
    (root / "mmlu" / "mmlu_anatomy.csv").write_text(f'prompt,{mix},{gpt}\n"q",maybe,True\n')
    with pytest.raises(InputError, match="True or False"):
        load_routellm(root)
    with pytest.raises(InputError, match="subsets"):
        load_routellm(root, subsets=["hellaswag"])


def test_paretobandit_loader_and_bad_lines(tmp_path: Path) -> None:
    file = tmp_path / "val.jsonl"
    arms = {"a": {"reward": 0.4, "cost": 1e-5}, "b": {"reward": 1.0, "cost": 2e-3}}
    file.write_text(json.dumps({"prompt": "hi", "source": "mmlu", "arms": arms}) + "\n")
    data = load_paretobandit(tmp_path)
    assert data.arm_names == ("a", "b") and data.groups == ("mmlu",) and not data.cost_known
    np.testing.assert_allclose(data.cost, [[1e-5, 2e-3]])
    file.write_text(file.read_text() + json.dumps({"prompt": "x", "arms": {"a": arms["a"]}}) + "\n")
    with pytest.raises(InputError, match=":2"):
        load_paretobandit(file)
    with pytest.raises(InputError, match="unknown LLM routing dataset"):
        load_llm_dataset("nope", tmp_path)


def test_routing_data_validates_and_builds_a_reward_table(tmp_path: Path) -> None:
    data = load_llmrouter(write_llmrouter(tmp_path / "llmrouter"))
    table = data.to_reward_table(HashedBowEmbedder(16))
    assert table.contexts.shape == (3, 16) and table.costs is not None
    np.testing.assert_allclose(table.rewards, data.quality)
    assert table.metadata["embedder"] == "hashed-bow" and table.metadata["dataset"] == "llmrouter"
    sub = data.subset([2, 0])
    assert sub.queries == (data.queries[2], data.queries[0])
    with pytest.raises(InputError):
        data.subset([5])
    with pytest.raises(InputError):
        data.to_reward_table(object())  # type: ignore[arg-type]
    base = {
        "name": "x", "queries": ("q",), "quality": [[0.5]], "cost": [[1.0]], "arm_names": ("a",),
        "groups": ("g",), "input_tokens": [1.0], "cost_known": True,
    }  # fmt: skip
    LLMRoutingData(**base)  # type: ignore[arg-type]
    for bad in ({"quality": [[1.5]]}, {"cost": [[-1.0]]}, {"quality": [[0.5, 0.5]]}, {"cost": [[np.nan]]}):
        with pytest.raises(InputError):
            LLMRoutingData(**{**base, **bad})  # type: ignore[arg-type]


@pytest.mark.skipif(not (SHARED / "llmrouter").is_dir(), reason="the shared llmrouter data is not present")
def test_real_llmrouter_table_has_the_issue_numbers() -> None:
    data = load_llmrouter(SHARED / "llmrouter")
    assert data.n_rows == 5608 and data.n_arms == 9
    means = dict(zip(data.arm_names, data.quality.mean(axis=0), strict=True))
    assert max(means, key=means.__getitem__) == "llama-3.1-nemotron-51b-instruct"
    assert means["llama-3.1-nemotron-51b-instruct"] == pytest.approx(0.621, abs=5e-4)
    cheap = [i for i, a in enumerate(data.arm_names) if data.cost[:, i].sum() <= 0.23 * data.cost[:, 3].sum()]
    assert len(cheap) == 6
    assert data.quality[:, cheap].max(axis=1).mean() == pytest.approx(0.738, abs=5e-4)
