"""Autoregressive decoding on arrays: greedy and temperature / top-k / top-p sampling.

Pure functions in the style of t5x `decoding.py`: the model enters only through a callback
`tokens_to_logits(tokens [B, L], cache) -> (logits [B, V] at the last position, new cache)`, so
the same loop serves any network with a KV cache. The whole loop is one `lax.while_loop` over
fixed shapes; it stops early once every row has finished. Beam search lives in `beam.py`
and shares the stop-sequence and forced-prefix helpers defined here.

Stop handling is token-level: a row finishes when it emits `eos_id` or when its generated tokens
end with one of the stop sequences (token-id lists). The stopping tokens stay in the output, as
HF keeps EOS; string-level stops (e.g. HumanEval's "\\ndef", which may be split across tokens
differently) are the caller's job after detokenisation.

Forced prefix: rows may carry different numbers of decoder-prefix tokens that still have to be
fed. Row `b` is forced to `forced[b, i]` for loop steps `i < forced_len[b]`; its generated
tokens (the output) start after that. The common part of the prefixes should be prefilled
before the loop (one multi-token call), so `forced` only holds the ragged remainder.

Legend: B rows (prompts x samples), V vocab, T max_new_tokens, F forced steps, W stop window,
S stop sequences.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# `tokens [B, L], cache -> (logits [B, V] of the last position, cache)`.
TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


class DecodeResult(NamedTuple):
    """Generated tokens of one decoding run.

    Attributes:
      tokens: `[B, T]` int32 generated ids (prefix excluded); after a row finishes: `pad_id`.
      lengths: `[B]` int32 number of generated tokens, the stopping token included.
    """

    tokens: jax.Array
    lengths: jax.Array


def stop_sequence_table(stop_sequences) -> np.ndarray | None:
    """Stop sequences as a right-aligned `[S, W]` int32 table padded with -1 (None if none).

    Args:
      stop_sequences: Iterable of non-empty token-id sequences (a bare int counts as a
        one-token sequence).

    Raises:
      ValueError: on an empty sequence or a negative id.
    """
    if stop_sequences is None:
        return None
    seqs = [[int(s)] if np.ndim(s) == 0 else [int(t) for t in s] for s in stop_sequences]
    if not seqs:
        return None
    for s in seqs:
        if not s or min(s) < 0:
            raise ValueError(f"Stop sequences must be non-empty lists of ids >= 0; got {s!r}.")
    width = max(len(s) for s in seqs)
    table = np.full((len(seqs), width), -1, np.int32)
    for row, s in zip(table, seqs, strict=True):
        row[width - len(s) :] = s
    return table


def initial_window(batch_shape: tuple[int, ...], table) -> jax.Array:
    """The empty stop window `[*batch_shape, W]` (-1 never equals a real id)."""
    width = 1 if table is None else table.shape[1]
    return jnp.full((*batch_shape, width), -1, jnp.int32)


def push_window(window, tokens):
    """Appends `tokens [...]` to the rolling window of the last W generated tokens."""
    return jnp.concatenate([window[..., 1:], tokens[..., None]], axis=-1)


def hits_stop(window, tokens, eos_id, table):
    """True where the newest token is EOS or the window ends with a stop sequence."""
    hit = jnp.zeros(tokens.shape, bool) if eos_id is None else tokens == eos_id
    if table is not None:
        # [..., 1, W] vs [S, W]; -1 cells of the table are "any token" left padding.
        eq = (window[..., None, :] == table) | (table < 0)
        hit = hit | jnp.any(jnp.all(eq, axis=-1), axis=-1)
    return hit


def forced_tokens(forced, forced_len, step):
    """`(is_forced [B], token [B])` of loop step `step` for rows still inside their prefix."""
    batch = forced_len.shape[0]
    if forced is None or forced.shape[1] == 0:
        return jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32)
    token = lax.dynamic_index_in_dim(forced, jnp.minimum(step, forced.shape[1] - 1), 1, False)
    return step < forced_len, token.astype(jnp.int32)


def process_logits(logits, temperature: float, top_k: int, top_p: float):
    """Temperature, then top-k, then top-p (nucleus) filtering, in HF's warper order.

    Filtered entries become -inf. Top-p keeps the smallest set of highest-probability tokens
    whose mass reaches `top_p` (HF `TopPLogitsWarper`: drop tokens whose ascending cumulative
    probability is <= 1 - top_p; always keep the best token). Tokens tied with the last kept
    logit are kept too.

    Args:
      logits: `[B, V]` float32.
      temperature: > 0.
      top_k: Keep the k best tokens; 0 disables.
      top_p: Nucleus mass in (0, 1]; 1 disables.

    Returns:
      `[B, V]` float32 logits.
    """
    logits = logits.astype(jnp.float32) / temperature
    if top_k > 0:
        kth = lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        ascending = jnp.sort(logits, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
        dropped = jnp.sum(cum[..., :-1] <= 1.0 - top_p, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(ascending, dropped, axis=-1)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


class _LoopState(NamedTuple):
    step: jax.Array  # scalar: loop step (forced steps included)
    last: jax.Array  # [B] token fed to the model next
    cache: Any
    tokens: jax.Array  # [B, T]
    lengths: jax.Array  # [B]
    window: jax.Array  # [B, W]
    done: jax.Array  # [B]


def temperature_sample(
    tokens_to_logits: TokensToLogits,
    first_logits,
    cache,
    *,
    max_new_tokens: int,
    budget=None,
    rng=None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    stop_table=None,
    forced=None,
    forced_len=None,
    on_token=None,
) -> DecodeResult:
    """Greedy (`temperature=0`) or sampled decoding in one `lax.while_loop`.

    Args:
      tokens_to_logits: The model callback (see module docstring).
      first_logits: `[B, V]` logits of the first position to choose, from the prefill call.
      cache: Cache after the prefill; it must hold `F + max_new_tokens - 1` more positions.
      max_new_tokens: T, the width of the token arrays: the largest budget per row (forced
        tokens not counted).
      budget: The generation budget per row, a traced int <= T (None: T); `generate` pads T to
        a shape bucket and passes the caller's budget here.
      rng: PRNG key for sampling; row r at step i draws with `fold_in(fold_in(rng, i), r)`, so
        a fixed key reproduces and a row's draws do not depend on the number of rows.
      temperature: 0 for greedy (argmax), else the softmax temperature.
      top_k: Sample only among the k best tokens (0: all).
      top_p: Sample only from the nucleus of mass top_p (1: all).
      eos_id: End-of-sequence id (None: only stop sequences and the budget end a row).
      pad_id: Filler after a row finishes.
      stop_table: `[S, W]` from `stop_sequence_table`, or None.
      forced: `[B, F]` prefix tokens still to feed (see module docstring), or None.
      forced_len: `[B]` number of valid entries of each `forced` row.
      on_token: Host callback `(tokens [B], written [B] bool)` called in order at every step
        (`jax.debug.callback`), for streaming; `written` is False for forced prefix tokens and
        finished rows. None (default) adds nothing to the compiled loop.

    Returns:
      A `DecodeResult`.
    """
    batch = first_logits.shape[0]
    rows = jnp.arange(batch)
    if forced_len is None:
        forced_len = jnp.zeros((batch,), jnp.int32)
    if budget is None:
        budget = max_new_tokens
    num_steps = (0 if forced is None else forced.shape[1]) + max_new_tokens
    positions = jnp.arange(max_new_tokens)[None, :]

    def choose(step, logits):
        if temperature == 0.0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        # One key per row: a row's draws depend on the seed, the step and its own index only,
        # so padding rows appended to the batch (shape buckets) change no real row's sample.
        keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, step), rows)
        scores = process_logits(logits, temperature, top_k, top_p)
        return jax.vmap(jax.random.categorical)(keys, scores)

    def advance(state: _LoopState, logits) -> _LoopState:
        is_forced, forced_tok = forced_tokens(forced, forced_len, state.step)
        token = jnp.where(is_forced, forced_tok, choose(state.step, logits).astype(jnp.int32))
        gen_index = state.step - forced_len  # [B] index of this token among generated ones
        write = ~is_forced & ~state.done
        if on_token is not None:
            jax.debug.callback(on_token, token, write, ordered=True)
        tokens = jnp.where(
            write[:, None] & (positions == gen_index[:, None]), token[:, None], state.tokens
        )
        window = jnp.where(write[:, None], push_window(state.window, token), state.window)
        stopped = hits_stop(window, token, eos_id, stop_table) | (gen_index >= budget - 1)
        return _LoopState(
            step=state.step + 1,
            last=jnp.where(state.done, pad_id, token),
            cache=state.cache,
            tokens=tokens,
            lengths=state.lengths + write.astype(jnp.int32),
            window=window,
            done=state.done | (write & stopped),
        )

    def cond(state: _LoopState):
        return (state.step < num_steps) & ~jnp.all(state.done)

    def body(state: _LoopState):
        logits, cache = tokens_to_logits(state.last[:, None], state.cache)
        return advance(state._replace(cache=cache), logits)

    init = _LoopState(
        step=jnp.zeros((), jnp.int32),
        last=jnp.full((batch,), pad_id, jnp.int32),
        cache=cache,
        tokens=jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
        lengths=jnp.zeros((batch,), jnp.int32),
        window=initial_window((batch,), stop_table),
        done=jnp.zeros((batch,), bool),
    )
    state = lax.while_loop(cond, body, advance(init, first_logits))
    return DecodeResult(tokens=state.tokens, lengths=state.lengths)
