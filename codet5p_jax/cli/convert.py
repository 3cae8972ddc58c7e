"""`codet5p convert SRC DST --to {hf,orbax} [--scan/--no-scan]`.

SRC is an HF model directory (config.json + safetensors or pytorch_model.bin, sharded or not), a
params-only orbax directory, or a training MODEL_DIR (its latest step); the format is detected.
DST must not exist; it is written in a temporary sibling and renamed, so a failed conversion
leaves nothing behind.

    codet5p convert ./codet5p-220m ./ckpt --to orbax --scan
    codet5p convert ./ckpt ./codet5p-220m-hf --to hf
    codet5p convert ./runs/finetune ./finetuned-hf --to hf
    codet5p convert ./instructcodet5p-16b ./ckpt --to orbax --scan --dtype bfloat16
"""

import argparse
import pathlib
import sys
import time

import jax.numpy as jnp

from codet5p_jax import loading
from codet5p_jax.convert import hf_io
from codet5p_jax.convert.mapping import ConversionError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `codet5p convert`."""
    parser = argparse.ArgumentParser(
        prog="codet5p convert",
        description="Convert CodeT5+ checkpoints between HF and orbax layouts (format of SRC "
        "is detected).",
    )
    parser.add_argument("src", help="HF model dir, orbax checkpoint dir, or training MODEL_DIR")
    parser.add_argument("dst", help="directory to create (must not exist)")
    parser.add_argument("--to", required=True, choices=loading.FORMATS, help="output format")
    parser.add_argument(
        "--scan",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="orbax output: stack layers for nn.scan (--scan) or not (--no-scan); default keeps "
        "the source layout (HF sources are unscanned). HF output is always unscanned.",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="write floating params in this dtype (e.g. the released float16 weights as "
        "float32); default keeps the source's. HF sources are cast tensor by tensor.",
    )
    parser.add_argument(
        "--max-shard-bytes",
        type=int,
        default=hf_io.DEFAULT_MAX_SHARD_BYTES,
        help="HF output: weights larger than this are written as sharded safetensors with an "
        "index (default 5e9, as HF save_pretrained)",
    )
    return parser


def _step_of(ckpt: loading.Checkpoint, src) -> str:
    """` at step N (checkpoints/N)` for a training-run source (its latest step is exported)."""
    if ckpt.format != "run":
        return ""
    step_dir = pathlib.Path(ckpt.path)
    try:
        where = step_dir.relative_to(pathlib.Path(src))
    except ValueError:
        where = step_dir
    return f" at step {step_dir.name}" + (f" ({where})" if str(where) != "." else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p convert`; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        dtype = None if args.dtype is None else jnp.dtype(args.dtype)
        ckpt = loading.convert(
            args.src,
            args.dst,
            args.to,
            args.scan,
            dtype=dtype,
            max_shard_bytes=args.max_shard_bytes,
        )
    except ConversionError as e:
        print(f"codet5p convert: error: {e}", file=sys.stderr)
        return 1
    cfg = ckpt.config
    layout = "scanned" if getattr(cfg, "scan_layers", False) else "unscanned"
    print(
        f"converted {ckpt.format} {args.src}{_step_of(ckpt, args.src)} -> {args.to} {args.dst} "
        f"({ckpt.family.name} family, {getattr(cfg, 'name', '?')}, {layout}) "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0
