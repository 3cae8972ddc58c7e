"""HF -> orbax -> HF and orbax -> HF -> orbax are bit-exact for every kind; so is (un)scanning."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
from testlib import TOKENIZER_FILES, build_reference, write_hf_dir

from codet5p_jax import checkpointing, loading
from codet5p_jax.config import PRESETS
from codet5p_jax.convert import hf_io
from codet5p_jax.convert.hf_t5 import TIED_KEYS
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.loading import convert
from codet5p_jax.models import init_params


def _assert_same_state(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].shape == want[key].shape, key
        assert got[key].tobytes() == want[key].tobytes(), key


def _assert_same_tree(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
def test_hf_to_orbax_to_hf_is_bit_exact(hf_source, tmp_path, scan):
    kind, src, _ = hf_source
    convert(src, tmp_path / "orbax", "orbax", scan=scan)
    assert loading.read_orbax(tmp_path / "orbax")[0].scan_layers is scan
    convert(tmp_path / "orbax", tmp_path / "hf", "hf")

    source = hf_io.read_hf_state(src)
    # Tied copies (present in torch.save'd sources) are dropped; everything else is identical.
    _assert_same_state(
        hf_io.read_hf_state(tmp_path / "hf"),
        {k: v for k, v in source.items() if k not in TIED_KEYS},
    )
    out_cfg, in_cfg = hf_io.read_hf_config(tmp_path / "hf"), hf_io.read_hf_config(src)
    for field in ("architectures", "model_type", "vocab_size", "d_model", "d_kv", "num_heads"):
        assert out_cfg[field] == in_cfg[field], field
    assert out_cfg.get("embed_dim") == in_cfg.get("embed_dim")
    for name, text in TOKENIZER_FILES.items():
        assert (tmp_path / "hf" / name).read_text() == text
        assert (tmp_path / "orbax" / "tokenizer" / name).read_text() == text


def test_orbax_to_hf_to_orbax_is_bit_exact(hf_source, tmp_path):
    _, src, _ = hf_source
    convert(src, tmp_path / "a", "orbax", scan=True)
    convert(tmp_path / "a", tmp_path / "hf", "hf")
    convert(tmp_path / "hf", tmp_path / "b", "orbax", scan=True)
    cfg_a, params_a = loading.read_orbax(tmp_path / "a")
    cfg_b, params_b = loading.read_orbax(tmp_path / "b")
    assert cfg_b == cfg_a.replace(name=cfg_b.name)  # the name follows the HF directory
    _assert_same_tree(params_b, params_a)


def test_scanned_and_unscanned_checkpoints_convert_into_each_other(hf_source, tmp_path):
    _, src, _ = hf_source
    convert(src, tmp_path / "scanned", "orbax", scan=True)
    convert(src, tmp_path / "unscanned", "orbax", scan=False)
    convert(tmp_path / "scanned", tmp_path / "unscanned2", "orbax", scan=False)
    convert(tmp_path / "unscanned", tmp_path / "scanned2", "orbax", scan=True)
    for a, b in (("unscanned", "unscanned2"), ("scanned", "scanned2")):
        cfg_a, params_a = loading.read_orbax(tmp_path / a)
        cfg_b, params_b = loading.read_orbax(tmp_path / b)
        assert cfg_a == cfg_b
        _assert_same_tree(params_b, params_a)
    # Without --scan/--no-scan the source layout is kept.
    convert(tmp_path / "scanned", tmp_path / "kept", "orbax")
    assert loading.read_orbax(tmp_path / "kept")[0].scan_layers


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_keep_their_bits(tmp_path, dtype):
    ref = build_reference("t5")
    ref.t5.to(dtype)
    src = write_hf_dir(ref, tmp_path / "src")
    convert(src, tmp_path / "orbax", "orbax", scan=True)
    convert(tmp_path / "orbax", tmp_path / "hf", "hf")
    _assert_same_state(hf_io.read_hf_state(tmp_path / "hf"), hf_io.read_hf_state(src))
    dtype_name = str(dtype).removeprefix("torch.")
    assert hf_io.read_hf_config(tmp_path / "hf")["torch_dtype"] == dtype_name


def _torch_sharded_dir(ref, path, hf_config: dict):
    """Two `torch.save` shards plus `pytorch_model.bin.index.json`, as HF wrote them in v4."""
    path.mkdir()
    state = ref.state_dict()
    keys = sorted(state)
    shards = {
        "pytorch_model-00001-of-00002.bin": keys[::2],
        "pytorch_model-00002-of-00002.bin": keys[1::2],
    }
    for name, shard_keys in shards.items():
        torch.save({k: state[k] for k in shard_keys}, path / name)
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (path / "config.json").write_text(json.dumps(hf_config))
    return path


def test_torch_bin_single_and_sharded_read_identically_to_safetensors(tmp_path):
    ref = build_reference("t5")
    ref.t5.save_pretrained(tmp_path / "single")
    ref.t5.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    hf_config = hf_io.read_hf_config(tmp_path / "single")
    (tmp_path / "bin").mkdir()
    torch.save(ref.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    _torch_sharded_dir(ref, tmp_path / "bin_sharded", hf_config)

    want = {k: v.numpy() for k, v in ref.state_dict().items() if k not in TIED_KEYS}
    _assert_same_state(hf_io.read_hf_state(tmp_path / "single"), want)
    _assert_same_state(hf_io.read_hf_state(tmp_path / "sharded"), want)
    torch_state = {k: v.numpy() for k, v in ref.state_dict().items()}
    _assert_same_state(hf_io.read_hf_state(tmp_path / "bin"), torch_state)
    _assert_same_state(hf_io.read_hf_state(tmp_path / "bin_sharded"), torch_state)
    _, params = loading.read_hf(tmp_path / "single")
    _, params_bin = loading.read_hf(tmp_path / "bin_sharded")
    _assert_same_tree(params_bin, params)


def test_sharded_index_must_match_its_shards(tmp_path):
    ref = build_reference("t5")
    src = _torch_sharded_dir(ref, tmp_path / "src", {})
    index_file = src / "pytorch_model.bin.index.json"
    index = json.loads(index_file.read_text())
    dropped = sorted(index["weight_map"])[0]
    del index["weight_map"][dropped]
    index_file.write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=f"keys not in the index \\['{dropped}'\\]"):
        hf_io.read_hf_state(src)
    index["weight_map"][dropped] = "pytorch_model-00001-of-00002.bin"
    index_file.write_text(json.dumps(index))
    hf_io.read_hf_state(src)  # consistent again
    (src / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(ConversionError, match="pytorch_model-00002-of-00002.bin: no such file"):
        hf_io.read_hf_state(src)


def test_checkpoint_without_optional_tied_copies_loads(tmp_path):
    # transformers 5 writes only `shared.weight`; released torch.save files have all copies.
    ref = build_reference("bimodal")
    state = {k: v for k, v in ref.state_dict().items() if k not in TIED_KEYS}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(
        (write_hf_dir(ref, tmp_path / "full") / "config.json").read_text()
    )
    torch.save(state, tmp_path / "src" / "pytorch_model.bin")
    _, with_copies = loading.read_hf(tmp_path / "full")
    _, without = loading.read_hf(tmp_path / "src")
    _assert_same_tree(without, with_copies)
    assert np.asarray(without["itm_head"]["kernel"]).shape == (16, 2)


def test_training_run_dir_converts_to_hf_bit_exactly(hf_source, tmp_path):
    kind, src, _ = hf_source
    ckpt = loading.load(src, scan_layers=True)
    cfg, params = ckpt.config, ckpt.params
    checkpointing.save_params(tmp_path / "run", params, cfg, step=3)
    # A stage-2 run also trains a temperature leaf, which no exported layout has.
    params = {**params, "contrastive_temperature": np.asarray(0.07, np.float32)}
    checkpointing.save_params(tmp_path / "run", params, cfg, step=7)
    fmt, step_dir = loading.resolve(tmp_path / "run")
    assert (fmt, step_dir) == ("run", tmp_path / "run" / "checkpoints" / "7")
    convert(tmp_path / "run", tmp_path / "hf", "hf")
    source = hf_io.read_hf_state(src)
    _assert_same_state(
        hf_io.read_hf_state(tmp_path / "hf"),
        {k: v for k, v in source.items() if k not in TIED_KEYS},
    )
    assert (
        hf_io.read_hf_config(tmp_path / "hf")["model_type"]
        == hf_io.read_hf_config(src)["model_type"]
    )


@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
def test_boxed_param_trees_save_and_reload(tmp_path, scan):
    cfg = PRESETS["tiny-bimodal"].replace(scan_layers=scan)
    # The boxed tree `model.init` returns (nn.Partitioned leaves), filled with random values.
    abstract = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    boxed = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype), abstract)
    assert isinstance(boxed["token_embedder"]["embedding"], nn.Partitioned)
    plain = nn.unbox(boxed)
    loading.save(tmp_path / "orbax", cfg, boxed, "orbax")
    loading.save(tmp_path / "hf", cfg, boxed, "hf")
    _assert_same_tree(loading.read_orbax(tmp_path / "orbax")[1], plain)
    _assert_same_tree(loading.load(tmp_path / "hf", scan_layers=scan).params, plain)
