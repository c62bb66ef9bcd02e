"""Dataset loaders: published formats on small fixtures written here, the real files when present, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.data.datasets import (
    DATASETS,
    MixedDataset,
    dataset_path,
    describe,
    load_dataset,
    load_mixed,
    parts_of,
    sample_queries,
)
from banditroute.data.datasets.beir import load_beir
from banditroute.data.datasets.cranfield import grade_to_gain, load_cranfield
from banditroute.data.datasets.squad import DEV_PARAGRAPHS, DEV_QUERIES, load_squad
from banditroute.data.table_builder import build_reward_table
from retrieval_fixtures import OverlapRetriever, write_beir, write_cranfield, write_esci, write_squad

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def needs(folder: str) -> Path:
    path = SHARED / folder
    if not path.exists():
        pytest.skip(f"real data not present at {path}")
    return path


# ---------------------------------------------------------------------------------------- SQuAD
def test_squad_fixture_dedupes_paragraphs_and_labels_articles(tmp_path: Path) -> None:
    write_squad(tmp_path)
    ds = load_squad(tmp_path)  # the folder or the file both work
    assert load_squad(tmp_path / "dev-v1.1.json") == ds
    assert ds.query_ids == ["q1", "q2", "q3", "q4", "q5"]
    assert len(ds.documents) == 3  # the repeated Nile paragraph is one document
    nile = ds.doc_ids[ds.documents.index("The Nile is the longest river in Africa.")]
    assert ds.qrels["q1"] == ds.qrels["q5"] == {nile: 1.0}
    assert ds.qrels["q3"] != ds.qrels["q1"]
    assert ds.query_groups == ["Rivers", "Rivers", "Rivers", "Mountains", "Mountains"]
    assert ds.queries[3] == "Who climbed the highest mountain first?"


def test_squad_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"rajpurkar\.github\.io"):
        load_squad(tmp_path)
    file = write_squad(tmp_path)
    text = file.read_text()
    data = json.loads(text)
    del data["data"][0]["paragraphs"][0]["qas"][1]["question"]
    file.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[1\]\.question"):
        load_squad(file)
    file.write_text(text.replace('"id": "q2"', '"id": "q1"'))
    with pytest.raises(InputError, match="duplicate id 'q1'"):
        load_squad(file)
    file.write_text(text[:-30])
    with pytest.raises(InputError, match=r"dev-v1\.1\.json:\d+: malformed JSON"):
        load_squad(file)
    file.write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(InputError, match="no top-level 'data'"):
        load_squad(file)


def test_squad_real_dev_set_counts() -> None:
    ds = load_squad(needs("squad"))
    assert len(ds.query_ids) == DEV_QUERIES == 10_570
    assert len(ds.doc_ids) == DEV_PARAGRAPHS == 2_067
    assert all(len(judged) == 1 for judged in ds.qrels.values())
    assert len(set(ds.query_groups or [])) == 48


# ---------------------------------------------------------------------------------------- BEIR
def test_beir_fixture_splits_and_judged_queries(tmp_path: Path) -> None:
    write_beir(tmp_path)
    test = load_beir(tmp_path, splits=["test"])
    assert test.name == tmp_path.name
    assert test.query_ids == ["q1", "q3"]  # q2's only judgement has score 0, q4 is judged in train
    assert test.qrels == {"q1": {"d1": 2.0, "d3": 1.0}, "q3": {"d3": 1.0}}
    assert test.doc_ids == ["d1", "d2", "d3", "d4"]  # the whole corpus stays
    assert test.documents[0] == "Vitamin D Vitamin D lowers fracture risk."  # title + text
    assert test.documents[1] == "Aspirin reduces heart attacks."  # no title
    assert load_beir(tmp_path) == test  # default: the test split where there is one
    assert (test.meta["splits"], test.meta["queries_read"], test.meta["queries_dropped"]) == ("test", "4", "2")
    assert describe(test) == (
        f"{tmp_path.name}: 2 queries, 4 documents; split test; "
        "dropped 2 of 4 queries (no relevant document in that split)"
    )
    both = load_beir(tmp_path, splits=["test", "train"])
    assert both.query_ids == ["q1", "q3", "q4"]
    assert (both.meta["splits"], both.meta["queries_dropped"]) == ("test,train", "1")
    assert "splits test, train; dropped 1 of 4 queries (no relevant document in those splits)" in describe(both)
    (tmp_path / "qrels" / "test.tsv").unlink()  # no test split: every split there is
    assert load_beir(tmp_path).meta["splits"] == "train"


def test_beir_download_location_names_the_dataset_and_shows_no_placeholder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        load_beir(tmp_path / "nfcorpus")
    assert "BEIR/datasets/nfcorpus.zip" in str(missing.value) and "{" not in str(missing.value)
    with pytest.raises(InputError) as scifact:
        load_dataset("scifact", tmp_path / "elsewhere")
    assert "BEIR/datasets/scifact.zip" in str(scifact.value) and "{" not in str(scifact.value)
    generic = DATASETS["beir"].source.download()
    assert generic.startswith("https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/ (")
    assert "e.g. https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip" in generic
    for entry in DATASETS.values():
        assert "{" not in entry.source.download() and "{" not in entry.source.layout


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', r"corpus\.jsonl:2: malformed JSON"),
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', r"corpus\.jsonl:2: duplicate"),
        ("queries.jsonl", '{"_id": "q1"}\n', r"queries\.jsonl:1: field 'text' missing"),
        ("queries.jsonl", "[1, 2]\n", r"queries\.jsonl:1: expected a JSON object"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td9\t1\n", r"test\.tsv:2: unknown corpus id 'd9'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", r"test\.tsv:3: unknown query id"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"test\.tsv:2: score 'high'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\n", r"test\.tsv:2: expected"),
    ],
)
def test_beir_bad_input_names_file_and_line(tmp_path: Path, file: str, content: str, message: str) -> None:
    write_beir(tmp_path)
    (tmp_path / file).write_text(content)
    with pytest.raises(InputError, match=message):
        load_beir(tmp_path, splits=["test"])


def test_beir_missing_files_and_splits(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="BEIR/datasets"):
        load_beir(tmp_path / "nowhere")
    write_beir(tmp_path)
    with pytest.raises(InputError, match="available: \\['test', 'train'\\]"):
        load_beir(tmp_path, splits=["dev"])
    (tmp_path / "queries.jsonl").unlink()
    with pytest.raises(InputError, match=r"queries\.jsonl not found.*Download it from"):
        load_beir(tmp_path)


def test_scifact_real_counts() -> None:
    path = needs("scifact")
    everything = load_dataset("scifact", path, splits=["train", "test"])
    assert (len(everything.query_ids), len(everything.doc_ids)) == (1_109, 5_183)
    assert sum(len(j) for j in everything.qrels.values()) == 919 + 339
    test = load_dataset("scifact", path)  # default: the test split
    assert len(test.query_ids) == 300 and sum(len(j) for j in test.qrels.values()) == 339
    assert describe(test) == (
        "scifact: 300 queries, 5,183 documents; split test; dropped 809 of 1,109 queries "
        "(no relevant document in that split)"
    )


# ---------------------------------------------------------------------------------------- Cranfield
def test_cranfield_fixture_fields_grades_and_query_numbering(tmp_path: Path) -> None:
    ds = load_cranfield(write_cranfield(tmp_path))
    assert ds.doc_ids == ["1", "2"]  # record 3 is empty
    assert ds.documents[0] == "wing flutter . flutter of wings at high speed ."
    assert ds.documents[1] == "heat transfer in slabs . stray marker line continues the abstract ."
    assert ds.query_ids == ["1", "2"]  # numbered in file order (.I 001, 004), query 3 has no relevant doc
    assert ds.queries == ["what about wing flutter .", "heat transfer in slabs ."]
    assert ds.qrels == {"1": {"1": 4.0, "2": 1.0}, "2": {"2": 3.0}}
    assert [grade_to_gain(g) for g in (1, 2, 3, 4, -1, 5)] == [4.0, 3.0, 2.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("cranqrel", "1 1 1\n7 1 2\n", r"cranqrel:2: unknown query 7"),
        ("cranqrel", "1 9 1\n", r"cranqrel:1: unknown document 9"),
        ("cranqrel", "1 1 6\n", r"cranqrel:1: grade 6"),
        ("cranqrel", "1 1\n", r"cranqrel:1: expected 'query doc grade'"),
        ("cran.all.1400", "stray text\n.I 1\n.W\nx\n", r"cran\.all\.1400:1: text outside a field"),
        ("cran.all.1400", ".I one\n.W\nx\n", r"cran\.all\.1400:1: malformed record header"),
        ("cran.qry", ".I 1\n.W\na\n.I 1\n.W\nb\n", r"cran\.qry:4: duplicate record id 1"),
    ],
)
def test_cranfield_bad_input_names_file_and_line(tmp_path: Path, file: str, content: str, message: str) -> None:
    write_cranfield(tmp_path)
    (tmp_path / file).write_text(content)
    with pytest.raises(InputError, match=message):
        load_cranfield(tmp_path)


def test_cranfield_missing_file(tmp_path: Path) -> None:
    write_cranfield(tmp_path)
    (tmp_path / "cranqrel").unlink()
    with pytest.raises(InputError, match=r"cranqrel not found.*ir\.dcs\.gla\.ac\.uk"):
        load_cranfield(tmp_path)


def test_cranfield_real_counts() -> None:
    ds = load_cranfield(needs("cranfield"))
    assert len(ds.query_ids) == 225
    assert len(ds.doc_ids) == 1_398  # 1,400 records less the two empty ones (471, 995)
    gains = [g for judged in ds.qrels.values() for g in judged.values()]
    # 1,836 lines less 225 (−1) and the one judgement of empty record 995
    assert len(gains) == 1_611 and set(gains) == {1.0, 2.0, 3.0, 4.0}
    assert gains.count(4.0) == 128  # grade 1 (complete answer) -> the top gain


# ---------------------------------------------------------------------------------------- ESCI
def test_esci_fixture_gains_and_filters(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from banditroute.data.datasets.esci import load_esci

    root = write_esci(tmp_path)
    us = load_esci(root)
    assert us.query_ids == ["1", "2"]  # query 3 is judged irrelevant only; query 4 is Spanish
    assert us.qrels == {"1": {"us/P1": 1.0, "us/P2": 0.1}, "2": {"us/P4": 0.01, "us/P5": 1.0}}
    assert set(us.doc_ids) == {"us/P1", "us/P2", "us/P3", "us/P4", "us/P5"}
    assert us.documents[us.doc_ids.index("us/P1")] == "Runner shoe Acme red fast"
    assert us.documents[us.doc_ids.index("us/P3")] == "Frying pan"  # empty and missing fields skipped
    assert load_esci(root, version="small").query_ids == ["1"]
    assert load_esci(root, split="test").query_ids == ["2"]
    assert load_esci(root, locale="es").qrels == {"4": {"es/P1": 1.0}}
    assert load_esci(root, locale=None).query_ids == ["1", "2", "4"]
    titles = load_esci(root, text_fields=["product_title"])
    assert titles.documents[titles.doc_ids.index("us/P5")] == "USB-C cable"


def test_esci_bad_input(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from banditroute.data.datasets.esci import load_esci

    with pytest.raises(InputError, match="amazon-science/esci-data"):
        load_esci(tmp_path)
    root = write_esci(tmp_path)
    with pytest.raises(InputError, match="locale must be"):
        load_esci(root, locale="fr")
    examples_file = root / "shopping_queries_dataset_examples.parquet"
    examples = pd.read_parquet(examples_file)
    examples.loc[1, "esci_label"] = "X"
    examples.to_parquet(examples_file, index=False)
    with pytest.raises(InputError, match="query_id 1, product P2: esci_label 'X'"):
        load_esci(root)
    examples.loc[1, "esci_label"] = "S"
    examples.loc[4, "product_id"] = "P99"
    examples.to_parquet(examples_file, index=False)
    with pytest.raises(InputError, match="query_id 2: unknown product 'us/P99'"):
        load_esci(root)
    examples.drop(columns=["small_version"]).to_parquet(examples_file, index=False)
    with pytest.raises(InputError, match="cannot read the columns"):
        load_esci(root)


# ---------------------------------------------------------------------------------------- registry, mixing
def test_registry_paths_from_argument_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_squad(tmp_path / "squad")
    monkeypatch.delenv("BANDITROUTE_DATA", raising=False)
    monkeypatch.delenv("BANDITROUTE_DATA_SQUAD", raising=False)
    with pytest.raises(InputError, match=r"--data-dir.*BANDITROUTE_DATA_SQUAD.*rajpurkar"):
        dataset_path("squad")
    monkeypatch.setenv("BANDITROUTE_DATA", str(tmp_path))
    assert dataset_path("squad") == tmp_path / "squad"
    assert len(load_dataset("squad").query_ids) == 5
    monkeypatch.setenv("BANDITROUTE_DATA_SQUAD", str(tmp_path / "elsewhere"))
    assert dataset_path("squad") == tmp_path / "elsewhere"
    assert dataset_path("squad", tmp_path) == tmp_path
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        load_dataset("nope", tmp_path)
    with pytest.raises(InputError, match="bad option for dataset 'squad'"):
        load_dataset("squad", tmp_path / "squad", locale="us")
    assert {"squad", "scifact", "beir", "cranfield", "esci"} <= set(DATASETS)


def test_sample_queries_is_seeded_ordered_and_keeps_the_corpus(tmp_path: Path) -> None:
    ds = load_squad(write_squad(tmp_path))
    a, b = sample_queries(ds, 3, seed=1), sample_queries(ds, 3, seed=1)
    assert a == b and len(a.query_ids) == 3
    assert a.query_ids == sorted(a.query_ids, key=ds.query_ids.index)
    assert a.documents == ds.documents and set(a.qrels) == set(a.query_ids)
    assert a.query_groups == [ds.query_groups[ds.query_ids.index(q)] for q in a.query_ids]  # type: ignore[index]
    assert sample_queries(ds, 99) is ds
    with pytest.raises(InputError):
        sample_queries(ds, 0)


def test_mixed_keeps_each_corpus_and_labels_domains(tmp_path: Path) -> None:
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "scifact")
    write_cranfield(tmp_path / "cranfield")
    mixed = load_dataset("mixed", tmp_path)
    assert isinstance(mixed, MixedDataset)
    assert [p.name for p in mixed.parts] == ["squad", "scifact", "cranfield"]
    assert mixed.domains == ["squad"] * 5 + ["scifact"] * 2 + ["cranfield"] * 2  # scifact: its test split
    assert mixed.query_ids[5] == "scifact:q1" and len(set(mixed.query_ids)) == 9
    assert [len(p.documents) for p in parts_of(mixed)] == [3, 4, 2]
    assert parts_of(mixed.parts[0]) == (mixed.parts[0],)
    capped = load_mixed(tmp_path, parts=["squad", "scifact"], max_queries=2)
    assert [len(p.query_ids) for p in capped.parts] == [2, 2]


def test_mixed_parts_from_any_folder_are_named_by_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_squad(tmp_path / "root" / "squad")
    write_squad(tmp_path / "x" / "wiki")
    write_beir(tmp_path / "data" / "nfcorpus")
    write_cranfield(tmp_path / "root" / "cranfield")
    parts = [f"squad={tmp_path / 'x' / 'wiki'}", f"nf = {tmp_path / 'data' / 'nfcorpus'}", "cranfield"]
    mixed = load_dataset("mixed", tmp_path / "root", parts=parts)
    assert isinstance(mixed, MixedDataset)
    assert [p.name for p in mixed.parts] == ["squad", "nf", "cranfield"]  # the given names are the domains
    assert mixed.domains == ["squad"] * 5 + ["nf"] * 2 + ["cranfield"] * 2
    assert mixed.parts[0].documents == load_squad(tmp_path / "x" / "wiki").documents  # squad=path: SQuAD's loader
    assert mixed.parts[1].meta["splits"] == "test"  # any other name=path: a BEIR folder, default split
    assert mixed.query_ids[5] == "nf:q1"
    # a bare name with no root falls back to that dataset's own path
    monkeypatch.delenv("BANDITROUTE_DATA", raising=False)
    monkeypatch.setenv("BANDITROUTE_DATA_CRANFIELD", str(tmp_path / "root" / "cranfield"))
    assert load_dataset("mixed", parts=parts).domains == mixed.domains
    # the domain feature one-hots the given names
    arm = OverlapRetriever("overlap")
    table = build_reward_table(mixed, [arm], "ndcg", 3, features=["domain"])
    assert table.metadata["context"]["features"] == ["domain_cranfield", "domain_nf", "domain_squad"]
    assert table.groups == tuple(mixed.domains) and list(table.metadata["domains"]) == ["squad", "nf", "cranfield"]
    np.testing.assert_array_equal(table.contexts[:, 1] > 0, np.array(mixed.domains) == "nf")


def test_mixed_split_applies_to_beir_parts_and_is_noted_elsewhere(tmp_path: Path) -> None:
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "scifact")
    write_beir(tmp_path / "other")
    mixed = load_mixed(tmp_path, parts=["squad", "scifact", f"nf={tmp_path / 'other'}"], splits=["train"])
    squad, scifact, nf = mixed.parts
    assert scifact.query_ids == nf.query_ids == ["q4"] and nf.meta["splits"] == "train"
    assert len(squad.query_ids) == 5 and squad.meta["splits_ignored"] == "train" and "splits" not in squad.meta
    assert describe(squad) == "squad: 5 queries, 3 documents; has no splits, so split train does not apply: used whole"
    with pytest.raises(InputError, match=r"scifact/qrels: no split dev \(available: \['test', 'train'\]\)"):
        load_mixed(tmp_path, parts=["squad", "scifact"], splits=["dev"])


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (["squad"], r"mixed needs at least two parts, got 1: \['squad'\]"),
        (
            ["squad", "scifact", "nfcorpus"],  # three parts, one not built in: named, with the fix
            r"mixed part 'nfcorpus' is not a built-in dataset \(squad, scifact, beir, cranfield, esci\); "
            r"give its BEIR-layout folder as nfcorpus=/path/to/nfcorpus",
        ),
        (["squad", "SciFact"], r"mixed part 'SciFact' is not a built-in dataset"),
        (["squad", "a=/x", "a=/y"], r"distinct names.*\['squad', 'a', 'a'\]"),
        (["squad", "nf="], r"mixed part 'nf=' has no path after '='"),
        (["squad", "=/data/nf"], r"mixed part '=/data/nf': the name must be letters"),
        (["squad", "a:b=/x"], r"mixed part 'a:b=/x': the name must be letters"),
    ],
)
def test_mixed_bad_parts_say_exactly_what_is_wrong(tmp_path: Path, parts: list[str], message: str) -> None:
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "scifact")
    with pytest.raises(InputError, match=message):
        load_mixed(tmp_path, parts=parts)
    with pytest.raises(InputError, match="bad option for dataset 'mixed'"):
        load_dataset("mixed", tmp_path, locale="us")


def test_mixed_real_data() -> None:
    mixed = load_mixed(needs(""), max_queries=100)
    assert [(p.name, len(p.query_ids), len(p.documents)) for p in mixed.parts] == [
        ("squad", 100, 2_067),
        ("scifact", 100, 5_183),
        ("cranfield", 100, 1_398),
    ]
