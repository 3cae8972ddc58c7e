"""The compiled decoding loop reads its cache and weights in place.

With keys/values cached as `[B, S, N, H]` and the output projection written as an einsum over
two contracted axes, XLA:CPU re-laid out every layer's encoder keys/values and output kernel on
every generated token (pure transpose / copy fusions inside the `while` body: ~260 MB per token
at codet5p-220m shapes; the step went from 89.0 to 59.9 ms once they were gone,
docs/benchmarks.md). The cache is now stored in the order the per-step products read it
(`layers/attention.py`, "bnhs") and the output projection is one `[N*H, D]` product, so the
loop body holds no such fusion. Checked on the optimised HLO of greedy and beam search in both
families (the previous layout leaves 16 such fusions in each of these four programs).
"""

import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import families
from codet5p_jax.config import get_preset
from codet5p_jax.decoding import generate as generation
from codet5p_jax.models.shallow_deep_config import get_preset as shallow_deep_preset

# The layouts checked are XLA:CPU's; GPU and TPU compilers assign their own.
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU loop layout")

_INSTRUCTION = re.compile(r"(?:ROOT )?%\S+ = (\S+) ([\w-]+)\(")
_MOVES_ONLY = {"parameter", "transpose", "copy", "bitcast"}


def _computations(hlo: str) -> dict[str, list[str]]:
    """Instruction lines of every computation of an HLO module text, by name."""
    comps, name = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) ", line)
        if header and line.rstrip().endswith("{"):
            name, comps[header.group(1)] = header.group(1), []
        elif line.startswith("}"):
            name = None
        elif name:
            comps[name].append(line.strip())
    return comps


def data_movement_in_loop(hlo: str) -> list[str]:
    """Fusions of the decoding `while` body that only transpose or copy an array."""
    comps = _computations(hlo)
    bodies = re.findall(r"while\(.*?body=%([\w.\-]+)", hlo)
    assert bodies, "no while loop in the compiled program"
    moves = []
    for body in bodies:
        for line in comps[body]:
            call = re.search(r" fusion\(.*calls=%([\w.\-]+)", line)
            if not call:
                continue
            ops = {m.group(2) for m in map(_INSTRUCTION.match, comps[call.group(1)]) if m}
            if ops <= _MOVES_ONLY and ops & {"transpose", "copy"}:
                moves.append(line.split(", calls=")[0])
    return moves


def compiled_generate(monkeypatch, model, params, ids, **kwargs) -> str:
    """Optimised HLO text of the program `generate` runs for these arguments."""
    captured = []
    jitted = generation._generate_jit

    def spy(*args, **kw):
        captured.append(jitted.lower(*args, **kw).compile().as_text())
        return jitted(*args, **kw)

    monkeypatch.setattr(generation, "_generate_jit", spy)
    generation.generate(model, params, ids, buckets=None, **kwargs)
    (hlo,) = captured
    return hlo


def _t5():
    return get_preset(
        "codet5p-220m", emb_dim=256, num_heads=4, head_dim=64, mlp_dim=512, vocab_size=512,
        num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
    )  # fmt: skip


def _shallow_deep():
    return shallow_deep_preset(
        "tiny-shallow-deep", vocab_size=512, pad_token_id=511, eos_token_id=511,
        decoder_start_token_id=511,
    )  # fmt: skip


@pytest.mark.parametrize("make_cfg", [_t5, _shallow_deep], ids=["t5", "shallow_deep"])
@pytest.mark.parametrize(
    "options", [dict(method="greedy"), dict(method="beam", num_beams=2)], ids=["greedy", "beam"]
)
def test_decoding_loop_moves_no_cache_or_kernel(monkeypatch, make_cfg, options):
    cfg = make_cfg()
    model = families.build_model(cfg)
    params = nn.unbox(model.init(jax.random.key(0), *families.init_args(cfg))["params"])
    ids = np.random.default_rng(0).integers(5, 500, (2, 16)).astype(np.int32)
    hlo = compiled_generate(monkeypatch, model, params, ids, max_new_tokens=4, **options)
    assert data_movement_in_loop(hlo) == []
