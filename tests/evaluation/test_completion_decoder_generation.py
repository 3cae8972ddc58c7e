"""Decoder-only generation of the completion benchmarks (`make_generate_fn(decoder_only=True)`):
`[CLM]` to the encoder, the context's last tokens as decoder prefix; equal to a step-by-step
greedy loop over the HF torch T5 with the same weights (full forward per token, no cache)."""

import json

import pytest
import torch
from testlib import make_pair

from codet5p_jax.evaluation.task_eval import _trim, make_generate_fn

FIXTURE = "reference/datasets/codexglue-understanding/code-completion-line-python/test.json"
CLM = 3


@pytest.fixture(scope="module")
def vocab(codet5_tokenizer_dir):
    from tasks.vocabularies import CodeT5Vocabulary

    return CodeT5Vocabulary(codet5_tokenizer_dir)


def reference_loop(hf, prefix: list[int], max_new_tokens: int, cfg) -> list[int]:
    """Greedy, one full HF forward per new token: encoder `[CLM]`, decoder start + prefix + so
    far."""
    decoder = [cfg.decoder_start_token_id, *prefix]
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = hf(
                input_ids=torch.tensor([[CLM]]),
                attention_mask=torch.ones(1, 1, dtype=torch.long),
                decoder_input_ids=torch.tensor([decoder]),
            ).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            decoder.append(token)
            if token == cfg.eos_token_id:
                break
    return out


def test_decoder_prefix_generation_equals_step_by_step_loop(shared_dir, vocab):
    hf, model, params, cfg = make_pair("codet5p-220m", None)
    rows = [json.loads(x) for x in (shared_dir / FIXTURE).read_text().splitlines()]
    # Fixture contexts (long: cut to their last 24 tokens) and a short one (a ragged batch).
    prompts = [r["input"] for r in rows[:3]] + ["<s> import os <EOL>"]
    keep, new = 24, 6
    generate_fn = make_generate_fn(
        model, params, vocab, max_input_length=keep, decoder_only=True, max_new_tokens=new
    )
    got = [samples[0] for samples in generate_fn(prompts, 1)]
    expected, prefixes = [], []
    for p in prompts:
        ids = list(vocab.encode(p))
        prefix = ids[-keep:]
        prefixes.append(prefix)
        tokens = reference_loop(hf, prefix, new, cfg)
        expected.append(vocab.decode(_trim(tokens, cfg.eos_token_id)))
    assert len(prefixes[0]) == keep and len(prefixes[-1]) < keep  # truncated and ragged rows
    assert got == expected
    # The mode matters: the same prompts as encoder input (seq2seq) decode differently.
    seq2seq = make_generate_fn(model, params, vocab, prompt_tail=True, max_new_tokens=new)
    assert [s[0] for s in seq2seq(prompts, 1)] != got


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"generation_mode": "decoder", "benchmark": "completion-py150"}, "one of"),
        (
            {"generation_mode": "decoder_only", "mixture_or_task_name": "codet5p_x"},
            "BENCHMARK runs only",
        ),
    ],
)
def test_bad_generation_mode_is_refused_before_loading(tmp_path, kwargs, message):
    from codet5p_jax.evaluation.task_eval import evaluate

    with pytest.raises(ValueError) as info:
        evaluate(checkpoint_path=str(tmp_path / "missing"), output_dir=str(tmp_path), **kwargs)
    # gin appends a line naming the configurable; the CLI prints the first one.
    assert message in str(info.value).splitlines()[0] and "generation_mode" in str(info.value)
