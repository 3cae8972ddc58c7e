"""CodeT5+ 2B-16B (`shallow_deep`) <-> the released `CodeT5pEncoderDecoderModel` layout.

* The converter's key set and shapes for the `instructcodet5p-16b` preset are exactly the
  released 16B index (500 keys; parameter bytes + causal masks = its `total_size`), and a tiny
  export has the same normalised key set and shape pattern.
* Exports re-import bit-exactly through `codet5p convert`; the exported directory has the
  released config shape, the FACTS §7 fixes and a README note.
* A sharded float16 `pytorch_model.bin` input (with the released config.json and causal-mask
  buffers) converts to float32 exactly. The whole `codet5p convert --to hf` (read + sharded
  write) peaks below 1.3x its largest shard plus the output; an HF export adds about one output
  shard to the params; `--to orbax` is measured and bounded by the params plus one more copy
  (orbax/tensorstore's own write buffers; see the test). All measured in a subprocess.
* Bad inputs: one-line errors naming the file / key / field, nothing written.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from flax import traverse_util
from testlib import build_reference, write_hf_dir

from codet5p_jax import loading
from codet5p_jax.cli.convert import main
from codet5p_jax.convert import hf_io, hf_shallow_deep, hf_shallow_deep_config
from codet5p_jax.models.shallow_deep_config import ShallowDeepConfig, get_preset

INDEX_16B = "reference/configs/instructcodet5p-16b/pytorch_model.bin.index.json"


def _tiny(**overrides) -> ShallowDeepConfig:
    return get_preset("tiny-shallow-deep", vocab_size=128, max_positions=32, **overrides)


def _random_params(cfg: ShallowDeepConfig, seed: int = 0, dtype=np.float32) -> dict:
    rng = np.random.default_rng(seed)
    flat = {
        path: rng.standard_normal(shape).astype(dtype)
        for path, shape in hf_shallow_deep.expected_shapes(cfg).items()
    }
    return traverse_util.unflatten_dict(flat, sep="/")


def _released_config(shared_dir, cfg: ShallowDeepConfig) -> dict:
    """The released 16B config.json (nulls and all) with `cfg`'s dimensions."""
    hf = json.loads((shared_dir / "reference/configs/instructcodet5p-16b/config.json").read_text())
    for stack, dims in (
        ("encoder", (cfg.encoder_emb_dim, cfg.encoder_num_heads, cfg.num_encoder_layers)),
        ("decoder", (cfg.emb_dim, cfg.num_heads, cfg.num_decoder_layers)),
    ):
        sub = hf[stack]
        sub["n_embd"], sub["n_head"], sub["n_layer"] = dims
        sub["rotary_dim"] = cfg.encoder_rotary_dim if stack == "encoder" else cfg.rotary_dim
        sub["vocab_size"] = cfg.vocab_size
        sub["n_positions"] = sub["n_ctx"] = cfg.max_positions
    return hf


