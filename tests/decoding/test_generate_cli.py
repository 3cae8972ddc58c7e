"""`codet5p generate` and the façade's text API on an exported tiny model (run dir -> convert).

The reference for every printed completion is the id-level path: the prompt encoded with the
released CodeT5 vocabulary as `<s> ids </s>`, `codet5p_jax.decoding.generate`, ids decoded.
"""

import io
import json
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import checkpointing, from_pretrained
from codet5p_jax.cli import convert as convert_cli
from codet5p_jax.cli import generate as generate_cli
from codet5p_jax.config import get_preset
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models import init_params

PROMPTS = ["def add(a, b):", "class Stack:\n    def push(self, x):"]


def _tiny_gin_config():
    """The model config `gin/models/tiny.gin` selects (what the demo's stage 1 trains)."""
    import gin
    from codet5p_jax.cli.gin_flags import REPO_DIR

    try:
        gin.parse_config_file(str(REPO_DIR / "gin/models/tiny.gin"))
        return get_preset(gin.query_parameter("get_preset.name"))
    finally:
        gin.clear_config()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, codet5_tokenizer_dir):
    """A tiny (gin/models/tiny.gin) run exported as the demo does: convert --to hf."""
    cfg = _tiny_gin_config()
    params = jax.device_get(nn.unbox(init_params(cfg, jax.random.PRNGKey(3))))
    # A random init often picks </s> or <pad> first; with their (tied) embedding rows zeroed
    # their logit is 0 while some other token's is positive, so completions are not empty.
    embedding = np.array(params["token_embedder"]["embedding"])
    embedding[[0, 2]] = 0.0
    params["token_embedder"]["embedding"] = embedding
    root = tmp_path_factory.mktemp("gen")
    checkpointing.save_params(root / "run", params, cfg, step=1)
    (root / "run" / "config.gin").write_text(f"tokenizer_path.path = '{codet5_tokenizer_dir}'\n")
    assert convert_cli.main([str(root / "run"), str(root / "hf"), "--to", "hf"]) == 0
    return root / "hf"


_LOADED = {}


def _load(path):
    """One `Pretrained` per exported model, so the jitted decoders compile once per module."""
    if path not in _LOADED:
        _LOADED[path] = from_pretrained(path)
    return _LOADED[path]


def _reference(path, tokenizer_dir, prompts, **options):
    from tasks.vocabularies import CodeT5Vocabulary

    vocab = CodeT5Vocabulary(tokenizer_dir)
    model = _load(path)
    rows = [[1, *vocab.encode(p), 2] for p in prompts]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    out = generate(model.model, model.params, ids, **options)
    texts = []
    for row in np.asarray(out.tokens):
        seqs = []
        for seq in row:
            kept = []
            for t in seq.tolist():
                if t in (0, 2):
                    break
                kept.append(t)
            seqs.append(vocab.decode(kept))
        texts.append(seqs)
    return texts


def test_generate_prints_completions_of_each_prompt(exported, codet5_tokenizer_dir, capsys):
    args = ["--model", str(exported), *PROMPTS, "--max-new-tokens", "12"]
    assert generate_cli.main(args) == 0
    printed = capsys.readouterr().out
    expected = _reference(exported, codet5_tokenizer_dir, PROMPTS, max_new_tokens=12)
    assert printed == "".join(row[0] + "\n" for row in expected)
    assert any(row[0] for row in expected)  # something was generated


