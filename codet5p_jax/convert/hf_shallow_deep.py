"""CodeT5+ 2B / 6B / 16B <-> the released `CodeT5pEncoderDecoderModel` layout (FACTS §3.5).

Key names are those of the released remote code (`modeling_codet5p.py`; the 16B index in
../shared/reference/configs/instructcodet5p-16b/). Layout quirks handled here and nowhere else:

* CodeGen's fused `qkv_proj` `[3D, D]` was sharded for `mp_num = 4` TPU cores: its rows are
  `(mp, part, local_head, head_dim)` with parts (query, value, key) in that order; the
  cross-attention `qkv_proj` `[2D, D]` has parts (value, key); `q_attn` is a plain `[D, D]`.
  Head `mp * N/4 + local_head` is our head index. Each part is split out as a pseudo key
  `<key>[query]` etc. (`split_fused` / `fuse_parts`), so the rule table stays one-to-one.
* `causal_mask` buffers (uint8 lower triangles `[1, 1, P, P]`, one per attention module) are
  dropped on import and written back on export, so the released code loads the export.
* torch `nn.Linear.weight` is `[out, in]`; flax kernels are `[in, out]` (`[D, N, H]` /
  `[N, H, D]` for attention).
"""

import re
from collections.abc import Iterator, Mapping

import flax.traverse_util as traverse_util
import numpy as np

from codet5p_jax.convert import mapping
from codet5p_jax.convert.mapping import TRANSPOSE, ConversionError, Rule, RuleTable
from codet5p_jax.convert.scan import is_scanned, scan_params, unscan_params
from codet5p_jax.models.shallow_deep_config import ShallowDeepConfig

MP_NUM = 4  # CodeGen's model-parallel interleave of the fused projections
# Fused HF tensor suffix -> the parts it holds, in row order within each mp block.
FUSED_PARTS = {
    "attn.qkv_proj.weight": ("query", "value", "key"),
    "crossattention.qkv_proj.weight": ("value", "key"),
}
ENCODER, DECODER = "encoder.", "decoder.transformer."
LM_HEAD = "decoder.lm_head"


def _fused_parts(key: str) -> tuple[str, ...] | None:
    for suffix, parts in FUSED_PARTS.items():
        if key.endswith("." + suffix):
            return parts
    return None


