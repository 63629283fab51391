"""Dedup: planted duplicates against exact Jaccard ground truth (brute force), the first-occurrence
rule, clusters, the index and the file front end."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

pytest.importorskip("datasketch", reason="near-duplicate dedup needs datasketch: pip install datasketch")

from rlvr.data import DataError, DedupConfig, RowSource, clusters, dedup, dedup_file, dedup_rows
from rlvr.data.index import KeyIndex
from rlvr.data.text import shingles, tokens

VOCAB = [f"w{i}" for i in range(3000)]


def planted(seed: int = 0, n_base: int = 300) -> list[str]:
    """Random 50-word texts, with near copies (1..4 words replaced: Jaccard of 3-gram shingles about
    0.88, 0.78, 0.68, 0.6) and normalised-exact copies planted among them."""
    rng = random.Random(seed)
    base = [[rng.choice(VOCAB) for _ in range(50)] for _ in range(n_base)]
    texts = [" ".join(b) for b in base]
    for b in rng.sample(base, n_base // 2):
        words = list(b)
        for pos in rng.sample(range(len(words)), rng.randint(1, 4)):
            words[pos] = rng.choice(VOCAB)
        texts.append(" ".join(words))
    texts += [t.upper() + " !" for t in rng.sample(texts[:n_base], n_base // 10)]
    rng.shuffle(texts)
    return texts


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def true_duplicates(texts: list[str], ngram: int, low: float) -> dict[int, float]:
    """Row -> its highest exact Jaccard to any earlier row, for rows where that is >= low."""
    sets = [set(shingles(tokens(t), ngram)) for t in texts]
    best: dict[int, float] = {}
    for i, j in itertools.combinations(range(len(texts)), 2):
        s = jaccard(sets[i], sets[j])
        if s >= low:
            best[j] = max(best.get(j, 0.0), s)
    return best


@pytest.mark.parametrize("workers", [1, 2])
def test_recall_and_precision_against_brute_force_jaccard(workers):
    texts = planted()
    config = DedupConfig(threshold=0.7, ngram=3, num_perm=128, chunk_size=100, workers=workers)
    decisions = list(dedup(texts, config))
    dropped = {d.index for d in decisions if not d.keep}
    truth = true_duplicates(texts, 3, 0.0)
    at = {i for i, s in truth.items() if s >= 0.7}
    tp = len(dropped & at)
    recall, precision = tp / len(at), tp / len(dropped)
    # MinHash estimates Jaccard with standard error ~ sqrt(J(1-J)/128) ~ 0.04: pairs near 0.7 may go
    # either way, pairs clear of it may not.
    assert recall >= 0.9 and precision >= 0.9, (recall, precision, len(at), len(dropped))
    clear = {i for i, s in truth.items() if s >= 0.85}
    assert clear <= dropped
    far = {i for i in range(len(texts)) if truth.get(i, 0.0) < 0.5}
    assert not (dropped & far)
    print(f"dedup recall={recall:.3f} precision={precision:.3f} true={len(at)} dropped={len(dropped)}")


def test_workers_do_not_change_the_decisions():
    texts = planted(seed=1, n_base=200)
    one = list(dedup(texts, DedupConfig(workers=1, chunk_size=64)))
    two = list(dedup(texts, DedupConfig(workers=2, chunk_size=64)))
    whole = list(dedup(texts, DedupConfig(workers=1, chunk_size=10_000)))
    assert one == two == whole


def test_first_occurrence_is_kept_and_clusters_have_one_kept_row():
    texts = ["alpha beta gamma delta epsilon", "x y z", "Alpha  beta, gamma delta epsilon!", "x y z", "q r s"]
    for method in ("exact", "minhash"):
        d = list(dedup(texts, DedupConfig(method=method)))
        assert [x.keep for x in d] == [True, True, False, False, True]
        assert (d[2].cluster, d[2].duplicate_of, d[2].similarity) == (0, 0, 1.0)
        assert (d[3].cluster, d[3].duplicate_of) == (1, 1)
        assert all(x.cluster == x.index for x in d if x.keep)


def test_a_chain_joins_the_cluster_of_its_first_row():
    # b is near a (Jaccard 0.92), c near b (0.885) but not near a (0.815): c is dropped as b's
    # duplicate and joins a's cluster (each cluster has one kept row).
    a = [f"t{i}" for i in range(100)]
    b = [*a[:96], "u1", "u2", "u3", "u4"]
    c = [*b[:50], "v1", "v2", "v3", "v4", *b[54:]]
    sets = [set(shingles(x, 3)) for x in (a, b, c)]
    assert [round(jaccard(sets[i], sets[j]), 3) for i, j in ((0, 1), (1, 2), (0, 2))] == [0.922, 0.885, 0.815]
    d = list(dedup([" ".join(a), " ".join(b), " ".join(c)], DedupConfig(threshold=0.85, num_perm=512)))
    assert [x.keep for x in d] == [True, False, False]
    assert d[2].cluster == 0 and d[2].duplicate_of == 1


def test_exact_dedup_ignores_case_spacing_and_prose_punctuation_but_not_operators():
    texts = ["What is 2+3?", "what is 2 + 3", "What is 2-3?", "WHAT IS 2 + 3 ."]
    d = list(dedup(texts, DedupConfig(method="exact")))
    assert [x.keep for x in d] == [True, False, True, False]


def test_short_rows_are_one_shingle_and_match_only_themselves():
    d = list(dedup(["a b", "a b", "a c", ""], DedupConfig(ngram=3)))
    assert [x.keep for x in d] == [True, False, True, True]


def test_bands_and_rows_are_checked():
    assert DedupConfig(threshold=0.8, num_perm=128).lsh_params == (14, 9)
    assert DedupConfig(bands=16, rows=8).lsh_params == (16, 8)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        DedupConfig(bands=20, rows=10, num_perm=128)
    with pytest.raises(ValueError, match="both bands and rows"):
        DedupConfig(bands=4)


def test_key_index_finds_first_insertions_across_merged_runs():
    rng = np.random.default_rng(0)
    index, truth = KeyIndex(), {}
    for step in range(40):
        keys = np.unique(rng.integers(0, 2**63, size=rng.integers(1, 300), dtype=np.uint64))
        found = index.find(keys)
        for key, row in zip(keys.tolist(), found.tolist()):
            assert row == truth.get(key, -1)
        new = found < 0
        rows = np.arange(len(keys)) + step * 1000
        index.add(keys[new], rows[new])
        truth.update({k: r for k, r, n in zip(keys.tolist(), rows.tolist(), new.tolist()) if n})
    assert len(index) == len(truth) and len(index.runs) <= 12


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dedup_file_writes_kept_rows_and_a_report(tmp_path):
    src = _jsonl(
        tmp_path / "in.jsonl", [{"q": t, "i": i} for i, t in enumerate(["a b c d", "A b c d!", "e f g h"])]
    )
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    result = dedup_file(RowSource(src, "q"), out=out, report=report)
    assert [json.loads(line)["i"] for line in out.read_text().splitlines()] == [0, 2]
    rep = json.loads(report.read_text())
    assert (rep["n_rows"], rep["n_kept"], rep["n_dropped"], rep["n_clusters"]) == (3, 2, 1, 1)
    assert rep["clusters"][0]["kept"] == {"row": 0, "loc": f"{src}:1"}
    assert rep["clusters"][0]["dropped"][0]["loc"] == f"{src}:2"
    assert result.n_dropped == 1


def test_dedup_file_on_parquet_and_hf_directories(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"problem": {"text": t}, "n": i} for i, t in enumerate(["x1 x2 x3", "y1 y2 y3", "x1 x2 x3"])]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "in.parquet"))
    ds.save_to_disk(str(tmp_path / "hfdir"))
    for src in (tmp_path / "in.parquet", tmp_path / "hfdir"):
        for out in (tmp_path / f"out-{src.stem}.parquet", tmp_path / f"out-{src.stem}-hf"):
            dedup_file(RowSource(src, "problem.text"), out=out)
            back = (
                datasets.Dataset.from_parquet(str(out)) if out.suffix else datasets.load_from_disk(str(out))
            )
            assert back["n"] == [0, 1]


def test_errors_name_the_line_and_field_and_leave_no_output(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"q": "a"}, {"q": "b"}])
    with src.open("a") as f:
        f.write('{"q": "c"\n{"other": "d"}\n')
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=r"in\.jsonl:3: invalid JSON"):
        dedup_file(RowSource(src, "q"), out=out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    with pytest.raises(DataError, match=r"in\.jsonl:1: field 'question' is missing \(row fields: q\)"):
        dedup_file(RowSource(src, "question"), out=out)
    result = dedup_file(RowSource(src, "q", on_error="skip"), out=out)
    assert (result.n_rows, result.n_skipped) == (
        2,
        2,
    ) and "in.jsonl:4: field 'q' is missing" in result.skipped[1]
    with pytest.raises(DataError, match="does not exist"):
        RowSource(tmp_path / "nope.jsonl", "q")
    with pytest.raises(DataError, match="is the input file"):
        dedup_file(RowSource(src, "q"), out=src)
    with pytest.raises(DataError, match="holds dict, not text"):
        list(RowSource(_jsonl(tmp_path / "n.jsonl", [{"q": {"a": 1}}]), "q"))


def test_dedup_rows_and_clusters_over_dict_rows():
    rows = [{"m": [{"content": t}]} for t in ("a b c", "x y", "A b c.", "a  b c")]
    out = list(dedup_rows(rows, "m.0.content", DedupConfig(method="exact")))
    assert [d.keep for _, d in out] == [True, True, False, False] and out[2][0] is rows[2]
    assert clusters(d for _, d in out) == {0: [0, 2, 3]}
    with pytest.raises(DataError, match="row 1: field 'q' is missing"):
        list(dedup_rows(rows, "q"))
    assert list(dedup([], DedupConfig())) == []
