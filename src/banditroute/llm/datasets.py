"""Cost-aware LLM routing tables: per-query quality and cost of every LLM, from three public datasets.

:class:`LLMRoutingData` holds the texts, quality ``(n, M)`` in [0, 1], cost ``(n, M)`` in USD per
call and a group label per query (its task or source benchmark). :meth:`~LLMRoutingData.to_reward_table`
embeds the queries with any :class:`~banditroute.data.interfaces.Embedder` and returns the
:class:`~banditroute.envs.reward_table.RewardTable` the policies learn from.

Costs are ``(input tokens · input price + output tokens · output price) / 10⁶`` where the data
gives what is needed; token counts of texts are estimated as ``ceil(characters / 4)`` (the
usual rule of thumb for English BPE tokenisers — the datasets ship no tokeniser counts).

Loaders read the published files from a local path and never download:

- ``llmrouter``: LLMRouter (U Lab @ UIUC, MIT), https://github.com/ulab-uiuc/LLMRouter —
  ``dcrouter_train.json`` (``[{"question", "scores": {model: float}}]``), ``default_llm.json``
  (``{model: {"input_price", "output_price", ...}}``, USD per 10⁶ tokens) and optionally
  ``default_query_train.jsonl`` (``task_name`` per ``query``, used as the group). The data holds
  no responses, so the default cost counts input tokens only (``output_tokens`` adds a fixed
  assumed answer length); such a cost is known before the call.
- ``routellm``: RouteLLM (LMSYS, Apache-2.0), https://github.com/lm-sys/RouteLLM — correctness of
  Mixtral-8x7B and GPT-4-1106 on MMLU (``mmlu/mmlu_<subject>.csv``) and GSM8K
  (``gsm8k_responses.csv``, with both answers, whose lengths give output tokens). Prices are
  those the RouteLLM paper assumes (Ong et al. 2024): $24.7 and $0.24 per 10⁶ tokens.
- ``paretobandit``: ParetoBandit ``val.jsonl`` (Apache-2.0) — each prompt's reward in [0, 1] and
  measured USD cost for three LLMs (the cost includes the answer, so it is *not* known before
  the call).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.core.registry import Registry
from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_finite, check_int
from banditroute.data.datasets.common import Source, find_file, read_json, read_jsonl
from banditroute.data.interfaces import Embedder
from banditroute.envs.reward_table import RewardTable

DATASETS = ("llmrouter", "routellm", "paretobandit")
TOKENS_PER_MILLION = 1e6

LLMROUTER = Source(
    url="https://github.com/ulab-uiuc/LLMRouter (data/: dcrouter_train.json, default_llm.json, "
    "default_query_train.jsonl)",
    layout="a folder with dcrouter_train.json and default_llm.json",
)
ROUTELLM = Source(
    url="https://github.com/lm-sys/RouteLLM (routellm/evals/mmlu/responses/*.csv, routellm/evals/gsm8k/*.csv)",
    layout="a folder with mmlu/mmlu_<subject>.csv and/or gsm8k_responses.csv",
)
PARETOBANDIT = Source(
    url="the ParetoBandit repository's val.jsonl (Apache-2.0)",
    layout='val.jsonl: one {"prompt", "source", "arms": {model: {"reward", "cost"}}} per line',
)
ROUTELLM_MODELS = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
ROUTELLM_PRICES = {"mistralai/Mixtral-8x7B-Instruct-v0.1": 0.24, "gpt-4-1106-preview": 24.7}  # USD / 10⁶ tokens


def estimate_tokens(text: str) -> int:
    """Approximate BPE token count of ``text``: ``ceil(characters / 4)``, at least one."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True, eq=False)
