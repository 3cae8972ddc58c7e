"""The torch-free `pytorch_model.bin` reader against files written by `torch.save`."""

import collections
import pickle
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch
from testlib import build_reference, write_hf_dir

from codet5p_jax.convert import torch_pickle
from codet5p_jax.convert.mapping import ConversionError
from codet5p_jax.convert.torch_pickle import load_torch_state_dict


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def test_reads_every_dtype_and_layout_torch_writes(tmp_path):
    base = torch.randn(6, 4)
    state = collections.OrderedDict(
        f32=torch.randn(3, 2),
        f64=torch.randn(2, dtype=torch.float64),
        f16=torch.randn(4, 3).half(),
        bf16=torch.randn(5).bfloat16(),
        i64=torch.arange(7),
        i32=torch.arange(3, dtype=torch.int32),
        u8=torch.arange(4, dtype=torch.uint8),
        flag=torch.tensor([True, False]),
        transposed=base.t(),  # non-contiguous view: strides (1, 4)
        sliced=base[2:5, 1],  # storage offset + stride
        shared=base,  # same storage as the two views above
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        param=torch.nn.Parameter(torch.randn(2, 2)),
    )
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_torch_state_dict(tmp_path / "pytorch_model.bin")
    assert list(loaded) == list(state)
    for key, tensor in state.items():
        expected = _as_numpy(tensor.detach().contiguous())
        got = loaded[key]
        assert got.dtype == expected.dtype, key
        assert got.shape == expected.shape, key
        assert got.tobytes() == expected.tobytes(), key
        assert got.flags.c_contiguous and got.flags.owndata, key


def test_refuses_globals_other_than_tensor_rebuilders(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.ones(1), "evil": Payload()}, tmp_path / "bad.bin")
    with pytest.raises(
        ConversionError, match=r"bad.bin.*refusing to load global __builtin__.print"
    ):
        load_torch_state_dict(tmp_path / "bad.bin")


def test_rejects_non_state_dict(tmp_path):
    torch.save([torch.ones(1)], tmp_path / "list.bin")
    with pytest.raises(ConversionError, match="list.bin: expected a dict of tensors"):
        load_torch_state_dict(tmp_path / "list.bin")


def test_rejects_a_truncated_storage(tmp_path):
    torch.save({"w": torch.ones(4)}, tmp_path / "ok.bin")
    with zipfile.ZipFile(tmp_path / "ok.bin") as src:
        entries = {i.filename: src.read(i) for i in src.infolist()}
    # Shrink the storage file to 2 floats while the pickle still claims 4 elements.
    storage = next(name for name in entries if "/data/" in name and name[-1].isdigit())
    entries[storage] = entries[storage][:8]
    with zipfile.ZipFile(tmp_path / "short.bin", "w") as dst:
        for name, raw in entries.items():
            dst.writestr(name, raw)
    with pytest.raises(ConversionError, match="short.bin: corrupt or unsupported"):
        load_torch_state_dict(tmp_path / "short.bin")


def test_tensor_views_are_bounds_checked():
    # as_strided does not check bounds itself: a lying size/stride must not read past storage.
    storage = np.arange(6, dtype=np.float32)
    ref = torch_pickle._StorageRef("0", storage.dtype, storage.size)
    tensor = torch_pickle._rebuild_tensor_v2(ref, 1, (2, 2), (3, 1))
    np.testing.assert_array_equal(tensor.materialize(storage), [[1, 2], [4, 5]])
    with pytest.raises(pickle.UnpicklingError, match="overruns its storage"):
        torch_pickle._rebuild_tensor_v2(ref, 1, (2, 3), (3, 1))
    with pytest.raises(pickle.UnpicklingError, match="bad tensor layout"):
        torch_pickle._rebuild_tensor_v2(ref, 0, (2,), (-1,))


def test_rejects_a_file_that_is_not_a_torch_zip(tmp_path):
    (tmp_path / "garbage.bin").write_bytes(b"\x80\x02not a zip at all")
    with pytest.raises(ConversionError, match="garbage.bin: corrupt, or not a zip-format"):
        load_torch_state_dict(tmp_path / "garbage.bin")


def test_conversion_runs_without_torch(tmp_path):
    # The runtime never needs torch: block its import and convert a torch-written checkpoint.
    src = write_hf_dir(build_reference("embedding"), tmp_path / "src")
    assert (src / "pytorch_model.bin").is_file()
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from codet5p_jax.cli.convert import main\n"
        f"assert main([{str(src)!r}, {str(tmp_path / 'o')!r}, '--to', 'orbax']) == 0\n"
        f"assert main([{str(tmp_path / 'o')!r}, {str(tmp_path / 'h')!r}, '--to', 'hf']) == 0\n"
        "assert 'torch' not in {m.split('.')[0] for m, v in sys.modules.items() if v}\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "h" / "model.safetensors").is_file()
