"""Amazon ESCI shopping queries (the paper's experiment, hpg.md §4) from the official parquet files:

- ``shopping_queries_dataset_examples.parquet``: one judged (query, product) pair per row, columns
  ``query_id, query, product_id, product_locale, esci_label, small_version, split``
  (``esci_label`` ∈ E, S, C, I; ``small_version`` 1 for the reduced Task-1 set; ``split`` train/test),
- ``shopping_queries_dataset_products.parquet``: ``product_id, product_title,
  product_description, product_bullet_point, product_brand, product_color, product_locale``.

Gains follow the ESCI paper: Exact 1.0, Substitute 0.1, Complement 0.01, Irrelevant 0. The
corpus is every product judged for a kept query (the ESCI ranking task); document ids are
``locale/product_id`` because a product id can recur across locales. The paper used the US
locale with the full (large) version: about 97,345 queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from banditroute.core.validation import InputError
from banditroute.data.datasets.common import Source, build_dataset, find_file
from banditroute.data.interfaces import RetrievalDataset

SOURCE = Source(
    url="https://github.com/amazon-science/esci-data (folder shopping_queries_dataset/)",
    layout="a folder with shopping_queries_dataset_examples.parquet and shopping_queries_dataset_products.parquet",
)
EXAMPLES = "shopping_queries_dataset_examples.parquet"
PRODUCTS = "shopping_queries_dataset_products.parquet"
GAINS = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
EXAMPLE_COLUMNS = ("query_id", "query", "product_id", "product_locale", "esci_label", "small_version", "split")
TEXT_FIELDS = ("product_title", "product_brand", "product_color", "product_bullet_point")
LOCALES = ("us", "es", "jp")
VERSIONS = ("small", "large")


def load_esci(
    path: str | Path,
    *,
    locale: str | None = "us",
    version: str = "large",
    split: str | None = None,
    text_fields: Sequence[str] = TEXT_FIELDS,
) -> RetrievalDataset:
    """Read ESCI from the folder ``path``.

    Args:
        locale: ``"us"``, ``"es"``, ``"jp"`` or ``None`` (all).
        version: ``"large"`` (every query) or ``"small"`` (rows with ``small_version == 1``).
        split: ``"train"``, ``"test"`` or ``None`` (both).
        text_fields: product columns joined (non-empty ones, in order) into the document text.
    """
    import pandas as pd

    if locale is not None and locale not in LOCALES:
        raise InputError(f"locale must be one of {LOCALES} or None, got {locale!r}")
    if version not in VERSIONS:
        raise InputError(f"version must be one of {VERSIONS}, got {version!r}")
    if split not in (None, "train", "test"):
        raise InputError(f"split must be 'train', 'test' or None, got {split!r}")
    examples_file, products_file = find_file(path, EXAMPLES, SOURCE), find_file(path, PRODUCTS, SOURCE)
    text_fields = tuple(text_fields)
    if not text_fields:
        raise InputError("text_fields must name at least one product column")

    rows = _read_parquet(pd, examples_file, EXAMPLE_COLUMNS, locale)
    if version == "small":
        rows = rows[rows["small_version"].astype(int) == 1]
    if split is not None:
        rows = rows[rows["split"] == split]
    unknown = ~rows["esci_label"].isin(list(GAINS))
    if unknown.any():
        bad = rows[unknown].iloc[0]
        raise InputError(
            f"{examples_file}: query_id {bad['query_id']}, product {bad['product_id']}: "
            f"esci_label {bad['esci_label']!r} is not one of E, S, C, I"
        )

    row_docs = (rows["product_locale"].astype(str) + "/" + rows["product_id"].astype(str)).tolist()
    products = _read_parquet(pd, products_file, ("product_id", "product_locale", *text_fields), locale)
    doc_key = products["product_locale"].astype(str) + "/" + products["product_id"].astype(str)
    if doc_key.duplicated().any():
        raise InputError(f"{products_file}: duplicate product {doc_key[doc_key.duplicated()].iloc[0]!r}")
    judged = doc_key.isin(set(row_docs)).to_numpy()  # the corpus: judged products only
    catalogue = dict(zip(doc_key[judged], _join_fields(products[judged], text_fields), strict=True))
    missing = next((i for i, d in enumerate(row_docs) if d not in catalogue), None)
    if missing is not None:
        bad = rows.iloc[missing]
        raise InputError(
            f"{examples_file}: query_id {bad['query_id']}: unknown product {row_docs[missing]!r} (not in {PRODUCTS})"
        )
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    documents: dict[str, str] = {}
    columns = (rows["query_id"].astype(str), rows["query"], row_docs, rows["esci_label"])
    for qid, query, doc, label in zip(*columns, strict=True):
        queries.setdefault(qid, str(query))
        qrels.setdefault(qid, {})[doc] = GAINS[label]
        documents.setdefault(doc, catalogue[doc])
    meta = {"source": str(Path(path)), "locale": locale or "all", "version": version, "split": split or "all"}
    return build_dataset("esci", queries, documents, qrels, meta=meta)


def _join_fields(products: Any, fields: Sequence[str]) -> list[str]:
    """Per product, its non-empty ``fields`` joined by spaces (vectorised over columns)."""
    texts = products[fields[0]].fillna("").astype(str).str.strip()
    for name in fields[1:]:
        column = products[name].fillna("").astype(str).str.strip()
        texts = (texts + " " + column).str.strip()
    return list(texts.str.replace(r"\s{2,}", " ", regex=True))


def _read_parquet(pd: Any, file: Path, columns: Sequence[str], locale: str | None) -> Any:
    """The columns of a parquet file (rows of one locale when given), or a clear error."""
    import pyarrow as pa

    try:
        frame = pd.read_parquet(
            file, columns=list(columns), filters=None if locale is None else [("product_locale", "==", locale)]
        )
    except (pa.ArrowInvalid, pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise InputError(f"{file}: cannot read the columns {list(columns)} ({exc})") from None
    return frame
