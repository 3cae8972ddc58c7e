"""`ShallowDeepConfig` <-> the released CodeT5+ 2B-16B `config.json` (FACTS §3.5, §7).

The released config is a top-level `CodeT5pConfig` (`model_type "codet5p"`) holding two
CodeGen-style sub-configs, `encoder` and `decoder` (`model_type "codet5p_module"`). An export
keeps that shape and fixes what FACTS §7 lists (see `readme`).
"""

from typing import Any

from codet5p_jax.models.shallow_deep_config import ENDOFTEXT_ID, ShallowDeepConfig

ARCHITECTURE = "CodeT5pEncoderDecoderModel"
MODEL_TYPE = "codet5p"
# The released auto_map, with AutoModel pointing at a class that exists (FACTS §7: the released
# `modeling_codet5p.CodeGenModel` does not).
AUTO_MAP = {
    "AutoConfig": "configuration_codet5p.CodeT5pConfig",
    "AutoModel": "modeling_codet5p.CodeT5pEncoderDecoderModel",
    "AutoModelForSeq2SeqLM": "modeling_codet5p.CodeT5pEncoderDecoderModel",
}
# Not in the released config: how many top decoder blocks have cross-attention (the released
# code always uses 1, the last block) and the cross-attention rotary switch.
CROSS_LAYERS_FIELD = "n_cross_attention_layers"
CROSS_QUERY_FIELD = "cross_attention_query_positions"


def _sub(hf: dict, name: str) -> dict:
    sub = hf.get(name)
    if not isinstance(sub, dict):
        raise ValueError(
            f"field {name!r} is missing or not an object: the released CodeT5+ 2B-16B layout has "
            "'encoder' and 'decoder' sub-configs"
        )
    return sub


def _get(sub: dict, stack: str, key: str, kind=int):
    if sub.get(key) is None:
        raise ValueError(f"field {stack}.{key} is missing")
    try:
        return kind(sub[key])
    except (TypeError, ValueError) as e:
        raise ValueError(f"field {stack}.{key}: {e}") from None


def _stack_fields(sub: dict, stack: str) -> dict:
    act = sub.get("activation_function", "gelu_new")
    if act != "gelu_new":
        raise ValueError(f"field {stack}.activation_function is {act!r}; CodeGen uses 'gelu_new'")
    if sub.get("tie_word_embeddings") is True:
        raise ValueError(f"field {stack}.tie_word_embeddings is true; the released models untie")
    width = _get(sub, stack, "n_embd")
    inner = sub.get("n_inner")
    return dict(
        width=width,
        heads=_get(sub, stack, "n_head"),
        mlp=4 * width if inner is None else _get(sub, stack, "n_inner"),
        rotary=_get(sub, stack, "rotary_dim"),
        layers=_get(sub, stack, "n_layer"),
        vocab=_get(sub, stack, "vocab_size"),
        eps=float(sub.get("layer_norm_epsilon", 1e-5)),
    )


def _token(hf: dict, dec: dict, key: str, default: int) -> int:
    """A special id from the top-level config, else the decoder's, else `default` (FACTS §7:
    the 16B configs have null `decoder_start_token_id` / `pad_token_id`)."""
    for source in (hf, dec):
        value = source.get(key)
        if value is not None:
            return int(value[0] if isinstance(value, list) else value)
    return default


def config_from_hf(hf: dict[str, Any], name: str = "custom") -> ShallowDeepConfig:
    """The released `config.json` dict -> `ShallowDeepConfig`.

    Raises:
      ValueError: Naming the field that is missing, unsupported or inconsistent.
    """
    enc, dec = _sub(hf, "encoder"), _sub(hf, "decoder")
    e, d = _stack_fields(enc, "encoder"), _stack_fields(dec, "decoder")
    if e["vocab"] != d["vocab"]:
        raise ValueError(
            f"fields encoder.vocab_size {e['vocab']} and decoder.vocab_size {d['vocab']} differ"
        )
    if e["eps"] != d["eps"]:
        raise ValueError(
            f"fields encoder.layer_norm_epsilon {e['eps']} and decoder.layer_norm_epsilon "
            f"{d['eps']} differ"
        )
    if dec.get("add_cross_attention") is False:
        cross = 0
    else:
        cross = _get(dec, "decoder", CROSS_LAYERS_FIELD) if CROSS_LAYERS_FIELD in dec else 1
    try:
        return ShallowDeepConfig(
            name=name,
            vocab_size=d["vocab"],
            encoder_emb_dim=e["width"],
            encoder_num_heads=e["heads"],
            encoder_mlp_dim=e["mlp"],
            encoder_rotary_dim=e["rotary"],
            num_encoder_layers=e["layers"],
            emb_dim=d["width"],
            num_heads=d["heads"],
            mlp_dim=d["mlp"],
            rotary_dim=d["rotary"],
            num_decoder_layers=d["layers"],
            num_cross_attention_layers=cross,
            cross_attention_query_positions=hf.get(CROSS_QUERY_FIELD, "absolute"),
            layer_norm_epsilon=d["eps"],
            max_positions=int(dec.get("n_positions") or 2048),
            dropout_rate=float(dec.get("resid_pdrop") or 0.0),
            pad_token_id=_token(hf, dec, "pad_token_id", ENDOFTEXT_ID),
            bos_token_id=_token(hf, dec, "bos_token_id", 1),
            eos_token_id=_token(hf, dec, "eos_token_id", ENDOFTEXT_ID),
            decoder_start_token_id=_token(hf, dec, "decoder_start_token_id", ENDOFTEXT_ID),
        )
    except ValueError as err:
        raise ValueError(
            f"the encoder/decoder sub-configs describe no valid model: {err}"
        ) from None


