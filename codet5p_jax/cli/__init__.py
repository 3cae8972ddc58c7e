"""The `codet5p` command: one subcommand per module of this package, each `main(argv) -> int`.

Every command lives here and nowhere else: a command module parses its flags, calls the library,
and turns a user mistake into one line on stderr and exit status 2. `python -m codet5p_jax.cli
<command> ...` is the same as `codet5p <command> ...`.
"""

import importlib
import sys

# Subcommand -> module. Modules are imported lazily so `codet5p --help` stays fast and a mode's
# heavy imports (TensorFlow for data, torch never) are paid only by the mode that needs them.
COMMANDS = {
    "train": ("codet5p_jax.cli.train", "train a model from gin configs (t5x-style)"),
    "eval": ("codet5p_jax.cli.eval", "evaluate a checkpoint on a task or benchmark"),
    "infer": ("codet5p_jax.cli.infer", "write a checkpoint's predictions for a task as JSONL"),
    "generate": ("codet5p_jax.cli.generate", "completions of a checkpoint for text prompts"),
    "convert": ("codet5p_jax.cli.convert", "convert checkpoints between HF and orbax layouts"),
    "export-embedding": (
        "codet5p_jax.cli.export_embedding",
        "export a stage-2 run as a 110m-embedding HF directory",
    ),
    "eval-samples": ("codet5p_jax.cli.eval_samples", "score an existing samples file"),
    "embed": ("codet5p_jax.cli.embed", "write text/code embeddings to a file"),
    "retrieval": ("codet5p_jax.cli.retrieval", "text->code retrieval MRR / R@k of a checkpoint"),
    "stage2-report": ("codet5p_jax.cli.stage2_report", "held-out retrieval before/after stage 2"),
    "metrics": ("codet5p_jax.cli.metrics", "print run summaries and re-plot loss curves"),
    "train-tokenizer": ("codet5p_jax.cli.train_tokenizer", "train a CodeT5-recipe byte-level BPE"),
    "prepare-corpus": ("codet5p_jax.cli.prepare_corpus", "extract and cache a code corpus"),
    "plan": ("codet5p_jax.cli.plan", "per-device memory and FLOPs of a run, compiled AOT"),
    "index": ("codet5p_jax.cli.index", "embed a code corpus into a FAISS index"),
    "search": ("codet5p_jax.cli.search", "top-k records of an index for a query"),
    "retrieve": ("codet5p_jax.cli.retrieve", "offline retrieval of RAG neighbours to JSONL"),
    "rag": ("codet5p_jax.cli.rag", "retrieval-augmented generation, scored (gin run)"),
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
