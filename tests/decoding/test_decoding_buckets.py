"""Shape buckets of `generate` (`decoding/buckets.py`): padded batches and lengths give the
outputs of the exact shapes (the same tokens and lengths; beam scores within the whole-model
float32 tolerance, 1e-4: XLA sums a longer padded axis in another order) for greedy, sampling,
beam search and ragged decoder prefixes in both families, and a sweep of ragged shapes compiles
once per bucket, not once per shape."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from testlib import make_pair, padded_prompts

import gin
from codet5p_jax import families
from codet5p_jax.decoding import generate as generation
from codet5p_jax.decoding.buckets import Buckets
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models.shallow_deep_config import get_preset as shallow_deep_preset

# Pads every call a lot: 8 rows, lengths to powers of two up to 16, then multiples of 16.
WIDE = Buckets(batch_sizes=(8,), length_multiple=16)


def assert_same_outputs(exact, bucketed):
    np.testing.assert_array_equal(bucketed.tokens, exact.tokens)
    np.testing.assert_array_equal(bucketed.lengths, exact.lengths)
    assert (bucketed.scores is None) == (exact.scores is None)
    if exact.scores is not None:
        np.testing.assert_allclose(bucketed.scores, exact.scores, rtol=0, atol=1e-4)


# --- the bucket rules -------------------------------------------------------------------------


def test_length_buckets_are_powers_of_two_then_multiples():
    buckets = Buckets()
    # The documented set, written out: 1, 2, 4, ..., 64, then 128, 192, ..., 1024.
    allowed = [1, 2, 4, 8, 16, 32, 64, *range(128, 1025, 64)]
    for n in range(1, 1025):
        assert buckets.length(n) == min(a for a in allowed if a >= n), n
    assert buckets.length(0) == 0
    assert WIDE.length(17) == 32 and WIDE.length(33) == 48 and WIDE.length(9) == 16


def test_batch_buckets_then_multiples_of_the_largest():
    buckets = Buckets(batch_sizes=(1, 2, 4, 8))
    want = {1: 1, 2: 2, 3: 4, 5: 8, 8: 8, 9: 16, 16: 16, 17: 24}
    assert {n: buckets.batch(n) for n in want} == want
    assert Buckets().batch(200) == 256 and Buckets().batch(257) == 512


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_sizes=()), r"batch_sizes must be increasing positive ints; got \(\)"),
        (dict(batch_sizes=(4, 2)), r"batch_sizes .* got \(4, 2\)"),
        (dict(batch_sizes=(0, 2)), r"batch_sizes .* got \(0, 2\)"),
        (dict(length_multiple=48), r"length_multiple must be a power of two >= 1; got 48"),
        (dict(length_multiple=0), r"length_multiple .* got 0"),
    ],
)
def test_bad_buckets(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Buckets(**kwargs)


def test_gin_binds_buckets():
    @gin.configurable("bucket_probe")
    def probe(decode_buckets=None):
        return decode_buckets

    with gin.unlock_config():
        gin.parse_config(
            "bucket_probe.decode_buckets = @codet5p_jax.decoding.Buckets()\n"
            "codet5p_jax.decoding.Buckets.batch_sizes = [4, 16]\n"
            "codet5p_jax.decoding.Buckets.length_multiple = 32\n"
        )
    try:
        got = probe()
    finally:
        gin.clear_config()
    assert isinstance(got, Buckets)
    assert (got.batch_sizes, got.length_multiple) == ((4, 16), 32)
    assert Buckets().length_multiple == 64  # plain Python construction reads no gin binding


# --- T5 family: same outputs with and without buckets ----------------------------------------


@pytest.fixture(scope="module")
def t5():
    _, model, params, cfg = make_pair("codet5p-220m", 64)
    return model, params, cfg


@pytest.mark.parametrize(
    "batch, length, options",
    [
        (5, 21, dict(method="greedy")),
        (3, 9, dict(method="sample", num_samples=2, top_k=8, temperature=0.9, seed=5)),
        (3, 9, dict(method="beam", num_beams=2, early_stopping="never", length_penalty=0.7)),
    ],
    ids=["greedy", "sample", "beam"],
)
def test_t5_bucketed_equals_exact(t5, batch, length, options):
    model, params, cfg = t5
    ids, mask = padded_prompts(cfg.vocab_size, batch=batch, length=length, seed=batch)
    kw = dict(max_new_tokens=6, **options)
    exact = generate(model, params, ids, mask, buckets=None, **kw)
    assert exact.tokens.shape[0] == batch and exact.tokens.shape[-1] == 6
    assert_same_outputs(exact, generate(model, params, ids, mask, buckets=WIDE, **kw))


@pytest.mark.parametrize("method, extra", [("greedy", {}), ("beam", {"num_beams": 2})])
def test_t5_ragged_prefix_and_stops_bucketed_equals_exact(t5, method, extra):
    model, params, cfg = t5
    ids, mask = padded_prompts(cfg.vocab_size, batch=3, length=11, seed=7)
    # Common part 2 (prefill 1 + 2 = 3 tokens, bucketed to 4: one padded prefill position that
    # the cache rewind must drop) and a ragged remainder of up to 3 forced tokens.
    prefix = np.array([[9, 10, 11, 12, 13], [21, 22, 0, 0, 0], [31, 32, 33, 0, 0]], np.int32)
    kw = dict(
        method=method,
        max_new_tokens=5,
        decoder_prefix_ids=prefix,
        stop_token_ids=[[17, 18], 19],
        **extra,
    )
    exact = generate(model, params, ids, mask, buckets=None, **kw)
    assert_same_outputs(exact, generate(model, params, ids, mask, buckets=WIDE, **kw))


def test_streaming_hook_sees_only_real_rows(t5):
    model, params, cfg = t5
    ids, mask = padded_prompts(cfg.vocab_size, batch=3, length=5)
    seen = []
    out = generate(
        model, params, ids, mask, max_new_tokens=3, buckets=WIDE,
        on_token=lambda tokens, written: seen.append(np.asarray(tokens).shape),
    )  # fmt: skip
    jax.effects_barrier()
    assert seen and set(seen) == {(3,)}
    assert out.tokens.shape == (3, 1, 3)


def test_buckets_argument_must_be_buckets(t5):
    model, params, cfg = t5
    ids, mask = padded_prompts(cfg.vocab_size)
    with pytest.raises(ValueError, match=r"buckets must be a decoding.Buckets or None; got 64"):
        generate(model, params, ids, mask, max_new_tokens=2, buckets=64)


# --- compilations: one per bucket -----------------------------------------------------------


def _next_allowed(n: int) -> int:
    """The default length bucket of `n`, from the documented set written out."""
    allowed = [0, 1, 2, 4, 8, 16, 32, 64, *range(128, 1025, 64)]
    return min(a for a in allowed if a >= n)


def test_sweep_shapes_hit_one_program_per_bucket(t5, monkeypatch):
    """What `generate` hands its jitted function, recorded without compiling: each distinct
    (options, argument shapes and dtypes) is one compilation of `jax.jit`. Batch sizes 1..5 x
    prompt lengths 3..40 (190 shapes) give 4 batch buckets (1, 2, 4, 8) x 5 length buckets
    (4, 8, 16, 32, 64); ragged decoder prefixes give one program per (prefill, forced width)
    bucket pair."""
    model, params, cfg = t5
    programs = set()

    def fake_jit(model, opts, params, *arrays):
        programs.add((opts, tuple((np.shape(a), np.asarray(a).dtype) for a in arrays)))
        rows, n = np.shape(arrays[0])[0], opts.num_return
        tokens = np.zeros((rows, n, opts.max_new_tokens), np.int32)
        return tokens, np.zeros((rows, n), np.int32), None

    monkeypatch.setattr(generation, "_generate_jit", fake_jit)
    ids = np.random.default_rng(0).integers(5, cfg.vocab_size, (5, 40)).astype(np.int32)
    shapes = [(b, n) for b in range(1, 6) for n in range(3, 41)]
    for buckets, want in [(None, len(shapes)), (Buckets(), 4 * 5)]:
        programs.clear()
        for batch, length in shapes:
            out = generate(model, params, ids[:batch, :length], max_new_tokens=3, buckets=buckets)
            assert out.tokens.shape == (batch, 1, 3)
        assert len(programs) == want

    programs.clear()
    pairs = set()
    for common in range(1, 13):
        for extra in range(6):
            prefix = np.full((2, common + extra), 7, np.int32)
            mask = np.arange(common + extra) < np.array([common + extra, common])[:, None]
            generate(
                model, params, ids[:2, :9], max_new_tokens=3, decoder_prefix_ids=prefix,
                decoder_prefix_mask=mask,
            )  # fmt: skip
            pairs.add((_next_allowed(1 + common), _next_allowed(extra)))
    assert len(programs) == len(pairs) == 4 * 5  # prefill {2, 4, 8, 16} x forced {0, 1, 2, 4, 8}


@pytest.mark.slow
def test_sweep_compiles_once_per_bucket(t5):
    """The same sweep, compiled for real (~20 XLA compilations: slow tier): 20 traces of the
    jitted function instead of 190; with exact shapes, one per shape. A stop sequence unique to
    this test keeps other tests' compilations out of the count."""
    model, params, cfg = t5
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cfg.vocab_size, (5, 40)).astype(np.int32)
    kw = dict(max_new_tokens=3, stop_token_ids=[[61, 62, 63, 61]])
    before = generation.trace_count()
    outputs = {}
    for batch in range(1, 6):
        for length in range(3, 41):
            out = generate(model, params, ids[:batch, :length], **kw)
            outputs[batch, length] = out.tokens
    assert generation.trace_count() - before == 4 * 5
    assert {o.shape for o in outputs.values()} == {(b, 1, 3) for b in range(1, 6)}
    before = generation.trace_count()
    for batch, length in [(1, 3), (1, 4), (2, 3), (2, 4)]:
        exact = generate(model, params, ids[:batch, :length], buckets=None, **kw)
        np.testing.assert_array_equal(exact.tokens, outputs[batch, length])
    assert generation.trace_count() - before == 4


