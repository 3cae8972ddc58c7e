"""`generate()` for the encoder-decoder networks: validation, cache set-up and one jitted loop.

The model glue around the pure loops of `sampling.py` / `beam.py`:

1. encode the prompts once; create the decoder cache with one `decode=True` call on a
   `[B, max_len]` dummy (this also projects the encoder keys/values once);
2. prefill `[decoder_start] + the common part of the decoder prefixes` in one multi-token call;
3. repeat every cache row `N` times (beams or samples) and run the loop.

All of it is a single `jax.jit` per (model, options, shapes). Decoder prefixes (the prompt fed to
the decoder as well, as CodeT5+ 2B+ do) may differ in length per row: the shortest common part
is prefilled and the remainder forced token by token. Outputs exclude the start token and the
prefix.

Shapes are bucketed (`buckets.py`): the batch, the prompt, the prefill, the forced width and the
token budget are padded up so that varied inputs reuse a few compiled programs; the real prefill
length and budget enter as traced scalars, and the padded rows and columns are cut from the
outputs. `buckets=None` compiles for the exact shapes.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from codet5p_jax import families
from codet5p_jax.decoding.beam import beam_search
from codet5p_jax.decoding.buckets import DEFAULT_BUCKETS, Buckets
from codet5p_jax.decoding.sampling import stop_sequence_table, temperature_sample
from codet5p_jax.families import CacheSpec

METHODS = ("greedy", "beam", "sample")
_traces = 0  # times `_generate_jit` was traced (= compiled) in this process


def trace_count() -> int:
    """How many programs `generate` has traced (compiled) so far in this process."""
    return _traces


class GenerateOutput(NamedTuple):
    """Result of `generate`.

    Attributes:
      tokens: `[B, N, T]` int32 new tokens (N = num_beams, num_samples or 1), pad-filled after
        the stopping token; beams are sorted best first.
      lengths: `[B, N]` int32 generated tokens per sequence, the stopping token included.
      scores: `[B, N]` float32 beam scores (`sum_logprobs / length**length_penalty`, as HF
        `sequences_scores`); None for greedy and sampling.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class _Options:
    method: str
    num_return: int
    max_new_tokens: int  # width of the token arrays (the bucketed budget); the budget is traced
    length_penalty: float
    early_stopping: bool | str
    temperature: float
    top_k: int
    top_p: float
    eos_id: int | None
    pad_id: int
    stop_table: tuple | None  # hashable copy of the [S, W] table
    cache: CacheSpec  # the model family's: which cache leaves are per row / per beam
    on_token: object = None  # streaming callback of greedy / sampling (hashable: a function)


def repeat_cache(cache, n: int, spec: CacheSpec):
    """Repeats every per-row cache leaf `n` times along the batch axis (row-major).

    `spec` (the model family's) names the leaves that belong to the stack, not to a row (write
    position, key positions); every other leaf has the batch at axis 0, scanned layouts too.
    """
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x if spec.is_shared(p) or x.ndim == 0 else jnp.repeat(x, n, axis=0), cache
    )


def gather_beams(cache, rows, spec: CacheSpec):
    """Reorders the per-beam cache rows by `rows [B*K]` (beam search reordering).

    Beams only ever move within their own prompt, whose `K` rows of encoder keys/values are
    identical copies, so the entries `spec` calls beam-invariant (cross-attention) are left in
    place rather than copied.
    """

    def gather(path, x):
        if spec.is_shared(path) or spec.is_beam_invariant(path) or x.ndim == 0:
            return x
        return jnp.take(x, rows, axis=0)

    return jax.tree_util.tree_map_with_path(gather, cache)


def rewind_cache(cache, position, spec: CacheSpec):
    """Sets every write-position leaf of `cache` to `position`.

    A bucketed prefill feeds padding after the real tokens; rewinding the write position makes
    the next step overwrite those cache rows, and until then the causal mask hides them.
    """
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full_like(x, position) if spec.is_write_position(p) else x, cache
    )


