"""A `seqio.Vocabulary` over a Hugging Face `tokenizers` byte-level BPE, usable in tf.data.

The tokenizer files are read lazily (on the first encode/decode), so registering tasks at
`import tasks` costs nothing and the vocabulary object stays cheap to pickle and copy. Inside
tf.data, encoding and decoding run the Rust tokenizer through `tf.numpy_function`, which
holds the GIL only for the Python glue.

Files accepted (`load_bpe_tokenizer`): a directory with `tokenizer.json`, or with a
`vocab.json` + `merges.txt` pair (also the CodeT5 repository's `codet5-vocab.json` +
`codet5-merges.txt`, optionally with an `added_tokens.json`), or explicit vocab/merges files.
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tokenizers
from etils import epath
from tokenizers import decoders, models, pre_tokenizers

# File-name pairs tried in a tokenizer directory, in order.
_VOCAB_MERGES_NAMES = (
    ("vocab.json", "merges.txt"),
    ("codet5-vocab.json", "codet5-merges.txt"),
)


@contextlib.contextmanager
def _local_copy(path: epath.Path):
    """A local temporary copy of a remote tokenizer file or directory (its files only)."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="codet5p_tokenizer_"))
    try:
        if path.is_dir():
            for f in path.iterdir():
                if not f.is_dir():
                    f.copy(epath.Path(tmp / f.name))
            yield tmp
        else:
            path.copy(epath.Path(tmp / path.name))
            yield tmp / path.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_bpe_tokenizer(
    path: str | os.PathLike | None = None,
    *,
    vocab_file: str | os.PathLike | None = None,
    merges_file: str | os.PathLike | None = None,
) -> tokenizers.Tokenizer:
    """Loads a byte-level BPE `tokenizers.Tokenizer` from a directory or vocab + merges files.

    Args:
      path: An HF model/tokenizer directory (`tokenizer.json`, or `vocab.json` + `merges.txt`,
        or `codet5-vocab.json` + `codet5-merges.txt`), or a `tokenizer.json` file.
      vocab_file: A GPT-2-style `vocab.json` (used with `merges_file`, instead of `path`).
      merges_file: The matching `merges.txt`.

    Returns:
      A tokenizer with the GPT-2 byte-level pre-tokenizer (no prefix space) and decoder, plus the
      directory's `added_tokens.json` entries (e.g. CodeGen's whitespace tokens) when present.

    Raises:
      FileNotFoundError: Nothing usable at the given location.
      ValueError: Neither `path` nor both `vocab_file` and `merges_file` were given.
    """
    added: dict[str, int] = {}
    if path is not None and "://" in str(path):
        # `tokenizers` reads local files only: read a gs:// tokenizer through a local copy.
        with _local_copy(epath.Path(path)) as local:
            return load_bpe_tokenizer(local)
    if path is not None:
        path = pathlib.Path(path)
        if path.is_file() and path.suffix == ".json" and path.name != "vocab.json":
            return tokenizers.Tokenizer.from_file(str(path))
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer path {path} is neither a directory nor a file")
        if (path / "tokenizer.json").is_file():
            return tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        for vocab_name, merges_name in _VOCAB_MERGES_NAMES:
            if (path / vocab_name).is_file() and (path / merges_name).is_file():
                vocab_file, merges_file = path / vocab_name, path / merges_name
                break
        else:
            raise FileNotFoundError(
                f"no tokenizer.json, vocab.json + merges.txt or codet5-vocab.json + "
                f"codet5-merges.txt in {path}"
            )
        if (path / "added_tokens.json").is_file():
            added = json.loads((path / "added_tokens.json").read_text())
    if vocab_file is None or merges_file is None:
        raise ValueError("give a tokenizer directory, or both vocab_file and merges_file")
    for f in (vocab_file, merges_file):
        if not pathlib.Path(f).is_file():
            raise FileNotFoundError(f"tokenizer file {f} not found")
    tok = tokenizers.Tokenizer(models.BPE.from_file(str(vocab_file), str(merges_file)))
    # GPT-2 / RoBERTa byte-level BPE: no prefix space (as RobertaTokenizer and CodeGenTokenizer).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    for token, idx in sorted(added.items(), key=lambda kv: kv[1]):
        if tok.token_to_id(token) is None:
            _add_token_at(tok, token, idx)
    return tok


def _add_token_at(tok: tokenizers.Tokenizer, token: str, idx: int, special: bool = False) -> None:
    """Adds `token` and checks that `tokenizers` gave it the id the layout requires."""
    add_tokens_at(tok, [token], idx, special)