# --- shallow_deep family (CodeT5+ >= 2B): decoder prompts --------------------------------------


@pytest.fixture(scope="module")
def shallow_deep():
    # A 512-token vocabulary (end-of-text 511 as pad / start / EOS) keeps the compiles short.
    cfg = shallow_deep_preset(
        "tiny-shallow-deep", vocab_size=512, pad_token_id=511, eos_token_id=511,
        decoder_start_token_id=511,
    )  # fmt: skip
    model = families.build_model(cfg)
    params = model.init(jax.random.key(3), *families.init_args(cfg))["params"]
    params = nn.unbox(params)
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 500, size=(3, 13)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    mask[1, 9:] = False  # padding is id 0, a real token of this vocabulary: the mask matters
    mask[2, :3] = False
    start = cfg.decoder_start_token_id
    # Decoder prompts of 5, 2 and 3 tokens: prefill 1 + 2 (bucketed to 4), forced remainder 3.
    prefix = np.full((3, 5), start, np.int32)
    prefix[0] = [11, 12, 13, 14, 15]
    prefix[1, :2] = [21, 22]
    prefix[2, :3] = [31, 32, 33]
    prefix_mask = np.arange(5) < np.array([5, 2, 3])[:, None]
    return model, params, ids, mask, prefix, prefix_mask


@pytest.mark.parametrize(
    "options",
    [
        dict(method="greedy"),
        dict(method="sample", num_samples=2, temperature=0.8, top_p=0.95, seed=3),
        dict(method="beam", num_beams=3, length_penalty=0.0),
    ],
    ids=["greedy", "sample", "beam"],
)
def test_shallow_deep_decoder_prompts_bucketed_equals_exact(shallow_deep, options):
    model, params, ids, mask, prefix, prefix_mask = shallow_deep
    kw = dict(
        max_new_tokens=5, decoder_prefix_ids=prefix, decoder_prefix_mask=prefix_mask, **options
    )
    exact = generate(model, params, ids, mask, buckets=None, **kw)
    assert_same_outputs(exact, generate(model, params, ids, mask, buckets=WIDE, **kw))


def test_generate_command_exact_shapes_flag():
    from codet5p_jax.cli.generate import build_parser, decoding_options

    parse = build_parser().parse_args
    assert decoding_options(parse(["--model", "m", "p", "--exact-shapes"]))["buckets"] is None
    assert "buckets" not in decoding_options(parse(["--model", "m", "p"]))  # generate's default
