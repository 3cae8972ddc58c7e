"""The one atomic writer: files and directories appear whole, with ordinary modes, or not at all.

Everything the project writes for a user (HF / orbax exports, results, predictions, metrics,
plots, embeddings) goes through `atomic_file` or `atomic_directory`: the content is built under a
temporary name in the destination's own directory (so the final rename is atomic on one file
system), given the mode a plain `open()` / `mkdir()` would have given it, and renamed in place.
A failure removes the temporary and leaves the destination untouched.

`tempfile.mkstemp` / `mkdtemp` create 0600 / 0700 entries and some writers (safetensors) make
0600 files, so without `as_new` a result would be private while its neighbours are 0644 / 0755.

Remote destinations (`gs://`, see `storage.py`): Cloud Storage has no atomic rename (a rename
is a copy of every object plus a delete) and no directories, but one object upload *is*
atomic: the object appears only once its upload completes. So the content is built in a local
temporary file or directory, exactly as for a local destination, and uploaded only after the
block succeeded. A file becomes one upload (readers see the old object or the new one, never a
part). A directory becomes one upload per file, the top-level files last: those are what the
loader looks for (`config.json`, `codet5p_config.json`), so a reader never sees a config
without its weights; a failed upload deletes what it had written.
"""

import contextlib
import os
import pathlib
import shutil
import stat
import tempfile

from codet5p_jax import storage


class DestinationError(ValueError):
    """The destination of an all-or-nothing write cannot be used (exists, no parent, a file)."""


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore
    os.umask(mask)
    return mask


def as_new(path: str | os.PathLike) -> None:
    """Gives one file or directory the mode a plain `open()` / `mkdir()` would have given it
    (0644 / 0755 under umask 022; executables keep their x bits as 0755)."""
    mode = os.stat(path, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        return
    executable = stat.S_ISDIR(mode) or mode & 0o111
    os.chmod(path, (0o777 if executable else 0o666) & ~umask())


def as_new_tree(root: str | os.PathLike) -> None:
    """`as_new` for `root` and everything under it."""
    root = pathlib.Path(root)
    for path in [root, *root.rglob("*")]:
        as_new(path)


@contextlib.contextmanager
def atomic_directory(dst):
    """Yields a temporary directory that becomes `dst` only if the block succeeds.

    Args:
      dst: The directory to create; it must not exist, and its parent must.

    Yields:
      The `pathlib.Path` of the (local) temporary directory to fill.

    Raises:
      DestinationError: If `dst` exists or its parent does not.
    """
    if storage.is_remote(dst):
        with _remote_directory(storage.path(dst)) as tmp:
            yield tmp
        return
    dst = pathlib.Path(dst)
    if dst.exists():
        raise DestinationError(f"Destination {dst} already exists; refusing to overwrite it")
    if not dst.parent.is_dir():
        raise DestinationError(f"Parent directory of the destination {dst} does not exist")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        as_new_tree(tmp)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path, mode: str = "w"):
    """Yields an open temporary file that replaces `path` only if the block succeeds.

    Args:
      path: The file to write (replaced if it exists); its directory must exist.
      mode: "w" (text, UTF-8) or "wb".

    Yields:
      The open file object (for writers that take a path, use its `.name`).

    Raises:
      DestinationError: If `path` is a directory or its parent is missing or not a directory.
    """
    if storage.is_remote(path):
        with _remote_file(storage.path(path), mode) as f:
            yield f
        return
    path = pathlib.Path(path)
    if path.is_dir():
        raise DestinationError(f"{path} is a directory, not a file")
    if not path.parent.is_dir():
        raise DestinationError(f"Parent directory of {path} does not exist or is a file")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        as_new(tmp)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    """Writes `text` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)


@contextlib.contextmanager
def _remote_file(path, mode: str):
    """`atomic_file` for an object store: a local temporary file, uploaded in one piece."""
    if path.is_dir():
        raise DestinationError(f"{path} is a directory, not a file")
    with tempfile.TemporaryDirectory(prefix="codet5p_upload_") as tmp:
        local = pathlib.Path(tmp) / path.name
        with open(local, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        storage.path(local).copy(path, overwrite=True)


@contextlib.contextmanager
def _remote_directory(dst):
    """`atomic_directory` for an object store: a local directory, uploaded top-level files last."""
    if dst.exists():
        raise DestinationError(f"Destination {dst} already exists; refusing to overwrite it")
    with tempfile.TemporaryDirectory(prefix="codet5p_upload_") as tmp:
        root = pathlib.Path(tmp) / dst.name
        root.mkdir()
        yield root
        files = sorted(p for p in root.rglob("*") if p.is_file())
        nested = [p for p in files if p.parent != root]
        top = [p for p in files if p.parent == root]
        try:
            for file in nested + top:
                target = dst / file.relative_to(root).as_posix()
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.path(file).copy(target, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                dst.rmtree()
            raise
