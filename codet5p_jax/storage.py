"""The filesystem layer: every path a user gives the project is an `etils.epath.Path`.

`epath` covers local paths (`os`) and `gs://` (TensorFlow's `tf.io.gfile` when TensorFlow is
installed, as it is here: seqio needs it), so our files, orbax's metadata (orbax uses epath
too; its arrays go through TensorStore, which speaks `gs://` itself), TensorBoard event files
and seqio caches all reach a bucket through the same two clients. `pathlib` would fold
`gs://bucket` into `gs:/bucket`, a local directory; `open()` / `os.path` do not know buckets.
The all-or-nothing writes are in `atomic_files.py`.

Remote paths are checked up front (`check_reachable`): a missing bucket, missing credentials or
an unreachable endpoint is one clear error before any work, not a failure at the first
checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import tempfile

from etils import epath

REMOTE_SCHEMES = ("gs://",)
# How long the pre-flight bucket check may take: TF's GCS client retries an unreachable
# endpoint with exponential back-off for minutes; a bucket that answers does so in well under a
# second.
CHECK_TIMEOUT_S = float(os.environ.get("CODET5P_STORAGE_CHECK_TIMEOUT_S", "60"))

PathLike = str | os.PathLike


class StorageError(OSError):
    """A remote path cannot be used (no such bucket, no credentials, endpoint unreachable)."""


def path(p: PathLike) -> epath.Path:
    """`p` as an `epath.Path` (keeps `gs://`; a local path stays a local path)."""
    return epath.Path(p)


def is_remote(p: PathLike) -> bool:
    """Whether `p` names an object store (`gs://...`) rather than a local file."""
    return os.fspath(p).startswith(REMOTE_SCHEMES)


def bucket_of(p: PathLike) -> str:
    """`"gs://bucket"` of a remote path."""
    scheme, rest = os.fspath(p).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _probe_bucket(bucket: str) -> bool:
    # TF's `exists` on a bucket is a bucket metadata GET: False on 404, and it raises on
    # network / credential errors (`is_dir` would answer False for those too).
    return epath.Path(bucket).exists()


def check_reachable(p: PathLike, what: str) -> None:
    """For a remote `p`, checks that its bucket exists and answers; nothing for local paths.

    Args:
      p: The path (e.g. MODEL_DIR, a corpus or tokenizer directory).
      what: How the message names it (e.g. "MODEL_DIR").

    Raises:
      StorageError: One line naming `what`, the path and the reason.
    """
    if not is_remote(p):
        return
    bucket = bucket_of(p)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(_probe_bucket, bucket)
    pool.shutdown(wait=False)
    try:
        exists = future.result(timeout=CHECK_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise StorageError(
            f"{what} {p}: bucket {bucket} did not answer within {CHECK_TIMEOUT_S:.0f} s "
            "(endpoint unreachable or no network?)"
        ) from None
    except Exception as e:  # TF raises its own OpError types (PermissionDenied, Unavailable...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"{what} {p}: cannot access bucket {bucket} (no credentials or permission, or the "
            f"endpoint is unreachable): {reason}"
        ) from None
    if not exists:
        raise StorageError(f"{what} {p}: bucket {bucket} does not exist (typo in the name?)")


@contextlib.contextmanager
def local_copy(p: PathLike):
    """Yields a local path with the contents of file or directory `p` (itself when local).

    For libraries that read only local files (safetensors' mmap, the `tokenizers` loaders).
    """
    if not is_remote(p):
        yield epath.Path(p)
        return
    src = epath.Path(p)
    tmp = epath.Path(tempfile.mkdtemp(prefix="codet5p_remote_"))
    try:
        dst = tmp / src.name
        if src.is_dir():
            copy_tree(src, dst)
        else:
            src.copy(dst)
        yield dst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_tree(src: PathLike, dst: PathLike) -> None:
    """Copies the files under `src` to `dst` (either may be remote), creating directories."""
    src, dst = epath.Path(src), epath.Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in src.walk():
        rel = epath.Path(root).relative_to(src) if os.fspath(root) != os.fspath(src) else None
        out = dst / rel if rel is not None else dst
        for d in dirs:
            (out / d).mkdir(parents=True, exist_ok=True)
        for f in files:
            (epath.Path(root) / f).copy(out / f, overwrite=True)
