"""Exact match and edit similarity for line-level code completion, as CodeXGLUE scores them.

CodeXGLUE `Code-Code/CodeCompletion-line/evaluator/evaluator.py`: the prediction is stripped, both
sides go through `post_process` (literal placeholders such as `<NUM_LIT>` and `<STR_LIT:x>` are
restored), exact match compares whitespace-split tokens, and edit similarity is fuzzywuzzy's
`fuzz.ratio` averaged over examples. fuzzywuzzy's `ratio` is the normalized Indel similarity
(`Levenshtein.ratio`: 2·LCS / (len(a) + len(b)), here computed by rapidfuzz) × 100, rounded to an
integer per pair; two equal strings score 100 (also when both are empty), one empty string 0.
(That is fuzzywuzzy with python-Levenshtein; its difflib fallback can differ slightly.)
"""

import re
from collections.abc import Sequence

from rapidfuzz import fuzz

_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def post_process(code: str) -> str:
    """Restores CodeXGLUE's literal placeholders (`<NUM_LIT>` → 0, `<STR_LIT:x>` → x, ...)."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    for kind, value in _LITERAL.findall(code):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


def edit_similarity(prediction: str, reference: str, *, rounded: bool = True) -> float:
    """fuzzywuzzy `fuzz.ratio`: 100 · 2·LCS / (len(a) + len(b)), rounded like `int(round(x))`."""
    if prediction == reference:
        return 100.0  # fuzzywuzzy's check_for_equivalence runs before the empty-string check
    if not prediction or not reference:
        return 0.0
    ratio = fuzz.ratio(prediction, reference)
    return float(round(ratio)) if rounded else ratio


def exact_match(prediction: str, reference: str) -> bool:
    """Token-level equality after whitespace splitting."""
    return prediction.split() == reference.split()


def completion_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """CodeXGLUE line-completion scores: {"exact_match": %, "edit_sim": mean ratio}.

    Raises:
        ValueError: lengths differ or the inputs are empty.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("completion_scores needs at least one example")
    em = sim = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        pred, ref = post_process(pred.strip()), post_process(ref)
        sim += edit_similarity(pred, ref)
        em += exact_match(pred, ref)
    return {"exact_match": 100.0 * em / len(predictions), "edit_sim": sim / len(predictions)}
