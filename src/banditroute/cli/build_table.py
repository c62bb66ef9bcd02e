"""``banditroute build-table``: a retrieval dataset + embedding models / BM25 -> a reward table on disk.

A thin face over :func:`banditroute.data.table_builder.build_reward_table`: it loads the dataset
(:mod:`banditroute.data.datasets`) and prints what the loader used (queries, documents, split,
queries dropped), builds one retriever per model (dense arms encode through the on-disk embedding
cache), saves the table and prints its routing headroom. Progress goes to stderr: bars on a
terminal, plain lines when redirected. Interrupted builds resume: finished (model, domain) results
and every encoded batch are on disk under --cache-dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from banditroute.cli.app import QuietOpt, app, console, parse_options, user_errors
from banditroute.core.validation import InputError

if TYPE_CHECKING:
    from banditroute.analysis.headroom import Headroom
    from banditroute.data.interfaces import Embedder, Retriever
    from banditroute.envs.reward_table import RewardTable


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise InputError(f"{what} lists a name twice: {text}")
    return names


def _models(
    names: list[str], context: str, cache_dir: Path, progress: bool
) -> tuple[list[Retriever], Embedder | None, Retriever | None]:
    """One retriever per model name (``bm25`` or an embedding model), the context encoder, a BM25 retriever."""
    from banditroute.data.cache import CachedEmbedder, EmbeddingCache
    from banditroute.data.embedders import make_embedder
    from banditroute.data.retrievers import BM25Retriever, DenseRetriever

    cache = EmbeddingCache(cache_dir / "embeddings")
    embedders: dict[str, Any] = {}

    def embedder(name: str) -> Any:
        if name not in embedders:
            embedders[name] = make_embedder(name)
        return embedders[name]

    retrievers: list[Retriever] = [
        BM25Retriever() if name == "bm25" else DenseRetriever(embedder(name), cache, progress=progress)
        for name in names
    ]
    encoder = None if context == "none" else CachedEmbedder(embedder(context), cache, progress=progress)
    lexical = next((r for r in retrievers if r.name == "bm25"), None)
    return retrievers, encoder, lexical


def headroom_table(room: Headroom, table: RewardTable) -> Table:
    """Per-arm mean reward, share of queries each arm alone wins, mean cost; then best single, oracle, gap."""
    meta = table.metadata
    out = Table(
        title=f"Routing headroom: {meta.get('dataset')}, {meta.get('metric')}@{meta.get('k')}, "
        f"{room.n_queries} queries (mean [95% bootstrap CI])"
    )
    for col in ("arm", "mean reward", "uniquely best on", "ms / query"):
        out.add_column(col, justify="left" if col == "arm" else "right")
    costs = None if table.costs is None else table.costs.mean(axis=0) * 1e3
    for m, name in enumerate(room.arm_names):
        label = f"{name} (best)" if m == room.best_arm else name
        out.add_row(label, str(room.arm_means[m]), str(room.unique_best[m]), "" if costs is None else f"{costs[m]:.2f}")
    out.add_section()
    out.add_row("best fixed arm", str(room.best_single), "", "")
    out.add_row("per-query oracle", str(room.oracle), f"ties: {room.ties}", "")
    out.add_row("oracle − best fixed arm", str(room.gap), "", "")
    return out


@app.command("build-table")
def build_table(
    dataset: Annotated[
        str,
        typer.Option(
            help="squad, scifact, beir (any BEIR-layout folder), cranfield, esci, or mixed (several as one "
            "stream, see --parts)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the reward table (.npz).")],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder (for mixed: the folder holding the bare-named parts, e.g. squad/, scifact/, "
            "cranfield/); default `$BANDITROUTE_DATA_<NAME>` or `$BANDITROUTE_DATA/<name>`."
        ),
    ] = None,
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated arms: bm25, embedding models (see `banditroute models`) and pipelines over them: "
            "rrf(a,b;k=60), cvx(a,b;w=0.4;norm=minmax) (w: weight of the last), rerank(P,model;n=100). "
            "Quote the list in a shell."
        ),
    ] = "bm25,minilm-l6-int8,glove-50",
    depth: Annotated[int, typer.Option(help="Results per retriever from which fusions are derived.")] = 100,
    context: Annotated[
        str, typer.Option(help="Embedding model whose query embedding is the router context, or 'none'.")
    ] = "minilm-l6",
    features: Annotated[
        str, typer.Option(help="Comma-separated cheap query features: length, bm25, lexical, qword, domain.")
    ] = "length,bm25",
    metric: Annotated[str, typer.Option(help="ndcg (graded), rr (reciprocal rank), hit or recall.")] = "ndcg",
    k: Annotated[int, typer.Option(help="Ranked-list length scored (metric@k).")] = 10,
    max_queries: Annotated[
        int | None, typer.Option(help="Keep a seeded random sample of this many queries (per domain for mixed).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the query sample and the bootstrap.")] = 0,
    split: Annotated[
        str | None,
        typer.Option(
            help="BEIR split(s), comma-separated, e.g. test or train,test (default: test where the folder has "
            "one, else all). For mixed: applied to every BEIR-layout part; the others have no splits and "
            "are used whole (said in the printed summary)."
        ),
    ] = None,
    parts: Annotated[
        str,
        typer.Option(
            help="Parts of the mixed stream, comma-separated: name=path (a built-in dataset read from path, "
            "or any BEIR-layout folder) or a bare built-in name (read from `--data-dir/<name>`). Each name is "
            "its domain (the `domain` feature), e.g. squad,nf=/data/nfcorpus."
        ),
    ] = "squad,scifact,cranfield",
    data_opt: Annotated[
        list[str] | None, typer.Option(help="Loader option key=value (repeatable), e.g. locale=us for esci.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Embedding and retrieval cache (default $BANDITROUTE_CACHE_DIR or ~/.cache/banditroute)."),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the headroom CIs.")] = 1000,
    quiet: QuietOpt = False,
) -> None:
    """Build a reward table: every arm's retrieval quality on every query, with router contexts and costs.

    An arm is a retriever or a pipeline of retrievers (fusion, re-scoring); each retriever searches
    once and every pipeline is derived from its lists, so many fusions cost little more than one.

    Example: `banditroute build-table --dataset squad --data-dir ../shared/data/squad
    --models bm25,minilm-l6-int8,glove-50 --context minilm-l6 --features length,bm25 --metric rr
    --k 10 --out tables/squad.npz`. A mixed stream of any BEIR-layout folders, the domain as a
    feature: `--dataset mixed --parts squad=/data/squad,nf=/data/nfcorpus --features length,bm25,domain`.
    Prints what was loaded (queries, documents, split, queries
    dropped for want of a relevant document) and the routing headroom (best single model vs
    per-query oracle). Re-running resumes from the cache.
    """
    from banditroute.analysis.headroom import routing_headroom
    from banditroute.data.cache import default_cache_dir
    from banditroute.data.datasets import DATASETS, describe, load_dataset, parts_of
    from banditroute.data.pipelines import parse_pipelines
    from banditroute.data.table_builder import build_reward_table

    with user_errors():
        options: dict[str, Any] = parse_options(data_opt or [], "--data-opt")
        if split is not None:
            if dataset in DATASETS and not DATASETS[dataset].has_splits:
                beir_like = ", ".join(n for n, entry in DATASETS.items() if entry.has_splits)
                hint = " (use --data-opt split=train or split=test)" if dataset == "esci" else ""
                raise InputError(
                    f"--split applies to BEIR-layout datasets ({beir_like}) and mixed; {dataset} has none{hint}"
                )
            options["splits"] = _names(split, "--split")
        if dataset == "mixed":
            options["parts"] = _names(parts, "--parts")
        arms = parse_pipelines(models)
        components = list(dict.fromkeys(m for arm in arms for m in arm.models))
        feature_names = _names(features, "--features")
        if out.suffix != ".npz":
            raise InputError(f"--out must end in .npz, got {out}")
        data = load_dataset(dataset, data_dir, max_queries=max_queries, seed=seed, **options)
        for part in parts_of(data):
            console.print(escape(describe(part)), highlight=False, soft_wrap=True)
        cache = cache_dir or default_cache_dir()
        # the cache's encoding bars are redrawn in place: on redirected output they would print blank lines
        retrievers, encoder, lexical = _models(components, context, cache, progress=not quiet and console.is_terminal)
        if lexical is None and {"bm25", "lexical"} & set(feature_names):
            from banditroute.data.retrievers import BM25Retriever

            lexical = BM25Retriever()
        table = build_reward_table(
            data,
            retrievers,
            metric,
            k,
            pipelines=arms,
            depth=depth,
            context=encoder,
            features=feature_names,
            lexical=lexical,
            cache_dir=cache,
            progress=not quiet,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        table.save(out)
        console.print(headroom_table(routing_headroom(table, n_boot=n_boot, seed=seed), table))
        console.print(
            f"reward table: {escape(str(out))}  "
            f"({table.n_rows} queries × {table.n_arms} arms, context dim {table.dim})",
            soft_wrap=True,  # one line however long the path: a log reader greps for it
        )
