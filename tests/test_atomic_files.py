"""The one atomic writer: whole or nothing, ordinary modes under the umask, bad destinations."""

import os
import stat

import pytest

from codet5p_jax import atomic_files


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_file_appears_whole_with_the_umask_mode(tmp_path, umask_027):
    out = tmp_path / "r.json"
    out.write_text("old")
    atomic_files.write_text(out, "new")
    assert out.read_text() == "new"
    assert _mode(out) == 0o640  # 0666 & ~027, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_files.atomic_file(out) as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_directory_appears_whole_with_ordinary_modes(tmp_path, umask_027):
    dst = tmp_path / "export"
    with atomic_files.atomic_directory(dst) as tmp:
        (tmp / "weights").write_bytes(b"x")
        os.chmod(tmp / "weights", 0o600)  # as safetensors writes it
        assert not dst.exists()
    assert _mode(dst) == 0o750 and _mode(dst / "weights") == 0o640
    with pytest.raises(RuntimeError), atomic_files.atomic_directory(tmp_path / "b") as tmp:
        (tmp / "part").write_text("x")
        raise RuntimeError("failed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_bad_destinations_are_named(tmp_path):
    with (
        pytest.raises(atomic_files.DestinationError, match="already exists"),
        atomic_files.atomic_directory(tmp_path),
    ):
        pass
    with pytest.raises(atomic_files.DestinationError, match="is a directory"):
        atomic_files.write_text(tmp_path, "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(atomic_files.DestinationError, match="does not exist or is a file"):
        atomic_files.write_text(tmp_path / "f" / "out.json", "x")
