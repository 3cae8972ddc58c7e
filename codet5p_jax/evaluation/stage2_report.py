"""Held-out retrieval before and after a stage-2 run, with the BM25 baseline on the same pairs.

    codet5p stage2-report --stage1 /tmp/tiny_stage1 \
        --stage2 /tmp/tiny_stage2 [--data stdlib:validation] [--out report.json]

"Before" is exactly the model a stage-2 run starts from: the stage-1 params with freshly
initialised stage-2 heads (projection, matching head), seeded as the trainer seeds them
(`train.seed`, first of three splits). "After" is the stage-2 run's latest checkpoint. Both are
scored text->code by cosine similarity of first-token embeddings (text 64 / code 360 tokens,
the CodeT5+ retrieval scripts' settings); MRR and R@k are ×100.
"""

import flax.linen as nn
import jax

from codet5p_jax import families, loading
from codet5p_jax.evaluation import retrieval


def before_stage2_params(stage1_dir, stage2_cfg, seed: int = 0):
    """Stage-1 params plus the stage-2 heads as the trainer initialises them for `seed`."""
    model = families.build_model(stage2_cfg)
    init_rng = jax.random.split(jax.random.key(seed), 3)[0]
    fresh = nn.unbox(model.init(init_rng, *families.init_args(stage2_cfg))["params"])
    stage1 = loading.load(stage1_dir).params
    unknown = set(stage1) - set(fresh)
    if unknown:
        raise ValueError(f"{stage1_dir} has params the stage-2 model lacks: {sorted(unknown)}")
    return model, {**fresh, **stage1}


def report(stage1_dir, stage2_dir, data: str = "stdlib:validation", encode=None, seed: int = 0):
    """`{"before", "after", "bm25", "num_pairs", "random_mrr"}` retrieval metrics."""
    model, params_after, _ = retrieval.load_model(stage2_dir)
    _, before = before_stage2_params(stage1_dir, model.config, seed)
    pairs = retrieval.load_eval_pairs(data)
    if encode is None:
        from tasks.vocabularies import CodeT5Vocabulary

        encode = CodeT5Vocabulary().encode
    ks = tuple(k for k in retrieval.DEFAULT_KS if k <= len(pairs))
    kw = dict(ks=ks, batch_size=64)
    out = {
        "before": retrieval.evaluate_pairs(model, before, pairs, encode, **kw)["contrastive"],
        "after": retrieval.evaluate_pairs(model, params_after, pairs, encode, **kw)["contrastive"],
    }
    out["bm25"] = retrieval.retrieval_metrics(
        retrieval.bm25_scores([p.text for p in pairs], [p.code for p in pairs]), ks=ks
    )
    out["num_pairs"] = len(pairs)
    out["random_mrr"] = retrieval.random_baseline_mrr(len(pairs))
    return out
