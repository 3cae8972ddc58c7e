"""`codet5p eval`: SeqIO task metrics of a checkpoint, or a code benchmark (HumanEval, ...).

    codet5p eval --gin_file=gin/runs/eval.gin --gin.CHECKPOINT_PATH="'/tmp/run'" \
        --gin.MIXTURE_OR_TASK_NAME="'codet5p_summarize_stdlib'" \
        --gin.TASK_FEATURE_LENGTHS="{'inputs': 256, 'targets': 128}"

With a task, every example of its split is decoded (`codet5p_jax.decoding.generate`) and the
task's own seqio metric functions score the detokenised predictions (t5x `eval.py` behaviour);
the teacher-forced loss / token accuracy are reported beside them. With `BENCHMARK` bound,
`codet5p_jax.evaluation.benchmarks.run_benchmark` drives the model through `make_generate_fn`.
Results go to `OUTPUT_DIR/metrics.json` (and TensorBoard events of seqio's logger).
"""

import json
import logging
from typing import Any

import jax
import numpy as np
from etils import epath

import gin
from codet5p_jax import atomic_files
from codet5p_jax.decoding.buckets import DEFAULT_BUCKETS, Buckets

log = logging.getLogger(__name__)
GENERATION_MODES = ("seq2seq", "decoder_only")


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded `[B, max_len]` ids (with `pad_id`) and their `[B, max_len]` mask."""
    width = max(1, max(len(x) for x in rows))
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, x in enumerate(rows):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = True
    return ids, mask


def make_generate_fn(
    model,
    params,
    vocabulary,
    *,
    max_input_length: int = 512,
    prompt_tail: bool = False,
    decoder_only: bool = False,
    **defaults,
):
    """A benchmark `generate_fn(prompts, num_samples, decoder_prompts=None, **gen_kwargs)
    -> list[list[str]]`.

    Prompts are tokenised with `vocabulary` (a seqio vocabulary), decoded with
    `codet5p_jax.decoding.generate` and detokenised. With `prompt_tail`, a prompt keeps its last
    `max_input_length - 1` tokens and ends with `</s>` (as the completion tasks' inputs).
    `decoder_prompts` (CodeT5+ >= 2B, FACTS §1.5) are fed to the decoder after its start token
    (the model's pad id for that family) and are not part of the returned text.

    With `decoder_only` (the paper's decoder-only use, §3.1.2), the encoder input of every row
    is `[CLM]` alone and the prompt's last `max_input_length` tokens (no `</s>`) are the decoder
    prefix, as the decoder-only completion task trains it (`tasks.completion_decoder`).
    """
    from codet5p_jax.decoding import generate as generation
    from codet5p_jax.models import decoder_only_inputs

    pad_id = model.config.pad_token_id

    def encode(prompt: str) -> list[int]:
        ids = list(vocabulary.encode(prompt))
        if decoder_only:
            return ids[max(0, len(ids) - max_input_length) :]
        if prompt_tail:
            return ids[max(0, len(ids) - (max_input_length - 1)) :] + [model.config.eos_token_id]
        return ids[:max_input_length]

    def generate_fn(
        prompts: list[str], num_samples: int = 1, decoder_prompts=None, **gen_kwargs
    ) -> list[list[str]]:
        opts = {**defaults, **gen_kwargs}
        # Explicit masks: a pad id of 0 would be a real token for CodeGen's vocabulary.
        batch, mask = _pad_right([encode(p) for p in prompts], pad_id)
        opts["attention_mask"] = mask
        if decoder_prompts is not None:
            if len(decoder_prompts) != len(prompts):
                raise ValueError(
                    f"{len(decoder_prompts)} decoder prompts for {len(prompts)} prompts"
                )
            prefix, prefix_mask = _pad_right(
                [vocabulary.encode(p)[:max_input_length] for p in decoder_prompts], pad_id
            )
            opts.update(decoder_prefix_ids=prefix, decoder_prefix_mask=prefix_mask)
        if num_samples > 1:
            # Several completions per prompt only differ when sampled; never drop them silently.
            if opts.get("method", "sample") != "sample":
                raise ValueError(
                    f"num_samples={num_samples} needs sampling, but the decode method is "
                    f"{opts['method']!r}: set evaluate.decode_method='sample' (and temperature)."
                )
            opts.update(method="sample", num_samples=num_samples)
        if decoder_only:
            # The prompt moves to the decoder; the encoder reads `[CLM]` alone.
            opts.update(decoder_prefix_ids=batch, decoder_prefix_mask=mask)
            clm, clm_mask = decoder_only_inputs(len(prompts))
            batch, opts["attention_mask"] = np.asarray(clm), np.asarray(clm_mask)
        out = generation.generate(model, params, batch, **opts)
        tokens = np.asarray(out.tokens)  # [B, num_samples, T]
        return [
            [vocabulary.decode(_trim(t, model.config.eos_token_id, pad_id)) for t in row]
            for row in tokens
        ]

    return generate_fn


def _trim(tokens, eos_id: int, pad_id: int = 0) -> list[int]:
    """Token ids up to (excluding) the first EOS or pad."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t in (eos_id, pad_id):
            break
        out.append(t)
    return out


def _predict_fn(model, params, batch_size: int, gen_kwargs: dict):
    """seqio predict_fn: `(index, features)` dataset -> [(index, predicted ids)]."""
    from codet5p_jax.decoding import generate as generation

    def predict(ds):
        results = []
        for indices, feats in ds.batch(batch_size).as_numpy_iterator():
            out = generation.generate(model, params, feats["encoder_input_tokens"], **gen_kwargs)
            best = np.asarray(out.tokens)[:, 0]  # [B, T]: the best beam / only sample
            for i, seq in zip(indices, best, strict=True):
                results.append(
                    (int(i), _trim(seq, model.config.eos_token_id, model.config.pad_token_id))
                )
        return results

    return predict


def _teacher_forced(
    model, params, name, lengths, split, batch_size, num_examples, use_cached
) -> dict:
    """Token-weighted loss and accuracy over the split (Seq2SeqObjective without dropout)."""
    from codet5p_jax.objectives.seq2seq import Seq2SeqObjective
    from codet5p_jax.train import data

    objective = Seq2SeqObjective(model)

    @jax.jit
    def metrics_fn(p, b):
        return objective.loss_fn(p, {}, b, jax.random.key(0), enable_dropout=False)[1][0]

    keys = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
    totals = np.zeros(3)  # loss * tokens, accuracy * tokens, tokens
    seen = 0
    batches = data.host_batches(
        name,
        lengths,
        batch_size=batch_size,
        split=split,
        shuffle=False,
        repeat=False,
        use_cached=use_cached,
    )
    for batch in batches:
        m = jax.device_get(
            metrics_fn(params, {k: batch[k] for k in keys + ("decoder_loss_weights",)})
        )
        n = float(m["tokens"])
        totals += [float(m["loss"]) * n, float(m["accuracy"]) * n, n]
        seen += len(batch["encoder_input_tokens"])
        if num_examples is not None and seen >= num_examples:
            break
    n = max(totals[2], 1.0)
    return {"teacher_forced_loss": totals[0] / n, "token_accuracy": totals[1] / n}


@gin.configurable
def evaluate(
    *,
    checkpoint_path: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    mixture_or_task_name: str | None = None,
    task_feature_lengths: dict[str, int] | None = None,
    split: str = "validation",
    batch_size: int = 8,
    num_examples: int | None = None,
    use_cached_tasks: bool = False,
    task_modules: tuple[str, ...] = ("tasks",),
    max_new_tokens: int = 128,
    decode_method: str = "greedy",
    num_beams: int = 1,
    benchmark: str | None = None,
    benchmark_options: dict[str, Any] | None = None,
    vocabulary: Any = None,
    max_input_length: int = 512,
    generation_mode: str = "seq2seq",
    decode_buckets: Buckets | None = DEFAULT_BUCKETS,
) -> dict[str, Any]:
    """Evaluates a checkpoint; see the module docstring.

    Args:
      checkpoint_path: Training MODEL_DIR (latest step), a step dir, an orbax or an HF dir.
      output_dir: Where metrics.json (and benchmark files) are written.
      mixture_or_task_name: SeqIO task/mixture whose metric functions are computed.
      task_feature_lengths: Its feature lengths.
      split: The split to evaluate.
      batch_size: Examples per decoding batch.
      num_examples: Evaluate only the first N examples (None = all).
      use_cached_tasks: Read the tasks' seqio offline caches (USE_CACHED_TASKS).
      task_modules: Modules that register the tasks.
      max_new_tokens / decode_method / num_beams: Decoding settings.
      benchmark: A `codet5p_jax.evaluation.benchmarks` name (e.g. "humaneval") instead of a task.
      benchmark_options: Options of `run_benchmark` (path, num_samples, ks, limit, ...).
      vocabulary: seqio vocabulary for benchmark prompts (default: the checkpoint's tokenizer
        files, else `tasks.CodeT5Vocabulary()`, the project's default rule).
      max_input_length: Tokens of a benchmark input kept (classification / embedding
        benchmarks, and the decoder prefix in "decoder_only" mode; seq2seq generation prompts
        use `make_generate_fn`'s default).
      generation_mode: "seq2seq" (the prompt is the encoder input) or "decoder_only" (`[CLM]`
        to the encoder, the prompt as decoder prefix: the line-completion benchmarks of a
        decoder-only fine-tuned model, docs/understanding.md). Benchmarks only.
      decode_buckets: `generate`'s shape buckets (gin: `@codet5p_jax.decoding.Buckets()`);
        None compiles for each exact batch and length.

    Returns:
      The metrics dict (also written to `output_dir/metrics.json`).
    """
    from codet5p_jax import families, loading
    from codet5p_jax.train import data
    from codet5p_jax.train.run_checks import check_required

    check_required(CHECKPOINT_PATH=checkpoint_path, OUTPUT_DIR=output_dir)
    if generation_mode not in GENERATION_MODES:
        raise ValueError(
            f"evaluate.generation_mode must be one of {GENERATION_MODES}, got {generation_mode!r}"
        )
    if generation_mode == "decoder_only" and mixture_or_task_name:
        raise ValueError(
            "evaluate.generation_mode='decoder_only' applies to BENCHMARK runs only, not to "
            "MIXTURE_OR_TASK_NAME task metrics."
        )
    if not mixture_or_task_name and not benchmark:
        raise ValueError("Set MIXTURE_OR_TASK_NAME (task metrics) or BENCHMARK (e.g. humaneval).")
    ckpt = loading.load(checkpoint_path)
    cfg, params, source = ckpt.config, ckpt.params, ckpt.describe()
    log.info("Evaluating %s", source)
    model = families.build_model(cfg)
    params = jax.device_put(params)
    if benchmark:  # checked before OUTPUT_DIR is made: a refused run leaves nothing behind
        if vocabulary is None:
            vocabulary = _checkpoint_vocabulary(ckpt)
        check_vocabulary(vocabulary, cfg, source)
    out_dir = epath.Path(output_dir)  # gs:// too: seqio's TensorBoard logger uses tf.io.gfile
    out_dir.mkdir(parents=True, exist_ok=True)
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        method=decode_method,
        num_beams=num_beams,
        buckets=decode_buckets,
    )
    metrics: dict[str, Any] = {"checkpoint": source}
    if benchmark:
        from codet5p_jax.evaluation import benchmarks, rag_benchmark, retrieval_benchmarks

        options = benchmark_defaults(cfg, benchmark, benchmark_options)
        if rag_benchmark.is_rag_benchmark(benchmark):
            from codet5p_jax.pretrained import Pretrained

            generator = Pretrained(cfg, params, ckpt.tokenizer_dir, source=str(checkpoint_path))
            metrics[benchmark] = benchmarks.run_benchmark(
                benchmark, None, out_dir, generator=generator, **options
            )
        elif retrieval_benchmarks.is_retrieval_benchmark(benchmark):
            retriever = retrieval_benchmarks.Retriever(model, params, vocabulary.encode)
            metrics[benchmark] = benchmarks.run_benchmark(
                benchmark, None, out_dir, retriever=retriever, **options
            )
        else:
            spec = benchmarks.get_benchmark(benchmark)
            if spec.predictor == "generate":
                if generation_mode == "decoder_only":
                    model_fn = make_generate_fn(
                        model, params, vocabulary, max_input_length=max_input_length,
                        decoder_only=True, **gen_kwargs,
                    )  # fmt: skip
                else:
                    model_fn = make_generate_fn(
                        model, params, vocabulary, prompt_tail=spec.prompt_tail, **gen_kwargs
                    )
            else:
                from codet5p_jax.evaluation import understanding

                make = {
                    "classify": understanding.make_classify_fn,
                    "embed": understanding.make_embed_fn,
                }
                model_fn = make[spec.predictor](
                    model, params, vocabulary, max_input_length=max_input_length
                )
            metrics[benchmark] = benchmarks.run_benchmark(benchmark, model_fn, out_dir, **options)
    if mixture_or_task_name:
        import seqio

        data.import_task_modules(task_modules)
        data.get_task(mixture_or_task_name)
        if use_cached_tasks:
            data.check_cached(mixture_or_task_name)
        evaluator = seqio.Evaluator(
            mixture_or_task_name,
            feature_converter=seqio.EncDecFeatureConverter(pack=False),
            eval_split=split,
            sequence_length=task_feature_lengths,
            num_examples=num_examples,
            use_cached=use_cached_tasks,
            log_dir=str(out_dir),
            logger_cls=(seqio.TensorBoardLogger,),
        )
        if evaluator.eval_tasks:
            future, _ = evaluator.evaluate(
                compute_metrics=True, predict_fn=_predict_fn(model, params, batch_size, gen_kwargs)
            )
            task_metrics = future.result() if hasattr(future, "result") else future
            metrics["tasks"] = {
                t: {k: _to_float(v) for k, v in m.items()} for t, m in (task_metrics or {}).items()
            }
        else:
            log.warning(
                "%s has no seqio metric_fns: teacher-forced metrics only.", mixture_or_task_name
            )
        metrics.update(
            _teacher_forced(
                model,
                params,
                mixture_or_task_name,
                task_feature_lengths,
                split,
                batch_size,
                num_examples,
                use_cached_tasks,
            )
        )
    atomic_files.write_text(
        out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    )
    return metrics


def _checkpoint_vocabulary(ckpt):
    """The checkpoint's own tokenizer files when it has them, else the project's default."""
    import tasks
    from codet5p_jax.pretrained import has_tokenizer_files

    own = ckpt.tokenizer_dir if has_tokenizer_files(ckpt.tokenizer_dir) else None
    return tasks.vocabulary_for_dir(own)


def check_vocabulary(vocabulary, cfg, source: str) -> None:
    """Raises ValueError when `vocabulary` cannot be the model's (a CodeT5 tokenizer given to a
    CodeGen-vocabulary model or the reverse): their EOS ids differ. (Sizes are not compared: a
    CodeT5 vocabulary counts stage-2 tokens that plain text never produces.)"""
    if vocabulary.eos_id != cfg.eos_token_id:
        raise ValueError(
            f"vocabulary {vocabulary!r} (EOS id {vocabulary.eos_id}) does not fit {source} "
            f"(EOS id {cfg.eos_token_id}): set evaluate.vocabulary to the checkpoint's tokenizer"
        )


def benchmark_defaults(cfg, benchmark: str, options: dict | None) -> dict:
    """The released generation recipe of `cfg`'s model, under the user's explicit options.

    HumanEval (FACTS §1.5): families that read their prompt in the decoder too (CodeT5+ >= 2B)
    get `prompt_to_decoder` and the tab-indented CodeT5+ prompts; a checkpoint named like
    InstructCodeT5+ (`instruct` in its name, the released script's own test) gets the
    instruction prompts.
    """
    from codet5p_jax import families

    options = dict(options or {})
    if benchmark == "humaneval" and families.family_of(cfg).decoder_prompt:
        options.setdefault("prompt_to_decoder", True)
        options.setdefault("codet5p_prompts", True)
        options.setdefault("instruct_prompts", "instruct" in str(getattr(cfg, "name", "")))
    return options


def _to_float(v):
    """seqio metric values may be clu/numpy scalars or `seqio.metrics.Scalar`."""
    value = getattr(v, "value", v)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
