"""The two CodeT5+ vocabularies as seqio vocabularies, and where the default one comes from.

* `CodeT5Vocabulary` (220M / 770M / bimodal / embedding models): the CodeT5 byte-level BPE
  (32,000 ids; `<pad>` 0, `<s>` 1, `</s>` 2, `<unk>` 3, `<mask>` 4), then 100 T5-style sentinels
  `<extra_id_N>` = 32099 - N, then the stage-2 tokens `[ENC]` 32100, `[TDEC]` 32101, `[CDEC]`
  32102 (CODET5P_FACTS §2.1, §3.4). The paper's `[CLM]` is `<unk>` (3) and `[CLS]` is `<s>` (1).
  A tokenizer with fewer than 32,000 BPE ids (one trained by `codet5p train-tokenizer` on a small
  corpus) is padded with `<reserved_K>` tokens, so the special ids never move.
* `CodeGenVocabulary` (2B / 6B / 16B): the GPT-2 BPE (50,257 ids, `<|endoftext|>` 50256 as bos,
  eos, unk and pad) plus CodeGen's 38 whitespace tokens (50257..50294); the models' embedding
  has 51,200 rows (`model_vocab_size`), ids 50295.. are unused.

Default tokenizer (the rule the bundled tasks follow): the gin binding
`tasks.vocabularies.tokenizer_path.path`, else the environment variable `CODET5P_TOKENIZER_DIR`
(an HF tokenizer directory or the CodeT5 repository's `codet5-vocab.json`/`codet5-merges.txt`
folder), else a CodeT5-recipe BPE trained once on the bundled stdlib corpus and cached under
`$CODET5P_CACHE_DIR/tokenizers/` (see `tasks.tokenizer_training`). The project ships no copy of
the released files.
"""

import logging
import os

import tokenizers
from etils import epath

import gin
from tasks.bpe_vocabulary import BPEVocabulary, _add_token_at, add_tokens_at, load_bpe_tokenizer

CODET5_BPE_SIZE = 32_000
NUM_SENTINELS = 100
STAGE2_TOKENS = ("[ENC]", "[TDEC]", "[CDEC]")
PAD_ID, CLS_ID, EOS_ID, CLM_ID, MASK_ID = 0, 1, 2, 3, 4
ENC_ID, TDEC_ID, CDEC_ID = 32_100, 32_101, 32_102
CODET5_SPECIALS = {"<pad>": PAD_ID, "<s>": CLS_ID, "</s>": EOS_ID, "<unk>": CLM_ID}

CODEGEN_EOS_ID = 50_256
CODEGEN_VOCAB_SIZE = 50_295  # 50,257 GPT-2 ids + 38 whitespace tokens
CODEGEN_MODEL_VOCAB_SIZE = 51_200

ENV_TOKENIZER_DIR = "CODET5P_TOKENIZER_DIR"
log = logging.getLogger(__name__)
_warned_default: list[bool] = []  # non-empty once the fallback warning was logged


def sentinel_id(n: int) -> int:
    """Id of `<extra_id_n>` in the CodeT5+ vocabulary (T5 convention: 32099 - n)."""
    if not 0 <= n < NUM_SENTINELS:
        raise ValueError(f"sentinel index {n} outside [0, {NUM_SENTINELS})")
    return CODET5_BPE_SIZE + NUM_SENTINELS - 1 - n


