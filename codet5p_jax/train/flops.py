"""Matmul FLOPs of a traced computation, counted on its jaxpr (no compile, no arrays).

XLA's `cost_analysis()` counts the body of a `while` loop once, so a scanned layer stack (and a
microbatch loop) is undercounted by its trip count. Counting `dot_general`s on the jaxpr instead
multiplies every `scan` body by its length, takes the larger branch of a `cond`, and sees what
autodiff actually kept: with a frozen decoder the backward pass below the deepest trainable
parameter is absent from the jaxpr, so it is absent from the count.

The count is "model FLOPs" in the usual sense (2 per multiply-add of every matrix product,
attention scores included, elementwise work excluded), plus any rematerialised forward pass.
"""

import math

import jax
from jax.extend import core


def dot_general_flops(lhs_shape, rhs_shape, dimension_numbers) -> int:
    """2 x (product of all lhs dims) x (product of the rhs dims that are neither contracted
    nor batch), i.e. 2 per multiply-add."""
    (_, rhs_contract), (_, rhs_batch) = dimension_numbers
    rhs_free = [d for i, d in enumerate(rhs_shape) if i not in rhs_contract and i not in rhs_batch]
    return 2 * math.prod(lhs_shape) * math.prod(rhs_free)


def _sub_jaxprs(value):
    if isinstance(value, core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, core.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr) -> tuple[int, int]:
    """`(flops, while_loops)` of a (closed) jaxpr; `while_loops` counts loops whose bodies were
    counted once (trip count unknown)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total, loops = 0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
            total += dot_general_flops(lhs, rhs, eqn.params["dimension_numbers"])
            continue
        if name == "cond":
            counts = [jaxpr_flops(b) for b in eqn.params["branches"]]
            total += max(c[0] for c in counts)
            loops += max(c[1] for c in counts)
            continue
        times = eqn.params.get("length", 1) if name == "scan" else 1
        if name == "while":
            loops += 1
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                flops, inner = jaxpr_flops(sub)
                total += times * flops
                loops += inner
    return total, loops


def count_flops(fn, *args, **kwargs) -> tuple[int, int]:
    """`(flops, while_loops)` of `fn(*args, **kwargs)`; args may be `ShapeDtypeStruct`s."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))
