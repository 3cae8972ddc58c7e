"""`codet5p generate`: completions of a checkpoint for prompts, as text or JSONL.

    codet5p generate --model ./stage2_hf "def fibonacci(n):"
    codet5p generate --model ./runs/finetune --prompt-file prompts.txt --format jsonl
    cat prompt.py | codet5p generate --model ./ckpt --method sample --temperature 0.8
    codet5p generate --model ./ckpt "def add(a, b):" --num-beams 4 --decoder-prefix "    "

MODEL is an HF directory, an orbax directory or a training MODEL_DIR (`codet5p_jax.loading`);
its tokenizer files are used (`--tokenizer` overrides). Prompts come from the arguments (one
each), `--prompt-file` (one per line, `\\n` for a newline inside a prompt) or, with neither,
stdin (all of it is one prompt). Each prompt is encoded `<s> ... </s>` as the released CodeT5+
tokenizers do. Decoding: greedy by default; `--num-beams N` (N > 1) means beam search and
`--temperature` / `--top-k` / `--top-p` / `--num-samples` mean sampling unless `--method` says
otherwise. With one prompt, text output and one sequence, tokens are printed as they are
produced (`--no-stream` waits for the end).
"""

import argparse
import difflib
import json
import pathlib
import sys

SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "num_samples")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (and a close match for a misspelled flag)."""

    def error(self, message):
        if "unrecognized arguments" in message:
            flags = [a for o in self._actions for a in o.option_strings]
            words = message.split(":", 1)[1].split()
            hints = [difflib.get_close_matches(w.split("=")[0], flags, n=1) for w in words]
            hint = next((h[0] for h in hints if h), None)
            if hint:
                message += f" (did you mean {hint}?)"
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `codet5p generate`."""
    p = _Parser(prog="codet5p generate", description=__doc__.split("\n\n")[0])
    p.add_argument("prompts", nargs="*", help="prompts (default: --prompt-file or stdin)")
    p.add_argument("--model", required=True, help="HF dir, orbax dir or training MODEL_DIR")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--prompt-file", default=None, help="one prompt per line")
    p.add_argument("--method", choices=("greedy", "sample", "beam"), default=None)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-input-length", type=int, default=512)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder-prefix", default=None, help="text the decoder starts from")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--no-stream", action="store_true", help="print only finished completions")
    p.add_argument(
        "--exact-shapes",
        action="store_true",
        help="compile for the exact batch and lengths instead of padded shape buckets",
    )
    return p


def decoding_options(args) -> dict:
    """`generate` options from the flags; a flag that the method ignores is an error."""
    sampling = [f for f in SAMPLING_FLAGS if getattr(args, f) is not None]
    beam = [f for f in ("num_beams", "length_penalty") if getattr(args, f) is not None]
    method = args.method
    if method is None:
        method = "beam" if (args.num_beams or 1) > 1 else "sample" if sampling else "greedy"
    wrong = {"greedy": sampling + beam, "sample": beam, "beam": sampling}[method]
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        raise ValueError(f"{flag} does not apply to --method {method}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    options = {"method": method, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    options.update({f: getattr(args, f) for f in sampling + beam})
    if method == "beam" and "num_beams" not in options:
        options["num_beams"] = 4
    if args.exact_shapes:
        options["buckets"] = None
    return options


def read_prompts(args) -> list[str]:
    """The prompts of the arguments, `--prompt-file` or stdin (see the module docstring)."""
    if args.prompts and args.prompt_file:
        raise ValueError("give prompts as arguments or with --prompt-file, not both")
    if args.prompt_file:
        path = pathlib.Path(args.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts = [x.replace("\\n", "\n") for x in lines if x.strip()]
        if not prompts:
            raise ValueError(f"{path}: no prompts (the file is empty or blank)")
        return prompts
    if args.prompts:
        if any(not p.strip() for p in args.prompts):
            raise ValueError("an empty prompt was given")
        return list(args.prompts)
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("no prompt: give PROMPT arguments, --prompt-file, or pipe one on stdin")
    text = sys.stdin.read()
    if not text.strip():
        raise ValueError("stdin: empty prompt")
    return [text]


class _Streamer:
    """Prints the decoded text of row 0 as tokens arrive (decoding the whole prefix each time,
    so multi-token characters appear only once complete)."""

    def __init__(self, pretrained, out):
        self.pretrained, self.out = pretrained, out
        self.ids: list[int] = []
        self.shown = ""
        self.stopped = False

    def __call__(self, tokens, written):
        if self.stopped or not bool(written[0]):
            return
        token = int(tokens[0])
        if token in (self.pretrained.config.eos_token_id, self.pretrained.config.pad_token_id):
            self.stopped = True
            return
        self.ids.append(token)
        text = self.pretrained.tokenizer.decode(self.ids)
        if text.startswith(self.shown) and not text.endswith("\ufffd"):
            self.out.write(text[len(self.shown) :])
            self.out.flush()
            self.shown = text


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p generate`; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from codet5p_jax.convert.mapping import ConversionError

    try:
        options = decoding_options(args)
        prompts = read_prompts(args)
        from codet5p_jax import from_pretrained

        pretrained = from_pretrained(args.model, tokenizer_dir=args.tokenizer)
        _ = pretrained.tokenizer  # a checkpoint without tokenizer files fails here, clearly
        one_sequence = options["method"] == "greedy" or (
            options["method"] == "sample" and options.get("num_samples", 1) == 1
        )
        stream = len(prompts) == 1 and args.format == "text" and one_sequence and not args.no_stream
        streamer = _Streamer(pretrained, sys.stdout) if stream else None
        outputs = pretrained.generate_text(
            prompts,
            max_input_length=args.max_input_length,
            decoder_prefix=args.decoder_prefix,
            on_token=streamer,
            **options,
        )
    except (ConversionError, FileNotFoundError, ValueError) as e:
        print(f"codet5p generate: error: {e}", file=sys.stderr)
        return 2
    if streamer is not None:
        import jax

        jax.effects_barrier()  # every streamed token is printed before the rest
        rest = outputs[0][len(streamer.shown) :] if outputs[0].startswith(streamer.shown) else ""
        print(rest)
        return 0
    for prompt, out in zip(prompts, outputs, strict=True):
        if args.format == "jsonl":
            key = "completions" if isinstance(out, list) else "completion"
            print(json.dumps({"prompt": prompt, key: out}))
        else:
            for text in out if isinstance(out, list) else [out]:
                print(text)
    return 0