class LLMRoutingData:
    """Full-information quality and cost of ``M`` LLMs on ``n`` queries.

    Attributes:
        name: dataset name.
        queries: the ``n`` query texts.
        quality: ``(n, M)`` quality of every LLM's answer, in [0, 1].
        cost: ``(n, M)`` USD cost of every call, ``>= 0``.
        arm_names: the ``M`` LLM names.
        groups: per query, its task or source benchmark (for per-group analysis).
        input_tokens: ``(n,)`` estimated prompt tokens (a feature of cost predictors).
        cost_known: whether ``cost`` is known before calling (prompt-priced), else only after.
        meta: provenance (source path, cost model), JSON-serialisable.
    """

    name: str
    queries: tuple[str, ...]
    quality: FloatArray
    cost: FloatArray
    arm_names: tuple[str, ...]
    groups: tuple[str, ...]
    input_tokens: FloatArray
    cost_known: bool
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        quality = np.array(self.quality, dtype=np.float64)
        cost = np.array(self.cost, dtype=np.float64)
        n = len(self.queries)
        M = len(self.arm_names)
        if n < 1 or M < 1 or quality.shape != (n, M) or cost.shape != (n, M):
            raise InputError(f"quality and cost must have shape ({n}, {M}), got {quality.shape} and {cost.shape}")
        check_finite(quality, "quality")
        check_finite(cost, "cost")
        if np.any(quality < 0) or np.any(quality > 1):
            raise InputError("quality must lie in [0, 1]")
        if np.any(cost < 0):
            raise InputError("cost must be >= 0")
        if len(set(self.arm_names)) != M:
            raise InputError(f"arm names must be unique, got {self.arm_names}")
        tokens = np.array(self.input_tokens, dtype=np.float64)
        if len(self.groups) != n or tokens.shape != (n,):
            raise InputError(f"groups and input_tokens must have length {n}")
        for name, value in (("quality", quality), ("cost", cost), ("input_tokens", tokens)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "queries", tuple(self.queries))
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "arm_names", tuple(self.arm_names))

    @property
    def n_rows(self) -> int:
        return len(self.queries)

    @property
    def n_arms(self) -> int:
        return len(self.arm_names)

    def subset(self, idx: Sequence[int] | np.ndarray) -> LLMRoutingData:
        """The rows ``idx`` (integer positions), in that order."""
        rows = np.asarray(idx, dtype=np.int64)
        if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= self.n_rows:
            raise InputError(f"row indices must be a non-empty 1-D array in [0, {self.n_rows})")
        return LLMRoutingData(
            name=self.name,
            queries=tuple(self.queries[i] for i in rows),
            quality=self.quality[rows],
            cost=self.cost[rows],
            arm_names=self.arm_names,
            groups=tuple(self.groups[i] for i in rows),
            input_tokens=self.input_tokens[rows],
            cost_known=self.cost_known,
            meta=self.meta,
        )

    def to_reward_table(self, embedder: Embedder) -> RewardTable:
        """Contexts = ``embedder.encode_queries(queries)``; rewards = quality; costs = cost."""
        if not isinstance(embedder, Embedder):
            raise InputError(f"embedder must implement the Embedder protocol, got {type(embedder).__name__}")
        contexts = np.asarray(embedder.encode_queries(list(self.queries)), dtype=np.float64)
        if contexts.ndim != 2 or contexts.shape[0] != self.n_rows:
            raise InputError(f"embedder returned shape {contexts.shape} for {self.n_rows} queries")
        return RewardTable(
            contexts=contexts,
            rewards=self.quality,
            costs=self.cost,
            arm_names=self.arm_names,
            metadata={**dict(self.meta), "dataset": self.name, "embedder": embedder.name},
            reward_range=(0.0, 1.0),
        )


# ---------------------------------------------------------------------------------------------- loaders
def load_llm_dataset(name: str, path: str | Path, **options: Any) -> LLMRoutingData:
    """Load one of :data:`DATASETS` from its folder (options go to the loader)."""
    loaders: Registry[Callable[..., LLMRoutingData]] = Registry(
        "LLM routing dataset",
        {"llmrouter": load_llmrouter, "routellm": load_routellm, "paretobandit": load_paretobandit},
    )
    return loaders.lookup(name)(path, **options)


