"""Retrieval sets: CoSQA's retrieval protocol, label-0 / unlabeled CoSQA files, code bases."""

import json

import numpy as np
import pytest

from codet5p_jax.evaluation import retrieval as R
from codet5p_jax.evaluation import retrieval_sets as S

COSQA = "reference/datasets/code-search/cosqa-retrieval/cosqa-retrieval-dev-500.json"
WEBQUERY = "reference/datasets/code-search/test_webquery.json"
CSN_GO = "reference/datasets/codesearchnet/go/csn_codexglue_hf_dummy.jsonl"


def test_cosqa_retrieval_ranks_500_queries_against_the_6267_code_base(shared_dir):
    rset = S.load_retrieval_set(shared_dir / COSQA)
    records = json.loads((shared_dir / COSQA).read_text())
    base = json.loads((shared_dir / COSQA).with_name("code_idx_map.txt").read_text())
    assert len(rset.queries) == 500 and len(rset.codes) == 6267 == len(base)
    for q in (0, 137, 499):
        assert rset.queries[q] == records[q]["doc"]
        assert base[rset.codes[rset.gold[q]]] == records[q]["retrieval_idx"]
    assert S.load_retrieval_set(shared_dir / COSQA, limit=7).codes == rset.codes


def test_cosqa_label_0_is_never_a_positive(shared_dir, tmp_path):
    records = json.loads((shared_dir / COSQA).read_text())[:4]
    records[1]["label"] = 0
    path = tmp_path / "q.json"
    path.write_text(json.dumps(records))
    base = (shared_dir / COSQA).with_name("code_idx_map.txt")
    rset = S.load_cosqa_retrieval(path, base)
    assert rset.dropped == 1 and len(rset.queries) == 3
    assert records[1]["doc"] not in rset.queries


def test_unlabeled_webquery_file_is_refused(shared_dir):
    with pytest.raises(ValueError, match=r"test_webquery.json\[0\]: .*without 'label'"):
        R.load_pairs(shared_dir / WEBQUERY)


def test_bad_cosqa_inputs_name_the_problem(shared_dir, tmp_path):
    records = json.loads((shared_dir / COSQA).read_text())[:2]
    path = tmp_path / "q.json"
    records[1]["retrieval_idx"] = 99999
    path.write_text(json.dumps(records))
    with pytest.raises(FileNotFoundError, match="code base not found"):
        S.load_retrieval_set(path)  # no code_idx_map.txt beside it
    base = (shared_dir / COSQA).with_name("code_idx_map.txt")
    with pytest.raises(ValueError, match=r"q.json\[1\]: retrieval_idx 99999 outside"):
        S.load_retrieval_set(path, base)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        S.load_retrieval_set(shared_dir / COSQA, limit=0)


def test_unixcoder_code_base_is_matched_by_url(shared_dir, tmp_path):
    rows = [json.loads(x) for x in (shared_dir / CSN_GO).read_text().splitlines()]
    queries, base = tmp_path / "test.jsonl", tmp_path / "codebase.jsonl"
    queries.write_text("\n".join(json.dumps(r) for r in rows[6:]))  # 3 queries
    base_rows = list(reversed(rows))  # 9 codes, another order
    base.write_text("\n".join(json.dumps(r) for r in base_rows))
    rset = S.load_retrieval_set(queries, base)
    assert len(rset.queries) == 3 and len(rset.codes) == 9
    for q, row in enumerate(rows[6:]):
        assert rset.codes[rset.gold[q]] == " ".join(row["code_tokens"])
        assert rset.queries[q] == " ".join(row["docstring_tokens"])
    np.testing.assert_array_equal(rset.gold, [2, 1, 0])