def test_generate_jsonl_beam_and_prompt_file(exported, codet5_tokenizer_dir, tmp_path, capsys):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(p.replace("\n", "\\n") for p in PROMPTS) + "\n\n")
    args = ["--model", str(exported), "--prompt-file", str(prompt_file), "--format", "jsonl"]
    assert generate_cli.main(args + ["--num-beams", "3", "--max-new-tokens", "8"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    expected = _reference(
        exported, codet5_tokenizer_dir, PROMPTS, max_new_tokens=8, method="beam", num_beams=3
    )
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["completions"] for r in rows] == expected


def test_single_prompt_streams_tokens_as_they_are_produced(exported, codet5_tokenizer_dir):
    pretrained = _load(exported)
    seen = []
    out = pretrained.generate_text(
        PROMPTS[0],
        max_new_tokens=10,
        method="sample",
        temperature=0.8,
        seed=5,
        on_token=lambda tokens, written: seen.append((int(tokens[0]), bool(written[0]))),
    )
    jax.effects_barrier()
    streamed = [t for t, w in seen if w]
    full = _reference(
        exported, codet5_tokenizer_dir, PROMPTS[:1], max_new_tokens=10, method="sample",
        temperature=0.8, seed=5,
    )[0][0]  # fmt: skip
    assert out == [full]
    assert pretrained.tokenizer.decode([t for t in streamed if t not in (0, 2)]) == full
    # The command prints the same text, streamed (one prompt, text output).
    buffer = io.StringIO()
    streamer = generate_cli._Streamer(pretrained, buffer)
    pretrained.generate_text(PROMPTS[0], max_new_tokens=10, on_token=streamer)
    jax.effects_barrier()
    greedy = _reference(exported, codet5_tokenizer_dir, PROMPTS[:1], max_new_tokens=10)[0][0]
    assert buffer.getvalue() == greedy[: len(buffer.getvalue())] and len(streamer.ids) > 0


def test_stdin_prompt_and_decoder_prefix(exported, codet5_tokenizer_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPTS[1]))
    assert generate_cli.main(["--model", str(exported), "--max-new-tokens", "6"]) == 0
    expected = _reference(exported, codet5_tokenizer_dir, PROMPTS[1:], max_new_tokens=6)
    assert capsys.readouterr().out == expected[0][0] + "\n"
    pretrained = _load(exported)
    with_prefix = pretrained.generate_text(PROMPTS[0], max_new_tokens=6, decoder_prefix="    ")
    prefix = pretrained.tokenizer.encode("    ")
    ids = pretrained.encode_text(PROMPTS[:1], 16)
    ids = ids[:, : int((ids != 0).sum())]
    out = generate(pretrained.model, pretrained.params, ids, max_new_tokens=6,
                   decoder_prefix_ids=np.asarray([prefix], np.int32))  # fmt: skip
    assert with_prefix == [pretrained.decode_ids(np.asarray(out.tokens)[0, 0])]


def _run_cli(*args, stdin=None):
    proc = subprocess.run(
        [sys.executable, "-m", "codet5p_jax.cli", "generate", *args],
        capture_output=True, text=True, input=stdin, timeout=300,
    )  # fmt: skip
    errors = [x for x in proc.stderr.splitlines() if "error" in x]
    return proc.returncode, errors


def test_bad_inputs_are_one_line_errors(exported, tmp_path):
    rc, err = _run_cli("--model", str(tmp_path / "missing"), "x")
    assert rc == 2 and err == [
        f"codet5p generate: error: {tmp_path / 'missing'}: no such file or directory"
    ]
    (tmp_path / "empty.txt").write_text("\n  \n")
    rc, err = _run_cli("--model", str(exported), "--prompt-file", str(tmp_path / "empty.txt"))
    assert rc == 2 and len(err) == 1 and "empty.txt: no prompts" in err[0]
    rc, err = _run_cli("--model", str(exported), "--beam-width", "4", "x")
    assert rc == 2 and err == ["codet5p generate: error: unrecognized arguments: --beam-width"]
    rc, err = _run_cli("--model", str(exported), "--temprature", "0.5", "x")
    assert rc == 2 and len(err) == 1 and "(did you mean --temperature?)" in err[0]
    rc, err = _run_cli("--model", str(exported), "--top-p", "0.9", "--method", "beam", "x")
    assert rc == 2 and err == ["codet5p generate: error: --top-p does not apply to --method beam"]


@pytest.mark.slow
def test_demo_style_trained_and_exported_model_generates(tmp_path, codet5_tokenizer_dir):
    """The demo's path on a 2-step run: train tiny_stage1.gin, convert --to hf, generate."""
    env = {**__import__("os").environ, "CODET5P_TOKENIZER_DIR": str(codet5_tokenizer_dir)}
    run = tmp_path / "stage1"
    train = [sys.executable, "-m", "codet5p_jax.cli", "train",
             "--gin_file=gin/experiments/tiny_stage1.gin", f"--gin.MODEL_DIR='{run}'",
             "--gin.TRAIN_STEPS=2", "--gin.train.save_every=2", "--gin.BATCH_SIZE=8"]  # fmt: skip
    proc = subprocess.run(train, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    convert = [sys.executable, "-m", "codet5p_jax.cli", "convert", str(run), str(tmp_path / "hf"),
               "--to", "hf"]  # fmt: skip
    subprocess.run(convert, check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.run(
        [sys.executable, "-m", "codet5p_jax.cli", "generate", "--model", str(tmp_path / "hf"),
         "--max-new-tokens", "8", "--format", "jsonl", *PROMPTS],
        env={k: v for k, v in env.items() if k != "CODET5P_TOKENIZER_DIR"},  # the export's own
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    expected = _reference(tmp_path / "hf", codet5_tokenizer_dir, PROMPTS, max_new_tokens=8)
    assert [r["completion"] for r in rows] == [row[0] for row in expected]
