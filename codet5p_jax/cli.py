"""The `codet5p` command: one subcommand per mode, each a module with `main(argv) -> int`."""

import importlib
import sys

# Subcommand -> module. Modules are imported lazily so `codet5p --help` stays fast and a mode's
# heavy imports (TensorFlow for data, torch never) are paid only by the mode that needs them.
COMMANDS = {
    "train": ("codet5p_jax.train.main", "train a model from gin configs (t5x-style)"),
    "eval": ("codet5p_jax.eval", "evaluate a checkpoint on a task or benchmark"),
    "infer": ("codet5p_jax.infer", "write a checkpoint's predictions for a task as JSONL"),
    "convert": ("codet5p_jax.convert.cli", "convert checkpoints between HF and orbax layouts"),
    "eval-samples": ("codet5p_jax.evaluation.eval_samples", "score an existing samples file"),
    "embed": ("codet5p_jax.evaluation.embed_cli", "write text/code embeddings to a file"),
    "train-tokenizer": ("tasks.tokenizer_training", "train a CodeT5-recipe byte-level BPE"),
    "prepare-corpus": ("tasks.corpus_cli", "extract and cache a code corpus"),
}


def _usage() -> str:
    lines = ["usage: codet5p <command> [args...]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatches `codet5p <command> ...` to the command's module."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"codet5p: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
