"""Stage-2 (text, code) pairs from source files in the nine CodeT5+ languages, with tree-sitter.

Paper §4.1: stage 2 trains on functions paired with their docstrings (CodeSearchNet style). The
grammars are the compiled ones of `tree-sitter-language-pack` (PyPI, no network at run time).
For each function (`FUNCTION_TYPES`) the text is its documentation:

* Python: the docstring (first statement of the body; the string literal is evaluated with
  `ast.literal_eval` and cleaned with `inspect.cleandoc`, as `ast.get_docstring`); the code is
  the function with that statement removed, dedented (as `corpus_sources.python_function_pairs`);
* the eight others: the comment block directly above the function (or above its wrapper:
  `export`, `template<...>`, decorators), ending on the line before it and starting its own
  line; consecutive line comments (`//`, `///`, `#`) are joined. Java, JavaScript and PHP take
  only `/** ... */` doc comments (Javadoc / JSDoc / PHPDoc), C# `///` XML doc lines or
  `/** */`; Go, Ruby, C and C++ take any comment (their conventions use plain ones). Comment
  markers, leading `*`, XML tags and everything from the first `@tag` line are removed. The code
  is the function's source (from the start of its first line), dedented.

The filters of the Python path apply to every language: the text is the first paragraph
(`corpus_sources.first_paragraph`) and needs >= 3 words; the function needs a body with code
besides the docstring; a docstring sharing a line with code is skipped. Every skipped function is
counted by reason in `counts` (`no_doc`, `short_doc`, `no_body`, `doc_shares_line`,
`parse_error`), and `functions_<lang>` counts the candidates seen.
"""

import ast
import functools
import inspect
import re
import textwrap
from collections import Counter
from collections.abc import Iterator

from tasks.corpus_sources import first_paragraph

# tree-sitter-language-pack names of the nine languages (corpus_sources' names as keys).
GRAMMARS = {
    "python": "python",
    "java": "java",
    "javascript": "javascript",
    "go": "go",
    "php": "php",
    "ruby": "ruby",
    "c": "c",
    "cpp": "cpp",
    "c_sharp": "csharp",
}
FUNCTION_TYPES = {
    "python": {"function_definition"},
    "java": {"method_declaration", "constructor_declaration"},
    "javascript": {"function_declaration", "generator_function_declaration", "method_definition"},
    "go": {"function_declaration", "method_declaration"},
    "php": {"function_definition", "method_declaration"},
    "ruby": {"method", "singleton_method"},
    "c": {"function_definition"},
    "cpp": {"function_definition"},
    "c_sharp": {"method_declaration", "constructor_declaration", "local_function_statement"},
}
# Nodes that wrap a function and carry its doc comment in front of them.
_WRAPPERS = {"decorated_definition", "export_statement", "template_declaration"}
# JS `const f = function () {...}` / arrow functions: the declaration is the documented node.
_JS_VALUE_FUNCTIONS = {"function_expression", "arrow_function", "generator_function", "function"}
_DOC_BLOCK_ONLY = {"java", "javascript", "php"}  # /** ... */ only
_COMMENT_MARKERS = re.compile(r"^\s*(/\*\*?!?|\*/|\*|///?!?|#)\s?")
_TAG_LINE = re.compile(r"\s*@[A-Za-z]+(\s|$)")  # not `@logger.info` in running text
_XML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
MIN_WORDS = 3  # corpus_sources.python_function_pairs' filter


@functools.cache
def parser(language: str):
    """The tree-sitter parser of one of the nine languages (`GRAMMARS` keys)."""
    from tree_sitter_language_pack import get_parser

    if language not in GRAMMARS:
        raise ValueError(
            f"no grammar for language {language!r}; expected one of {sorted(GRAMMARS)}"
        )
    return get_parser(GRAMMARS[language])


def _is_comment(node) -> bool:
    return node is not None and "comment" in node.type


def clean_comment(raw: str) -> str:
    """Comment text without markers, leading `*`, XML tags, or anything from the first `@tag`."""
    lines = []
    for line in raw.replace("*/", "\n").splitlines():
        line = _COMMENT_MARKERS.sub("", line, count=1)
        line = _COMMENT_MARKERS.sub("", line, count=1) if line.lstrip().startswith("*") else line
        if _TAG_LINE.match(line):  # @param / @return ... (Javadoc, JSDoc, PHPDoc, YARD)
            break
        lines.append(_XML_TAG.sub(" ", line).rstrip())
    return "\n".join(lines).strip()


def _doc_comment(anchor, language: str) -> tuple[str | None, str | None]:
    """`(text, skip reason)` of the comment block directly above `anchor`."""
    node = anchor.prev_sibling
    # A first member may sit in a body node that starts with it (Ruby `body_statement`), with
    # the comment before that body: look in front of the body then.
    outer = anchor
    while node is None and outer.parent is not None and outer.parent.start_byte == outer.start_byte:
        outer = outer.parent
        node = outer.prev_sibling
    if not _is_comment(node) or node.end_point.row != anchor.start_point.row - 1:
        return None, "no_doc"
    block = [node]
    text = node.text.decode("utf-8", "replace")
    if not text.startswith("/*"):  # line comments: gather the adjacent ones above
        while _is_comment(node.prev_sibling) and (
            node.prev_sibling.end_point.row == node.start_point.row - 1
            and not node.prev_sibling.text.startswith(b"/*")
        ):
            node = node.prev_sibling
            block.insert(0, node)
    first = block[0]
    before = first.prev_sibling
    if before is not None and before.end_point.row == first.start_point.row:
        return None, "doc_shares_line"
    raw = "\n".join(n.text.decode("utf-8", "replace") for n in block)
    if language in _DOC_BLOCK_ONLY and not raw.startswith("/**"):
        return None, "no_doc"
    if language == "c_sharp" and not (raw.startswith("///") or raw.startswith("/**")):
        return None, "no_doc"
    return clean_comment(raw), None


