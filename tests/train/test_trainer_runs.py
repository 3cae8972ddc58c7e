"""End-to-end `codet5p train` runs on the toy task: exact resume and bad input.

The tiny model (512-row vocabulary, dropout on so the per-step PRNG matters) trains on
tests/train/toy_tasks.py through the real CLI (`main(argv)`), gin files and checkpoints.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest

from codet5p_jax import checkpointing
from codet5p_jax.cli.train import main

DROPOUT = "--gin.get_preset.dropout_rate=0.1"


def _run(toy_gin, model_dir, *extra):
    return main([f"--gin_file={toy_gin}", f"--gin.MODEL_DIR='{model_dir}'", DROPOUT, *extra])


def _losses(model_dir):
    rows = [
        json.loads(x) for x in (pathlib.Path(model_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    return {r["step"]: r["loss"] for r in rows}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """6 uninterrupted steps, checkpoints at 3 and 6."""
    model_dir = tmp_path_factory.mktemp("full")
    assert _run(pathlib.Path(__file__).parent / "toy_run.gin", model_dir) == 0
    return model_dir


def test_exact_resume_is_bitwise(full_run, toy_gin, tmp_path, capsys):
    """3 steps, stop (as a preemption would), resume 3 more == 6 uninterrupted, bit for bit."""
    from codet5p_jax.train import trainer

    model_dir = tmp_path / "resumed"
    import gin
    from codet5p_jax.cli import gin_flags

    args = gin_flags.parse_args(
        [f"--gin_file={toy_gin}", f"--gin.MODEL_DIR='{model_dir}'", DROPOUT], "t", ""
    )
    gin_flags.parse_gin(args)
    try:
        first = trainer.train(stop_after=3)
    finally:
        gin.clear_config()
    assert first["preempted"] and first["step"] == 3
    assert checkpointing.Checkpointer(model_dir, save_every=3).latest_step() == 3
    assert _run(toy_gin, model_dir) == 0
    assert "done at step 6" in capsys.readouterr().out
    want, got = _losses(full_run), _losses(model_dir)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert [got[s] for s in range(1, 7)] == [want[s] for s in range(1, 7)]  # exact floats
    full_params, _, step_a = checkpointing.latest_params(full_run)
    resumed_params, cfg, step_b = checkpointing.latest_params(model_dir)
    assert step_a == step_b == 6 and cfg.vocab_size == 512
    for a, b in zip(_leaves(full_params), _leaves(resumed_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # The run changed the params: the comparison above is not between two initialisations.
    assert want[6] < want[1]


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_run_outputs(full_run):
    for name in ("metrics.jsonl", "loss_curve.png", "config.gin", "operative_config.gin"):
        assert (full_run / name).is_file(), name
    assert list(full_run.glob("events.out.tfevents.*"))
    row = json.loads((full_run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss/span_denoising", "accuracy/decoder_clm", "tokens_per_second", "grad_norm"):
        assert key in row, key
    assert sorted(p.name for p in (full_run / "checkpoints").iterdir()) == ["3", "6"]


# ---------------------------------------------------------------------------------------------
# Bad input: each stops with a message naming the problem, and never trains from scratch.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "binding,message",
    [
        ("--gin.train.no_such_arg=1", "no_such_arg"),
        ("--gin.get_preset.name='codet5p-999m'", "Unknown preset 'codet5p-999m'"),
        ("--gin.MIXTURE_OR_TASK_NAME='toy_revers'", "Unknown task or mixture 'toy_revers'"),
        ("--gin.BATCH_SIZE=6", "BATCH_SIZE=6 is not divisible by the data-parallel size 8"),
        ("--gin.TRAIN_STEPZ=10", "unknown gin macro TRAIN_STEPZ (--gin.TRAIN_STEPZ=10): no gin"),
        ("--gin.TRAIN_STEPZ=10", "did you mean TRAIN_STEPS?"),
        ("--gin.BATCH_SIZE=0", "error: BATCH_SIZE must be a positive integer, got 0\n"),
        ("--gin.BATCH_SIZE='abc'", "error: BATCH_SIZE must be a positive integer, got 'abc'\n"),
        ("--gin.train.log_every=-1", "train.log_every must be a positive integer, got -1"),
        ("--gin.TASK_FEATURE_LENGTHS={'inputs': 0}", "TASK_FEATURE_LENGTHS['inputs'] must be"),
        ("--gin.MODEL_DIR=/runs/x", "bad gin binding --gin.MODEL_DIR=/runs/x: Unable to parse"),
    ],
)
def test_bad_configuration(toy_gin, tmp_path, capsys, binding, message):
    """One line naming the problem, exit status 2, and nothing written to MODEL_DIR."""
    model_dir = tmp_path / "run"
    assert _run(toy_gin, model_dir, binding) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not model_dir.exists()


def test_model_dir_that_is_a_file(toy_gin, tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.write_text("not a directory")
    assert _run(toy_gin, model_dir) == 2
    assert capsys.readouterr().err == (
        f"codet5p train: error: MODEL_DIR {model_dir} exists and is not a directory\n"
    )
    assert _run(toy_gin, model_dir / "sub") == 2
    assert f"{model_dir} is not a directory" in capsys.readouterr().err


def test_model_dir_on_a_read_only_file_system(toy_gin, tmp_path, capsys, monkeypatch):
    """As root, permissions do not stop a write, so the read-only mount is simulated: access()
    says no and statvfs() reports ST_RDONLY, as they do on a `ro` mount (checked by hand with
    `unshare -m` + `mount -o ro`)."""
    import os
    import types

    from codet5p_jax.train import run_checks

    monkeypatch.setattr(run_checks.os, "access", lambda path, mode: False)
    monkeypatch.setattr(run_checks.os, "statvfs", lambda path: types.SimpleNamespace(f_flag=1))
    assert os.ST_RDONLY == 1
    assert _run(toy_gin, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err == (
        f"codet5p train: error: MODEL_DIR {tmp_path / 'run'} is not writable "
        f"({tmp_path}: read-only file system)\n"
    )


def test_missing_required_macro(tmp_path, capsys):
    code = main(
        [
            "--gin_file=models/tiny.gin",
            "--gin_file=runs/pretrain.gin",
            f"--gin.MODEL_DIR='{tmp_path}'",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "MIXTURE_OR_TASK_NAME" in err and "TASK_FEATURE_LENGTHS" in err


def test_unknown_gin_file(capsys):
    assert main(["--gin_file=experiments/nope.gin"]) == 2
    assert "gin file 'experiments/nope.gin' not found" in capsys.readouterr().err


def test_checkpoint_of_other_architecture(full_run, toy_gin, tmp_path, capsys):
    model_dir = tmp_path / "other"
    shutil.copytree(full_run, model_dir)
    assert _run(toy_gin, model_dir, "--gin.get_preset.emb_dim=32", "--gin.TRAIN_STEPS=7") == 2
    err = capsys.readouterr().err
    assert "different architecture: emb_dim: checkpoint 64, model 32" in err


def test_initial_checkpoint_of_other_architecture(full_run, toy_gin, tmp_path, capsys):
    code = _run(
        toy_gin,
        tmp_path / "ft",
        "--gin.get_preset.vocab_size=640",
        f"--gin.INITIAL_CHECKPOINT_PATH='{full_run}'",
    )
    assert code == 2
    assert "vocab_size: checkpoint 512, model 640" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()  # a refused start leaves no config.gin, no checkpoints/


def test_truncated_checkpoint(full_run, toy_gin, tmp_path, capsys):
    model_dir = tmp_path / "trunc"
    shutil.copytree(full_run, model_dir)
    data_files = sorted(
        p for p in (model_dir / "checkpoints" / "6" / "params").rglob("*") if p.is_file()
    )
    biggest = max(data_files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    assert _run(toy_gin, model_dir, "--gin.TRAIN_STEPS=7") == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "checkpoints/6/params" in err


def _damaged_records(tmp_path, monkeypatch) -> None:
    """Writes the `toy_records` task's file with 7 bytes of one record zeroed, and points the
    task at it."""
    import toy_tasks

    records = tmp_path / "toy.tfrecord"
    toy_tasks.write_records(records)
    data = records.read_bytes()
    middle = len(data) // 2
    records.write_bytes(data[:middle] + b"\0" * 7 + data[middle + 7 :])
    monkeypatch.setenv(toy_tasks.RECORDS_ENV, str(records))


def _infer_and_eval(checkpoint, task: str, tmp_path):
    """`(main, argv, prog)` of `codet5p infer` and `codet5p eval` of `checkpoint` on `task`."""
    from codet5p_jax.cli.eval import main as eval_main
    from codet5p_jax.cli.infer import main as infer_main

    common = [
        f"--gin.CHECKPOINT_PATH='{checkpoint}'",
        f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 16}",
    ]
    infer_argv = [
        "--gin_file=gin/runs/infer.gin",
        *common,
        f"--gin.OUTPUT_FILE='{tmp_path / 'p.jsonl'}'",
        "--gin.infer.task_modules=('toy_tasks',)",
    ]
    eval_argv = [
        "--gin_file=gin/runs/eval.gin",
        *common,
        f"--gin.OUTPUT_DIR='{tmp_path / 'ev'}'",
        "--gin.evaluate.task_modules=('toy_tasks',)",
    ]
    return (infer_main, infer_argv, "infer"), (eval_main, eval_argv, "eval")


def test_corrupt_training_data_is_one_line(toy_gin, tmp_path, capsys, monkeypatch):
    """A damaged TFRecord met mid-run (tf.data raises inside the prefetch thread) ends the run
    with one line naming the task and TensorFlow's reason, not a traceback."""
    _damaged_records(tmp_path, monkeypatch)
    rc = _run(toy_gin, tmp_path / "run", "--gin.MIXTURE_OR_TASK_NAME='toy_records'",
              "--gin.TRAIN_STEPS=40")  # fmt: skip
    assert rc == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("codet5p train")]
    assert len(err) == 1, err
    assert "reading task 'toy_records' (train) failed: DataLossError: corrupted record" in err[0]


