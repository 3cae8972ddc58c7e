"""Config and released presets of the CodeT5+ 2B / 6B / 16B family (`shallow_deep`).

A shallow CodeGen encoder (CodeGen-mono 350M: 20 layers, width 1024) and a deep CodeGen decoder
(CodeGen-mono 2B / 6B / 16B) whose top `num_cross_attention_layers` blocks also attend to the
encoder (paper §3.3; released code: only the last block). Values of the presets come from
../shared/reference/CODET5P_FACTS.md §3.5 (the released `config.json` of codet5p-2b and
instructcodet5p-16b; the 6B decoder is INFERRED there from CodeGen-6B and the paper's 67M).
"""

import dataclasses

import jax
import jax.numpy as jnp

from codet5p_jax import dtypes

# How the cross-attention query is rotated (see docs/shallow_deep.md):
# * "absolute": at its true decoder position, in teacher forcing and in cached decoding alike
#   (what training saw; cached decoding equals teacher forcing);
# * "released": at its index within the current call, as the released code (transformers
#   4.21.3, working cache) does: true positions in teacher forcing and in the prompt prefill,
#   position 0 for every token generated one at a time.
CROSS_QUERY_POSITIONS = ("absolute", "released")
# CodeGen's GPT-2 BPE: <|endoftext|> is bos / eos / pad / unk (FACTS §2.2).
ENDOFTEXT_ID = 50256


@dataclasses.dataclass(frozen=True)
class ShallowDeepConfig:
    """A CodeT5+ encoder-decoder of CodeGen blocks (2B / 6B / 16B / InstructCodeT5+ 16B).

    Attributes:
      name: Preset or checkpoint name.
      vocab_size: Rows of both embeddings and of the LM head (51200, padded GPT-2 BPE).
      encoder_emb_dim: Encoder width (HF encoder `n_embd`).
      encoder_num_heads: Encoder heads (HF encoder `n_head`).
      encoder_mlp_dim: Encoder MLP width (HF `n_inner`, default 4 * width).
      encoder_rotary_dim: Rotary dims per encoder head (HF encoder `rotary_dim`).
      num_encoder_layers: Encoder blocks.
      emb_dim: Decoder width (HF decoder `n_embd`).
      num_heads: Decoder heads; the cross-attention uses the same heads.
      mlp_dim: Decoder MLP width.
      rotary_dim: Rotary dims per decoder head (self- and cross-attention).
      num_decoder_layers: Decoder blocks.
      num_cross_attention_layers: The top L decoder blocks that have cross-attention (1 as
        released); 0 gives a plain CodeGen decoder.
      cross_attention_query_positions: "absolute" (default) or "released", see
        `CROSS_QUERY_POSITIONS`.
      layer_norm_epsilon: LayerNorm epsilon (1e-5).
      max_positions: Context length (HF `n_positions`); the causal-mask buffers' size on export.
      dropout_rate: Attention, residual and embedding dropout (0.0 as released).
      dtype: Compute dtype; softmax, norm statistics, rotary and logits stay float32.
      param_dtype: Storage dtype of parameters.
      scan_layers: Scan the uniform blocks of each stack (the cross-attention blocks stay
        unrolled).
      remat_policy: "none", "full", "dots" or "dots_with_no_batch_dims".
    """

    name: str = "custom"
    vocab_size: int = 51200
    encoder_emb_dim: int = 1024
    encoder_num_heads: int = 16
    encoder_mlp_dim: int = 4096
    encoder_rotary_dim: int = 32
    num_encoder_layers: int = 20
    emb_dim: int = 2560
    num_heads: int = 32
    mlp_dim: int = 10240
    rotary_dim: int = 64
    num_decoder_layers: int = 32
    num_cross_attention_layers: int = 1
    cross_attention_query_positions: str = "absolute"
    layer_norm_epsilon: float = 1e-5
    max_positions: int = 2048
    dropout_rate: float = 0.0
    pad_token_id: int = ENDOFTEXT_ID
    bos_token_id: int = 1
    eos_token_id: int = ENDOFTEXT_ID
    decoder_start_token_id: int = ENDOFTEXT_ID
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        for prefix, width, heads, rotary in (
            ("encoder_", self.encoder_emb_dim, self.encoder_num_heads, self.encoder_rotary_dim),
            ("", self.emb_dim, self.num_heads, self.rotary_dim),
        ):
            if heads < 1 or width % heads:
                raise ValueError(
                    f"{prefix}emb_dim {width} is not divisible by {prefix}num_heads {heads}"
                )
            head_dim = width // heads
            if rotary % 2 or not 0 < rotary <= head_dim:
                raise ValueError(
                    f"{prefix}rotary_dim {rotary} must be even and in (0, head_dim {head_dim}]"
                )
        if self.num_encoder_layers < 1 or self.num_decoder_layers < 1:
            raise ValueError("num_encoder_layers and num_decoder_layers must be >= 1")
        if not 0 <= self.num_cross_attention_layers <= self.num_decoder_layers:
            raise ValueError(
                f"num_cross_attention_layers {self.num_cross_attention_layers} must be in "
                f"[0, num_decoder_layers {self.num_decoder_layers}]"
            )
        if self.cross_attention_query_positions not in CROSS_QUERY_POSITIONS:
            raise ValueError(
                f"cross_attention_query_positions {self.cross_attention_query_positions!r} is "
                f"not one of {CROSS_QUERY_POSITIONS}"
            )
        if self.remat_policy not in ("none", "full", "dots", "dots_with_no_batch_dims"):
            raise ValueError(f"Unknown remat_policy {self.remat_policy!r}.")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"Unsupported {field} {getattr(self, field)!r}.")

    # Read by the model-agnostic parts (decoding, objectives, façade).
    kind = "shallow_deep"
    has_decoder = True
    embed_dim = None

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.num_heads

    @property
    def encoder_head_dim(self) -> int:
        return self.encoder_emb_dim // self.encoder_num_heads

    @property
    def has_enc_to_dec_proj(self) -> bool:
        """HF `EncoderDecoderModel`: a projection exists iff the widths differ."""
        return self.encoder_emb_dim != self.emb_dim

    @property
    def num_uniform_decoder_layers(self) -> int:
        """Decoder blocks without cross-attention (the bottom ones; scanned when scanning)."""
        return self.num_decoder_layers - self.num_cross_attention_layers

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def matmul_precision(self) -> jax.lax.Precision | None:
        return dtypes.matmul_precision(self.compute_dtype)

    def replace(self, **changes) -> "ShallowDeepConfig":
        return dataclasses.replace(self, **changes)