def _source_from_line_start(source: bytes, node) -> str:
    start = source.rfind(b"\n", 0, node.start_byte) + 1
    return textwrap.dedent(source[start : node.end_byte].decode("utf-8", "replace"))


def _last_code_row(node) -> int:
    """Row of the last non-comment token under `node` (tree-sitter puts trailing comments inside
    a block; `ast`'s `end_lineno` ends at the last statement)."""
    last, stack = node.start_point.row, [node]
    while stack:
        n = stack.pop()
        if _is_comment(n):
            continue
        if n.child_count == 0:
            last = max(last, n.end_point.row)
        stack.extend(n.children)
    return last


def _python_pair(node, anchor, source: bytes) -> tuple[str | None, str | None, str | None]:
    """`(docstring, code, skip reason)` of a Python function, as the `ast` path."""
    body = node.child_by_field_name("body")
    statements = [c for c in (body.named_children if body else []) if not _is_comment(c)]
    first = statements[0] if statements else None
    string = first.named_children[0] if first is not None and first.type == "expression_statement" \
        and first.named_child_count == 1 else first  # fmt: skip
    if string is None or string.type not in ("string", "concatenated_string"):
        return None, None, "no_doc"
    try:
        value = ast.literal_eval(string.text.decode("utf-8"))
    except (SyntaxError, ValueError):
        return None, None, "no_doc"
    if not isinstance(value, str) or not value.strip():
        return None, None, "no_doc"
    if len(statements) < 2:
        return None, None, "no_body"
    if first.start_point.row <= node.start_point.row or (
        statements[1].start_point.row <= first.end_point.row
    ):
        return None, None, "doc_shares_line"
    lines = source.decode("utf-8", "replace").splitlines(keepends=True)
    kept = lines[anchor.start_point.row : first.start_point.row]
    kept += lines[first.end_point.row + 1 : _last_code_row(node) + 1]
    return inspect.cleandoc(value), textwrap.dedent("".join(kept)), None


def _has_body(node, language: str) -> bool:
    body = node.child_by_field_name("body")
    if body is None and language == "ruby":  # tree-sitter-ruby: a body_statement child
        body = next((c for c in node.named_children if c.type == "body_statement"), None)
    if body is None:
        return False
    return any(not _is_comment(c) for c in body.named_children)


def _candidates(root, language: str) -> Iterator[tuple[object, object]]:
    """`(function node, anchor)` pairs; the anchor is the node the doc comment precedes."""
    types = FUNCTION_TYPES[language]
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))
        function = None
        if node.type in types:
            function = node
        elif language == "javascript" and node.type in ("lexical_declaration",
                                                          "variable_declaration"):  # fmt: skip
            declarators = [c for c in node.named_children if c.type == "variable_declarator"]
            value = declarators[0].child_by_field_name("value") if len(declarators) == 1 else None
            if value is not None and value.type in _JS_VALUE_FUNCTIONS:
                function = value
        elif language == "javascript" and node.type == "pair":  # `{ name: function () {} }`
            value = node.child_by_field_name("value")
            if value is not None and value.type in _JS_VALUE_FUNCTIONS:
                function = value
        elif language == "javascript" and node.type == "expression_statement":  # `a.b = fn`
            assign = node.named_children[0] if node.named_child_count else None
            value = assign.child_by_field_name("right") if assign is not None and \
                assign.type == "assignment_expression" else None  # fmt: skip
            if value is not None and value.type in _JS_VALUE_FUNCTIONS:
                function = value
        if function is None:
            continue
        anchor = node
        while anchor.parent is not None and anchor.parent.type in _WRAPPERS:
            anchor = anchor.parent
        yield function, anchor


def function_pairs(source: str, path: str, language: str, counts: Counter) -> Iterator[dict]:
    """Yields `{"path", "language", "code", "docstring"}` for each documented function.

    Args:
      source: The file's text.
      path: Its relative path (pairs are named `path:line`).
      language: One of `GRAMMARS` (corpus_sources' names: `c_sharp`, `cpp`, ...).
      counts: Receives the skip reasons (module docstring).
    """
    data = source.encode("utf-8")
    root = parser(language).parse(data).root_node
    for function, anchor in _candidates(root, language):
        counts[f"functions_{language}"] += 1
        if anchor.has_error:
            counts["parse_error"] += 1
            continue
        if language == "python":
            doc, code, reason = _python_pair(function, anchor, data)
        else:
            doc, reason = _doc_comment(anchor, language)
            if reason is None and not _has_body(function, language):
                reason = "no_body"
            code = _source_from_line_start(data, anchor) if reason is None else None
        if reason is not None:
            counts[reason] += 1
            continue
        text = first_paragraph(doc)
        if len(text.split()) < MIN_WORDS:
            counts["short_doc"] += 1
            continue
        yield {
            "path": f"{path}:{function.start_point.row + 1}",
            "language": language,
            "code": code,
            "docstring": text,
        }
