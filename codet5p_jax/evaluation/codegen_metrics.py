"""Text-to-code generation metrics: exact match and corpus BLEU-4 (CodeXGLUE text-to-code).

* `exact_match`: the prediction's whitespace-split tokens equal the reference's (CodeXGLUE
  text-to-code `evaluator.py`: `pred.split() == gold.split()`), ×100.
* `corpus_bleu`: BLEU-4 over whitespace tokens as CodeXGLUE text-to-code computes it
  (`evaluator/bleu.py`, the tensorflow/nmt `compute_bleu`): clipped n-gram counts summed over
  the corpus, geometric mean of the four precisions without smoothing (0 when any order has no
  match), brevity penalty `exp(1 - r/c)` when the candidate corpus is shorter, ×100.

CodeBLEU is not computed: the maintained `codebleu` package (0.7.0) pins `tree-sitter<0.23`,
which would downgrade the project's `tree-sitter` 0.26 used by the nine-language pair extractor.
"""

import collections
import math
from collections.abc import Sequence


def exact_match(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Percentage of predictions whose whitespace tokens equal the reference's."""
    _check(references, predictions)
    hits = sum(p.split() == r.split() for r, p in zip(references, predictions, strict=True))
    return 100.0 * hits / len(references)


def _ngrams(tokens: list[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(references: Sequence[str], predictions: Sequence[str], max_order: int = 4):
    """Corpus BLEU-`max_order` ×100 of whitespace-tokenised predictions (one reference each)."""
    _check(references, predictions)
    matches, possible = [0] * max_order, [0] * max_order
    ref_len = hyp_len = 0
    for ref, hyp in zip(references, predictions, strict=True):
        r, h = ref.split(), hyp.split()
        ref_len, hyp_len = ref_len + len(r), hyp_len + len(h)
        for n in range(1, max_order + 1):
            overlap = _ngrams(h, n) & _ngrams(r, n)
            matches[n - 1] += sum(overlap.values())
            possible[n - 1] += max(len(h) - n + 1, 0)
    if min(possible) == 0 or min(matches) == 0:
        return 0.0
    log_mean = sum(math.log(m / p) for m, p in zip(matches, possible, strict=True)) / max_order
    ratio = hyp_len / ref_len
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return 100.0 * brevity * math.exp(log_mean)


def _check(references, predictions) -> None:
    if len(references) != len(predictions) or not references:
        raise ValueError(
            f"need as many predictions as references (> 0), got {len(predictions)} and "
            f"{len(references)}"
        )