def split_fused(fused: np.ndarray, parts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`[len(parts) * D, D]` mp_num=4 fused rows -> part name -> `[D, D]` head-major rows."""
    rows, d_in = fused.shape
    d = rows // len(parts)
    blocks = fused.reshape(MP_NUM, len(parts), d // MP_NUM, d_in)
    return {p: np.ascontiguousarray(blocks[:, i].reshape(d, d_in)) for i, p in enumerate(parts)}


def fuse_parts(split: Mapping[str, np.ndarray], parts: tuple[str, ...]) -> np.ndarray:
    """Inverse of `split_fused`."""
    d, d_in = split[parts[0]].shape
    blocks = np.stack([split[p].reshape(MP_NUM, d // MP_NUM, d_in) for p in parts], axis=1)
    return blocks.reshape(len(parts) * d, d_in)


class SplitState(Mapping):
    """An HF state dict with each fused qkv tensor seen as its parts (`key[query]`, ...).

    Reads a fused tensor once for all its parts (one-entry cache), so a lazy source is still
    read one tensor at a time.
    """

    def __init__(self, state: Mapping[str, np.ndarray]):
        self._state = state
        self._keys: dict[str, tuple[str, str | None]] = {}
        for key in state:
            parts = _fused_parts(key)
            for part in parts or (None,):
                self._keys[key if part is None else f"{key}[{part}]"] = (key, part)
        self._cached: tuple[str, dict] | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        source, part = self._keys[key]
        if part is None:
            return self._state[source]
        if self._cached is None or self._cached[0] != source:
            self._cached = (source, split_fused(self._state[source], _fused_parts(source)))
        return self._cached[1][part]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _check_heads(num_heads: int, where: str) -> None:
    if num_heads % MP_NUM:
        raise ConversionError(
            f"{where}: {num_heads} heads cannot use the released mp_num={MP_NUM} qkv layout "
            f"(num_heads must be a multiple of {MP_NUM})"
        )


def _block_rules(hf: str, jax: str, d: int, n: int, f: int, cross: bool) -> list[Rule]:
    """One CodeGen block: `hf` like `decoder.transformer.h.3`, `jax` like `decoder/layers_3`."""
    h = d // n
    heads_in, heads_out = mapping.split_heads_in(n, h), mapping.split_heads_out(n, h)
    rules = [
        Rule(f"{hf}.ln_1.weight", f"{jax}/layer_norm/scale", (d,), (d,)),
        Rule(f"{hf}.ln_1.bias", f"{jax}/layer_norm/bias", (d,), (d,)),
        Rule(
            f"{hf}.attn.out_proj.weight",
            f"{jax}/attention/out/kernel",
            (d, d),
            (n, h, d),
            heads_out,
        ),
        Rule(f"{hf}.mlp.fc_in.weight", f"{jax}/mlp/fc_in/kernel", (f, d), (d, f), TRANSPOSE),
        Rule(f"{hf}.mlp.fc_in.bias", f"{jax}/mlp/fc_in/bias", (f,), (f,)),
        Rule(f"{hf}.mlp.fc_out.weight", f"{jax}/mlp/fc_out/kernel", (d, f), (f, d), TRANSPOSE),
        Rule(f"{hf}.mlp.fc_out.bias", f"{jax}/mlp/fc_out/bias", (d,), (d,)),
    ]
    rules += [
        Rule(
            f"{hf}.attn.qkv_proj.weight[{p}]",
            f"{jax}/attention/{p}/kernel",
            (d, d),
            (d, n, h),
            heads_in,
        )
        for p in FUSED_PARTS["attn.qkv_proj.weight"]
    ]
    if cross:
        xa, xj = f"{hf}.crossattention", f"{jax}/encoder_decoder_attention"
        rules.append(Rule(f"{xa}.q_attn.weight", f"{xj}/query/kernel", (d, d), (d, n, h), heads_in))
        rules += [
            Rule(f"{xa}.qkv_proj.weight[{p}]", f"{xj}/{p}/kernel", (d, d), (d, n, h), heads_in)
            for p in FUSED_PARTS["crossattention.qkv_proj.weight"]
        ]
        rules.append(
            Rule(f"{xa}.out_proj.weight", f"{xj}/out/kernel", (d, d), (n, h, d), heads_out)
        )
    return rules


def encoder_rules(cfg: ShallowDeepConfig, prefix: str = ENCODER) -> list[Rule]:
    """The encoder's rules; `prefix=""` gives `transformers.CodeGenModel`'s key names."""
    d, n, f, v = cfg.encoder_emb_dim, cfg.encoder_num_heads, cfg.encoder_mlp_dim, cfg.vocab_size
    rules = [Rule(f"{prefix}wte.weight", "encoder/token_embedder/embedding", (v, d), (v, d))]
    for i in range(cfg.num_encoder_layers):
        rules += _block_rules(f"{prefix}h.{i}", f"encoder/layers_{i}", d, n, f, cross=False)
    rules += [
        Rule(f"{prefix}ln_f.weight", "encoder/final_norm/scale", (d,), (d,)),
        Rule(f"{prefix}ln_f.bias", "encoder/final_norm/bias", (d,), (d,)),
    ]
    return rules


def decoder_rules(
    cfg: ShallowDeepConfig, prefix: str = DECODER, lm_head: str = LM_HEAD
) -> list[Rule]:
    """The decoder's rules; `prefix="transformer.", lm_head="lm_head"` gives
    `transformers.CodeGenForCausalLM`'s key names (for a config without cross-attention)."""
    d, n, f, v = cfg.emb_dim, cfg.num_heads, cfg.mlp_dim, cfg.vocab_size
    rules = [Rule(f"{prefix}wte.weight", "decoder/token_embedder/embedding", (v, d), (v, d))]
    for i in range(cfg.num_decoder_layers):
        cross = i >= cfg.num_uniform_decoder_layers
        rules += _block_rules(f"{prefix}h.{i}", f"decoder/layers_{i}", d, n, f, cross)
    rules += [
        Rule(f"{prefix}ln_f.weight", "decoder/final_norm/scale", (d,), (d,)),
        Rule(f"{prefix}ln_f.bias", "decoder/final_norm/bias", (d,), (d,)),
        Rule(f"{lm_head}.weight", "logits_dense/kernel", (v, d), (d, v), TRANSPOSE),
        Rule(f"{lm_head}.bias", "logits_dense/bias", (v,), (v,)),
    ]
    return rules


def causal_mask_keys(cfg: ShallowDeepConfig) -> list[str]:
    """The released model's `causal_mask` buffers, one per attention module."""
    keys = [f"{ENCODER}h.{i}.attn.causal_mask" for i in range(cfg.num_encoder_layers)]
    for i in range(cfg.num_decoder_layers):
        keys.append(f"{DECODER}h.{i}.attn.causal_mask")
        if i >= cfg.num_uniform_decoder_layers:
            keys.append(f"{DECODER}h.{i}.crossattention.causal_mask")
    return keys


def rule_table(cfg: ShallowDeepConfig) -> RuleTable:
    """The released layout's rules for `cfg` (unscanned), `causal_mask` buffers ignorable."""
    _check_heads(cfg.encoder_num_heads, "encoder")
    _check_heads(cfg.num_heads, "decoder")
    rules = encoder_rules(cfg) + decoder_rules(cfg)
    if cfg.has_enc_to_dec_proj:
        de, d = cfg.encoder_emb_dim, cfg.emb_dim
        rules += [
            Rule("enc_to_dec_proj.weight", "enc_to_dec_proj/kernel", (d, de), (de, d), TRANSPOSE),
            Rule("enc_to_dec_proj.bias", "enc_to_dec_proj/bias", (d,), (d,)),
        ]
    ignorable = dict.fromkeys(causal_mask_keys(cfg), "causal-mask buffer, rebuilt by the model")
    return RuleTable(tuple(rules), ignorable=ignorable)


def _stacks(cfg: ShallowDeepConfig) -> dict[str, int]:
    """Stack -> number of uniform (scannable) blocks; the cross-attention tail stays unrolled."""
    stacks = {"encoder": cfg.num_encoder_layers}
    if cfg.num_uniform_decoder_layers:
        stacks["decoder"] = cfg.num_uniform_decoder_layers
    return stacks


def scan(params: Mapping, cfg: ShallowDeepConfig) -> dict:
    """Unscanned -> scanned layout."""
    return scan_params(params, cfg, _stacks(cfg))


def unscan(params: Mapping, cfg: ShallowDeepConfig) -> dict:
    """Scanned -> unscanned layout."""
    return unscan_params(params, cfg, _stacks(cfg))


def _shape_of(state: Mapping, key: str) -> tuple[int, ...]:
    """A tensor's shape, without reading it when the state is lazy (`hf_state.LazyState`)."""
    return tuple(state.shape(key)) if hasattr(state, "shape") else tuple(np.shape(state[key]))


def _blocks(keys, prefix: str, inner: str = "") -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"h\.(\d+)\." + re.escape(inner))
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def check_state_matches_config(state: Mapping, cfg: ShallowDeepConfig, source: str) -> None:
    """One-line errors for a state dict of another family or one its `config.json` misdescribes.

    Checked from key names and shapes only (nothing is read): a T5 checkpoint, the block
    counts of both stacks, which decoder blocks have cross-attention, and the widths.

    Raises:
      ConversionError: Naming the file, the key and the `config.json` field that disagree.
    """
    keys = list(state)
    t5 = [k for k in keys if k == "shared.weight" or k.startswith("encoder.block.")]
    t5.sort(key=lambda k: k != "shared.weight")  # name the tell-tale key when present
    if t5:
        raise ConversionError(
            f"{source}: holds a T5 (CodeT5+ 220M/770M) state dict (key {t5[0]!r}), not the "
            "CodeT5+ 2B-16B layout its config.json names"
        )
    for stack, prefix, want in (
        ("encoder", ENCODER, cfg.num_encoder_layers),
        ("decoder", DECODER, cfg.num_decoder_layers),
    ):
        got = _blocks(keys, prefix)
        if got and got != list(range(want)):
            raise ConversionError(
                f"{source}: config.json {stack}.n_layer is {want} but the tensors hold "
                f"{len(got)} {stack} blocks ({prefix}h.{got[0]} ... {prefix}h.{got[-1]})"
            )
    cross = _blocks(keys, DECODER, "crossattention.")
    want_cross = list(range(cfg.num_uniform_decoder_layers, cfg.num_decoder_layers))
    if cross != want_cross:
        raise ConversionError(
            f"{source}: config.json decoder (add_cross_attention / n_cross_attention_layers) "
            f"puts cross-attention in decoder blocks {want_cross} but the tensors have it in "
            f"{cross}"
        )
    v = cfg.vocab_size
    for key, want, fields in (
        (f"{ENCODER}wte.weight", (v, cfg.encoder_emb_dim), "encoder.vocab_size/n_embd"),
        (
            f"{ENCODER}h.0.mlp.fc_in.weight",
            (cfg.encoder_mlp_dim, cfg.encoder_emb_dim),
            "encoder.n_inner/n_embd",
        ),
        (f"{DECODER}wte.weight", (v, cfg.emb_dim), "decoder.vocab_size/n_embd"),
        (f"{DECODER}h.0.mlp.fc_in.weight", (cfg.mlp_dim, cfg.emb_dim), "decoder.n_inner/n_embd"),
    ):
        if key in state and (got := _shape_of(state, key)) != want:
            raise ConversionError(
                f"{source}: tensor {key!r} has shape {got} but config.json {fields} give {want}"
            )


