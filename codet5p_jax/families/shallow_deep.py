"""The `shallow_deep` family: CodeT5+ 2B / 6B / 16B / InstructCodeT5+ 16B as one `Family`.

A shallow CodeGen encoder, a deep (frozen in the paper's recipe) CodeGen decoder with
cross-attention in its top blocks (`models/shallow_deep.py`), converted to and from the
released `CodeT5pEncoderDecoderModel` layout (`convert/hf_shallow_deep.py`).
"""

from collections.abc import Mapping

import gin
from codet5p_jax import families
from codet5p_jax.convert import hf_shallow_deep, hf_shallow_deep_config
from codet5p_jax.models.shallow_deep import CodeT5pShallowDeep, init_args
from codet5p_jax.models.shallow_deep_config import ShallowDeepConfig, get_preset

# Param groups, regular expressions over "/"-joined paths. Scanned stacks name their uniform
# blocks `layers`; the cross-attention blocks are always unrolled `layers_<i>`.
PARAM_GROUPS = {
    # The shallow encoder, its token embedding, and `enc_to_dec_proj` (the encoder's output
    # projection into the decoder width, trained with the encoder in the released recipe:
    # FACTS §1.3), so the "encoder_and_cross_attention" preset is the paper's §3.3 recipe.
    "encoder": (r"^encoder/", r"^enc_to_dec_proj/"),
    "enc_to_dec_proj": (r"^enc_to_dec_proj/",),
    # The deep decoder: everything under `decoder/` (cross-attention included) plus the LM head.
    "decoder": (r"^decoder/", r"^logits_dense/"),
    "cross_attention": (r"^decoder/layers_\d+/encoder_decoder_attention/",),
    "embeddings": (r"^encoder/token_embedder/", r"^decoder/token_embedder/"),
    "heads": (r"^logits_dense/",),
}

# Shape- or name-changing fields (a checkpoint differing in them cannot be restored).
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "encoder_emb_dim",
    "encoder_num_heads",
    "encoder_mlp_dim",
    "num_encoder_layers",
    "emb_dim",
    "num_heads",
    "mlp_dim",
    "num_decoder_layers",
    "num_cross_attention_layers",
    "scan_layers",
)

# Beyond `partitioning.AXIS_RULES`: the 51200-row vocabulary divides every tensor-parallel size
# up to 1024, so the embeddings and the LM head (315M params at 16B) split over `tensor` too.
AXIS_RULES = {"fsdp_tp": (("vocab", "tensor"),)}


def relayout(params: Mapping, cfg: ShallowDeepConfig, scan: bool) -> tuple[ShallowDeepConfig, dict]:
    """`(cfg, params)` in the scanned layout iff `scan` (copies bits, never casts)."""
    if scan == cfg.scan_layers:
        return cfg, dict(params)
    params = hf_shallow_deep.scan(params, cfg) if scan else hf_shallow_deep.unscan(params, cfg)
    return cfg.replace(scan_layers=scan), params


# Gin: `MODEL_CONFIG = @shallow_deep_preset()` in gin/models/<preset>.gin.
gin.external_configurable(get_preset, name="shallow_deep_preset", module="codet5p_jax.families")
gin.external_configurable(ShallowDeepConfig, module="codet5p_jax.families")

FAMILY = families.register(
    families.Family(
        name="shallow_deep",
        config_cls=ShallowDeepConfig,
        build_model=CodeT5pShallowDeep,
        init_args=init_args,
        check_params=hf_shallow_deep.check_params,
        relayout=relayout,
        hf=families.HFConversion(
            architectures=(hf_shallow_deep_config.ARCHITECTURE,),
            model_types=(hf_shallow_deep_config.MODEL_TYPE,),
            config_from_hf=hf_shallow_deep_config.config_from_hf,
            config_to_hf=hf_shallow_deep_config.config_to_hf,
            hf_to_params=hf_shallow_deep.hf_to_params,
            params_to_hf=hf_shallow_deep.params_to_hf,
            readme=hf_shallow_deep_config.readme,
        ),
        param_groups=PARAM_GROUPS,
        axis_rules=AXIS_RULES,
        cache=families.CacheSpec(beam_invariant_modules=("encoder_decoder_attention",)),
        architecture_fields=ARCHITECTURE_FIELDS,
        decoder_prompt=True,
    )
)