def add_tokens_at(
    tok: tokenizers.Tokenizer, tokens: Sequence[str], first_id: int, special: bool = False
) -> None:
    """Appends `tokens` in one call (each call rebuilds the matcher) and checks their ids."""
    added = [tokenizers.AddedToken(t, special=special, normalized=False) for t in tokens]
    if special:
        tok.add_special_tokens(added)
    else:
        tok.add_tokens(added)
    for k, t in enumerate(tokens):
        if tok.token_to_id(t) != first_id + k:
            raise ValueError(f"added token {t!r} got id {tok.token_to_id(t)}, not {first_id + k}")


class BPEVocabulary(seqio.Vocabulary):
    """`seqio.Vocabulary` over a lazily loaded `tokenizers.Tokenizer`.

    Subclasses implement `_load` (read the files) and fix the special ids and the extra tokens
    appended after the BPE vocabulary in `_extend` (called once, right after loading).

    Args:
      extra_ids: Number of T5-style sentinel ids (seqio's `extra_ids`).
      name: Short description used in `repr`, equality and error messages.
    """

    def __init__(self, extra_ids: int, name: str):
        self._name = name
        self._tok: tokenizers.Tokenizer | None = None
        self._lock = threading.Lock()
        super().__init__(extra_ids=extra_ids)

    # --- loading ---------------------------------------------------------------------------
    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        """The underlying `tokenizers.Tokenizer` (loaded and extended on first use)."""
        if self._tok is None:
            with self._lock:
                if self._tok is None:
                    tok = self._load()
                    self._extend(tok)
                    self._tok = tok
        return self._tok

    def _load(self) -> tokenizers.Tokenizer:
        """Reads the tokenizer files."""
        raise NotImplementedError

    def _extend(self, tok: tokenizers.Tokenizer) -> None:
        """Adds the vocabulary's extra tokens; the default adds nothing."""
        del tok

    def __getstate__(self):
        # The Rust tokenizer and the lock are rebuilt after unpickling (seqio may copy vocabs).
        state = dict(self.__dict__)
        state["_tok"], state["_lock"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name})"

    # --- python ----------------------------------------------------------------------------
    def _encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many strings at once (parallel in Rust); no EOS is added."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def _decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) != self.pad_id]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenizes ids up to and including the first EOS, dropping padding.

        Unlike the seqio base class this keeps sentinels and added tokens (they decode to their
        text, as in HF), so a decoded span-corruption input still shows `<extra_id_N>`.
        """
        if isinstance(ids, tf.Tensor):
            ids = ids.numpy()
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self.eos_id is not None and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self._decode(ids)

    # --- tensorflow ------------------------------------------------------------------------
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """Scalar string -> int32 [n]; a rank-1 string tensor -> int32 RaggedTensor [b, None]."""

        def _encode_flat(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            texts = [x.decode("utf-8", errors="replace") for x in strings.reshape(-1)]
            rows = self.encode_batch(texts) if len(texts) > 1 else [self._encode(texts[0])]
            lengths = np.array([len(r) for r in rows], np.int64)
            flat = np.fromiter((i for r in rows for i in r), np.int32, int(lengths.sum()))
            return flat, lengths

        s = tf.convert_to_tensor(s, tf.string)
        flat, lengths = tf.numpy_function(
            _encode_flat, [tf.reshape(s, [-1])], (tf.int32, tf.int64), stateful=False
        )
        flat.set_shape([None])
        lengths.set_shape([None])
        if s.shape.rank == 0:
            return flat
        return tf.RaggedTensor.from_row_lengths(flat, lengths)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def _decode_rows(arr: np.ndarray) -> np.ndarray:
            rows = arr.reshape(-1, arr.shape[-1])
            out = [self._decode(r).encode("utf-8") for r in rows]
            return np.array(out, dtype=object).reshape(arr.shape[:-1])

        out = tf.numpy_function(_decode_rows, [ids], tf.string, stateful=False)
        out.set_shape(ids.shape[:-1])
        return out

    def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """Detokenizes an int tensor (rank >= 1, last axis = tokens) up to the first EOS."""
        ids = tf.convert_to_tensor(ids, tf.int32)
        if ids.shape.rank == 0:
            raise ValueError("decode_tf needs ids of rank >= 1 (last axis = tokens)")
        if self.eos_id is not None:
            after_eos = tf.cumsum(
                tf.cast(tf.equal(ids, self.eos_id), tf.int32), exclusive=True, axis=-1
            )
            ids = tf.where(after_eos > 0, self.pad_id, ids)
            ids = tf.where(tf.equal(ids, self.eos_id), self.pad_id, ids)
        return self._decode_tf(ids)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._name == other._name

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._name))
