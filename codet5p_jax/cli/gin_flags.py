"""t5x-style command lines: `--gin_file` (repeatable), `--gin.KEY=VALUE`, `--gin_search_paths`,
`--seqio_additional_cache_dirs`.

Shared by `codet5p train|eval|infer`. Also initialises multi-host JAX (`jax.distributed`) from
flags or, with `--distributed`, from the environment (TPU pods, SLURM, GKE set it up).
"""

import argparse
import difflib
import logging
import os
import pathlib
import sys

# TensorFlow (imported by seqio) logs C++ start-up chatter to stderr; keep the console readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gin

REPO_DIR = pathlib.Path(__file__).resolve().parents[2]
REPO_GIN_DIR = REPO_DIR / "gin"


class UsageError(ValueError):
    """Bad command line or gin configuration (reported without a traceback)."""


def parse_args(argv: list[str], prog: str, description: str) -> argparse.Namespace:
    """Parses the common flags; `--gin.KEY=VALUE` pairs end up in `args.gin_bindings`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    parser.add_argument(
        "--gin_search_paths",
        default="",
        help="comma-separated directories searched for gin files and their includes "
        f"(the repo root {REPO_DIR} and its gin/ dir are always searched; repo gin files "
        "include each other as 'gin/<dir>/<file>.gin', like t5x)",
    )
    parser.add_argument("--gin_bindings", action="append", default=[], help="KEY=VALUE binding")
    parser.add_argument(
        "--seqio_additional_cache_dirs",
        action="append",
        default=[],
        help="directories searched for seqio offline caches (seqio_cache_tasks output; "
        "comma-separated or repeated), read with --gin.USE_CACHED_TASKS=True",
    )
    parser.add_argument("--coordinator_address", help="jax.distributed coordinator host:port")
    parser.add_argument("--num_processes", type=int, help="jax.distributed process count")
    parser.add_argument("--process_id", type=int, help="this process's index")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() with settings from the environment",
    )
    parser.add_argument(
        "--cpu_collectives",
        choices=("gloo", "mpi"),
        help="collectives for multi-process CPU runs (tests)",
    )
    args, rest = parser.parse_known_args(argv)
    for item in rest:
        if item.startswith("--gin.") and "=" in item:
            args.gin_bindings.append(item[len("--gin.") :])
        else:
            parser.error(f"unrecognised argument {item!r} (gin bindings are --gin.KEY=VALUE)")
    if not args.gin_file:
        parser.error("at least one --gin_file is required")
    return args


def add_seqio_cache_dirs(args: argparse.Namespace) -> None:
    """Registers `--seqio_additional_cache_dirs` with seqio; a missing directory is an error."""
    dirs = [d for item in args.seqio_additional_cache_dirs for d in item.split(",") if d]
    if not dirs:
        return
    import seqio

    from codet5p_jax import storage

    for d in dirs:
        try:
            storage.check_reachable(d, "--seqio_additional_cache_dirs")
        except storage.StorageError as e:
            raise UsageError(str(e)) from None
        if not storage.is_remote(d) and not storage.path(d).is_dir():
            raise UsageError(f"--seqio_additional_cache_dirs: {d!r} is not a directory")
    seqio.add_global_cache_dirs(dirs)


def init_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize` from flags / environment, before any device is touched."""
    import jax

    if args.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
    if args.coordinator_address or args.num_processes:
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    elif args.distributed:
        jax.distributed.initialize()


def parse_gin(args: argparse.Namespace) -> None:
    """Loads the gin files and bindings; raises UsageError naming the bad file or binding."""
    paths = [p for p in args.gin_search_paths.split(",") if p] + [str(REPO_DIR), str(REPO_GIN_DIR)]
    for path in paths:
        gin.add_config_file_search_path(path)
    for f in args.gin_file:
        if not pathlib.Path(f).is_file() and not any(
            (pathlib.Path(p) / f).is_file() for p in paths
        ):
            raise UsageError(f"gin file {f!r} not found (searched: {', '.join(paths)})")
    root = logging.getLogger()
    level = root.level
    # gin logs "Path not found" at ERROR for every search-path miss of an include, even when a
    # later search path has the file; real problems raise below.
    root.setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(args.gin_file, None, finalize_config=False)
        for binding in args.gin_bindings:  # one at a time, so an error names its binding
            try:
                gin.parse_config(binding)
            except Exception as e:
                raise UsageError(f"bad gin binding --gin.{binding}: {_binding_problem(e)}") from e
    except UsageError:
        raise
    except Exception as e:  # gin raises ValueError/KeyError/SyntaxError for bad configs
        raise UsageError(f"gin configuration error: {e}") from e
    finally:
        root.setLevel(level)
    check_macro_bindings(args.gin_bindings)


