"""The `shallow_deep` family through the registry: presets and gin files, param groups, axis
rules that shard the 16B decoder (FSDP x tensor, abstractly on the 8 fake devices), saved
configs, and the decoding package (beam search) unchanged on this family."""

import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import gin
from codet5p_jax import families, partitioning
from codet5p_jax.cli import gin_flags
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models.shallow_deep_config import PRESETS, ShallowDeepConfig, get_preset
from codet5p_jax.train.optimizers import param_path, trainable_mask

REPO = pathlib.Path(__file__).resolve().parents[2]


def _tiny(**overrides) -> ShallowDeepConfig:
    return get_preset("tiny-shallow-deep", vocab_size=128, max_positions=64, **overrides)


def _params(cfg, seed=0):
    model = families.build_model(cfg)
    return nn.unbox(model.init(jax.random.PRNGKey(seed), *families.init_args(cfg))["params"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_a_model_gin_that_selects_it(name):
    args = gin_flags.parse_args([f"--gin_file={REPO}/gin/models/{name}.gin"], "test", "")
    try:
        gin_flags.parse_gin(args)
        assert gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn() == PRESETS[name]
    finally:
        gin.clear_config()


def test_presets_have_the_released_parameter_counts():
    """FACTS §3.5: 16B = 16,493,680,640 parameters (its index's byte count); the paper's
    cross-attention sizes are 4*D^2 (26.2M / 67.1M / 151.0M)."""
    counts = {}
    for name in ("codet5p-2b", "codet5p-6b", "codet5p-16b"):
        cfg = PRESETS[name].replace(scan_layers=True)
        model = families.build_model(cfg)
        shapes = jax.eval_shape(
            lambda m=model, c=cfg: m.init(jax.random.PRNGKey(0), *families.init_args(c))
        )
        flat = traverse_util.flatten_dict(nn.unbox(shapes["params"]), sep="/")
        counts[name] = sum(int(np.prod(x.shape)) for x in flat.values())
        cross = sum(int(np.prod(x.shape)) for k, x in flat.items() if "encoder_decoder" in k)
        assert cross == 4 * cfg.emb_dim**2, name
    assert counts["codet5p-16b"] == 16_493_680_640
    # FACTS §3.5 computed totals: 2B ~ 3.112B, 6B ~ 7.440B.
    assert round(counts["codet5p-2b"] / 1e9, 3) == 3.112
    assert round(counts["codet5p-6b"] / 1e9, 3) == 7.440


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_param_groups_select_the_paper_recipe(scan):
    cfg = _tiny(scan_layers=scan)
    params = _params(cfg)
    groups = families.family_of(cfg).param_groups
    paths = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for name in ("encoder", "decoder", "cross_attention", "enc_to_dec_proj", "embeddings", "heads"):
        mask = trainable_mask(params, name, groups)  # raises if the group selects nothing
        assert any(jax.tree.leaves(mask)), name
    # Paper §3.3 / the released instruct script: encoder + cross-attention + enc_to_dec_proj
    # train, the whole deep decoder (embedding, self-attention blocks, LM head) is frozen.
    mask = trainable_mask(params, "encoder_and_cross_attention", groups)
    trained = {p for p, m in zip(paths, jax.tree.leaves(mask), strict=True) if m}
    want = {
        p
        for p in paths
        if p.startswith(("encoder/", "enc_to_dec_proj/")) or "encoder_decoder_attention" in p
    }
    assert trained == want
    assert all(p.startswith("decoder/layers_2/") for p in want if p.startswith("decoder/"))


def test_axis_rules_shard_the_16b_decoder_over_fsdp_and_tensor():
    cfg = PRESETS["codet5p-16b"].replace(scan_layers=True)
    family = families.family_of(cfg)
    model = family.build_model(cfg)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *family.init_args(cfg)))
    boxed = boxed["params"]
    mesh = partitioning.make_mesh(data=1, fsdp=2, tensor=4)
    rules = partitioning.get_axis_rules("fsdp_tp") + tuple(family.axis_rules["fsdp_tp"])
    shardings = partitioning.logical_to_shardings(boxed, mesh, rules)
    flat_sh = traverse_util.flatten_dict(shardings, sep="/")
    flat = traverse_util.flatten_dict(nn.unbox(boxed), sep="/")
    per_device = 0
    for path, leaf in flat.items():
        spec = flat_sh[path].spec
        shard = list(leaf.shape)
        for i, axes in enumerate(spec):
            for axis in (axes,) if isinstance(axes, str) else axes or ():
                assert shard[i] % mesh.shape[axis] == 0, (path, spec)
                shard[i] //= mesh.shape[axis]
        per_device += int(np.prod(shard))
    qkv = flat_sh["decoder/layers/attention/query/kernel"].spec
    assert tuple(qkv)[:3] == (None, "fsdp", "tensor")  # [layers, embed, heads, kv]
    assert tuple(flat_sh["decoder/layers/mlp/fc_in/kernel"].spec) == (None, "fsdp", "tensor")
    assert tuple(flat_sh["logits_dense/kernel"].spec) == ("fsdp", "tensor")
    # Everything but norms/biases is split 8 ways: well under 1/4 of the model per device.
    assert per_device < 0.13 * 16_493_680_640