def load_llmrouter(path: str | Path, *, output_tokens: int = 0) -> LLMRoutingData:
    """Read LLMRouter's ``dcrouter_train.json`` + ``default_llm.json`` (module docstring)."""
    root = Path(path)
    output_tokens = check_int(output_tokens, "output_tokens", minimum=0)
    records = read_json(find_file(root, "dcrouter_train.json", LLMROUTER))
    prices = read_json(find_file(root, "default_llm.json", LLMROUTER))
    if not isinstance(records, list) or not records or not isinstance(prices, dict):
        raise InputError(f"{root}: dcrouter_train.json must be a non-empty list and default_llm.json an object")
    first = records[0].get("scores") if isinstance(records[0], dict) else None
    if not isinstance(first, dict) or not first:
        raise InputError(f"{root}/dcrouter_train.json: record 0 has no 'scores' object")
    arms = tuple(first)
    for arm in arms:
        entry = prices.get(arm)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), (int, float)) for k in _PRICE_KEYS):
            raise InputError(f"{root}/default_llm.json: no input_price/output_price for model {arm!r}")
    price_in = np.array([float(prices[a]["input_price"]) for a in arms])
    price_out = np.array([float(prices[a]["output_price"]) for a in arms])

    questions: list[str] = []
    quality = np.empty((len(records), len(arms)))
    for i, rec in enumerate(records):
        scores = rec.get("scores") if isinstance(rec, dict) else None
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not isinstance(scores, dict):
            raise InputError(f"{root}/dcrouter_train.json: record {i} lacks 'question' or 'scores'")
        if set(scores) != set(arms):
            raise InputError(f"{root}/dcrouter_train.json: record {i} scores models {sorted(scores)}, not {arms}")
        try:
            quality[i] = [float(scores[a]) for a in arms]
        except (TypeError, ValueError):
            raise InputError(f"{root}/dcrouter_train.json: record {i} has a non-numeric score") from None
        questions.append(rec["question"])

    tasks: dict[str, str] = {}
    task_file = root / "default_query_train.jsonl"
    if task_file.is_file():
        for _, obj in read_jsonl(task_file, ("query", "task_name")):
            tasks.setdefault(obj["query"], obj["task_name"])
    groups = [tasks.get(q, f"cluster{rec.get('cluster_id', '?')}") for q, rec in zip(questions, records, strict=True)]
    tokens = np.array([estimate_tokens(q) for q in questions], dtype=np.float64)
    cost = (tokens[:, None] * price_in + output_tokens * price_out) / TOKENS_PER_MILLION
    return LLMRoutingData(
        name="llmrouter",
        queries=tuple(questions),
        quality=np.clip(quality, 0.0, 1.0),
        cost=cost,
        arm_names=arms,
        groups=tuple(groups),
        input_tokens=tokens,
        cost_known=True,
        meta={
            "source": str(root),
            "cost": f"(ceil(chars/4) · input_price + {output_tokens} · output_price) / 1e6 USD",
        },
    )


_PRICE_KEYS = ("input_price", "output_price")


