"""Set-up for the data tests: a session cache dir, a small stdlib corpus, the released BPE.

* The corpus cache is a fresh temporary directory and the default tokenizer the released CodeT5
  BPE from ../shared (the trained fallback is tested separately). Both are set when this file is
  imported, before any test imports `tasks`; they are harmless to other test directories.
* The stdlib corpus is capped at `STDLIB_FILES` files (sorted order, so always the same files)
  only while a module of this directory runs (`_small_stdlib`), so a slow end-to-end test
  elsewhere in the same session still sees the full stdlib.
"""

import os
import pathlib
import sys
import sysconfig
import tempfile

import pytest
from testlib import GO_SOURCE, JAVA_SOURCE, PY_SOURCE, SAMPLE_MODULES, STDLIB_FILES

_SHARED = pathlib.Path(
    os.environ.get("CODET5P_SHARED", pathlib.Path(__file__).resolve().parents[2].parent / "shared")
)
os.environ["CODET5P_CACHE_DIR"] = tempfile.mkdtemp(prefix="codet5p-tasks-test-")
os.environ["CODET5P_TOKENIZER_DIR"] = str(_SHARED / "reference" / "tokenizers" / "codet5")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="module", autouse=True)
def _small_stdlib():
    """Caps the registered `stdlib` tasks at `STDLIB_FILES` files for this directory's tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CODET5P_STDLIB_MAX_FILES", str(STDLIB_FILES))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def stdlib_samples() -> list[str]:
    """Texts of `SAMPLE_MODULES` from the running interpreter's standard library."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    texts = [(root / m).read_text(encoding="utf-8") for m in SAMPLE_MODULES]
    assert len(texts) == len(SAMPLE_MODULES), sys.version
    return texts


@pytest.fixture(scope="session")
def codet5_vocab(codet5_tokenizer_dir):
    from tasks.vocabularies import CodeT5Vocabulary

    return CodeT5Vocabulary(codet5_tokenizer_dir)


@pytest.fixture(scope="session")
def stdlib_spec():
    from tasks.corpus_cache import CorpusSpec

    # Same fingerprint (cache) as the registered tasks under `_small_stdlib`.
    return CorpusSpec(name="stdlib", kind="stdlib", max_files=STDLIB_FILES)


@pytest.fixture(scope="session")
def stdlib_file_tokens(stdlib_spec, codet5_vocab):
    """Token ids of the size-filtered stdlib train files, in corpus order (numpy arrays)."""
    from tasks import chunking
    from tasks.data_sources import PreparedCorpusSource

    ds = PreparedCorpusSource(stdlib_spec, "code").get_dataset("train", shuffle=False)
    ds = chunking.tokenize_and_filter(ds, codet5_vocab)
    return [ex["tokens"] for ex in ds.as_numpy_iterator()]


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory) -> pathlib.Path:
    """A small corpus directory with good files in four languages and every kind of bad file.

    Expected reader outcome: 4 usable files (a.py, lib/main.go, lib/A.java, web/app.js), one
    whitespace-only duplicate (dup.py), and skips: 1 unknown_language (notes.txt),
    1 undecodable (latin1.py), 1 empty (empty.rb), 1 binary (blob.cpp), 1 unreadable
    (dangling symlink broken.c).
    """
    root = tmp_path_factory.mktemp("tree")
    (root / "lib").mkdir()
    (root / "web").mkdir()
    (root / "a.py").write_text(PY_SOURCE)
    (root / "dup.py").write_text(PY_SOURCE.replace("    ", "\t") + "\n\n")
    (root / "lib" / "main.go").write_text(GO_SOURCE)
    (root / "lib" / "A.java").write_text(JAVA_SOURCE)
    (root / "web" / "app.js").write_text("function f(a, b) {\n  return a * b;\n}\n")
    (root / "notes.txt").write_text("not code\n")
    (root / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (root / "empty.rb").write_text("  \n")
    (root / "blob.cpp").write_bytes(b"int x;\x00\x01\x02")
    os.symlink(root / "does-not-exist.c", root / "broken.c")
    return root
