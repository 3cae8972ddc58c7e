"""The filesystem layer's writers and readers on `gs://` (the emulator), without a training run.

One subprocess (TensorFlow and TensorStore read the testbed's variables at start-up) writes
through every writer of the layer; the test reads the bucket with its own HTTP client.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

from gcs_testbed import download, list_objects

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import flax.linen
    import jax
    import numpy as np
    from codet5p_jax import atomic_files, loading, storage
    from codet5p_jax.config import get_preset
    from codet5p_jax.evaluation import results_io
    from codet5p_jax.models import init_params
    from codet5p_jax.train.metrics import JsonlWriter

    out = {}
    root = "gs://bucket/layer"
    storage.check_reachable(root, "ROOT")
    try:
        storage.check_reachable("gs://no-such-bucket/x", "ROOT")
    except storage.StorageError as e:
        out["typo"] = str(e)
    atomic_files.write_text(f"{root}/note.txt", "hello\\n")
    with atomic_files.atomic_directory(f"{root}/dir") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"\\x00\\x01")
        (tmp / "config.json").write_text("{}")
    try:
        with atomic_files.atomic_directory(f"{root}/failed") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("writer died")
    except RuntimeError:
        pass
    try:
        with atomic_files.atomic_directory(f"{root}/dir"):
            pass
    except atomic_files.DestinationError as e:
        out["exists"] = str(e)
    writer = JsonlWriter(f"{root}/run/metrics.jsonl")
    for step in (1, 2, 3):
        writer.write_scalars(step, {"loss": 1.0 / step})
    writer.close()
    JsonlWriter(f"{root}/run/metrics.jsonl", keep_through=2).close()
    results_io.write_jsonl(f"{root}/eval/samples.jsonl", [{"a": 1}, {"a": 2}])
    out["read_back"] = [r for _, r in results_io.read_jsonl(f"{root}/eval/samples.jsonl")]
    cfg = get_preset("tiny", vocab_size=128)
    params = flax.linen.unbox(init_params(cfg, jax.random.key(0)))
    loading.save(f"{root}/orbax", cfg, params, "orbax")
    loaded = loading.load(f"{root}/orbax")
    a = np.asarray(params["token_embedder"]["embedding"])
    out["orbax_equal"] = bool(np.array_equal(loaded.params["token_embedder"]["embedding"], a))
    out["orbax_path"] = str(loaded.path)
    loading.save(f"{root}/hf", cfg, params, "hf")
    out["hf_equal"] = bool(
        np.array_equal(loading.load(f"{root}/hf").params["token_embedder"]["embedding"], a)
    )
    print("RESULT " + json.dumps(out))
    """
)


def test_every_writer_of_the_layer_reaches_the_bucket(gcs):
    info, env = gcs
    env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    names = set(list_objects(info, "bucket", "layer/"))

    assert "bucket gs://no-such-bucket does not exist" in out["typo"]
    assert download(info, "bucket", "layer/note.txt") == b"hello\n"
    assert download(info, "bucket", "layer/dir/sub/b.bin") == b"\x00\x01"
    assert download(info, "bucket", "layer/dir/config.json") == b"{}"
    assert not [n for n in names if n.startswith("layer/failed")]  # nothing half-written
    assert "already exists" in out["exists"]
    rows = [json.loads(x) for x in download(info, "bucket", "layer/run/metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # reopened with keep_through=2
    assert out["read_back"] == [{"a": 1}, {"a": 2}]
    assert out["orbax_equal"] and out["hf_equal"]
    assert out["orbax_path"] == "gs://bucket/layer/orbax"
    assert {"layer/hf/config.json", "layer/hf/model.safetensors"} <= names
    assert any(n.startswith("layer/orbax/params/") for n in names)
    assert not (REPO / "gs:").exists()  # pathlib would have made gs:/bucket/... here
