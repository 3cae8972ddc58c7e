"""Times `codet5p convert` on a full-size, randomly initialised preset checkpoint.

    .venv/bin/python benchmarks/convert_preset.py --preset codet5p-220m [--workdir /tmp/x]

Writes the preset as an HF directory with `transformers` (safetensors, fp32), then converts
HF -> orbax (scanned) -> HF with the CLI, each in a fresh process so the reported peak RSS is the
converter's own, and checks that the final state dict equals the source bit for bit.
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from codet5p_jax.config import PRESETS, to_hf_config

_HF_FIELDS = [
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "feed_forward_proj",
]


def _write_source(preset: str, path: pathlib.Path) -> None:
    import torch
    import transformers

    cfg = PRESETS[preset]
    if cfg.kind != "t5":
        raise SystemExit("this benchmark writes T5ForConditionalGeneration presets only")
    hf = to_hf_config(cfg)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(**{k: hf[k] for k in _HF_FIELDS})
    )
    model.save_pretrained(path)


def _timed_convert(src, dst, *extra) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS GiB) of one `python -m codet5p_jax.cli convert` process."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-m", "codet5p_jax.cli", "convert", str(src), str(dst), *extra], check=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Children's ru_maxrss is the max over all waited-for children; this script has only these.
    return time.perf_counter() - start, cpu, after.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="codet5p-220m", choices=sorted(PRESETS))
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a tmp dir)")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        _write_source(args.preset, work / "src")
        print(f"wrote {args.preset} HF checkpoint in {time.perf_counter() - start:.1f}s")
        to_orbax = _timed_convert(work / "src", work / "orbax", "--to", "orbax", "--scan")
        to_hf = _timed_convert(work / "orbax", work / "hf", "--to", "hf")

        import safetensors.numpy

        want = safetensors.numpy.load_file(work / "src" / "model.safetensors")
        got = safetensors.numpy.load_file(work / "hf" / "model.safetensors")
        exact = sorted(want) == sorted(got) and all(
            want[k].dtype == got[k].dtype and want[k].tobytes() == got[k].tobytes() for k in want
        )
        size = (work / "src" / "model.safetensors").stat().st_size / 2**30
        print(
            json.dumps(
                {
                    "preset": args.preset,
                    "checkpoint_gib": round(size, 2),
                    "hf_to_orbax_scanned_wall_s": round(to_orbax[0], 1),
                    "hf_to_orbax_scanned_cpu_s": round(to_orbax[1], 1),
                    "orbax_to_hf_wall_s": round(to_hf[0], 1),
                    "orbax_to_hf_cpu_s": round(to_hf[1], 1),
                    "peak_rss_gib": round(max(to_orbax[2], to_hf[2]), 2),
                    "load_average_1m": round(os.getloadavg()[0], 1),
                    "bit_exact": exact,
                }
            )
        )
        if not exact:
            raise SystemExit("round trip is not bit-exact")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
