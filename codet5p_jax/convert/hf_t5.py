"""CodeT5+ 220M / 770M, 110M-embedding and 220M-bimodal <-> HF T5 state dicts.

Key names are those of HF `T5ForConditionalGeneration` / `T5EncoderModel`
(transformers `models/t5/modeling_t5.py`) and of the released remote-code heads
(`CodeT5pEmbeddingModel.proj`, `CodeT5pBimodalModel.proj` / `itm_head`; FACTS §3.1-3.3).
Layout quirks handled here and nowhere else:

* q/k/v are `nn.Linear(D, N*H)` with head-major rows -> `[D, N, H]`; o is `[D, N*H]` -> `[N, H, D]`.
* The relative position bias exists only in block 0 of each stack (`has_relative_attention_bias
  = i == 0`) as `nn.Embedding(R, N)` -> our per-stack `relpos_bias/rel_embedding [N, R]`.
* Embeddings are tied: `encoder.embed_tokens`, `decoder.embed_tokens` and `lm_head` are copies of
  `shared` (old `torch.save` checkpoints store them; transformers 5 `save_pretrained` writes
  only `shared.weight`, and so do we). The `d_model**-0.5` logit rescale lives in the model.
* Dense weights (`proj`, `itm_head`, `DenseReluDense.wi/wo`) are torch `[out, in]` -> flax
  `[in, out]`.
"""

from collections.abc import Mapping

import flax.traverse_util as traverse_util
import numpy as np

from codet5p_jax.config import T5Config
from codet5p_jax.convert import mapping
from codet5p_jax.convert.mapping import TRANSPOSE, ConversionError, Rule, RuleTable
from codet5p_jax.convert.scan import is_scanned, scan_params, unscan_params

# Old HF T5 versions gave block 0's cross-attention a relative bias that was never used;
# transformers listed it in `_keys_to_ignore_on_load_unexpected`, and so do we.
# HF keys that are tied copies of `shared.weight` (optional in a source, never written).
TIED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
_UNUSED_CROSS_BIAS = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"


def _attention_rules(cfg: T5Config, hf: str, jax: str) -> list[Rule]:
    """q/k/v/o of one attention block: `hf` like `encoder.block.3.layer.0.SelfAttention`."""
    d, n, h = cfg.emb_dim, cfg.num_heads, cfg.head_dim
    qkv = mapping.split_heads_in(n, h)
    rules = [
        Rule(f"{hf}.{a}.weight", f"{jax}/{b}/kernel", (n * h, d), (d, n, h), qkv)
        for a, b in (("q", "query"), ("k", "key"), ("v", "value"))
    ]
    rules.append(
        Rule(
            f"{hf}.o.weight",
            f"{jax}/out/kernel",
            (d, n * h),
            (n, h, d),
            mapping.split_heads_out(n, h),
        )
    )
    return rules


def _norm_rule(cfg: T5Config, hf: str, jax: str) -> Rule:
    return Rule(f"{hf}.weight", f"{jax}/scale", (cfg.emb_dim,), (cfg.emb_dim,))


def _mlp_rules(cfg: T5Config, hf: str, jax: str) -> list[Rule]:
    """`hf` like `encoder.block.3.layer.1.DenseReluDense`."""
    d, f = cfg.emb_dim, cfg.mlp_dim
    return [
        Rule(f"{hf}.wi.weight", f"{jax}/wi/kernel", (f, d), (d, f), TRANSPOSE),
        Rule(f"{hf}.wo.weight", f"{jax}/wo/kernel", (d, f), (f, d), TRANSPOSE),
    ]


def _relpos_rule(cfg: T5Config, stack: str) -> Rule:
    n, r = cfg.num_heads, cfg.relative_attention_num_buckets
    return Rule(
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        f"{stack}/relpos_bias/rel_embedding",
        (r, n),
        (n, r),
        TRANSPOSE,
    )


def _encoder_rules(cfg: T5Config) -> list[Rule]:
    rules = [_relpos_rule(cfg, "encoder")]
    for i in range(cfg.num_encoder_layers):
        hf, jax = f"encoder.block.{i}.layer", f"encoder/layers_{i}"
        rules += _attention_rules(cfg, f"{hf}.0.SelfAttention", f"{jax}/attention")
        rules.append(_norm_rule(cfg, f"{hf}.0.layer_norm", f"{jax}/pre_attention_layer_norm"))
        rules += _mlp_rules(cfg, f"{hf}.1.DenseReluDense", f"{jax}/mlp")
        rules.append(_norm_rule(cfg, f"{hf}.1.layer_norm", f"{jax}/pre_mlp_layer_norm"))
    rules.append(_norm_rule(cfg, "encoder.final_layer_norm", "encoder/encoder_norm"))
    return rules


def _decoder_rules(cfg: T5Config) -> list[Rule]:
    rules = [_relpos_rule(cfg, "decoder")]
    for i in range(cfg.num_decoder_layers):
        hf, jax = f"decoder.block.{i}.layer", f"decoder/layers_{i}"
        rules += _attention_rules(cfg, f"{hf}.0.SelfAttention", f"{jax}/self_attention")
        rules.append(_norm_rule(cfg, f"{hf}.0.layer_norm", f"{jax}/pre_self_attention_layer_norm"))
        rules += _attention_rules(
            cfg, f"{hf}.1.EncDecAttention", f"{jax}/encoder_decoder_attention"
        )
        rules.append(_norm_rule(cfg, f"{hf}.1.layer_norm", f"{jax}/pre_cross_attention_layer_norm"))
        rules += _mlp_rules(cfg, f"{hf}.2.DenseReluDense", f"{jax}/mlp")
        rules.append(_norm_rule(cfg, f"{hf}.2.layer_norm", f"{jax}/pre_mlp_layer_norm"))
    rules.append(_norm_rule(cfg, "decoder.final_layer_norm", "decoder/decoder_norm"))
    return rules