def load_routellm(
    path: str | Path,
    *,
    subsets: Sequence[str] = ("mmlu", "gsm8k"),
    prices: Mapping[str, float] | None = None,
) -> LLMRoutingData:
    """Read RouteLLM's MMLU and/or GSM8K correctness tables (module docstring).

    MMLU ships no answers, so its cost counts prompt tokens only; GSM8K's cost adds each model's
    own answer length. ``prices`` (USD per 10⁶ tokens, by model) default to the RouteLLM paper's.
    """
    root = Path(path)
    price = np.array([float((prices or ROUTELLM_PRICES)[m]) for m in ROUTELLM_MODELS])
    unknown = sorted(set(subsets) - {"mmlu", "gsm8k"})
    if not subsets or unknown:
        raise InputError(f"subsets must be chosen from mmlu, gsm8k, got {list(subsets)}")
    queries: list[str] = []
    groups: list[str] = []
    quality: list[list[float]] = []
    out_tokens: list[list[int]] = []
    for subset in subsets:
        if subset == "mmlu":
            files = sorted((root / "mmlu").glob("mmlu_*.csv"))
            if not files:
                raise ROUTELLM.missing(root / "mmlu" / "mmlu_<subject>.csv")
            labelled = [(f, f.stem.removeprefix("mmlu_")) for f in files]
        else:
            labelled = [(find_file(root, "gsm8k_responses.csv", ROUTELLM), "gsm8k")]
        for file, group in labelled:
            for lineno, row in _read_csv(file, ("prompt", *ROUTELLM_MODELS)):
                queries.append(row["prompt"])
                groups.append(group)
                quality.append([_truth(row[m], file, lineno) for m in ROUTELLM_MODELS])
                out_tokens.append(
                    [
                        estimate_tokens(row.get(f"{m}_response") or "") if subset == "gsm8k" else 0
                        for m in ROUTELLM_MODELS
                    ]
                )
    tokens = np.array([estimate_tokens(q) for q in queries], dtype=np.float64)
    cost = (tokens[:, None] + np.array(out_tokens, dtype=np.float64)) * price / TOKENS_PER_MILLION
    return LLMRoutingData(
        name="routellm",
        queries=tuple(queries),
        quality=np.array(quality),
        cost=cost,
        arm_names=ROUTELLM_MODELS,
        groups=tuple(groups),
        input_tokens=tokens,
        cost_known="gsm8k" not in subsets,
        meta={"source": str(root), "subsets": ",".join(subsets), "cost": "(prompt + answer tokens) · price / 1e6"},
    )


def load_paretobandit(path: str | Path) -> LLMRoutingData:
    """Read ParetoBandit's ``val.jsonl``: per prompt, each LLM's reward and measured USD cost."""
    file = find_file(path, "val.jsonl", PARETOBANDIT)
    arms: tuple[str, ...] | None = None
    queries: list[str] = []
    groups: list[str] = []
    quality: list[list[float]] = []
    cost: list[list[float]] = []
    for lineno, obj in read_jsonl(file, ("prompt",)):
        entry = obj.get("arms")
        if not isinstance(entry, dict) or not entry:
            raise InputError(f"{file}:{lineno}: field 'arms' missing or empty")
        arms = arms or tuple(entry)
        if set(entry) != set(arms):
            raise InputError(f"{file}:{lineno}: arms {sorted(entry)} differ from the first line's {sorted(arms)}")
        try:
            quality.append([float(entry[a]["reward"]) for a in arms])
            cost.append([float(entry[a]["cost"]) for a in arms])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{file}:{lineno}: every arm needs numeric 'reward' and 'cost'") from None
        queries.append(obj["prompt"])
        groups.append(str(obj.get("source", "")))
    if arms is None:
        raise InputError(f"{file}: no records")
    return LLMRoutingData(
        name="paretobandit",
        queries=tuple(queries),
        quality=np.array(quality),
        cost=np.array(cost),
        arm_names=arms,
        groups=tuple(groups),
        input_tokens=np.array([estimate_tokens(q) for q in queries], dtype=np.float64),
        cost_known=False,
        meta={"source": str(file), "cost": "measured USD per call (prompt + answer)"},
    )


def _read_csv(file: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header holding ``required`` columns, numbered by their first line."""
    try:
        with file.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{file}: missing column(s) {missing}")
            return [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"{file}: malformed CSV ({exc})") from None


def _truth(value: str, file: Path, lineno: int) -> float:
    """RouteLLM's correctness cells are ``True``/``False``."""
    if value not in ("True", "False"):
        raise InputError(f"{file}:{lineno}: expected True or False, got {value!r}")
    return 1.0 if value == "True" else 0.0
