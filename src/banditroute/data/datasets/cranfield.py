"""The Cranfield collection in its original files: 1,400 aeronautics abstracts, 225 queries,
graded judgements.

- ``cran.all.1400``: records ``.I <id>`` followed by fields ``.T`` (title), ``.A`` (authors),
  ``.B`` (bibliography) and ``.W`` (abstract, which repeats the title), each marker on its own
  line. The distributed file is slightly corrupted (e.g. records 240 and 576 hold stray
  ``.A``/``.B``/``.W`` lines inside their abstract); once ``.W`` has begun, every line up to
  the next ``.I`` is abstract text and stray marker lines are dropped. Document text = the
  abstract (the title when the abstract is empty). Records 471 and 995 are empty; they are left
  out of the corpus (1,398 documents) with the one judgement that names them.
- ``cran.qry``: records ``.I <id>`` + ``.W`` text. The ``.I`` numbers are not contiguous; the
  judgements number queries 1..225 in file order, which is the query id used here.
- ``cranqrel``: lines ``query doc grade`` with grade 1 = complete answer, 2 = high relevance,
  3 = useful background, 4 = minimum interest; a few lines hold −1 or 5 (no relevance) and are
  dropped. Grades become gains with higher = more relevant: **gain = 5 − grade** (1→4, 2→3,
  3→2, 4→1), so nDCG rewards placing complete answers first.
"""

from __future__ import annotations

from pathlib import Path

from banditroute.core.validation import InputError
from banditroute.data.datasets.common import Source, build_dataset, numbered_lines
from banditroute.data.interfaces import RetrievalDataset

SOURCE = Source(
    url="http://ir.dcs.gla.ac.uk/resources/test_collections/cran/cran.tar.gz",
    layout="a folder with the original Cranfield files cran.all.1400, cran.qry and cranqrel",
)
FIELDS = (".T", ".A", ".B", ".W")
DROPPED_GRADES = (-1, 5)


def grade_to_gain(grade: int) -> float:
    """Cranfield grade 1 (most relevant) … 4 (least) -> gain 4 … 1; ``DROPPED_GRADES`` -> 0."""
    return 0.0 if grade in DROPPED_GRADES else float(5 - grade)


def load_cranfield(path: str | Path) -> RetrievalDataset:
    """Read ``cran.all.1400``, ``cran.qry`` and ``cranqrel`` from the folder ``path``."""
    root = Path(path)
    files = {name: root / name for name in ("cran.all.1400", "cran.qry", "cranqrel")}
    for file in files.values():
        if not file.is_file():
            raise SOURCE.missing(file)
    records = _read_records(files["cran.all.1400"])
    texts = {rid: (fields[".W"] or fields[".T"]) for rid, fields in records.items()}
    documents = {rid: text for rid, text in texts.items() if text}
    query_records = _read_records(files["cran.qry"])
    # Judgements number queries 1..N in file order, not by their .I ids.
    queries = {str(i): fields[".W"] for i, fields in enumerate(query_records.values(), 1)}
    qrels = _read_qrels(files["cranqrel"], queries, texts)
    return build_dataset("cranfield", queries, documents, qrels, meta={"source": str(root)})


def _read_records(file: Path) -> dict[str, dict[str, str]]:
    """``{.I id: {field marker: text}}``; fields absent from a record are empty strings."""
    records: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    field: str | None = None
    for lineno, line in numbered_lines(file):
        stripped = line.strip()
        if stripped.startswith(".I"):
            rid = stripped[2:].strip()
            if not rid.isdigit():
                raise InputError(f"{file}:{lineno}: malformed record header {line!r} (expected '.I <number>')")
            if rid in records:
                raise InputError(f"{file}:{lineno}: duplicate record id {rid}")
            current = records[rid] = {f: [] for f in FIELDS}
            field = None
        elif stripped in FIELDS:
            if current is None:
                raise InputError(f"{file}:{lineno}: field {stripped} before the first '.I' record")
            if field != ".W":  # inside the abstract, stray markers are corruption: keep reading text
                field = stripped
        elif stripped:
            if current is None or field is None:
                raise InputError(f"{file}:{lineno}: text outside a field (expected '.I', '.T', '.A', '.B' or '.W')")
            current[field].append(stripped)
    if not records:
        raise InputError(f"{file}: no '.I' records")
    return {rid: {f: " ".join(lines) for f, lines in fields.items()} for rid, fields in records.items()}


def _read_qrels(file: Path, queries: dict[str, str], documents: dict[str, str]) -> dict[str, dict[str, float]]:
    """Gains per query from ``file``; ``documents`` maps every record id (empty text included) to its text."""
    qrels: dict[str, dict[str, float]] = {}
    for lineno, line in numbered_lines(file):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not all(p.lstrip("-").isdigit() for p in parts):
            raise InputError(f"{file}:{lineno}: expected 'query doc grade' (three integers), got {line!r}")
        qid, did, grade = parts[0], parts[1], int(parts[2])
        if qid not in queries:
            raise InputError(f"{file}:{lineno}: unknown query {qid} (cran.qry holds queries 1..{len(queries)})")
        if did not in documents:
            raise InputError(f"{file}:{lineno}: unknown document {did} (not in cran.all.1400)")
        if grade not in (1, 2, 3, 4, *DROPPED_GRADES):
            raise InputError(f"{file}:{lineno}: grade {grade} is not one of 1..4 (or -1/5, dropped)")
        gain = grade_to_gain(grade)
        if documents[did]:  # judgements of empty records are dropped with the records
            judged = qrels.setdefault(qid, {})
            judged[did] = max(gain, judged.get(did, gain))
    return qrels
