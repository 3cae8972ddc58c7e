"""Export the encoder + projection of a stage-2 model as a `codet5p-110m-embedding`-style model.

The released 110M embedding model is "an encoder of CodeT5+ 220M ... pretrained from two stages"
plus its projection, sharing weights with `codet5p-220m-bimodal` (FACTS §3.2). So any bimodal
checkpoint (or any T5 model with an `embedding_proj`) yields an embedding model of its own size
by keeping `token_embedder`, `encoder` and `embedding_proj` and dropping the decoder, the
matching head and training-only leaves (the stage-2 learned temperature).

`codet5p export-embedding SRC DST` loads, applies `embedding_from_bimodal` and saves.
"""

from codet5p_jax.config import T5Config
from codet5p_jax.convert.mapping import ConversionError

EMBEDDING_SUBTREES = ("token_embedder", "encoder", "embedding_proj")


def embedding_from_bimodal(cfg: T5Config, params) -> tuple[T5Config, dict]:
    """`(cfg, params)` of a bimodal model -> `(cfg, params)` of the matching embedding model.

    Raises:
      ConversionError: The source has no projection head (nothing to export).
    """
    missing = [k for k in EMBEDDING_SUBTREES if k not in params]
    if not cfg.embed_dim or missing:
        raise ConversionError(
            f"Cannot export an embedding model from a {cfg.kind!r} model without "
            f"{missing or 'embed_dim'}: train it with the stage-2 objective first."
        )
    emb_cfg = cfg.replace(
        kind="embedding",
        num_decoder_layers=0,
        name=cfg.name.replace("bimodal", "embedding") if "bimodal" in cfg.name else cfg.name,
    )
    return emb_cfg, {k: params[k] for k in EMBEDDING_SUBTREES}
