"""T5 v1.0 feed-forward block: `wo(dropout(relu(wi(x))))`, no biases."""

import flax.linen as nn

from codet5p_jax.config import T5Config


class T5Mlp(nn.Module):
    """[B, L, D] -> [B, L, F] -> [B, L, D] (HF `T5DenseActDense`)."""

    config: T5Config

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.config
        dense = lambda feats, axes, std, name: nn.Dense(  # noqa: E731
            feats,
            use_bias=False,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.params_dtype,
            precision=cfg.matmul_precision,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
            name=name,
        )
        h = dense(cfg.mlp_dim, ("embed", "mlp"), cfg.emb_dim**-0.5, "wi")(x)
        h = nn.relu(h)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return dense(cfg.emb_dim, ("mlp", "embed"), cfg.mlp_dim**-0.5, "wo")(h)
