"""Sequence-classification objective: defect detection and clone-pair detection fine-tuning.

Cross-entropy of a classifier's logits (`models/classifier.py`) against the batch `labels`,
averaged over the batch, as CodeT5's `DefectModel` / `CloneModel` train (`nn.CrossEntropyLoss`).
Batches come from `tasks.ClassificationFeatureConverter` / `tasks.PairFeatureConverter`:
`encoder_input_tokens [B, S]` (or `[B, 2, S]` for pairs) and `labels [B]`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

import gin


@gin.configurable
class ClassificationObjective:
    """Mean softmax cross-entropy over the batch; reports loss, accuracy and the example count.

    Args:
      model: A "classifier" network (`build_model(cfg)` with `cfg.kind == "classifier"`).
      label_smoothing: Mass spread uniformly over the classes (0 = the released recipe).
    """

    def __init__(self, model, *, label_smoothing: float = 0.0):
        cfg = model.config
        if getattr(cfg, "kind", None) != "classifier":
            raise ValueError(
                f"ClassificationObjective needs a classifier model (kind 'classifier'), got "
                f"{getattr(cfg, 'kind', type(cfg).__name__)!r}: include a classifier model gin."
            )
        self.model = model
        self.label_smoothing = label_smoothing

    def init_extra_state(self, params, rng) -> dict[str, Any]:
        """No state beside the params."""
        del params, rng
        return {}

    def logits(self, params, batch, rng=None, *, enable_dropout: bool = False) -> jax.Array:
        """`[B, C]` float32 logits of the batch."""
        rngs = {"dropout": rng} if enable_dropout and rng is not None else {}
        return self.model.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            enable_dropout=enable_dropout,
            rngs=rngs,
        )

    def loss_fn(self, params, extra_state, batch, rng, *, enable_dropout: bool = True):
        """Returns `(loss, (metrics, extra_state))` for one batch (docs/DESIGN.md)."""
        logits = self.logits(params, batch, rng, enable_dropout=enable_dropout)
        labels = batch["labels"].reshape(-1)
        num_classes = logits.shape[-1]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), self.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        accuracy = (jnp.argmax(logits, -1) == labels).astype(jnp.float32).mean()
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "examples": jnp.asarray(labels.shape[0], jnp.float32),
        }
        return loss, (metrics, extra_state)