def _binding_problem(e: Exception) -> str:
    """gin's complaint about one command-line binding, without its `(line 1)` location."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = text.replace(" (line 1)", "").rstrip(" .")
    if "Unable to parse value" in text:
        text += " (string values need inner quotes: --gin.KEY=\"'text'\")"
    return text


def check_macro_bindings(bindings: list[str]) -> None:
    """Raises UsageError for a `--gin.NAME=VALUE` macro that no gin file of the run uses.

    gin itself refuses an unknown *parameter* (`train.save_evry`), but binding a macro only
    defines it, so a misspelled `--gin.TRAIN_STEPZ=10` would be ignored and the run would go on
    with the file's TRAIN_STEPS.
    """
    from gin import config as gin_config

    used = {
        ref.config_key[0]
        for ref in gin_config.iterate_references(gin_config._CONFIG)
        if ref.config_key[1] == "gin.macro"
    }
    for binding in bindings:
        name = binding.split("=", 1)[0].strip()
        if "." in name or name in used:  # parameters are checked by gin
            continue
        close = difflib.get_close_matches(name, sorted(used), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(
            f"unknown gin macro {name} (--gin.{binding}): no gin file of this run uses "
            f"%{name}{hint}"
        )


def required_error(e: Exception) -> str | None:
    """A readable message when `e` is gin's complaint about an unset `%gin.REQUIRED` value."""
    text = str(e)
    if "Required bindings" in text or "gin.REQUIRED" in text or "REQUIRED" in text:
        return (
            f"missing required gin value: {text.splitlines()[0]} "
            "(set it with --gin.NAME=VALUE, e.g. --gin.MODEL_DIR=\"'/tmp/run'\")"
        )
    return None


def setup_logging() -> None:
    """INFO lines of the project on stderr as `LEVEL logger: message`.

    `logging.basicConfig` is not enough: importing orbax logs through absl before the command
    runs, which attaches a plain WARNING-level stderr handler to the root logger, and
    `basicConfig` then does nothing. That default handler (exact type `StreamHandler`; pytest's
    capture handlers are subclasses and stay) and one installed by an earlier call are replaced
    by a handler on the current `sys.stderr`.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler or getattr(handler, "_codet5p", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._codet5p = True
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(prog: str, message: str) -> int:
    """Prints `prog: error: message` to stderr and returns exit status 2.

    gin appends `  In call to configurable 'train' (<function ...>)` lines to exceptions raised
    inside a configurable; they name no user setting and are dropped.
    """
    lines = [x for x in message.splitlines() if not x.strip().startswith("In call to configurable")]
    print(f"{prog}: error: {chr(10).join(lines)}", file=sys.stderr)
    return 2


def run_mode(argv, prog: str, description: str, fn, expected_errors: tuple = ()):
    """The shared body of `codet5p train|eval|infer`: flags, gin, run, errors -> exit status 2.

    Args:
      argv: Command-line arguments (None: `sys.argv[1:]`).
      prog: Program name for messages, e.g. "codet5p eval".
      description: `--help` text.
      fn: The gin-configured entry point to call once the configuration is parsed.
      expected_errors: Extra exception types reported as plain messages (no traceback).

    Returns:
      `(status, result)`: status 0 with `fn()`'s result, or 2 with None after printing the error.
    """
    from codet5p_jax.checkpointing import CheckpointError
    from codet5p_jax.convert.mapping import ConversionError

    # Unreadable or mismatched checkpoints carry their own complete message.
    expected_errors = (CheckpointError, ConversionError, *expected_errors)
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv, prog, description)
    setup_logging()
    init_distributed(args)
    try:
        add_seqio_cache_dirs(args)
        parse_gin(args)
        return 0, fn()
    except (UsageError, FileNotFoundError, *expected_errors) as e:
        return fail(prog, str(e)), None
    except (ValueError, TypeError, RuntimeError) as e:
        return fail(prog, required_error(e) or f"{type(e).__name__}: {e}"), None
    except OSError as e:  # an unwritable output, a full disk: the path and reason, no traceback
        return fail(prog, str(e)), None
    finally:
        gin.clear_config()
