"""Literal sample sources and sizes shared by the data tests (imported by conftest and tests)."""

STDLIB_FILES = 150  # stdlib corpus cap for the tests (first files in sorted order)

# Real files of this interpreter's stdlib used as tokenizer samples (fixed list: deterministic).
SAMPLE_MODULES = (
    "json/decoder.py",
    "textwrap.py",
    "heapq.py",
    "bisect.py",
    "fnmatch.py",
    "colorsys.py",
    "string.py",
    "shlex.py",
    "difflib.py",
    "calendar.py",
    "glob.py",
    "keyword.py",
)


PY_SOURCE = '''import os


def join_all(parts, sep="/"):
    """Join path parts with a separator.

    Empty parts are skipped.
    """
    out = [p for p in parts if p]
    return sep.join(out)


def one_liner():
    """Only a docstring, no body."""


class Walker:
    def walk(self, root):
        """Walk a directory tree and yield files."""
        for dirpath, _, names in os.walk(root):
            for n in names:
                yield os.path.join(dirpath, n)
'''
GO_SOURCE = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n'
JAVA_SOURCE = "class A {\n  int f(int x) {\n    return x + 1;\n  }\n}\n"