@functools.partial(jax.jit, static_argnames=("model", "opts"))
def _generate_jit(
    model,
    opts: _Options,
    params,
    input_ids,
    mask,
    prefill,
    prefill_len,
    forced,
    forced_len,
    budget,
    rng,
):
    global _traces
    _traces += 1  # Python side effect: runs once per trace, never in the compiled program
    batch = input_ids.shape[0]
    n = opts.num_return
    cache_len = prefill.shape[1] + forced.shape[1] + opts.max_new_tokens - 1
    encoded = model.apply({"params": params}, input_ids, mask, method=model.encode)
    dummy = jnp.zeros((batch, cache_len), jnp.int32)
    _, init = model.apply(
        {"params": params},
        encoded,
        mask,
        dummy,
        decode=True,
        mutable=["cache"],
        method=model.decode,
    )

    def call(tokens, cache, row_mask, enc):
        logits, new = model.apply(
            {"params": params, "cache": cache},
            enc,
            row_mask,
            tokens,
            decode=True,
            mutable=["cache"],
            method=model.decode,
        )
        return logits, new["cache"]

    def step(tokens, cache, row_mask, enc):
        logits, cache = call(tokens, cache, row_mask, enc)
        return logits[:, -1], cache

    # The prefill may carry padding after its `prefill_len` real tokens (a bucketed shape): the
    # causal mask keeps them out of the real positions' logits, and the rewind out of the cache.
    logits, cache = call(prefill, init["cache"], mask, encoded)
    first_logits = lax.dynamic_index_in_dim(logits, prefill_len - 1, axis=1, keepdims=False)
    cache = rewind_cache(cache, prefill_len, opts.cache)
    row_mask = jnp.repeat(mask, n, axis=0)
    # Cached cross-attention reads the encoder keys/values stored at cache creation, so the
    # encoder states themselves are no longer needed: pass a one-position placeholder.
    placeholder = jnp.zeros((batch * n, 1, encoded.shape[-1]), encoded.dtype)
    tokens_to_logits = functools.partial(step, row_mask=row_mask, enc=placeholder)
    cache = repeat_cache(cache, n, opts.cache)
    first_logits = jnp.repeat(first_logits, n, axis=0)
    table = None if opts.stop_table is None else np.asarray(opts.stop_table, np.int32)
    common = dict(
        max_new_tokens=opts.max_new_tokens,
        budget=budget,
        eos_id=opts.eos_id,
        pad_id=opts.pad_id,
        stop_table=table,
    )
    if opts.method == "beam":
        out = beam_search(
            tokens_to_logits,
            functools.partial(gather_beams, spec=opts.cache),
            first_logits,
            cache,
            num_beams=n,
            length_penalty=opts.length_penalty,
            early_stopping=opts.early_stopping,
            forced=forced,
            forced_len=forced_len,
            **common,
        )
        return out.tokens, out.lengths, out.scores
    out = temperature_sample(
        tokens_to_logits,
        first_logits,
        cache,
        rng=rng,
        temperature=0.0 if opts.method == "greedy" else opts.temperature,
        top_k=opts.top_k,
        top_p=opts.top_p,
        forced=jnp.repeat(forced, n, axis=0),
        forced_len=jnp.repeat(forced_len, n, axis=0),
        on_token=opts.on_token,
        **common,
    )
    seq_len = out.tokens.shape[-1]
    return out.tokens.reshape(batch, n, seq_len), out.lengths.reshape(batch, n), None


def _as_int_matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must be a non-empty [batch, length] integer array; got "
            f"shape {arr.shape} dtype {arr.dtype}."
        )
    return arr.astype(np.int32)


def _pad(x: np.ndarray, rows: int, cols: int, fill) -> np.ndarray:
    """`x [B, L]` padded to `[rows, cols]`: new rows repeat row 0, new columns hold `fill`.

    Dummy rows copy a real one (rather than padding) so that they finish when it does and never
    hold a fully masked prompt.
    """
    x = np.concatenate([x, np.repeat(x[:1], rows - x.shape[0], axis=0)])
    return np.pad(x, ((0, 0), (0, cols - x.shape[1])), constant_values=fill)


