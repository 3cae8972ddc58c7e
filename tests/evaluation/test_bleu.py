"""CodeXGLUE smoothed BLEU-4 against values derived by hand from the script's definition.

For each case the comment gives the clipped n-gram matches m_n / guesses g_n, the shortest
reference length r and hypothesis length h; the score is
exp(1/4 * [log(m1/g1) + sum_{n>1} log((m_n + 1)/(g_n + 1))] + min(0, 1 - (r + 1)/(h + 1))).
"""

import math
import sys

import pytest

from codet5p_jax.evaluation import bleu


def test_identical_sentence_scores_100():
    assert bleu.smoothed_bleu(
        ["Returns the sum of a and b."], ["returns the sum of a and b ."]
    ) == (pytest.approx(100.0, abs=1e-12))


def test_hand_computed_missing_word():
    # hyp "the cat sat on mat" vs ref "the cat sat on the mat": m/g = 5/5, 3/4, 2/3, 1/2;
    # smoothed: 1, 4/5, 3/4, 2/3 -> product 2/5; r=6, h=5 -> brevity 1 - 7/6.
    expected = math.exp(math.log(2 / 5) / 4 + (1 - 7 / 6))
    got = bleu.sentence_bleu(["the cat sat on the mat"], "the cat sat on mat")
    assert got == pytest.approx(expected, rel=1e-12)


def test_case_and_punctuation_are_normalised():
    # "Returns the value." -> returns the value . (h=4); ref "returns the VALUE" (r=3).
    # m/g = 3/4, 2/3, 1/2, 0/1 -> 3/4 * 3/4 * 2/3 * 1/2; brevity min(0, 1 - 4/5) = 0.
    expected = (3 / 4 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    got = bleu.sentence_bleu(["returns the VALUE"], "Returns the value.")
    assert got == pytest.approx(expected, rel=1e-12)


def test_empty_hypothesis_quirk():
    # All logs cancel (0 matches of 0 guesses); only the brevity term 1 - (3 + 1)/1 = -3 is left.
    assert bleu.sentence_bleu(["a b c"], "") == pytest.approx(math.exp(-3), rel=1e-12)


def test_no_unigram_match_is_tiny_not_zero():
    # m1 = 0 of g1 = 2 contributes log(float_info.min) - log(2); bigrams (0 + 1)/(1 + 1);
    # tri/4-grams have no guesses: (0 + 1)/(0 + 1). r = h = 2 -> no brevity penalty.
    expected = math.exp((math.log(sys.float_info.min) - math.log(2) + math.log(1 / 2)) / 4)
    assert bleu.sentence_bleu(["a b"], "x y") == pytest.approx(expected, rel=1e-9)


def test_multiple_references_use_max_counts_and_shortest_length():
    # Every n-gram of "a b c d" is in the first reference; the shortest reference (3 tokens)
    # sets r, so there is no brevity penalty. With the long reference alone r=6 -> 1 - 7/5.
    assert bleu.sentence_bleu(["a b c d e f", "a b x"], "a b c d") == pytest.approx(1.0)
    assert bleu.sentence_bleu(["a b c d e f"], "a b c d") == pytest.approx(math.exp(-0.4))


def test_corpus_score_is_mean_sentence_score_times_100():
    refs = ["the cat sat on the mat", ["a b c d e f", "a b x"]]
    hyps = ["the cat sat on mat", "a b c d"]
    first = math.exp(math.log(2 / 5) / 4 + (1 - 7 / 6))
    assert bleu.smoothed_bleu(refs, hyps) == pytest.approx(100 * (first + 1.0) / 2, rel=1e-12)


def test_split_puncts_and_normalize():
    assert bleu.split_puncts("self.x=f(a,b)") == "self . x = f ( a , b )"
    assert bleu.normalize("A-\nB\nC") == ["ab", "c"]


def test_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        bleu.smoothed_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        bleu.smoothed_bleu([], [])