def _write_released_bin(shared_dir, cfg, params, path, max_shard_bytes):
    """A released-style source: float16 `pytorch_model-0000i-of-0000n.bin` shards + index,
    causal-mask buffers included, and the released config.json shape."""
    state = hf_shallow_deep.params_to_hf(params, cfg)
    state = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in state.items()}
    shards = hf_io._shards(state, max_shard_bytes)
    path.mkdir(parents=True)
    weight_map = {}
    for i, keys in enumerate(shards, start=1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save({k: torch.from_numpy(np.array(state[k])) for k in keys}, path / name)
        weight_map.update(dict.fromkeys(keys, name))
    total = sum(v.nbytes for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (path / "config.json").write_text(json.dumps(_released_config(shared_dir, cfg)))
    return path, state


def _normalise(key: str) -> str:
    return re.sub(r"\.h\.\d+\.", ".h.{i}.", key)


# ---------------------------------------------------------------------------------------------
# The released layout.


def _hf_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """HF key -> shape from the rule table (fused qkv parts joined), plus the causal masks."""
    shapes = {}
    for rule in hf_shallow_deep.rule_table(cfg).rules:
        key = rule.hf.split("[")[0]
        if key == rule.hf:
            shapes[key] = rule.hf_shape
        else:  # one part of a fused qkv_proj: rows add up
            rows, cols = shapes.get(key, (0, rule.hf_shape[1]))
            shapes[key] = (rows + rule.hf_shape[0], cols)
    for key in hf_shallow_deep.causal_mask_keys(cfg):
        shapes[key] = (1, 1, cfg.max_positions, cfg.max_positions)
    return shapes


def test_the_16b_layout_is_exactly_the_released_index(shared_dir):
    index = json.loads((shared_dir / INDEX_16B).read_text())
    cfg = get_preset("instructcodet5p-16b")
    shapes = _hf_shapes(cfg)
    assert set(shapes) == set(index["weight_map"])  # all 500 keys, no more
    masks = set(hf_shallow_deep.causal_mask_keys(cfg))
    params = sum(int(np.prod(s)) for k, s in shapes.items() if k not in masks)
    assert params == 16_493_680_640  # FACTS §3.5
    # fp16 params + uint8 [2048, 2048] masks: the index's byte count, to the byte.
    mask_bytes = sum(int(np.prod(shapes[k])) for k in masks)
    assert 2 * params + mask_bytes == index["metadata"]["total_size"]


def test_tiny_export_has_the_16b_key_set_and_shape_pattern(shared_dir, tmp_path):
    cfg = _tiny()
    loading.save(tmp_path / "hf", cfg, _random_params(cfg), "hf", max_shard_bytes=100_000)
    files = sorted(os.listdir(tmp_path / "hf"))
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert len([f for f in files if f.endswith(".safetensors")]) > 1
    exported = hf_io.read_hf_state(tmp_path / "hf")
    released = json.loads((shared_dir / INDEX_16B).read_text())["weight_map"]
    assert {_normalise(k) for k in exported} == {_normalise(k) for k in released}
    # Shape pattern: each key's shape is the released formula (FACTS §3.5) at the tiny dims.
    d, de, v, p = cfg.emb_dim, cfg.encoder_emb_dim, cfg.vocab_size, cfg.max_positions
    formula = {
        "encoder.wte.weight": (v, de),
        "encoder.h.{i}.ln_1.weight": (de,),
        "encoder.h.{i}.attn.qkv_proj.weight": (3 * de, de),
        "encoder.h.{i}.attn.out_proj.weight": (de, de),
        "encoder.h.{i}.mlp.fc_in.weight": (4 * de, de),
        "encoder.h.{i}.mlp.fc_out.weight": (de, 4 * de),
        "enc_to_dec_proj.weight": (d, de),
        "decoder.transformer.wte.weight": (v, d),
        "decoder.transformer.h.{i}.attn.qkv_proj.weight": (3 * d, d),
        "decoder.transformer.h.{i}.crossattention.q_attn.weight": (d, d),
        "decoder.transformer.h.{i}.crossattention.qkv_proj.weight": (2 * d, d),
        "decoder.transformer.h.{i}.crossattention.out_proj.weight": (d, d),
        "decoder.transformer.h.{i}.attn.causal_mask": (1, 1, p, p),
        "decoder.lm_head.weight": (v, d),
        "decoder.lm_head.bias": (v,),
    }
    for key in exported:
        if _normalise(key) in formula:
            assert exported.shape(key) == formula[_normalise(key)], key
    cross = sorted(k for k in exported if ".crossattention." in k)
    assert {k.split(".")[3] for k in cross} == {str(cfg.num_decoder_layers - 1)}  # last block


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_export_reimports_bit_exactly_through_the_cli(tmp_path, capsys, scan):
    cfg = _tiny(scan_layers=scan, cross_attention_query_positions="released")
    params = _random_params(cfg.replace(scan_layers=False))
    if scan:
        params = hf_shallow_deep.scan(params, cfg)
    loading.save(tmp_path / "orbax", cfg, params, "orbax")
    argv = [str(tmp_path / "orbax"), str(tmp_path / "hf"), "--to", "hf"]
    assert main([*argv, "--max-shard-bytes", "200000"]) == 0
    argv = [str(tmp_path / "hf"), str(tmp_path / "back"), "--to", "orbax"]
    assert main([*argv, "--scan" if scan else "--no-scan"]) == 0
    assert "shallow_deep family" in capsys.readouterr().out
    back = loading.load(tmp_path / "back")
    assert back.config == cfg.replace(name="hf")
    got, want = traverse_util.flatten_dict(back.params), traverse_util.flatten_dict(params)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key


def test_exported_config_has_the_released_shape_and_the_facts_7_fixes(tmp_path):
    cfg = _tiny()
    loading.save(tmp_path / "hf", cfg, _random_params(cfg), "hf")
    hf = hf_io.read_hf_config(tmp_path / "hf")
    assert hf["architectures"] == ["CodeT5pEncoderDecoderModel"]
    assert hf["model_type"] == "codet5p" and hf["is_encoder_decoder"] is True
    assert hf["auto_map"]["AutoModel"] == "modeling_codet5p.CodeT5pEncoderDecoderModel"
    assert hf["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_codet5p.CodeT5pEncoderDecoderModel"
    for stack, is_decoder in (("encoder", False), ("decoder", True)):
        sub = hf[stack]
        assert sub["model_type"] == "codet5p_module"
        assert sub["is_decoder"] is is_decoder and sub["add_cross_attention"] is is_decoder
        assert sub["decoder_start_token_id"] == 50256 and sub["pad_token_id"] == 50256
    assert hf["decoder_start_token_id"] == 50256 and hf["pad_token_id"] == 50256
    assert (hf["encoder"]["n_embd"], hf["decoder"]["n_embd"]) == (32, 64)
    readme = (tmp_path / "hf" / "README.md").read_text()
    for text in ("CodeGenModel", "decoder_start_token_id", "causal_mask", "position 0"):
        assert text in readme, text
    # The released config.json itself reads back into the preset it describes.
    assert hf_shallow_deep_config.config_from_hf(hf, "x") == cfg.replace(name="x")


def test_the_released_configs_read_as_the_presets(shared_dir):
    for name in ("codet5p-2b", "instructcodet5p-16b"):
        hf = json.loads((shared_dir / f"reference/configs/{name}/config.json").read_text())
        assert hf_shallow_deep_config.config_from_hf(hf, name) == get_preset(name)


# ---------------------------------------------------------------------------------------------
# A sharded float16 pytorch_model.bin input.


def test_sharded_float16_bin_converts_to_float32_exactly(shared_dir, tmp_path, capsys):
    cfg = _tiny()
    params = _random_params(cfg, dtype=np.float16)
    src, state = _write_released_bin(shared_dir, cfg, params, tmp_path / "src", 60_000)
    assert len(json.loads((src / "pytorch_model.bin.index.json").read_text())["weight_map"]) == len(
        state
    )
    dst = tmp_path / "orbax"
    assert main([str(src), str(dst), "--to", "orbax", "--dtype", "float32"]) == 0
    back = loading.load(dst)
    assert back.config == cfg.replace(name="src")
    got, want = traverse_util.flatten_dict(back.params), traverse_util.flatten_dict(params)
    for key, value in want.items():
        assert got[key].dtype == np.float32, key
        np.testing.assert_array_equal(got[key], value.astype(np.float32), err_msg=str(key))


MEASURE = r"""
import json, sys
from codet5p_jax.cli.convert import main

def status(field):
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024

warm, src, dst, *flags = sys.argv[1:]
# Imports and first-call caches out of the measurement: the same conversion of a tiny model.
assert main([warm, dst + "-warm", *flags]) == 0
before = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS: earlier peaks do not count
except OSError:
    pass  # kernel without the reset: an earlier, higher peak only overstates the use
assert main([src, dst, *flags]) == 0
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""

# 36M params: 72 MB of float16 shards (largest ~27 MB) -> 144 MB of float32 params. Holding
# the whole state dict beside the params would need 216 MB; the bound is ~180 MB.
MEM_CFG = ShallowDeepConfig(
    name="mem",
    encoder_emb_dim=128,
    encoder_num_heads=4,
    encoder_mlp_dim=512,
    encoder_rotary_dim=8,
    num_encoder_layers=2,
    emb_dim=256,
    num_heads=4,
    mlp_dim=1024,
    rotary_dim=16,
    num_decoder_layers=3,
    max_positions=64,
)


@pytest.fixture(scope="module")
def mem_sources(shared_dir, tmp_path_factory):
    """(sharded float16 source, its float32 param bytes, tiny warm-up source)."""
    root = tmp_path_factory.mktemp("mem")
    params = _random_params(MEM_CFG, dtype=np.float16)
    src, state = _write_released_bin(shared_dir, MEM_CFG, params, root / "src", 27_000_000)
    output = 2 * sum(v.nbytes for k, v in state.items() if "causal_mask" not in k)
    tiny = _random_params(_tiny(), dtype=np.float16)
    warm, _ = _write_released_bin(shared_dir, _tiny(), tiny, root / "warm", 10**9)
    return src, output, warm


def _peak_increase(src, warm, dst, flags) -> int:
    """Peak RSS (VmHWM, reset just before) of `codet5p convert src dst *flags` in a fresh
    process, over its RSS before the call."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(warm), str(src), str(dst), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    return m["peak"] - m["before"]


def test_sharded_conversion_to_hf_peak_memory_is_one_shard_plus_the_output(mem_sources, tmp_path):
    """The whole `codet5p convert --to hf` (read, fuse qkv, write sharded safetensors): each
    output shard is built just before it is written and released after it, so the state dict
    never sits beside the params."""
    src, output, warm = mem_sources
    shard_sizes = [os.path.getsize(p) for p in src.glob("*.bin")]
    assert len(shard_sizes) >= 3
    flags = ["--to", "hf", "--dtype", "float32", "--max-shard-bytes", "30000000"]
    used = _peak_increase(src, warm, tmp_path / "hf", flags)
    bound = 1.3 * max(shard_sizes) + output
    print(
        f"--to hf: peak increase {used / 1e6:.1f} MB, bound {bound / 1e6:.1f} MB "
        f"(largest shard {max(shard_sizes) / 1e6:.1f} MB, output {output / 1e6:.1f} MB, "
        f"whole input {sum(shard_sizes) / 1e6:.1f} MB)"
    )
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) >= 4
    assert used < bound
    # What was measured is the conversion: float32, bit-exact against the float16 source.
    back = hf_io.read_hf_state(tmp_path / "hf")
    want = hf_io.read_hf_state(src, np.float32)
    for key in want:
        assert back[key].dtype == want[key].dtype and np.array_equal(back[key], want[key]), key


EXPORT = r"""
import json, sys
args = sys.argv[1:]
import numpy as np
from flax import traverse_util
from codet5p_jax import loading
from codet5p_jax.convert import hf_shallow_deep
from codet5p_jax.models.shallow_deep_config import ShallowDeepConfig

def status(field):
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024

def random_params(cfg):
    rng = np.random.default_rng(0)
    shapes = hf_shallow_deep.expected_shapes(cfg)
    flat = {p: rng.standard_normal(s, np.float32) for p, s in shapes.items()}
    return traverse_util.unflatten_dict(flat, sep="/")

tiny, cfg = (ShallowDeepConfig(**json.loads(x)) for x in args[:2])
warm, dst, max_shard = args[2], args[3], int(args[4])
# First-call caches out of the measurement with a tiny model: a big warm-up would leave freed
# heap that the measured call reuses without raising the peak.
loading.save(warm, tiny, random_params(tiny), "hf", max_shard_bytes=max_shard)
params = random_params(cfg)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
loading.save(dst, cfg, params, "hf", max_shard_bytes=max_shard)
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def test_hf_export_holds_one_output_shard_beside_the_params(tmp_path):
    """`loading.save(..., "hf")` of contiguous float32 params (as an orbax source or a training
    run gives them: every HF tensor is a transposed / fused copy): each output shard is built
    just before it is written and released after, so the export adds about one shard to the
    params, not a second copy of the model. Blocks dominate this model (a small vocabulary:
    embeddings are written without a copy), so a whole-state-dict export would add ~100 MB."""
    cfg = MEM_CFG.replace(
        name="export", vocab_size=512, emb_dim=512, num_heads=8, mlp_dim=2048, num_decoder_layers=8
    )
    configs = [json.dumps(dataclasses.asdict(c)) for c in (_tiny(), cfg)]
    dirs = [str(tmp_path / "w"), str(tmp_path / "hf")]
    out = subprocess.run(
        [sys.executable, "-c", EXPORT, *configs, *dirs, "16000000"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    used = m["peak"] - m["before"]
    shards = [os.path.getsize(p) for p in (tmp_path / "hf").glob("model-*.safetensors")]
    assert len(shards) >= 6
    print(
        f"hf export: peak increase {used / 1e6:.1f} MB, largest output shard "
        f"{max(shards) / 1e6:.1f} MB, whole output {sum(shards) / 1e6:.1f} MB"
    )
    assert used < 1.3 * max(shards)


def test_sharded_conversion_to_orbax_peak_memory(mem_sources, tmp_path):
    """The whole `codet5p convert --to orbax`. The read stays within one shard plus the output
    (the --to hf test), but orbax/tensorstore hold their own encoded buffer of every leaf while
    a PyTree is written (about 0.6x the params here; its save_concurrent_gb limit counts whole
    GB): this bound is that of the params plus one more copy of them. Orbax's default numpy
    handler also deep-copies every leaf first and tensorstore copies transposed views (~2.9x
    the params in all before); the writer turns the deep copy off and the converter makes
    views contiguous one leaf at a time (~1.6x now)."""
    src, output, warm = mem_sources
    shard = max(os.path.getsize(p) for p in src.glob("*.bin"))
    flags = ["--to", "orbax", "--dtype", "float32"]
    used = _peak_increase(src, warm, tmp_path / "orbax", flags)
    bound = 1.3 * shard + 2 * output
    print(
        f"--to orbax: peak increase {used / 1e6:.1f} MB = {used / output:.2f}x the output, "
        f"bound {bound / 1e6:.1f} MB (largest shard {shard / 1e6:.1f} MB, "
        f"output {output / 1e6:.1f} MB)"
    )
    assert used < bound


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file / key / field, nothing written.


@pytest.fixture(scope="module")
def released_src(shared_dir, tmp_path_factory):
    cfg = _tiny()
    path = tmp_path_factory.mktemp("released") / "src"
    return _write_released_bin(shared_dir, cfg, _random_params(cfg), path, 60_000)[0]


@pytest.fixture()
def src(released_src, tmp_path):
    return shutil.copytree(released_src, tmp_path / "src")


def _edit_config(path, edit):
    hf = json.loads((path / "config.json").read_text())
    edit(hf)
    (path / "config.json").write_text(json.dumps(hf))


def _fails(capsys, src, dst, *expected):
    before = sorted(os.listdir(dst.parent))
    assert main([str(src), str(dst), "--to", "orbax"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codet5p convert: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    assert not dst.exists()
    assert sorted(os.listdir(dst.parent)) == before


def test_sub_config_width_disagreeing_with_the_tensors(src, tmp_path, capsys):
    _edit_config(src, lambda hf: hf["decoder"].update(n_embd=96, n_head=4))
    _fails(
        capsys, src, tmp_path / "dst", "decoder.transformer.wte.weight", "decoder.vocab_size/n_embd"
    )


def test_sub_config_layer_count_disagreeing_with_the_tensors(src, tmp_path, capsys):
    _edit_config(src, lambda hf: hf["encoder"].update(n_layer=5))
    _fails(capsys, src, tmp_path / "dst", "config.json encoder.n_layer is 5", "2 encoder blocks")


def test_cross_attention_blocks_disagreeing_with_the_tensors(src, tmp_path, capsys):
    _edit_config(src, lambda hf: hf["decoder"].update(n_cross_attention_layers=2))
    _fails(capsys, src, tmp_path / "dst", "n_cross_attention_layers", "[1, 2]", "[2]")


def test_more_cross_attention_layers_than_decoder_layers(src, tmp_path, capsys):
    _edit_config(src, lambda hf: hf["decoder"].update(n_cross_attention_layers=4))
    _fails(capsys, src, tmp_path / "dst", "config.json", "num_cross_attention_layers 4")
    with pytest.raises(
        ValueError, match=r"num_cross_attention_layers 4 must be in \[0, num_decoder_layers 3\]"
    ):
        _tiny(num_cross_attention_layers=4)


def test_missing_sub_config(src, tmp_path, capsys):
    _edit_config(src, lambda hf: hf.pop("encoder"))
    _fails(capsys, src, tmp_path / "dst", "config.json", "'encoder' is missing")


def test_shard_listed_in_the_index_but_missing(src, tmp_path, capsys):
    shard = sorted(src.glob("*.bin"))[1]
    shard.unlink()
    _fails(
        capsys, src, tmp_path / "dst", str(shard), "no such file", "pytorch_model.bin.index.json"
    )


def test_t5_checkpoint_given_to_this_family(shared_dir, tmp_path, capsys):
    t5 = write_hf_dir(build_reference("t5"), tmp_path / "t5")
    _edit_config(t5, lambda hf: hf.update(_released_config(shared_dir, _tiny())))
    capsys.readouterr()  # transformers' save progress bar
    _fails(capsys, t5, tmp_path / "dst", str(t5), "holds a T5", "'shared.weight'")


def test_this_family_given_to_the_t5_family(src, tmp_path, capsys):
    t5 = write_hf_dir(build_reference("t5"), tmp_path / "t5")
    shutil.copy(t5 / "config.json", src / "config.json")
    capsys.readouterr()  # transformers' save progress bar
    _fails(capsys, src, tmp_path / "dst", str(src), "CodeT5+ 2B-16B (CodeGen) state dict")
