"""Write a directory all-or-nothing: build it in a temporary sibling, then rename it in place."""

import contextlib
import os
import pathlib
import shutil
import tempfile

from codet5p_jax import file_modes
from codet5p_jax.convert.mapping import ConversionError


@contextlib.contextmanager
def atomic_directory(dst):
    """Yields a temporary directory that becomes `dst` only if the block succeeds.

    The temporary directory is created in `dst`'s parent, so the final `os.rename` is atomic
    on one filesystem; on any exception it is removed and `dst` never appears.

    Args:
      dst: The directory to create; it must not exist, and its parent must.

    Yields:
      The `pathlib.Path` of the temporary directory to fill.

    Raises:
      ConversionError: If `dst` exists or its parent does not.
    """
    dst = pathlib.Path(dst)
    if dst.exists():
        raise ConversionError(f"Destination {dst} already exists; refusing to overwrite it")
    if not dst.parent.is_dir():
        raise ConversionError(f"Parent directory of the destination {dst} does not exist")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        # mkdtemp makes the directory private (0700) and safetensors writes 0600 files: the
        # result gets the modes of ordinary files under the umask (0755 / 0644 under 022).
        file_modes.as_new_tree(tmp)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
