"""Embeddings of texts or code with an embedding-capable checkpoint (`codet5p embed`'s library)."""

from collections.abc import Sequence

import numpy as np

from codet5p_jax.evaluation import retrieval


def embed_texts(
    pretrained, texts: Sequence[str], *, max_length: int, batch_size: int = 64, vocabulary=None
) -> np.ndarray:
    """`[N, E]` float32 unit vectors of `texts` with a `Pretrained` embedding/bimodal model.

    Args:
      pretrained: A `codet5p_jax.pretrained.Pretrained`.
      texts: Strings to embed.
      max_length: Token length including `<s>` and `</s>`.
      batch_size: Rows per jitted call (the last batch is padded, then dropped).
      vocabulary: Anything with `encode(str) -> list[int]`; default the checkpoint's tokenizer
        files, else the project's default CodeT5 tokenizer (`tasks.vocabularies`).
    """
    if not pretrained.config.embed_dim:
        raise ValueError(f"A {pretrained.config.kind!r} model has no embedding head.")
    if vocabulary is None:
        from tasks.vocabularies import CodeT5Vocabulary

        vocabulary = CodeT5Vocabulary(pretrained.tokenizer_dir)
    ids = retrieval.to_token_ids(texts, vocabulary.encode, max_length)
    return retrieval.embed_in_batches(pretrained.embed, ids, batch_size)
