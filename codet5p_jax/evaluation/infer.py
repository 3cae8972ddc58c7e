"""`codet5p infer`: decode a task's split with a checkpoint and write predictions as JSONL.

    codet5p infer --gin_file=gin/runs/infer.gin --gin.CHECKPOINT_PATH="'/tmp/run'" \
        --gin.MIXTURE_OR_TASK_NAME="'codet5p_summarize_stdlib'" \
        --gin.TASK_FEATURE_LENGTHS="{'inputs': 256, 'targets': 128}" \
        --gin.OUTPUT_FILE="'/tmp/predictions.jsonl'"

Each line: `{"index", "inputs", "targets", "prediction"}` (detokenised with the task's output
feature vocabularies). The file is written to a temporary name and renamed when complete.
"""

import json
import logging

import jax
import numpy as np
from etils import epath

import gin
from codet5p_jax import atomic_files
from codet5p_jax.decoding.buckets import DEFAULT_BUCKETS, Buckets

log = logging.getLogger(__name__)


@gin.configurable
def infer(
    *,
    checkpoint_path: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    task_feature_lengths: dict[str, int] = gin.REQUIRED,
    output_file: str = gin.REQUIRED,
    split: str = "validation",
    batch_size: int = 8,
    num_examples: int | None = None,
    use_cached_tasks: bool = False,
    task_modules: tuple[str, ...] = ("tasks",),
    max_new_tokens: int = 128,
    decode_method: str = "greedy",
    num_beams: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    decode_buckets: Buckets | None = DEFAULT_BUCKETS,
) -> int:
    """Writes predictions for `split` of a task; returns the number of examples written.

    `decode_buckets` are `generate`'s shape buckets (gin: `@codet5p_jax.decoding.Buckets()`);
    None compiles for each exact batch and length.
    """
    from codet5p_jax import families, loading
    from codet5p_jax.decoding import generate as generation
    from codet5p_jax.evaluation.task_eval import _trim
    from codet5p_jax.train import data
    from codet5p_jax.train.run_checks import check_required

    check_required(
        CHECKPOINT_PATH=checkpoint_path,
        MIXTURE_OR_TASK_NAME=mixture_or_task_name,
        TASK_FEATURE_LENGTHS=task_feature_lengths,
        OUTPUT_FILE=output_file,
    )
    data.import_task_modules(task_modules)
    task = data.get_task(mixture_or_task_name)
    if use_cached_tasks:
        data.check_cached(mixture_or_task_name)
    ckpt = loading.load(checkpoint_path)
    cfg, params, source = ckpt.config, ckpt.params, ckpt.describe()
    log.info("Predicting with %s", source)
    model = families.build_model(cfg)
    params = jax.device_put(params)
    vocab_in = task.output_features["inputs"].vocabulary
    vocab_out = task.output_features["targets"].vocabulary
    batches = data.host_batches(
        mixture_or_task_name,
        task_feature_lengths,
        batch_size=batch_size,
        split=split,
        shuffle=False,
        repeat=False,
        use_cached=use_cached_tasks,
    )
    out = epath.Path(output_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with atomic_files.atomic_file(out) as f:
        for batch in batches:
            result = generation.generate(
                model,
                params,
                batch["encoder_input_tokens"],
                max_new_tokens=max_new_tokens,
                method=decode_method,
                num_beams=num_beams,
                temperature=temperature,
                seed=seed + count,
                buckets=decode_buckets,
            )
            seqs = np.asarray(result.tokens)[:, 0]  # [B, T]: the best beam / only sample
            for enc, tgt, pred in zip(
                batch["encoder_input_tokens"], batch["decoder_target_tokens"], seqs, strict=True
            ):
                row = {
                    "index": count,
                    "inputs": vocab_in.decode(_trim(enc, cfg.eos_token_id)),
                    "targets": vocab_out.decode(_trim(tgt, cfg.eos_token_id)),
                    "prediction": vocab_out.decode(_trim(pred, cfg.eos_token_id)),
                }
                f.write(json.dumps(row) + "\n")
                count += 1
                if num_examples is not None and count >= num_examples:
                    break
            if num_examples is not None and count >= num_examples:
                break
    return count
