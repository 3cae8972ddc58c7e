"""`codet5p convert`: success paths, and every kind of bad input -> exit 1, a message naming the
file / key / shape, and no destination (or temporary directory) left behind."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import safetensors.numpy
import torch
from testlib import build_reference, write_hf_dir

from codet5p_jax import cli as top_cli
from codet5p_jax.cli.convert import main
from codet5p_jax.convert import hf_io, orbax_io

# After a failed read of corrupt orbax data, orbax's background event loop reports futures it
# could no longer deliver ("Event loop is closed"), at some later point of this module; that
# noise is orbax's own, and the error we raise is what test_corrupt_orbax_params checks.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SHAPE_KEY = "decoder.block.1.layer.2.DenseReluDense.wi.weight"


@pytest.fixture(scope="module")
def good_hf(tmp_path_factory):
    return write_hf_dir(build_reference("t5"), tmp_path_factory.mktemp("good") / "hf")


@pytest.fixture(scope="module")
def good_orbax(good_hf, tmp_path_factory):
    dst = tmp_path_factory.mktemp("good_orbax") / "orbax"
    assert main([str(good_hf), str(dst), "--to", "orbax"]) == 0
    return dst


@pytest.fixture()
def src(good_hf, tmp_path):
    """A private copy of the good HF checkpoint to damage."""
    return shutil.copytree(good_hf, tmp_path / "src")


def _edit_state(path, edit):
    file = path / "model.safetensors"
    state = safetensors.numpy.load_file(file)
    edit(state)
    safetensors.numpy.save_file(state, file, metadata={"format": "pt"})


def _fails(capsys, src, dst, *expected, to="hf", extra=()):
    """Runs the CLI, expecting exit 1, each of `expected` in stderr, and nothing at `dst`."""
    before = sorted(os.listdir(dst.parent))
    assert main([str(src), str(dst), "--to", to, *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codet5p convert: error: ")
    for text in expected:
        assert text in err, err
    assert not dst.exists()
    assert sorted(os.listdir(dst.parent)) == before  # no temporary directory left behind


def test_hf_to_orbax_to_hf_through_the_cli(good_hf, tmp_path, capsys):
    assert main([str(good_hf), str(tmp_path / "o"), "--to", "orbax", "--scan"]) == 0
    assert "converted hf" in capsys.readouterr().out
    assert main([str(tmp_path / "o"), str(tmp_path / "h"), "--to", "hf"]) == 0
    assert sorted(os.listdir(tmp_path / "h")) == [
        "config.json",
        "merges.txt",
        "model.safetensors",
        "vocab.json",
    ]
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []
    # The `codet5p` dispatcher routes `convert` here.
    assert (
        top_cli.main(["convert", str(tmp_path / "h"), str(tmp_path / "o2"), "--to", "orbax"]) == 0
    )
    assert orbax_io.is_orbax_dir(tmp_path / "o2")


def test_missing_source(tmp_path, capsys):
    _fails(capsys, tmp_path / "nope", tmp_path / "dst", "nope: no such file or directory")


def test_source_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _fails(capsys, tmp_path / "file", tmp_path / "dst", "file: expected a checkpoint directory")


def test_source_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, tmp_path / "empty", tmp_path / "dst", "empty: not a checkpoint directory")


def test_missing_weights(src, tmp_path, capsys):
    (src / "model.safetensors").unlink()
    _fails(capsys, src, tmp_path / "dst", "src: no weights found", "model.safetensors")


def test_corrupt_safetensors(src, tmp_path, capsys):
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    _fails(capsys, src, tmp_path / "dst", "model.safetensors: corrupt or unreadable safetensors")


def test_truncated_pytorch_bin(src, tmp_path, capsys):
    (src / "model.safetensors").unlink()
    torch.save(build_reference("t5").state_dict(), src / "pytorch_model.bin")
    data = (src / "pytorch_model.bin").read_bytes()
    (src / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    _fails(capsys, src, tmp_path / "dst", "pytorch_model.bin: corrupt")


def test_unreadable_config(src, tmp_path, capsys):
    (src / "config.json").write_text("{not json")
    _fails(capsys, src, tmp_path / "dst", "config.json: unreadable config")


def test_unsupported_architecture(src, tmp_path, capsys):
    hf = json.loads((src / "config.json").read_text())
    hf.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (src / "config.json").write_text(json.dumps(hf))
    want = "unsupported architecture ['GPT2LMHeadModel']"
    _fails(capsys, src, tmp_path / "dst", "config.json", want)


def test_gated_t5_v1_1_is_rejected(src, tmp_path, capsys):
    hf = json.loads((src / "config.json").read_text())
    hf["feed_forward_proj"] = "gated-gelu"
    (src / "config.json").write_text(json.dumps(hf))
    _fails(capsys, src, tmp_path / "dst", "Unsupported feed_forward_proj 'gated-gelu'")


def test_missing_key(src, tmp_path, capsys):
    _edit_state(src, lambda s: s.pop("encoder.final_layer_norm.weight"))
    _fails(
        capsys, src, tmp_path / "dst", "missing key 'encoder.final_layer_norm.weight' (shape (16,))"
    )


def test_leftover_key(src, tmp_path, capsys):
    _edit_state(src, lambda s: s.update({"encoder.extra.weight": s["shared.weight"][:2]}))
    _fails(capsys, src, tmp_path / "dst", "unexpected key 'encoder.extra.weight' (shape (2, 16))")


def test_shape_mismatch(src, tmp_path, capsys):
    _edit_state(src, lambda s: s.update({SHAPE_KEY: s[SHAPE_KEY][:-1]}))
    _fails(
        capsys,
        src,
        tmp_path / "dst",
        f"shape mismatch for '{SHAPE_KEY}': expected (40, 16), got (39, 16)",
    )


def test_destination_exists(good_hf, tmp_path, capsys):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("mine")
    assert main([str(good_hf), str(tmp_path / "dst"), "--to", "orbax"]) == 1
    assert "dst already exists; refusing to overwrite it" in capsys.readouterr().err
    assert os.listdir(tmp_path / "dst") == ["keep.txt"]


def test_orbax_params_that_contradict_their_config(good_orbax, tmp_path, capsys):
    src = shutil.copytree(good_orbax, tmp_path / "src")
    cfg = json.loads((src / orbax_io.CONFIG_FILE).read_text())
    cfg["mlp_dim"] = 41
    (src / orbax_io.CONFIG_FILE).write_text(json.dumps(cfg))
    _fails(
        capsys,
        src,
        tmp_path / "dst",
        "shape mismatch for 'encoder/layers_0/mlp/wi/kernel': expected (16, 41), got (16, 40)",
    )


def test_orbax_config_with_unknown_fields(good_orbax, tmp_path, capsys):
    src = shutil.copytree(good_orbax, tmp_path / "src")
    cfg = json.loads((src / orbax_io.CONFIG_FILE).read_text())
    (src / orbax_io.CONFIG_FILE).write_text(json.dumps({**cfg, "d_model": 16}))
    want = "codet5p_config.json: fields ['d_model'] are unknown to model family 't5'"
    _fails(capsys, src, tmp_path / "dst", want)


@pytest.mark.parametrize(
    "damaged, expected",
    [("d", "no readable orbax metadata"), ("ocdbt.process_0/d", "unreadable orbax checkpoint")],
)
def test_corrupt_orbax_params(good_orbax, tmp_path, capsys, damaged, expected):
    src = shutil.copytree(good_orbax, tmp_path / "src")
    shutil.rmtree(src / "params" / damaged)
    _fails(capsys, src, tmp_path / "dst", f"src/params: {expected}")


def test_scan_flag_is_rejected_for_hf_output(good_hf, tmp_path, capsys):
    _fails(
        capsys, good_hf, tmp_path / "dst", "--scan applies to orbax output only", extra=["--scan"]
    )


@pytest.mark.parametrize("to", ["hf", "orbax"])
def test_failure_while_writing_leaves_nothing(good_hf, tmp_path, capsys, monkeypatch, to):
    def boom(*args, **kwargs):
        raise hf_io.ConversionError("disk full (simulated)")

    # Fail after the temporary directory has been created and partly filled.
    monkeypatch.setattr(hf_io, "copy_tokenizer_files", boom)
    monkeypatch.setattr(orbax_io, "copy_tokenizer_files", boom)
    _fails(capsys, good_hf, tmp_path / "dst", "disk full (simulated)", to=to)


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "codet5p_jax.cli",
            "convert",
            str(tmp_path / "nope"),
            str(tmp_path / "d"),
        ]
        + ["--to", "hf"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "nope: no such file or directory" in result.stderr


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_outputs_get_ordinary_modes_under_the_umask(good_hf, tmp_path, umask):
    """mkdtemp (0700) and safetensors (0600) used to leave HF/orbax exports private while their
    neighbours were 0644; every entry now has the mode a plain open()/mkdir() would give it."""
    old = os.umask(umask)
    try:
        assert main([str(good_hf), str(tmp_path / "o"), "--to", "orbax"]) == 0
        assert main([str(tmp_path / "o"), str(tmp_path / "h"), "--to", "hf"]) == 0
    finally:
        os.umask(old)
    for out in (tmp_path / "o", tmp_path / "h"):
        for path in [out, *out.rglob("*")]:
            want = (0o777 if path.is_dir() else 0o666) & ~umask
            assert oct(path.stat().st_mode & 0o777) == oct(want), path