def _decoder(width: int, heads: int, layers: int) -> dict:
    return dict(emb_dim=width, num_heads=heads, mlp_dim=4 * width, num_decoder_layers=layers)


PRESETS: dict[str, ShallowDeepConfig] = {
    # FACTS §3.5: the encoder is CodeGen-mono 350M for every size (20 x 1024, 16 heads, rotary 32).
    "codet5p-2b": ShallowDeepConfig(name="codet5p-2b", **_decoder(2560, 32, 32)),
    "codet5p-6b": ShallowDeepConfig(name="codet5p-6b", **_decoder(4096, 16, 33)),
    "codet5p-16b": ShallowDeepConfig(name="codet5p-16b", **_decoder(6144, 24, 34)),
    "instructcodet5p-16b": ShallowDeepConfig(name="instructcodet5p-16b", **_decoder(6144, 24, 34)),
    # CPU-sized, with the real 51200-row vocabulary (the CodeGen tokenizer's ids) and differing
    # widths so `enc_to_dec_proj` exists; 4 heads per stack (the released layout's mp_num=4).
    "tiny-shallow-deep": ShallowDeepConfig(
        name="tiny-shallow-deep",
        encoder_emb_dim=32,
        encoder_num_heads=4,
        encoder_mlp_dim=128,
        encoder_rotary_dim=4,
        num_encoder_layers=2,
        emb_dim=64,
        num_heads=4,
        mlp_dim=256,
        rotary_dim=8,
        num_decoder_layers=3,
        max_positions=512,
    ),
}


def get_preset(name: str, **overrides) -> ShallowDeepConfig:
    """The preset `name` with fields overridden by `overrides`.

    Raises:
      ValueError: For an unknown name (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ValueError(
            f"Unknown shallow_deep preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name].replace(**overrides)