def _sub_config(cfg: ShallowDeepConfig, stack: str) -> dict[str, Any]:
    is_decoder = stack == "decoder"
    width, heads, mlp, rotary, layers = (
        (cfg.emb_dim, cfg.num_heads, cfg.mlp_dim, cfg.rotary_dim, cfg.num_decoder_layers)
        if is_decoder
        else (
            cfg.encoder_emb_dim,
            cfg.encoder_num_heads,
            cfg.encoder_mlp_dim,
            cfg.encoder_rotary_dim,
            cfg.num_encoder_layers,
        )
    )
    sub = {
        "model_type": "codet5p_module",
        "architectures": ["CodeT5pForCausalLM" if is_decoder else "CodeT5pModel"],
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_embd": width,
        "n_head": heads,
        "n_inner": None if mlp == 4 * width else mlp,
        "n_layer": layers,
        "rotary_dim": rotary,
        "n_positions": cfg.max_positions,
        "n_ctx": cfg.max_positions,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "attn_pdrop": cfg.dropout_rate,
        "resid_pdrop": cfg.dropout_rate,
        "embd_pdrop": cfg.dropout_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "use_cache": True,
        "tie_word_embeddings": False,
        "is_decoder": is_decoder,
        "is_encoder_decoder": False,
        "add_cross_attention": is_decoder and cfg.num_cross_attention_layers > 0,
        "cross_attention_hidden_size": None,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "tokenizer_class": "GPT2Tokenizer",
        "torch_dtype": cfg.param_dtype,
    }
    if is_decoder and cfg.num_cross_attention_layers > 1:
        sub[CROSS_LAYERS_FIELD] = cfg.num_cross_attention_layers
    return sub


def config_to_hf(cfg: ShallowDeepConfig) -> dict[str, Any]:
    """`cfg` -> the released `config.json` shape (with the FACTS §7 fixes)."""
    hf = {
        "architectures": [ARCHITECTURE],
        "auto_map": dict(AUTO_MAP),
        "model_type": MODEL_TYPE,
        "is_encoder_decoder": True,
        "encoder": _sub_config(cfg, "encoder"),
        "decoder": _sub_config(cfg, "decoder"),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "tie_word_embeddings": False,
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.cross_attention_query_positions != "absolute":
        hf[CROSS_QUERY_FIELD] = cfg.cross_attention_query_positions
    return hf


def readme(cfg: ShallowDeepConfig) -> str:
    """The note written beside an export: how to load it and what differs from the release."""
    multi = cfg.num_cross_attention_layers > 1
    return f"""# {cfg.name} (CodeT5+ encoder-decoder, exported by codet5p_jax)

Layout: the released `Salesforce/codet5p-2b` ... `instructcodet5p-16b` one
(`CodeT5pEncoderDecoderModel`, remote code). Copy `configuration_codet5p.py` and
`modeling_codet5p.py` from a released checkpoint beside these files and load with
`AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)`; or load it back with
`codet5p convert` / `codet5p_jax.from_pretrained`.

Differences from the released files (CODET5P_FACTS §7):

* `auto_map.AutoModel` points at `modeling_codet5p.CodeT5pEncoderDecoderModel` (the released
  `modeling_codet5p.CodeGenModel` does not exist).
* `decoder_start_token_id` and `pad_token_id` are set ({cfg.decoder_start_token_id} /
  {cfg.pad_token_id}) at the top level and in both sub-configs (null in the released 16B
  configs; the HumanEval script uses the pad id, 50256).
* The `encoder` and `decoder` sub-configs are complete, so the config does not depend on
  `CodeT5pConfig()` defaults (the released class cannot be default-constructed: transformers
  issues #178 / #192 of salesforce/CodeT5).
* `causal_mask` buffers are written (the released loader expects them); they carry no weights.
* Cross-attention rotary: the released code, with a working cache, rotates the cross-attention
  query of each generated token as position 0 but at its true position in teacher forcing.
  codet5p_jax uses `{cfg.cross_attention_query_positions}` positions for this model
  (`cross_attention_query_positions`; docs/shallow_deep.md).
{
        "* This model has cross-attention in its top "
        + str(cfg.num_cross_attention_layers)
        + " decoder blocks (`decoder.n_cross_attention_layers`); the released code builds it only"
        + " in the last block and would drop the others."
        if multi
        else ""
    }
"""