def _head_rules(cfg: T5Config, hf: str, jax: str, features: int) -> list[Rule]:
    """A torch `nn.Linear(D, features)` with bias -> flax `nn.Dense` kernel / bias."""
    d = cfg.emb_dim
    return [
        Rule(f"{hf}.weight", f"{jax}/kernel", (features, d), (d, features), TRANSPOSE),
        Rule(f"{hf}.bias", f"{jax}/bias", (features,), (features,)),
    ]


def rule_table(cfg: T5Config) -> RuleTable:
    """The HF <-> JAX rules of `cfg` (any kind), unscanned layout."""
    rules = [
        Rule("shared.weight", "token_embedder/embedding", *[(cfg.vocab_size, cfg.emb_dim)] * 2)
    ]
    rules += _encoder_rules(cfg)
    tied = {TIED_KEYS[0]: "shared.weight"}
    ignorable = {}
    if cfg.has_decoder:
        rules += _decoder_rules(cfg)
        tied.update({key: "shared.weight" for key in TIED_KEYS[1:]})
        ignorable[_UNUSED_CROSS_BIAS] = "unused cross-attention bias of old HF T5 versions"
    if cfg.embed_dim:
        rules += _head_rules(cfg, "proj", "embedding_proj", cfg.embed_dim)
    if cfg.has_itm_head:
        rules += _head_rules(cfg, "itm_head", "itm_head", 2)
    return RuleTable(tuple(rules), tied=tied, ignorable=ignorable)


def hf_to_params(
    state: Mapping[str, np.ndarray], cfg: T5Config, source: str = "HF state dict"
) -> dict:
    """HF state dict -> nested param tree (scanned iff `cfg.scan_layers`), dtypes kept.

    Args:
      state: HF key -> numpy array (from `hf_io.read_hf_state`).
      cfg: Config of the model the state dict belongs to.
      source: Names the input in error messages.

    Returns:
      Nested dicts of numpy arrays in the layout of docs/DESIGN.md.

    Raises:
      ConversionError: On a missing, leftover or misshapen key (all are listed).
    """
    codegen = [k for k in ("encoder.wte.weight", "decoder.transformer.wte.weight") if k in state]
    if codegen:
        raise ConversionError(
            f"{source}: holds a CodeT5+ 2B-16B (CodeGen) state dict (key {codegen[0]!r}), not the "
            "T5 layout its config.json names"
        )
    flat = mapping.apply_hf_to_jax(state, rule_table(cfg), source)
    params = traverse_util.unflatten_dict(flat, sep="/")
    return scan_params(params, cfg) if cfg.scan_layers else params


def params_to_hf(params: Mapping, cfg: T5Config, source: str = "params") -> dict[str, np.ndarray]:
    """Param tree (scanned iff `cfg.scan_layers`) -> HF state dict in the released layout.

    Args:
      params: Nested dicts of arrays (numpy or jax; plain, not logically boxed).
      cfg: The model config.
      source: Names the input in error messages.

    Returns:
      HF key -> contiguous numpy array; tied copies are not written (as transformers 5).

    Raises:
      ConversionError: On a missing, leftover or misshapen param, or a layout that does not
        match `cfg.scan_layers`.
    """
    if is_scanned(params) != cfg.scan_layers:
        layout = "scanned" if is_scanned(params) else "unscanned"
        raise ConversionError(
            f"Cannot convert {source}: params are {layout} but scan_layers={cfg.scan_layers}"
        )
    if cfg.scan_layers:
        params = unscan_params(params, cfg)
    flat = traverse_util.flatten_dict(params, sep="/")
    return mapping.apply_jax_to_hf(flat, rule_table(cfg), source)


def expected_shapes(cfg: T5Config) -> dict[str, tuple[int, ...]]:
    """Flat `/`-joined param path -> shape, in the layout `cfg.scan_layers` selects."""
    shapes = rule_table(cfg).jax_shapes()
    if not cfg.scan_layers:
        return shapes
    num_layers = {"encoder": cfg.num_encoder_layers, "decoder": cfg.num_decoder_layers}
    scanned = {}
    for path, shape in shapes.items():
        stack, block, *rest = path.split("/")
        if block.startswith("layers_"):
            scanned["/".join([stack, "layers", *rest])] = (num_layers[stack], *shape)
        else:
            scanned[path] = shape
    return scanned


def check_params(params: Mapping, cfg: T5Config, source: str = "params") -> None:
    """Checks that `params` has exactly the paths and shapes of `cfg` (without copying).

    Raises:
      ConversionError: Listing every missing or leftover path and shape mismatch.
    """
    expected = expected_shapes(cfg)
    got = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    problems = [f"missing param {k!r} (shape {s})" for k, s in expected.items() if k not in got]
    problems += [f"unexpected param {k!r} (shape {s})" for k, s in got.items() if k not in expected]
    problems += [
        f"shape mismatch for {k!r}: expected {s}, got {got[k]}"
        for k, s in expected.items()
        if k in got and got[k] != s
    ]
    if problems:
        mapping.raise_problems(problems, f"Cannot use {source} as a {cfg.kind!r} model")
