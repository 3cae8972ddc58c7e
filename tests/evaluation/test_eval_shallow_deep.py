"""`codet5p eval --gin.BENCHMARK=humaneval` on the shallow_deep family: the released recipe's
decoder prompt (FACTS §1.5), the InstructCodeT5+ prompt format, and the vocabulary checks."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

import tasks  # registers the tasks.* vocabularies with gin
from codet5p_jax import families
from codet5p_jax.cli.eval import main as eval_main
from codet5p_jax.config import get_preset as t5_preset
from codet5p_jax.convert import orbax_io
from codet5p_jax.decoding import generate as generation
from codet5p_jax.evaluation import humaneval, task_eval
from codet5p_jax.loading import save as save_checkpoint
from codet5p_jax.models.shallow_deep_config import get_preset


def _params(cfg):
    model = families.build_model(cfg)
    params = model.init(jax.random.key(0), *families.init_args(cfg))["params"]
    return jax.tree.map(np.asarray, nn.unbox(params))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, codegen_tokenizer_dir):
    """A tiny shallow_deep orbax checkpoint named like InstructCodeT5+, with its tokenizer."""
    cfg = get_preset("tiny-shallow-deep").replace(name="instructcodet5p-tiny")
    path = tmp_path_factory.mktemp("ckpt") / "instructcodet5p-tiny"
    save_checkpoint(path, cfg, _params(cfg), "orbax", codegen_tokenizer_dir)
    return path


def test_instruct_prompts_are_the_released_format():
    prompt = 'def f(x):\n\t"""Add one.\n\t>>> f(1)\n\t2\n\t"""\n'
    enc, dec = humaneval.instruct_prompts(prompt)
    want = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n\n### Instruction:\nCreate a Python script for this "
        "problem:\nAdd one.\n\n### Response:"
    )
    assert enc == want and dec == want + prompt


def test_eval_feeds_the_prompt_to_the_decoder(checkpoint, tmp_path, monkeypatch):
    """The instruct checkpoint gets the instruction in the encoder and instruction + tabbed
    prompt as the decoder prefix; both padded with 50256 and masked explicitly."""
    calls = []
    real = generation.generate

    def spy(model, params, input_ids, attention_mask=None, **kw):
        calls.append((np.asarray(input_ids), np.asarray(attention_mask), kw))
        return real(model, params, input_ids, attention_mask, **kw)

    monkeypatch.setattr(generation, "generate", spy)
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{checkpoint}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
            "--gin.BENCHMARK='humaneval'",
            "--gin.BENCHMARK_OPTIONS={'limit': 2, 'n_workers': 1}",
            "--gin.evaluate.max_new_tokens=3",
        ]
    )
    assert status == 0
    vocab = tasks.vocabulary_for_dir(orbax_io.tokenizer_dir_of(checkpoint))
    assert isinstance(vocab, tasks.CodeGenVocabulary)  # picked from the checkpoint's files
    problems = humaneval.load_problems()
    ids, mask, kw = calls[0]
    for row, task_id in enumerate(["HumanEval/0", "HumanEval/1"]):
        tabbed = humaneval.to_codet5p_prompt(problems[task_id]["prompt"])
        enc_text, dec_text = humaneval.instruct_prompts(tabbed)
        n = int(mask[row].sum())
        assert vocab.decode(ids[row, :n].tolist()) == enc_text
        assert (ids[row, n:] == 50256).all()
        m = int(kw["decoder_prefix_mask"][row].sum())
        assert vocab.decode(kw["decoder_prefix_ids"][row, :m].tolist()) == dec_text
    rows = (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(r)["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]


def test_benchmark_defaults_follow_the_family():
    sd = get_preset("codet5p-2b")
    assert task_eval.benchmark_defaults(sd, "humaneval", {}) == {
        "prompt_to_decoder": True,
        "codet5p_prompts": True,
        "instruct_prompts": False,
    }
    assert task_eval.benchmark_defaults(get_preset("instructcodet5p-16b"), "humaneval", None)[
        "instruct_prompts"
    ]
    # Explicit options win; the T5 family keeps plain generation.
    assert not task_eval.benchmark_defaults(sd, "humaneval", {"prompt_to_decoder": False})[
        "prompt_to_decoder"
    ]
    assert task_eval.benchmark_defaults(t5_preset("tiny"), "humaneval", {}) == {}


def test_codet5_vocabulary_for_a_codegen_model_is_one_line(
    checkpoint, tmp_path, capsys, codet5_tokenizer_dir
):
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{checkpoint}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
            "--gin.BENCHMARK='humaneval'",
            "--gin.evaluate.vocabulary=@tasks.CodeT5Vocabulary()",
            f"--gin.tasks.CodeT5Vocabulary.path='{codet5_tokenizer_dir}'",
        ]
    )
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("codet5p eval")]
    assert status == 2 and len(err) == 1 and "EOS id 2" in err[0] and "50256" in err[0]
    assert not (tmp_path / "eval").exists()
