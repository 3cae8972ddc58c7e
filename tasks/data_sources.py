"""seqio data sources over a prepared (cached TFRecord) corpus, prepared lazily on first read.

* `PreparedCorpusSource`: the text records (`code` or `pairs` stream).
* `TokenizedCorpusSource`: the `code` stream tokenized once (`tasks.token_cache`), record for
  record, so sharding and shuffling are those of the text source.
"""

import seqio
import tensorflow as tf

from tasks import token_cache
from tasks.corpus_cache import SPLITS, CorpusSpec, corpus_files

_FIELDS = {"code": ("code", "language", "path"), "pairs": ("code", "docstring", "language", "path")}


class PreparedCorpusSource(seqio.TFExampleDataSource):
    """Reads one stream (`code` or `pairs`) of a `CorpusSpec`, building its cache if missing.

    Host sharding (`seqio.ShardInfo`) is by TFRecord file when the corpus has at least as many
    shards as hosts (`CorpusSpec.num_shards`), else by record (`Dataset.shard`), which is
    deterministic for a given seed.

    Args:
      spec: The corpus.
      stream: `code` (stage 1) or `pairs` (stage 2, summarization, generation).
    """

    def __init__(self, spec: CorpusSpec, stream: str):
        if stream not in _FIELDS:
            raise ValueError(f"stream {stream!r} not in {tuple(_FIELDS)}")
        self.spec, self.stream = spec, stream
        super().__init__(
            # Placeholder patterns; list_shards() resolves (and prepares) the real files.
            split_to_filepattern={s: f"{spec.name}:{stream}:{s}" for s in SPLITS},
            feature_description={k: tf.io.FixedLenFeature([], tf.string) for k in _FIELDS[stream]},
        )

    def list_shards(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"corpus {self.spec.name!r} has splits {SPLITS}, not {split!r}")
        return corpus_files(self.spec, self.stream, split)

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        files = self.list_shards(split)
        by_record = shard_info is not None and shard_info.num_shards > len(files)
        ds = super().get_dataset(
            split,
            shuffle=shuffle,
            seed=seed,
            shard_info=None if by_record else shard_info,
            sequence_length=sequence_length,
            use_cached=use_cached,
            num_epochs=num_epochs,
        )
        if by_record:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds


class TokenizedCorpusSource(PreparedCorpusSource):
    """The `code` stream of `spec` as token ids: `{"tokens": bytes, "kept": int64}` records.

    `tokens` holds little-endian int32 ids (empty when the size filter drops the file) and
    `kept` is 1 for files of `[min_tokens, max_tokens]` tokens; `chunking.select_tokenized`
    turns them into `{"tokens": int32 [n]}` of the kept files. Every corpus record is present, in
    the text source's shards and order, so `seqio.ShardInfo` splits exactly as before.

    Args:
      spec: The corpus.
      vocabulary: A vocabulary over HF `tokenizers` (`BPEVocabulary`).
      min_tokens: Size filter, lower bound (None = none).
      max_tokens: Upper bound (None = none).
    """

    def __init__(
        self, spec: CorpusSpec, vocabulary, min_tokens: int | None, max_tokens: int | None
    ):
        self.spec, self.stream = spec, "code"
        self.vocabulary, self.min_tokens, self.max_tokens = vocabulary, min_tokens, max_tokens
        seqio.TFExampleDataSource.__init__(
            self,
            split_to_filepattern={s: f"{spec.name}:tokenized:{s}" for s in SPLITS},
            feature_description={
                "tokens": tf.io.FixedLenFeature([], tf.string),
                "kept": tf.io.FixedLenFeature([], tf.int64),
            },
        )

    def list_shards(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"corpus {self.spec.name!r} has splits {SPLITS}, not {split!r}")
        return token_cache.tokenized_files(
            self.spec, self.vocabulary, split, self.min_tokens, self.max_tokens
        )
