"""The T5 family (kinds "t5", "embedding", "bimodal", "classifier"): codet5p-220m/770m(-py),
the 110m embedding model, the 220m bimodal model and the defect / clone classifiers fine-tuned
from them (`models/classifier.py`), as one registered `Family`."""

from collections.abc import Mapping

from codet5p_jax import families
from codet5p_jax.config import (
    HF_ARCHITECTURES,
    HF_CLASSIFIER_LAYOUT,
    T5Config,
    from_hf_config,
    to_hf_config,
)
from codet5p_jax.convert import hf_t5
from codet5p_jax.convert.scan import scan_params, unscan_params
from codet5p_jax.models import build_model, init_args

# Param groups, as regular expressions over "/"-joined paths (docs/DESIGN.md, Parameters).
# Scanned stacks name their blocks `layers`, unscanned ones `layers_<i>`.
_CROSS_ATTENTION = (
    r"^decoder/layers(_\d+)?/(encoder_decoder_attention|pre_cross_attention_layer_norm)/"
)
PARAM_GROUPS = {
    "embeddings": (r"^token_embedder/",),
    "encoder": (r"^encoder/",),
    "decoder": (r"^decoder/",),
    "cross_attention": (_CROSS_ATTENTION,),
    # The decoder without its cross-attention: what decoder-only fine-tuning trains (paper §3.4:
    # "[CLM]" to the encoder, the encoder and the cross-attention frozen).
    "decoder_self": (
        r"^decoder/(?!layers(_\d+)?/(encoder_decoder_attention|pre_cross_attention_layer_norm)/)",
    ),
    # Stage-2 heads, and the contrastive objective's learned temperature that trains with them;
    # the classifiers' head.
    "heads": (
        r"^embedding_proj/",
        r"^itm_head/",
        r"^contrastive_temperature$",
        r"^classification_head/",
    ),
}

# Fields that change parameter shapes or names; the others (dropout, dtypes, remat) may differ
# between a checkpoint and the model that loads it.
ARCHITECTURE_FIELDS = (
    "kind",
    "vocab_size",
    "emb_dim",
    "num_heads",
    "head_dim",
    "mlp_dim",
    "num_encoder_layers",
    "num_decoder_layers",
    "relative_attention_num_buckets",
    "embed_dim",
    "scan_layers",
    "num_labels",
    "pooling",
    "pair_input",
)


def relayout(params: Mapping, cfg: T5Config, scan: bool) -> tuple[T5Config, dict]:
    """`(cfg, params)` in the scanned layout iff `scan` (copies bits, never casts)."""
    if scan == cfg.scan_layers:
        return cfg, dict(params)
    params = scan_params(params, cfg) if scan else unscan_params(params, cfg)
    return cfg.replace(scan_layers=scan), params


FAMILY = families.register(
    families.Family(
        name="t5",
        config_cls=T5Config,
        build_model=build_model,
        init_args=init_args,
        check_params=hf_t5.check_params,
        relayout=relayout,
        hf=families.HFConversion(
            architectures=(*HF_ARCHITECTURES.values(), HF_CLASSIFIER_LAYOUT),
            model_types=("t5", "codet5p_embedding", "codet5p_bimodal", "codet5p_classifier"),
            config_from_hf=from_hf_config,
            config_to_hf=to_hf_config,
            hf_to_params=hf_t5.hf_to_params,
            params_to_hf=hf_t5.params_to_hf,
        ),
        param_groups=PARAM_GROUPS,
        cache=families.CacheSpec(beam_invariant_modules=("encoder_decoder_attention",)),
        architecture_fields=ARCHITECTURE_FIELDS,
    )
)
