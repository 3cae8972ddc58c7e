"""Text-to-code generation metrics: exact match, corpus BLEU-4 (CodeXGLUE text-to-code), CodeBLEU.

* `exact_match`: the prediction's whitespace-split tokens equal the reference's (CodeXGLUE
  text-to-code `evaluator.py`: `pred.split() == gold.split()`), ×100.
* `corpus_bleu`: BLEU-4 over whitespace tokens as CodeXGLUE text-to-code computes it
  (`evaluator/bleu.py`, the tensorflow/nmt `compute_bleu`): clipped n-gram counts summed over
  the corpus, geometric mean of the four precisions without smoothing (0 when any order has no
  match), brevity penalty `exp(1 - r/c)` when the candidate corpus is shorter, ×100.

* `codebleu`: CodeBLEU (Ren et al. 2020) from the `codebleu` package (0.7.0, the maintained
  PyPI implementation of CodeXGLUE's evaluator): 0.25 each of BLEU, keyword-weighted BLEU,
  tree-sitter AST subtree match and data-flow match, ×100. Its metadata asks for
  `tree-sitter<0.23`, but its code runs on the project's 0.26 with the per-language grammar
  wheels (its own test suite passes), so it is installed with `--no-deps`
  (`requirements-nodeps.txt`).
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


# CodeSearchNet's PHP functions have no `<?php` tag, and without one tree-sitter-php reads the
# whole function as inline HTML: the AST match is then trivially 1 and no data flow is found.
_PHP_OPEN_TAG = "<?php "
CODEBLEU_INSTALL = "pip install --no-deps -r requirements-nodeps.txt"


def codebleu(references: Sequence[str], predictions: Sequence[str], language: str) -> dict:
    """CodeBLEU ×100 and its four components ×100, by the `codebleu` package.

    Args:
      references: One reference code per prediction.
      predictions: Generated codes.
      language: A `codebleu.AVAILABLE_LANGS` name (python, java, javascript, go, php, ruby, ...).
        PHP codes without an opening tag get `<?php ` prepended (both sides) so they parse as PHP.

    Returns:
      `{"codebleu", "ngram_match", "weighted_ngram_match", "syntax_match", "dataflow_match"}`.
      As in the package, a corpus whose references yield no data flow scores dataflow_match 0
      and that component counts as 1 in the CodeBLEU sum.

    Raises:
      ValueError: Length mismatch, `codebleu` not installed, or a language it does not know.
    """
    _check(references, predictions)
    try:
        import codebleu as codebleu_package
    except ModuleNotFoundError as e:
        raise ValueError(f"CodeBLEU needs the codebleu package: {CODEBLEU_INSTALL}") from e
    known = codebleu_package.AVAILABLE_LANGS
    if language not in known:
        raise ValueError(f"CodeBLEU has no language {language!r}; it knows {known}")
    if language == "php":
        references, predictions = (
            [x if x.lstrip().startswith("<?php") else _PHP_OPEN_TAG + x for x in codes]
            for codes in (references, predictions)
        )
    try:
        got = codebleu_package.calc_codebleu(list(references), list(predictions), lang=language)
    except ImportError as e:  # the grammar wheel of `language` (tree-sitter-<lang>) is missing
        raise ValueError(f"CodeBLEU for {language}: {e}") from e
    return {name.removesuffix("_score"): 100.0 * value for name, value in got.items()}


def _check(references, predictions) -> None:
    if len(references) != len(predictions) or not references:
        raise ValueError(
            f"need as many predictions as references (> 0), got {len(predictions)} and "
            f"{len(references)}"
        )
