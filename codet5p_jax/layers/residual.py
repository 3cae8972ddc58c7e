"""Residual wiring of a block: the GPT-J / CodeGen parallel residual.

Legend: B batch, L length, D features.
"""

from collections.abc import Callable


def parallel_residual(x, norm: Callable, *branches: Callable):
    """`x + sum(branch(norm(x)) for branch in branches)`: one shared norm, branches in parallel.

    HF `CodeGenBlock`: `h = ln_1(x); a = attn(h) [+ crossattention(h, enc)]; x = a + mlp(h) + x`.
    The sum runs in that order (`((b0 + b1) + ...) + x`), so float rounding matches HF too.

    Args:
      x: `[B, L, D]` block input.
      norm: The shared pre-norm (e.g. a `norms.LayerNorm` submodule of the calling block).
      *branches: At least one callable `[B, L, D] -> [B, L, D]` applied to `norm(x)`: bound
        submodules or closures over them (self-attention, cross-attention, MLP).

    Returns:
      `[B, L, D]`.
    """
    if not branches:
        raise ValueError("parallel_residual needs at least one branch")
    h = norm(x)
    out = branches[0](h)
    for branch in branches[1:]:
        out = out + branch(h)
    return out + x
