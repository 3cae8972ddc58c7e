"""Model configurations: frozen dataclasses with t5x dimension names, and the released presets.

Values come from ../shared/reference/CODET5P_FACTS.md §3 (released HF configs).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from codet5p_jax import dtypes

# HF `architectures` values of the released checkpoints, by our `kind`.
HF_ARCHITECTURES = {
    "t5": "T5ForConditionalGeneration",
    "embedding": "CodeT5p_Embedding",
    "bimodal": "CodeT5pBimodalModel",
    "classifier": "T5ForSequenceClassification",
}
# Classifiers transformers has no class for (encoder pooling, pairs): a documented layout
# (docs/understanding.md, "HF export").
HF_CLASSIFIER_LAYOUT = "CodeT5pForSequenceClassification"
_HF_MODEL_TYPES = {
    "t5": "t5",
    "embedding": "codet5p_embedding",
    "bimodal": "codet5p_bimodal",
    "classifier": "codet5p_classifier",
}
_KIND_BY_MODEL_TYPE = {v: k for k, v in _HF_MODEL_TYPES.items()}
# How a classifier turns a sequence into one vector: the encoder's first-token state, the mean of
# the encoder states over real tokens, or (CodeT5's recipe, HF `T5ForSequenceClassification`) the
# decoder state at the last `</s>` of the input fed, shifted right, to the decoder.
POOLINGS = ("first", "mean", "eos_decoder")
# Added tokens of the two-stage vocabulary (FACTS §3.2-3.4).
STAGE2_ADDED_TOKENS = {"[ENC]": 32100, "[TDEC]": 32101, "[CDEC]": 32102}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """A CodeT5+ T5-family network (T5 v1.0: ReLU FFN, tied embeddings, no biases).

    Attributes:
      kind: "t5" (encoder-decoder), "embedding" (encoder + projection head), "bimodal"
        (encoder-decoder + projection head + text-code matching head) or "classifier"
        (sequence / pair classification head, `models/classifier.py`).
      vocab_size: Rows of the shared embedding (32100, or 32103 with the stage-2 tokens).
      emb_dim: Model width (HF `d_model`).
      num_heads: Attention heads.
      head_dim: Per-head width (HF `d_kv`).
      mlp_dim: Feed-forward width (HF `d_ff`).
      num_encoder_layers: Encoder blocks.
      num_decoder_layers: Decoder blocks; 0 for the encoder-only embedding model.
      embed_dim: Width of the contrastive projection head, or None when there is none.
      dtype: Compute dtype of activations ("float32" or "bfloat16"); softmax, norm statistics and
        logits always run in float32.
      param_dtype: Storage dtype of parameters.
      scan_layers: Stack the blocks with `nn.scan` (params get a leading "layers" axis).
      remat_policy: "none", "full", "dots" or "dots_with_no_batch_dims" (per-block remat).
      attention_impl: "plain" (the reference einsum path), "auto" (cuDNN flash attention on a
        GPU, Pallas flash attention on a TPU, when the call is supported; else plain), "xla"
        or "cudnn" (`jax.nn`'s fused attention), "pallas" (the Pallas TPU flash kernel; on a
        CPU only inside Pallas's TPU interpret mode, the test vehicle; TPU speed unmeasured).
        A call a kernel cannot take runs plain and logs why once; see
        `layers.attention.dot_product_attention` and docs/benchmarks.md.
      num_labels: Classes of a "classifier" (None for the other kinds).
      pooling: A classifier's sequence vector, one of `POOLINGS`; "first" and "mean" use the
        encoder only (num_decoder_layers=0), "eos_decoder" the whole encoder-decoder.
      pair_input: A classifier of two sequences (clone pairs): inputs `[B, 2, S]`, the two pooled
        vectors concatenated before the head (CodeT5's clone model).
    """

    name: str = "custom"
    kind: str = "t5"
    vocab_size: int = 32100
    emb_dim: int = 768
    num_heads: int = 12
    head_dim: int = 64
    mlp_dim: int = 3072
    num_encoder_layers: int = 12
    num_decoder_layers: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dropout_rate: float = 0.1
    embed_dim: int | None = None
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "plain"
    num_labels: int | None = None
    pooling: str = "eos_decoder"
    pair_input: bool = False

    def __post_init__(self):
        if self.kind not in HF_ARCHITECTURES:
            raise ValueError(
                f"Unknown model kind {self.kind!r}; expected one of {sorted(HF_ARCHITECTURES)}"
            )
        if self.kind == "classifier":
            self._check_classifier()
        elif self.kind == "embedding" and self.num_decoder_layers:
            raise ValueError("An embedding model has no decoder: set num_decoder_layers=0.")
        elif self.kind != "embedding" and self.num_decoder_layers < 1:
            raise ValueError(f"A {self.kind!r} model needs num_decoder_layers >= 1.")
        if self.kind in ("embedding", "bimodal") and not self.embed_dim:
            raise ValueError(f"A {self.kind!r} model needs embed_dim (the projection width).")
        if self.remat_policy not in ("none", "full", "dots", "dots_with_no_batch_dims"):
            raise ValueError(f"Unknown remat_policy {self.remat_policy!r}.")
        if self.attention_impl not in ("plain", "auto", "xla", "cudnn", "pallas"):
            raise ValueError(f"Unknown attention_impl {self.attention_impl!r}.")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"Unsupported {field} {getattr(self, field)!r}.")

    def _check_classifier(self) -> None:
        if not isinstance(self.num_labels, int) or self.num_labels < 2:
            raise ValueError(f"A classifier needs num_labels >= 2, got {self.num_labels!r}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; expected one of {POOLINGS}.")
        if self.pooling == "eos_decoder" and self.num_decoder_layers < 1:
            raise ValueError("pooling='eos_decoder' needs num_decoder_layers >= 1.")
        if self.pooling != "eos_decoder" and self.num_decoder_layers:
            raise ValueError(
                f"pooling={self.pooling!r} uses the encoder only: set num_decoder_layers=0."
            )

    @property
    def has_decoder(self) -> bool:
        return self.num_decoder_layers > 0

    @property
    def has_itm_head(self) -> bool:
        return self.kind == "bimodal"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def matmul_precision(self) -> jax.lax.Precision | None:
        """Precision of the model's matmuls (`dtypes.matmul_precision` of the compute dtype)."""
        return dtypes.matmul_precision(self.compute_dtype)

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)


_BASE = dict(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=3072)
_LARGE = dict(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=4096)

PRESETS: dict[str, T5Config] = {
    "codet5p-220m": T5Config(name="codet5p-220m", **_BASE),
    "codet5p-220m-py": T5Config(name="codet5p-220m-py", **_BASE),
    "codet5p-770m": T5Config(
        name="codet5p-770m", num_encoder_layers=24, num_decoder_layers=24, **_LARGE
    ),
    "codet5p-770m-py": T5Config(
        name="codet5p-770m-py", num_encoder_layers=24, num_decoder_layers=24, **_LARGE
    ),
    "codet5p-110m-embedding": T5Config(
        name="codet5p-110m-embedding",
        kind="embedding",
        vocab_size=32103,
        num_decoder_layers=0,
        embed_dim=256,
        **_BASE,
    ),
    "codet5p-220m-bimodal": T5Config(
        name="codet5p-220m-bimodal", kind="bimodal", vocab_size=32103, embed_dim=256, **_BASE
    ),
    # Small enough to train in minutes on 2 CPU cores; keeps the real 32103-token vocabulary so
    # it uses the released tokenizer and the stage-2 special tokens.
    "tiny": T5Config(
        name="tiny",
        vocab_size=32103,
        emb_dim=64,
        num_heads=4,
        head_dim=16,
        mlp_dim=256,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout_rate=0.0,
    ),
    "tiny-bimodal": T5Config(
        name="tiny-bimodal",
        kind="bimodal",
        vocab_size=32103,
        emb_dim=64,
        num_heads=4,
        head_dim=16,
        mlp_dim=256,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout_rate=0.0,
        embed_dim=32,
    ),
}


def get_preset(name: str, **overrides) -> T5Config:
    """Returns the preset `name`, with dataclass fields overridden by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides)


def from_hf_config(hf: dict[str, Any], name: str = "custom") -> T5Config:
    """Builds a T5Config from an HF `config.json` dict; raises on unsupported architectures."""
    model_type = hf.get("model_type")
    if model_type not in _KIND_BY_MODEL_TYPE:
        raise ValueError(
            f"Unsupported model_type {model_type!r} (architectures={hf.get('architectures')}); "
            f"supported: {sorted(_KIND_BY_MODEL_TYPE)}"
        )
    kind = _KIND_BY_MODEL_TYPE[model_type]
    if HF_ARCHITECTURES["classifier"] in (hf.get("architectures") or []):
        kind = "classifier"
    ffn = hf.get("feed_forward_proj", "relu")
    if ffn != "relu":
        raise ValueError(f"Unsupported feed_forward_proj {ffn!r}: CodeT5+ T5 models use 'relu'.")
    if hf.get("tie_word_embeddings", True) is False:
        raise ValueError("Untied word embeddings (T5 v1.1 style) are not a CodeT5+ layout.")
    num_layers = int(hf["num_layers"])
    num_decoder_layers = hf.get("num_decoder_layers")
    head = _classifier_from_hf(hf) if kind == "classifier" else {}
    if kind == "embedding" or head.get("pooling") in ("first", "mean"):
        num_decoder_layers = 0
    elif num_decoder_layers is None:
        num_decoder_layers = num_layers
    eos = hf.get("eos_token_id", 2)
    return T5Config(
        name=name,
        kind=kind,
        vocab_size=int(hf["vocab_size"]),
        emb_dim=int(hf["d_model"]),
        num_heads=int(hf["num_heads"]),
        head_dim=int(hf["d_kv"]),
        mlp_dim=int(hf["d_ff"]),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(num_decoder_layers),
        relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        dropout_rate=float(hf.get("dropout_rate", 0.1)),
        embed_dim=hf.get("embed_dim") if kind != "t5" else None,
        pad_token_id=int(hf.get("pad_token_id", 0) or 0),
        bos_token_id=int(hf.get("bos_token_id", 1) or 1),
        eos_token_id=int(eos[0] if isinstance(eos, list) else eos),
        decoder_start_token_id=int(hf.get("decoder_start_token_id", 0) or 0),
        **head,
    )


def _classifier_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """num_labels / pooling / pair_input of an HF classifier config (`id2label` or `num_labels`)."""
    num_labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
    return {
        "num_labels": int(num_labels),
        "pooling": hf.get("pooling", "eos_decoder"),
        "pair_input": bool(hf.get("pair_input", False)),
    }


def is_hf_sequence_classifier(cfg: T5Config) -> bool:
    """Whether `cfg` is exactly HF `T5ForSequenceClassification` (CodeT5 recipe, one input)."""
    return cfg.kind == "classifier" and cfg.pooling == "eos_decoder" and not cfg.pair_input


def to_hf_config(cfg: T5Config) -> dict[str, Any]:
    """The HF `config.json` dict of the released layout for `cfg`.

    A classifier that is HF `T5ForSequenceClassification` is written as one (model_type "t5");
    the other classifiers as the documented `CodeT5pForSequenceClassification` layout.
    """
    hf_classifier = is_hf_sequence_classifier(cfg)
    hf = {
        "architectures": [
            HF_CLASSIFIER_LAYOUT
            if cfg.kind == "classifier" and not hf_classifier
            else HF_ARCHITECTURES[cfg.kind]
        ],
        "model_type": "t5" if hf_classifier else _HF_MODEL_TYPES[cfg.kind],
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.emb_dim,
        "d_kv": cfg.head_dim,
        "d_ff": cfg.mlp_dim,
        "num_layers": cfg.num_encoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": "relu",
        "dense_act_fn": "relu",
        "is_gated_act": False,
        "is_encoder_decoder": cfg.has_decoder,
        "use_cache": True,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if cfg.has_decoder:
        hf["num_decoder_layers"] = cfg.num_decoder_layers
    if cfg.embed_dim:
        hf["embed_dim"] = cfg.embed_dim
    if cfg.kind == "classifier":
        hf["num_labels"] = cfg.num_labels
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
        hf["classifier_dropout"] = 0.0
        if not hf_classifier:
            hf.update(pooling=cfg.pooling, pair_input=cfg.pair_input)
    elif cfg.kind != "t5":
        # The released embedding / bimodal checkpoints ship remote code under these names.
        module = "codet5p_embedding" if cfg.kind == "embedding" else "codet5p_bimodal"
        cls = "CodeT5pEmbedding" if cfg.kind == "embedding" else "CodeT5pBimodal"
        hf["auto_map"] = {
            "AutoConfig": f"configuration_{module}.{cls}Config",
            "AutoModel": f"modeling_{module}.{cls}Model",
        }
    return hf
