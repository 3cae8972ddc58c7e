"""Smoothed sentence BLEU-4 averaged over a corpus, as CodeXGLUE code-to-text computes it.

This reimplements CodeXGLUE's `evaluator/bleu.py` (used unchanged by CodeT5 as `smooth_bleu.py`;
originally MOSES `bleu.py` by hieuhoang1972) from its definition:

1. `computeMaps`: each hypothesis and reference is stripped, lower-cased and re-spaced by
   `splitPuncts` (tokens are runs of `\\w` or single non-space, non-word characters).
2. `normalize` (NIST mteval-v11a): drop `<skipped>`, join hyphenated line ends, newlines → spaces,
   unescape XML entities, lower-case, split punctuation with four regexes, split on whitespace.
3. Per segment: clipped n-gram matches for n = 1..4 against the max count over references; the
   effective reference length is the *shortest* reference.
4. `score_cooked` with smooth=1 ("add-one" for n >= 2 only, Lin & Och 2004):
   log BLEU = 1/4 * sum_n [log(m_n + s_n + tiny) - log(g_n + s_n + tiny)], s_1 = 0, s_n = 1 (n>1),
   tiny = sys.float_info.min; brevity = min(0, 1 - (r + 1) / (h + 1));
   BLEU = exp(log BLEU + brevity).
5. `bleuFromMaps`: the corpus score is the mean sentence BLEU × 100.

Quirk kept on purpose: an empty hypothesis scores exp(-r) rather than 0 (all logs cancel).
The script reads "id\\tsentence" lines, so text is assumed to hold no tabs or newlines; pass
single-line strings (CodeT5 writes `pred.strip()` and the docstring tokens joined by spaces).
"""

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter
from collections.abc import Sequence

_TINY = sys.float_info.min
_NORMALIZE1 = [
    (re.compile("<skipped>"), ""),
    (re.compile(r"-\n"), ""),
    (re.compile(r"\n"), " "),
]
_NORMALIZE2 = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation (not apostrophe)
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash preceded by a digit
]
_SPLIT_PUNCTS = re.compile(r"[\w]+|[^\s\w]")


def split_puncts(line: str) -> str:
    """CodeXGLUE's `splitPuncts`: word runs and single punctuation marks, joined by spaces."""
    return " ".join(_SPLIT_PUNCTS.findall(line))


def normalize(text: str) -> list[str]:
    """NIST mteval-v11a tokenization as in the script (lower-cased)."""
    for pattern, replacement in _NORMALIZE1:
        text = pattern.sub(replacement, text)
    text = xml.sax.saxutils.unescape(text, {"&quot;": '"'})
    text = f" {text} ".lower()
    for pattern, replacement in _NORMALIZE2:
        text = pattern.sub(replacement, text)
    return text.split()


def _ngrams(words: list[str], n: int = 4) -> Counter:
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


def _prepare(text: str) -> str:
    # computeMaps: strip, lower-case, splitPuncts.
    return split_puncts(text.strip().lower())


def sentence_bleu(references: Sequence[str], hypothesis: str, n: int = 4) -> float:
    """Smoothed BLEU (in [0, 1]) of one hypothesis against its references, after computeMaps.

    Args:
        references: one or more reference strings.
        hypothesis: the system output.
        n: max n-gram order (4 for BLEU-4).

    Raises:
        ValueError: no references.
    """
    if not references:
        raise ValueError("sentence_bleu needs at least one reference")
    refs = [normalize(_prepare(r)) for r in references]
    hyp = normalize(_prepare(hypothesis))
    max_counts: Counter = Counter()
    for ref in refs:
        for gram, count in _ngrams(ref, n).items():
            max_counts[gram] = max(max_counts[gram], count)
    correct = [0] * n
    for gram, count in _ngrams(hyp, n).items():
        correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
    guess = [max(len(hyp) - k + 1, 0) for k in range(1, n + 1)]
    log_bleu = 0.0
    for k in range(n):
        smooth = 1 if k > 0 else 0
        log_bleu += math.log(correct[k] + smooth + _TINY) - math.log(guess[k] + smooth + _TINY)
    log_bleu /= n
    ref_len = min(len(r) for r in refs)
    brevity = min(0.0, 1.0 - (ref_len + 1) / (len(hyp) + 1))
    return math.exp(log_bleu + brevity)


def smoothed_bleu(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str]) -> float:
    """Corpus score of CodeXGLUE code-to-text: mean smoothed sentence BLEU-4 × 100.

    Args:
        references: per example a reference string or a list of reference strings.
        hypotheses: per example the system output.

    Returns:
        BLEU in [0, 100] (CodeT5 reports it rounded to 2 decimals).

    Raises:
        ValueError: lengths differ or the corpus is empty.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise ValueError("smoothed_bleu needs at least one example")
    total = 0.0
    for refs, hyp in zip(references, hypotheses, strict=True):
        total += sentence_bleu([refs] if isinstance(refs, str) else list(refs), hyp)
    return total * 100.0 / len(hypotheses)
