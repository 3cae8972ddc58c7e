"""CodeXGLUE line-completion EM / edit similarity vs hand-computed LCS ratios and a DP reference."""

import random

import pytest

from codet5p_jax.evaluation import completion_metrics as cm


def _lcs(a: str, b: str) -> int:
    """Textbook O(len(a) * len(b)) longest common subsequence (the reference)."""
    row = [0] * (len(b) + 1)
    for ch in a:
        prev_diag = 0
        for j, other in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if ch == other else max(row[j], row[j - 1])
    return row[-1]


def test_hand_computed_ratios():
    assert cm.edit_similarity("kitten", "sitting") == 62.0  # LCS "ittn": 200*4/13 = 61.5
    assert cm.edit_similarity("abc", "abd") == 67.0  # 200*2/6 = 66.7
    # 200*1/16 = 12.5; fuzzywuzzy's int(round(x)) rounds half to even -> 12.
    assert cm.edit_similarity("abcdefgh", "aijklmno") == 12.0


def test_equal_and_empty_strings():
    assert cm.edit_similarity("", "") == 100.0
    assert cm.edit_similarity("", "x") == 0.0
    assert cm.edit_similarity("same", "same") == 100.0


def test_unrounded_ratio_equals_lcs_reference():
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("ab c(") for _ in range(rng.randint(1, 30)))
        b = "".join(rng.choice("ab c)") for _ in range(rng.randint(1, 30)))
        expected = 200.0 * _lcs(a, b) / (len(a) + len(b))
        assert cm.edit_similarity(a, b, rounded=False) == pytest.approx(expected, abs=1e-9)


def test_post_process_restores_literals():
    assert cm.post_process("x = <NUM_LIT>") == "x = 0"
    assert cm.post_process('s = "<STR_LIT:hello world>"') == 's = "hello world"'
    assert cm.post_process("c = '<CHAR_LIT>' + <STR_LIT>") == "c = '' + "


def test_completion_scores():
    # "return x" vs "return  x": same tokens (EM) but not the same string: 200*8/17 = 94.1 -> 94.
    scores = cm.completion_scores(["return x ", "foo"], ["return  x", "bar"])
    assert scores == {"exact_match": 50.0, "edit_sim": (94.0 + 0.0) / 2}


def test_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        cm.completion_scores(["a", "b"], ["a"])