def test_corrupt_data_under_infer_and_eval_is_one_line(full_run, tmp_path, capsys, monkeypatch):
    """The same damaged records read by `codet5p infer` (the trainer's reader) and by
    `codet5p eval` (seqio's evaluator): one line each, no output written."""
    _damaged_records(tmp_path, monkeypatch)
    for main_fn, argv, prog in _infer_and_eval(full_run, "toy_records", tmp_path):
        assert main_fn(argv) == 2, prog
        err = [x for x in capsys.readouterr().err.splitlines() if x.startswith(f"codet5p {prog}")]
        assert len(err) == 1, err
        assert "DataLossError: corrupted record" in err[0], err
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "ev" / "metrics.json").exists()


def test_nan_loss_names_the_step(toy_gin, tmp_path, capsys):
    """A 1e38 learning rate blows the params up within a few steps; the first non-finite loss
    stops the run with its step number, after every earlier (finite) step was logged."""
    model_dir = tmp_path / "nan"
    code = _run(
        toy_gin,
        model_dir,
        "--gin.make_schedule.peak_value=1e38",
        "--gin.make_optimizer.clip_grad_norm=None",
        "--gin.train.save_every=100",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"starting from scratch in {model_dir}" in err  # a fresh run says so
    logged = _losses(model_dir)
    assert all(np.isfinite(v) for v in logged.values())
    bad_step = max(logged, default=0) + 1
    assert f"at step {bad_step}:" in err and ("nan" in err or "inf" in err)
    assert not (model_dir / "checkpoints").exists()  # no empty checkpoints/ either
    assert not (model_dir / "config.gin").exists()  # nothing to resume, no config of it


# ---------------------------------------------------------------------------------------------
# Eval / infer on the trained checkpoint
# ---------------------------------------------------------------------------------------------
def test_infer_and_eval_agree(full_run, tmp_path):
    """`codet5p infer` rows and `codet5p eval`'s seqio exact-match come from two code paths
    (JSONL writer vs seqio.Evaluator); they must agree on the same greedy predictions."""
    from codet5p_jax.cli.eval import main as eval_main
    from codet5p_jax.cli.infer import main as infer_main

    common = [
        f"--gin.CHECKPOINT_PATH='{full_run}'",
        "--gin.MIXTURE_OR_TASK_NAME='toy_reverse'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 16}",
    ]
    out_file = tmp_path / "pred.jsonl"
    assert (
        infer_main(
            [
                "--gin_file=gin/runs/infer.gin",
                *common,
                f"--gin.OUTPUT_FILE='{out_file}'",
                "--gin.infer.task_modules=('toy_tasks',)",
                "--gin.infer.max_new_tokens=14",
                "--gin.infer.num_examples=16",
            ]  # fmt: skip
        )
        == 0
    )
    rows = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(16))
    assert all(r["targets"] == r["inputs"][::-1] for r in rows)  # toy task: reversed inputs
    assert (
        eval_main(
            [
                "--gin_file=gin/runs/eval.gin",
                *common,
                f"--gin.OUTPUT_DIR='{tmp_path / 'ev'}'",
                "--gin.evaluate.task_modules=('toy_tasks',)",
                "--gin.evaluate.max_new_tokens=14",
                "--gin.evaluate.num_examples=16",
            ]  # fmt: skip
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    want = 100.0 * np.mean([r["prediction"] == r["targets"] for r in rows])
    assert metrics["tasks"]["toy_reverse"]["exact_match"] == pytest.approx(want)
    # The checkpoint is trained: its loss closed at least half the gap between the run's initial
    # loss (step 1 of metrics.jsonl: the untrained params, about 6.9 here) and ln(512) = 6.24, the
    # loss of a uniform predictor over the 512 rows. The first thing training learns is to flatten
    # the random init's logits towards that, which no untrained model has done.
    initial = _losses(full_run)[1]
    assert initial > np.log(512)
    assert metrics["teacher_forced_loss"] < (initial + np.log(512)) / 2
    assert 0.0 <= metrics["token_accuracy"] <= 1.0


def test_make_generate_fn_decodes_generate_output(full_run):
    """Benchmark glue: prompts -> vocabulary ids -> generate -> detokenised strings."""
    import jax

    from codet5p_jax import checkpointing
    from codet5p_jax.decoding import generate as generation
    from codet5p_jax.evaluation.task_eval import make_generate_fn
    from codet5p_jax.models import build_model

    class Chars:
        """Characters <-> ids 5.. (a stand-in seqio vocabulary)."""

        def encode(self, text):
            return [5 + (ord(c) % 100) for c in text]

        def decode(self, ids):
            return "".join(chr(ord("a") + (i % 26)) for i in ids)

    params, cfg, _ = checkpointing.latest_params(full_run)
    model = build_model(cfg)
    params = jax.device_put(params)
    fn = make_generate_fn(model, params, Chars(), max_new_tokens=5, method="greedy")
    out = fn(["abc", "hello"], 1)
    assert len(out) == 2 and all(len(row) == 1 for row in out)
    prompts = np.array([Chars().encode("abc") + [0, 0], Chars().encode("hello")], np.int32)
    ref = generation.generate(model, params, prompts, max_new_tokens=5)
    from codet5p_jax.evaluation.task_eval import _trim

    assert out[0][0] == Chars().decode(_trim(ref.tokens[0, 0], cfg.eos_token_id))
    assert out[1][0] == Chars().decode(_trim(ref.tokens[1, 0], cfg.eos_token_id))


@pytest.mark.parametrize("source", ["run", "hf", "orbax"])
def test_initial_checkpoint_adds_new_heads(full_run, tmp_path, caplog, source):
    """Stage-1 params into a bimodal model: every shared param is the source's, the new heads
    keep their fresh init and are logged; from a run dir, an HF dir and a convert-orbax dir."""
    import logging

    import jax

    from codet5p_jax import partitioning
    from codet5p_jax.config import get_preset
    from codet5p_jax.loading import convert
    from codet5p_jax.models import build_model, init_args
    from codet5p_jax.train import initial_checkpoint

    path = full_run
    if source != "run":
        path = tmp_path / source
        convert(full_run, path, to=source)
    cfg = get_preset("tiny-bimodal", vocab_size=512)
    model = build_model(cfg)
    mesh = partitioning.make_mesh(2, 2, 2)
    fresh, shardings, _ = partitioning.sharded_init(
        lambda r: model.init(r, *init_args(cfg))["params"],
        mesh,
        partitioning.AXIS_RULES["fsdp"],
        jax.random.key(3),
    )
    with caplog.at_level(logging.WARNING):
        merged, added = initial_checkpoint.load_initial_params(path, fresh, shardings, cfg)
    assert added == [
        "embedding_proj/bias",
        "embedding_proj/kernel",
        "itm_head/bias",
        "itm_head/kernel",
    ]
    assert "lacks 4 new params" in caplog.text and "itm_head/kernel" in caplog.text
    assert "Metadata file does not exist" not in caplog.text  # orbax noise on our own layouts
    source_params, _, _ = checkpointing.latest_params(full_run)
    np.testing.assert_array_equal(
        np.asarray(merged["encoder"]["layers_1"]["mlp"]["wo"]["kernel"]),
        source_params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
    )
    np.testing.assert_array_equal(
        np.asarray(merged["token_embedder"]["embedding"]),
        source_params["token_embedder"]["embedding"],
    )
    np.testing.assert_array_equal(
        np.asarray(merged["itm_head"]["kernel"]), np.asarray(fresh["itm_head"]["kernel"])
    )
    assert (
        merged["token_embedder"]["embedding"].sharding == shardings["token_embedder"]["embedding"]
    )


def test_initial_checkpoint_missing_path(tmp_path):
    from codet5p_jax.train import initial_checkpoint

    with pytest.raises(FileNotFoundError, match="does not exist"):
        initial_checkpoint.load_initial_params(tmp_path / "nope", {}, {}, None)


# ---------------------------------------------------------------------------------------------
# What a run says: where it starts from, INFO lines visible, no orbax noise, one tokenizer hint
# ---------------------------------------------------------------------------------------------
def test_second_run_prints_the_resume_line(full_run, toy_gin, tmp_path, capsys):
    model_dir = tmp_path / "again"
    shutil.copytree(full_run, model_dir)
    assert _run(toy_gin, model_dir, "--gin.TRAIN_STEPS=7") == 0
    err = capsys.readouterr().err
    assert f"resuming from step 6 of {model_dir} (checkpoints/6)" in err
    assert "Metadata file does not exist" not in err
    assert "starting from" not in err


def test_cli_info_lines_survive_early_imports():
    """Importing orbax logs through absl, which attaches a WARNING-level root handler before
    the command sets up logging; the command's INFO lines must still reach stderr."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from codet5p_jax.train import trainer\n"
        "from codet5p_jax.cli import gin_flags\n"
        "gin_flags.setup_logging()\n"
        "trainer.log.info('resuming from step 1')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "INFO codet5p_jax.train.trainer: resuming from step 1" in proc.stderr


def test_default_tokenizer_warning_once_naming_the_setting(monkeypatch, tmp_path, caplog):
    import logging

    from tasks import tokenizer_training, vocabularies

    monkeypatch.delenv(vocabularies.ENV_TOKENIZER_DIR, raising=False)
    monkeypatch.setattr(vocabularies, "_warned_default", [])
    monkeypatch.setattr(tokenizer_training, "default_stdlib_tokenizer_dir", lambda: tmp_path)
    with caplog.at_level(logging.WARNING):
        assert vocabularies.tokenizer_path() == tmp_path
        assert vocabularies.tokenizer_path() == tmp_path
    hints = [r.getMessage() for r in caplog.records if "no tokenizer set" in r.getMessage()]
    assert len(hints) == 1
    assert "CODET5P_TOKENIZER_DIR=DIR" in hints[0] and "tokenizer_path.path" in hints[0]


# ---------------------------------------------------------------------------------------------
# A damaged checkpoint under eval / infer / from_pretrained: the reason, on one line
# ---------------------------------------------------------------------------------------------
def _truncated_copy(full_run, dst):
    shutil.copytree(full_run, dst)
    params = dst / "checkpoints" / "6" / "params"
    biggest = max((p for p in params.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
    return dst


def test_corrupt_checkpoint_under_eval_infer_and_from_pretrained(full_run, tmp_path, capsys):
    from codet5p_jax import from_pretrained
    from codet5p_jax.convert.mapping import ConversionError

    bad = _truncated_copy(full_run, tmp_path / "bad")
    for main_fn, argv, prog in _infer_and_eval(bad, "toy_reverse", tmp_path):
        assert main_fn(argv) == 2
        err = capsys.readouterr().err
        errors = [x for x in err.splitlines() if x.startswith(f"codet5p {prog}: error: ")]
        assert len(errors) == 1, err
        assert f"Could not read {bad}/checkpoints/6/params (truncated or corrupt" in errors[0]
        assert "is not valid for value of size 100" in errors[0]  # TensorStore's root cause
        assert "TensorStore" not in err and "'driver'" not in err and "Traceback" not in err
    with pytest.raises(ConversionError) as info:
        from_pretrained(bad)
    assert "\n" not in str(info.value) and "TensorStore" not in str(info.value)


def test_failed_read_prints_no_event_loop_tracebacks(full_run, tmp_path):
    """A damaged OCDBT manifest fails orbax's read mid-way; TensorStore then completes the other
    pending reads on orbax's closed event loop, which used to print `RuntimeError: Event loop is
    closed` tracebacks (a few to dozens, some at exit)."""
    import subprocess
    import sys

    bad = tmp_path / "bad"
    shutil.copytree(full_run, bad)
    (bad / "checkpoints" / "6" / "params" / "manifest.ocdbt").write_bytes(b"xx")
    code = (
        "import time\n"
        "from codet5p_jax import checkpointing\n"
        "for _ in range(3):\n"
        "    try:\n"
        f"        checkpointing.latest_params({str(bad)!r})\n"
        "    except checkpointing.CheckpointError as e:\n"
        "        print(e)\n"
        "    time.sleep(0.3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Could not read the metadata of") == 3
    assert "Event loop is closed" not in proc.stderr and "Traceback" not in proc.stderr


def test_resume_from_an_earlier_step_keeps_metrics_consistent(full_run, toy_gin, tmp_path):
    """Steps 4-6 were logged, but the run resumes from checkpoint 3 (checkpoint 6 lost, as after
    a SIGKILL between the log and the save): metrics.jsonl holds each step once, as recomputed."""
    model_dir = tmp_path / "earlier"
    shutil.copytree(full_run, model_dir)
    shutil.rmtree(model_dir / "checkpoints" / "6")
    assert _run(toy_gin, model_dir) == 0
    steps = [json.loads(x)["step"] for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert _losses(model_dir) == _losses(full_run)  # exact resume: the same rows again


def test_convert_of_a_run_names_the_exported_step(full_run, tmp_path, capsys):
    from codet5p_jax.cli.convert import main as convert_main

    assert convert_main([str(full_run), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert f"converted run {full_run} at step 6 (checkpoints/6) -> hf" in capsys.readouterr().out