def _prefix_parts(prefix, prefix_mask, batch: int, start_id: int, pad_id: int):
    """Splits decoder prefixes into the prefilled common part and the forced ragged remainder."""
    if prefix is None:
        return (
            np.full((batch, 1), start_id, np.int32),
            np.zeros((batch, 0), np.int32),
            np.zeros((batch,), np.int32),
        )
    prefix = _as_int_matrix(prefix, "decoder_prefix_ids")
    if prefix.shape[0] != batch:
        raise ValueError(
            f"decoder_prefix_ids has {prefix.shape[0]} rows but input_ids has {batch}."
        )
    mask = prefix != pad_id if prefix_mask is None else np.asarray(prefix_mask).astype(bool)
    if mask.shape != prefix.shape:
        raise ValueError(
            f"decoder_prefix_mask shape {mask.shape} != decoder_prefix_ids shape {prefix.shape}."
        )
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(prefix.shape[1]) < lengths[:, None]):
        raise ValueError(
            "decoder_prefix_ids must be right-padded: the mask must be a run of 1s "
            "followed by 0s in every row."
        )
    common = int(lengths.min())
    prefill = np.concatenate([np.full((batch, 1), start_id, np.int32), prefix[:, :common]], 1)
    forced = prefix[:, common : int(lengths.max())]
    return prefill, forced, lengths - common