@gin.configurable
def tokenizer_path(path: str | None = None) -> epath.Path:
    """Resolves the default CodeT5 tokenizer location (gin, then env, then trained fallback).

    Args:
      path: Explicit location (bind with gin `tokenizer_path.path = "..."`).

    Returns:
      A directory `load_bpe_tokenizer` accepts. Without `path` and `CODET5P_TOKENIZER_DIR` this
      is the cached stdlib-trained tokenizer, trained on first use (about a minute on 2 cores).
    """
    path = path or os.environ.get(ENV_TOKENIZER_DIR)
    if path:
        return epath.Path(path)  # gs:// too (read through a local copy, bpe_vocabulary.py)
    from tasks import tokenizer_training  # deferred: training pulls in the corpus builder

    if not _warned_default:  # every vocabulary of every task asks; say it once per run
        _warned_default.append(True)
        log.warning(
            "no tokenizer set: using a CodeT5-recipe BPE trained on the bundled stdlib corpus "
            "(cached under $CODET5P_CACHE_DIR/tokenizers), not the released CodeT5+ tokenizer; "
            "to use another, set %s=DIR or --gin.tokenizer_path.path=\"'DIR'\" (DIR: an HF "
            "tokenizer directory, or one with vocab.json + merges.txt)",
            ENV_TOKENIZER_DIR,
        )
    return tokenizer_training.default_stdlib_tokenizer_dir()