def hf_to_params(
    state: Mapping[str, np.ndarray], cfg: ShallowDeepConfig, source: str = "HF state dict"
) -> dict:
    """Released state dict -> nested params (scanned iff `cfg.scan_layers`), one key at a time.

    Raises:
      ConversionError: On a state dict of another family or one that disagrees with `cfg` (one
        line), or on missing, leftover or misshapen keys (all are listed).
    """
    check_state_matches_config(state, cfg, source)
    flat = mapping.apply_hf_to_jax(SplitState(state), rule_table(cfg), source)
    params = traverse_util.unflatten_dict(flat, sep="/")
    return scan(params, cfg) if cfg.scan_layers else params


def params_to_hf(
    params: Mapping, cfg: ShallowDeepConfig, source: str = "params"
) -> mapping.LazyArrays:
    """Params -> the released state dict, `causal_mask` buffers included.

    Checked whole up front; each HF tensor (a fused qkv from its parts) is built only when read,
    so a shard-by-shard writer never holds a second copy of the model.

    Raises:
      ConversionError: On a missing, leftover or misshapen param or a layout that does not
        match `cfg.scan_layers`.
    """
    if is_scanned(params) != cfg.scan_layers:
        layout = "scanned" if is_scanned(params) else "unscanned"
        raise ConversionError(
            f"Cannot convert {source}: params are {layout} but scan_layers={cfg.scan_layers}"
        )
    if cfg.scan_layers:
        params = unscan(params, cfg)
    flat = traverse_util.flatten_dict(params, sep="/")
    split = mapping.apply_jax_to_hf(flat, rule_table(cfg), source)
    state = mapping.LazyArrays()
    for key in split:
        if not key.endswith("]"):
            state.add(key, split.shape(key), split.dtype(key), lambda key=key: split[key])
            continue
        fused = key[: key.rindex("[")]
        parts = _fused_parts(fused)
        if fused in state:  # added with its first part
            continue
        d, d_in = split.shape(key)
        state.add(
            fused,
            (len(parts) * d, d_in),
            split.dtype(key),
            lambda fused=fused, parts=parts: fuse_parts(
                {p: split[f"{fused}[{p}]"] for p in parts}, parts
            ),
        )
    # The released code registers these as persistent buffers: its loader expects them.
    p = cfg.max_positions
    for key in causal_mask_keys(cfg):
        state.add(
            key, (1, 1, p, p), np.uint8, lambda: np.tril(np.ones((p, p), np.uint8))[None, None]
        )
    return state


def expected_shapes(cfg: ShallowDeepConfig) -> dict[str, tuple[int, ...]]:
    """Flat param path -> shape, in the layout `cfg.scan_layers` selects."""
    shapes = {r.jax: r.jax_shape for r in rule_table(cfg).rules}
    if not cfg.scan_layers:
        return shapes
    stacks = _stacks(cfg)
    scanned = {}
    for path, shape in shapes.items():
        stack, block, *rest = path.split("/")
        if block.startswith("layers_") and int(block[7:]) < stacks.get(stack, 0):
            scanned["/".join([stack, "layers", *rest])] = (stacks[stack], *shape)
        else:
            scanned[path] = shape
    return scanned


def check_params(params: Mapping, cfg: ShallowDeepConfig, source: str = "params") -> None:
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
    mapping.raise_problems(problems, f"Cannot use {source} as a {cfg.name!r} shallow_deep model")
