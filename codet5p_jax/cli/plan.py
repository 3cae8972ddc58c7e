"""`codet5p plan`: per-device memory and FLOPs of a training run's gin, compiled ahead of time.

    codet5p plan --gin_file=gin/experiments/instruct_codet5p_16b.gin --num_devices=64 \
        --hbm_gib=16

Reads the same gin files as `codet5p train` (MODEL_DIR, the task and INITIAL_CHECKPOINT_PATH
are not needed) and compiles the train step for a mesh of `--num_devices` fake CPU devices
without materialising any parameter (see `codet5p_jax.train.plan`).
"""

import argparse
import functools
import json
import os
import re
import sys

from codet5p_jax.cli import gin_flags

PROG = "codet5p plan"
_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def _use_fake_devices(num_devices: int) -> None:
    """`num_devices` CPU devices for this process; must run before JAX starts its backend."""
    os.environ["XLA_FLAGS"] = _DEVICE_FLAG.sub("", os.environ.get("XLA_FLAGS", "")).strip()
    import jax

    if jax._src.xla_bridge.backends_are_initialized():  # an in-process caller (tests)
        if len(jax.devices()) != num_devices or jax.devices()[0].platform != "cpu":
            raise gin_flags.UsageError(
                f"--num_devices={num_devices}: JAX already started with {len(jax.devices())} "
                f"{jax.devices()[0].platform} devices in this process"
            )
        return
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", num_devices)


def main(argv: list[str] | None = None) -> int:
    """`codet5p plan` entry point."""
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--num_devices", type=int, default=None)
    pre.add_argument("--hbm_gib", type=float, default=None)
    pre.add_argument("--json", dest="json_path", default=None)
    opts, rest = pre.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(
            f"usage: {PROG} --gin_file=FILE [--gin.KEY=VALUE ...] [--num_devices=N] "
            "[--hbm_gib=G] [--json=PATH]\n\n"
            "Compiles the train step of the gin run ahead of time for N fake CPU devices and "
            "prints per-device parameter / optimizer / gradient bytes, XLA's buffer sizes and "
            "model FLOPs per step."
        )
        return 0
    if opts.num_devices is not None and opts.num_devices < 1:
        return gin_flags.fail(PROG, f"--num_devices must be >= 1, got {opts.num_devices}")
    if opts.num_devices is not None:
        try:
            _use_fake_devices(opts.num_devices)
        except gin_flags.UsageError as e:
            return gin_flags.fail(PROG, str(e))
    from codet5p_jax.train import plan, trainer
    from codet5p_jax.train.run_checks import RunConfigError

    status, result = gin_flags.run_mode(
        rest,
        PROG,
        "Plan a training run's memory and FLOPs.",
        functools.partial(trainer.train, planner=plan.plan_step),
        (RunConfigError,),
    )
    if status:
        return status
    for line in result.lines(opts.hbm_gib):
        print(f"{PROG}: {line}")
    if opts.json_path:
        from codet5p_jax import atomic_files

        atomic_files.write_text(opts.json_path, json.dumps(result.as_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