class CodeT5Vocabulary(BPEVocabulary):
    """CodeT5 / CodeT5+ byte-level BPE with sentinels and the stage-2 tokens.

    Args:
      path: Tokenizer directory or `tokenizer.json`; None means the default rule
        (`tokenizer_path()`), resolved on first use.
      vocab_file: Instead of `path`: a GPT-2-style vocab JSON (e.g. `codet5-vocab.json`).
      merges_file: The matching merges file.
      stage2_tokens: Append `[ENC]`, `[TDEC]`, `[CDEC]` (ids 32100-32102).
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        stage2_tokens: bool = True,
    ):
        self.stage2_tokens = stage2_tokens
        self._path, self._files = path, (vocab_file, merges_file)
        if vocab_file is not None:
            name = f"{vocab_file}, {merges_file}"
        else:
            name = str(path) if path is not None else "default"
        if not stage2_tokens:
            name += " (no stage-2 tokens)"
        super().__init__(extra_ids=NUM_SENTINELS, name=name)

    def _load(self) -> tokenizers.Tokenizer:
        vocab_file, merges_file = self._files
        if vocab_file is not None or merges_file is not None:
            return load_bpe_tokenizer(vocab_file=vocab_file, merges_file=merges_file)
        return load_bpe_tokenizer(self._path if self._path is not None else tokenizer_path())

    def _extend(self, tok: tokenizers.Tokenizer) -> None:
        for token, idx in CODET5_SPECIALS.items():
            if tok.token_to_id(token) != idx:
                raise ValueError(
                    f"{self._name}: {token!r} has id {tok.token_to_id(token)}, CodeT5 layout needs "
                    f"{idx} (train with `codet5p train-tokenizer`, which reserves "
                    "<pad> <s> </s> <unk> <mask> first)"
                )
        size = tok.get_vocab_size(with_added_tokens=True)
        if size > CODET5_BPE_SIZE and tok.token_to_id("<extra_id_0>") is None:
            raise ValueError(f"{self._name}: {size} BPE ids, the CodeT5 layout allows 32000")
        # A small trained BPE is padded so sentinel and stage-2 ids stay those of DESIGN.md.
        if size < CODET5_BPE_SIZE:
            reserved = [f"<reserved_{k}>" for k in range(size, CODET5_BPE_SIZE)]
            add_tokens_at(tok, reserved, size, special=True)
        sentinels = [f"<extra_id_{n}>" for n in reversed(range(NUM_SENTINELS))]
        if tok.token_to_id(sentinels[0]) is None:
            add_tokens_at(tok, sentinels, sentinel_id(NUM_SENTINELS - 1), special=True)
        for n in range(NUM_SENTINELS):
            if tok.token_to_id(f"<extra_id_{n}>") != sentinel_id(n):
                raise ValueError(f"{self._name}: <extra_id_{n}> is not at {sentinel_id(n)}")
        if self.stage2_tokens:
            for token, idx in zip(STAGE2_TOKENS, (ENC_ID, TDEC_ID, CDEC_ID), strict=True):
                if tok.token_to_id(token) is None:
                    _add_token_at(tok, token, idx, special=True)
                elif tok.token_to_id(token) != idx:
                    raise ValueError(f"{self._name}: {token} is not at {idx}")

    @property
    def _base_vocab_size(self) -> int:
        return CODET5_BPE_SIZE

    @property
    def vocab_size(self) -> int:
        """32,100 (BPE + sentinels), or 32,103 with the stage-2 tokens."""
        return CODET5_BPE_SIZE + NUM_SENTINELS + (len(STAGE2_TOKENS) if self.stage2_tokens else 0)

    @property
    def bos_id(self) -> int:
        return CLS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int:
        return CLM_ID

    @property
    def clm_id(self) -> int:
        """`[CLM]`, the causal-LM marker (reuses `<unk>`)."""
        return CLM_ID

    @property
    def cls_id(self) -> int:
        """`[CLS]` (reuses `<s>`), first token of stage-2 text and code."""
        return CLS_ID

    def sentinel_id(self, n: int) -> int:
        """Id of `<extra_id_n>`."""
        return sentinel_id(n)


class CodeGenVocabulary(BPEVocabulary):
    """CodeGen GPT-2 BPE (+ whitespace tokens) used by CodeT5+ 2B / 6B / 16B.

    `<|endoftext|>` (50256) is bos, eos, unk and pad, as in HF `CodeGenTokenizer`. Note that seqio
    feature converters pad with 0 (`!`) regardless; models read masks / loss weights.

    Args:
      path: HF tokenizer directory (`tokenizer.json`, or `vocab.json` + `merges.txt` +
        `added_tokens.json`) or a `tokenizer.json` file.
      vocab_file: Instead of `path`: `vocab.json`.
      merges_file: The matching `merges.txt` (then the whitespace tokens are not added).
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
    ):
        if path is None and (vocab_file is None or merges_file is None):
            raise ValueError("CodeGenVocabulary needs a tokenizer path or vocab_file + merges_file")
        self._size: int | None = None
        self._path, self._files = path, (vocab_file, merges_file)
        super().__init__(extra_ids=0, name=str(path or vocab_file))

    def _load(self) -> tokenizers.Tokenizer:
        if self._path is not None:
            return load_bpe_tokenizer(self._path)
        return load_bpe_tokenizer(vocab_file=self._files[0], merges_file=self._files[1])

    def _extend(self, tok: tokenizers.Tokenizer) -> None:
        if tok.token_to_id("<|endoftext|>") != CODEGEN_EOS_ID:
            raise ValueError(f"{self._name}: <|endoftext|> is not {CODEGEN_EOS_ID}; not GPT-2 BPE")
        self._size = tok.get_vocab_size(with_added_tokens=True)

    @property
    def _base_vocab_size(self) -> int:
        if self._size is None:
            _ = self.tokenizer
        return self._size

    @property
    def model_vocab_size(self) -> int:
        """Rows of the CodeGen embedding matrix (padded to a multiple of 1,024)."""
        return CODEGEN_MODEL_VOCAB_SIZE

    @property
    def bos_id(self) -> int:
        return CODEGEN_EOS_ID

    @property
    def eos_id(self) -> int:
        return CODEGEN_EOS_ID

    @property
    def unk_id(self) -> int:
        return CODEGEN_EOS_ID

    @property
    def pad_id(self) -> int:
        return CODEGEN_EOS_ID


def vocabulary_for_dir(path: str | os.PathLike | None):
    """The vocabulary of a checkpoint's tokenizer directory, told apart by its files.

    A tokenizer whose `<|endoftext|>` is 50256 is CodeGen's (CodeT5+ 2B-16B); any other is a
    CodeT5 one. None (a checkpoint without tokenizer files) gives the default
    `CodeT5Vocabulary()`.
    """
    if path is None:
        return CodeT5Vocabulary()
    tok = load_bpe_tokenizer(path)
    if tok.token_to_id("<|endoftext|>") == CODEGEN_EOS_ID:
        return CodeGenVocabulary(path)
    return CodeT5Vocabulary(path)