def test_saved_config_round_trips_and_names_differences():
    cfg = _tiny(cross_attention_query_positions="released")
    saved = families.config_to_dict(cfg)
    assert saved["family"] == "shallow_deep"
    assert families.config_from_dict(saved) == cfg
    diffs = families.architecture_differences(saved, cfg.replace(num_cross_attention_layers=2))
    assert diffs == ["num_cross_attention_layers: checkpoint 1, model 2"]
    t5 = families.config_to_dict(families.get("t5").config_cls())
    assert families.architecture_differences(t5, cfg) == [
        "family: checkpoint 't5', model 'shallow_deep'"
    ]


def test_bad_configs_name_the_field():
    with pytest.raises(
        ValueError, match=r"num_cross_attention_layers 4 must be in \[0, num_decoder_layers 3\]"
    ):
        _tiny(num_cross_attention_layers=4)
    with pytest.raises(ValueError, match="cross_attention_query_positions 'zero'"):
        _tiny(cross_attention_query_positions="zero")
    with pytest.raises(ValueError, match="encoder_rotary_dim 6 must be even and in"):
        _tiny(encoder_rotary_dim=6, encoder_emb_dim=16)
    with pytest.raises(ValueError, match="Unknown shallow_deep preset 'codet5p-3b'"):
        get_preset("codet5p-3b")


def _sequence_logprobs(model, params, enc, tokens, start):
    """[B, K, T] generated tokens -> [B, K] teacher-forced sums of log-probabilities."""
    b, k, t = tokens.shape
    flat = tokens.reshape(b * k, t)
    dec_in = np.concatenate([np.full((b * k, 1), start), flat[:, :-1]], axis=1)
    logits = model.apply(
        {"params": params}, jnp.asarray(np.repeat(enc, k, axis=0)), jnp.asarray(dec_in)
    )
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, jnp.asarray(flat)[..., None], axis=-1)[..., 0]
    return np.asarray(picked.sum(-1)).reshape(b, k)


def test_beam_search_uses_the_family_cache_spec():
    """Beam search reorders self-attention caches and leaves the cross-attention keys alone
    (`CacheSpec`): its reported scores equal the teacher-forced log-probabilities."""
    cfg = dataclasses.replace(_tiny(), eos_token_id=-1, pad_token_id=0, decoder_start_token_id=1)
    model = families.build_model(cfg)
    params = jax.tree.map(lambda x: x * 4.0, _params(cfg, seed=3))  # peaked, non-trivial beams
    enc = np.random.RandomState(0).randint(2, cfg.vocab_size, (2, 7))
    greedy = generate(model, params, enc, max_new_tokens=5)
    beam1 = generate(model, params, enc, max_new_tokens=5, method="beam", num_beams=1)
    np.testing.assert_array_equal(beam1.tokens, greedy.tokens)
    beams = generate(model, params, enc, max_new_tokens=5, method="beam", num_beams=3)
    assert beams.tokens.shape == (2, 3, 5)
    logp = _sequence_logprobs(model, params, enc, beams.tokens, cfg.decoder_start_token_id)
    # HF length penalty 1.0: score = sum_logprobs / length.
    np.testing.assert_allclose(beams.scores, logp / 5, atol=1e-4)
    assert len({tuple(t) for t in beams.tokens[0]}) == 3  # three distinct beams


@pytest.mark.slow
def test_trains_through_the_trainer_with_the_decoder_frozen(toy_gin, tmp_path):
    """`codet5p train` on the tiny preset with the paper's trainable set: a few steps move the
    encoder, cross-attention and `enc_to_dec_proj` and leave the rest bit-identical."""
    from codet5p_jax import loading
    from codet5p_jax.cli.train import main as train_main

    model_dir = tmp_path / "run"
    argv = [
        f"--gin_file={toy_gin}",
        f"--gin_file={REPO}/gin/models/tiny-shallow-deep.gin",  # rebinds MODEL_CONFIG
        f"--gin.MODEL_DIR='{model_dir}'",
        "--gin.shallow_deep_preset.vocab_size=512",
        "--gin.shallow_deep_preset.pad_token_id=0",
        "--gin.shallow_deep_preset.decoder_start_token_id=0",
        "--gin.make_optimizer.trainable='encoder_and_cross_attention'",
        "--gin.TRAIN_STEPS=4",
        "--gin.train.save_every=2",
    ]
    assert train_main(argv) == 0
    steps = {}
    for step in (2, 4):
        ckpt = loading.load(model_dir / "checkpoints" / str(step))
        assert isinstance(ckpt.config, ShallowDeepConfig)
        steps[step] = traverse_util.flatten_dict(ckpt.params, sep="/")
    for path, before in steps[2].items():
        moved = not np.array_equal(before, steps[4][path])
        trainable = path.startswith(("encoder/", "enc_to_dec_proj/")) or (
            "encoder_decoder_attention" in path
        )
        assert moved == trainable, path