def generate(
    model,
    params,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens: int,
    method: str = "greedy",
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 0,
    stop_token_ids=None,
    decoder_prefix_ids=None,
    decoder_prefix_mask=None,
    max_input_length: int | None = None,
    on_token=None,
    buckets: Buckets | None = DEFAULT_BUCKETS,
) -> GenerateOutput:
    """Generates continuations of a batch of (padded) prompts with a `CodeT5pEncDec` network.

    Args:
      model: The Linen network of a family with a `CacheSpec` (`families.build_model(cfg)`):
        `encode(ids, mask)` and `decode(encoded, mask, tokens, decode=True)` with a `cache`.
      params: Its unboxed parameters.
      input_ids: `[B, S]` encoder prompts, padded on either side.
      attention_mask: `[B, S]` 1 for real tokens; default `input_ids != pad_token_id`.
      max_new_tokens: Generation budget per sequence (prefix excluded).
      method: "greedy", "beam" or "sample".
      num_beams: Beams for "beam" (>= 1).
      length_penalty: Beam score `sum_logprobs / length**length_penalty` (HF semantics).
      early_stopping: Beam stop rule: True, False or "never", as HF (see `beam.py`).
      temperature: Sampling temperature (> 0) for "sample".
      top_k: Sample among the k most likely tokens (0 = off).
      top_p: Nucleus sampling mass in (0, 1] (1 = off).
      num_samples: Independent samples per prompt for "sample".
      seed: PRNG seed for "sample"; the same seed and inputs give the same samples.
      stop_token_ids: Token-level stop sequences: ints and/or lists of ids. A sequence ends
        after emitting EOS or any of them (kept in the output). String-level stops must be
        applied by the caller after detokenisation.
      decoder_prefix_ids: `[B, P]` right-padded tokens fed to the decoder after the start token
        before generating (excluded from the output); rows may have different lengths.
      decoder_prefix_mask: `[B, P]` 1 for real prefix tokens; default `!= pad_token_id`.
      max_input_length: Reject prompts with more real tokens than this (the caller's limit,
        e.g. the tokenizer's 512); None = no limit.
      on_token: Streaming hook of "greedy" / "sample": `on_token(tokens [B*N], written [B*N])`
        on the host at every step, in order (see `sampling.temperature_sample`). Beams are
        reordered as they go, so "beam" refuses it. The rows it sees are the real ones: with
        `on_token` the batch is not bucketed (lengths still are).
      buckets: Shape buckets (`decoding.buckets.Buckets`): batch and lengths padded up so that
        varied inputs reuse compiled programs; outputs are the same. None: exact shapes (one
        compilation per distinct shape).

    Returns:
      A `GenerateOutput` of numpy arrays.

    Raises:
      ValueError: on an unknown method, `num_beams` / `num_samples` < 1, a prompt over
        `max_input_length`, bad sampling parameters or malformed arrays, naming the value.
    """
    cfg = model.config
    if method not in METHODS:
        raise ValueError(f"Unknown decoding method {method!r}; expected one of {METHODS}.")
    family = families.family_of(cfg)
    if family.cache is None:
        raise ValueError(f"Model family {family.name!r} has no decoding cache; it cannot generate.")
    if not getattr(cfg, "has_decoder", True):
        raise ValueError(f"Model kind {cfg.kind!r} has no decoder; generate needs one.")
    if not hasattr(model, "decode"):
        raise ValueError(
            f"Model kind {cfg.kind!r} has no token decoder (encode/decode); it cannot generate."
        )
    if int(num_beams) < 1:
        raise ValueError(f"num_beams must be >= 1; got {num_beams}.")
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}.")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never'; got {early_stopping!r}.")
    if method == "sample":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling; got {temperature}.")
        if int(top_k) < 0:
            raise ValueError(f"top_k must be >= 0; got {top_k}.")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1]; got {top_p}.")
    if buckets is not None and not isinstance(buckets, Buckets):
        raise ValueError(f"buckets must be a decoding.Buckets or None; got {buckets!r}.")
    if on_token is not None and method == "beam":
        raise ValueError(
            "on_token streams greedy or sampled tokens; beams are only final at the end."
        )
    input_ids = _as_int_matrix(input_ids, "input_ids")
    if attention_mask is None:
        mask = input_ids != cfg.pad_token_id
    else:
        mask = np.asarray(attention_mask).astype(bool)
        if mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {mask.shape} != input_ids shape {input_ids.shape}."
            )
    prompt_lengths = mask.sum(axis=1)
    if max_input_length is not None and prompt_lengths.max() > max_input_length:
        row = int(np.argmax(prompt_lengths))
        raise ValueError(
            f"Prompt {row} has {int(prompt_lengths[row])} tokens, more than "
            f"max_input_length={max_input_length}."
        )
    batch = input_ids.shape[0]
    prefill, forced, forced_len = _prefix_parts(
        decoder_prefix_ids,
        decoder_prefix_mask,
        batch,
        cfg.decoder_start_token_id,
        cfg.pad_token_id,
    )
    table = stop_sequence_table(stop_token_ids)
    budget = int(max_new_tokens)
    prefill_len = prefill.shape[1]
    if buckets is not None:
        # The streaming hook reports every row it is given, so it gets no padding rows.
        rows = batch if on_token is not None else buckets.batch(batch)
        pad = cfg.pad_token_id
        input_ids = _pad(input_ids, rows, buckets.length(input_ids.shape[1]), pad)
        mask = _pad(mask, rows, buckets.length(mask.shape[1]), False)
        prefill = _pad(prefill, rows, buckets.length(prefill_len), pad)
        forced = _pad(forced, rows, buckets.length(forced.shape[1]), pad)
        forced_len = _pad(np.asarray(forced_len)[:, None], rows, 1, 0)[:, 0]
    opts = _Options(
        method=method,
        num_return={"greedy": 1, "beam": int(num_beams), "sample": int(num_samples)}[method],
        max_new_tokens=budget if buckets is None else buckets.length(budget),
        length_penalty=float(length_penalty),
        # Normalised: the loop tests `early_stopping is True` (a numpy bool is not `True`).
        early_stopping=early_stopping if early_stopping == "never" else bool(early_stopping),
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        eos_id=cfg.eos_token_id,
        pad_id=cfg.pad_token_id,
        stop_table=None if table is None else tuple(map(tuple, table.tolist())),
        cache=family.cache,
        on_token=on_token,
    )
    tokens, lengths, scores = _generate_jit(
        model,
        opts,
        params,
        input_ids,
        mask,
        prefill,
        np.int32(prefill_len),
        forced,
        np.asarray(forced_len, np.int32),
        np.int32(budget),
        jax.random.PRNGKey(seed),
    )
    # Padding rows and the budget's padding columns cut off (a no-op for exact shapes).
    return GenerateOutput(
        tokens=np.asarray(tokens)[:batch, :, :budget],
        lengths=np.asarray(lengths)[:batch],
        scores=None if scores is None else np.asarray(scores)[:batch],
    )
