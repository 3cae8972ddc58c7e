"""The training state: one pytree the step function maps to the next one."""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training and is checkpointed (besides the data position).

    Attributes:
      step: Number of optimizer updates applied so far (int32 scalar).
      params: Trainable parameters (plain arrays; logical names live in the trainer).
      opt_state: Optax state of `tx`.
      extra: The objective's non-trainable state (`Objective.init_extra_state`): `{}` for
        seq2seq, momentum params and queues for stage 2.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    extra: Any
