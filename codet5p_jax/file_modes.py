"""Permissions of files written through a temporary name: as if created directly, under the umask.

`tempfile.mkstemp` / `mkdtemp` create 0600 / 0700 entries, and some writers (safetensors) create
0600 files, so a result renamed into place would be private while its neighbours are 0644 / 0755.
"""

import os
import pathlib
import stat


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
