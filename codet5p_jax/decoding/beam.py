"""Beam search on arrays, step for step the algorithm of HF `GenerationMixin._beam_search`.

HF's vectorised beam search (transformers >= 4.50) keeps, per prompt, `K` running beams and `K`
finished hypotheses. Each step takes the best `2K` continuations of all running beams by summed
log-probability; those that end (EOS, a stop sequence, or the token budget) and rank among the
first `K` become finished candidates scored `sum_logprobs / generated_len**length_penalty`; the
best `K` unfinished ones keep running. Early stopping, as HF's `early_stopping`:

* `True`: a prompt stops accepting hypotheses once it has `K`; decoding ends when all have `K`.
* `False`: a prompt stops once its best running beam, scored at the current length, cannot beat
  its worst finished hypothesis (HF's heuristic; exact when `length_penalty <= 0`).
* `"never"`: as False, but with a positive length penalty the bound uses the maximum length,
  so only a provably unbeatable prompt stops (canonical beam search).

The model enters only through a `tokens_to_logits` callback (see `decoding.py`) and a
`gather_cache(cache, flat_indices)` function that reorders the batch axis of every cache leaf.

Legend: B prompts, K beams, C candidates (2K), V vocab, T max_new_tokens, W stop window.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from codet5p_jax.decoding.sampling import (
    TokensToLogits,
    forced_tokens,
    hits_stop,
    initial_window,
    push_window,
)

# HF's "impossible" score offset; kept identical so scores and tie behaviour match.
_NEG = -1.0e9


class BeamResult(NamedTuple):
    """Finished hypotheses, best first.

    Attributes:
      tokens: `[B, K, T]` int32 generated ids (prefix excluded), `pad_id` after the end.
      scores: `[B, K]` float32 `sum_logprobs / length**length_penalty` (HF `sequences_scores`).
      lengths: `[B, K]` int32 generated tokens, the stopping token included.
    """

    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array


class _BeamState(NamedTuple):
    step: jax.Array
    cache: Any  # leaves [B*K, ...]
    last: jax.Array  # [B*K] tokens to feed next
    run_tokens: jax.Array  # [B, K, T]
    run_scores: jax.Array  # [B, K] summed log-probs (HF running_beam_scores)
    run_window: jax.Array  # [B, K, W]
    fin_tokens: jax.Array  # [B, K, T]
    fin_scores: jax.Array  # [B, K] length-penalised
    fin_lengths: jax.Array  # [B, K]
    fin_flags: jax.Array  # [B, K] slot holds a real hypothesis (HF is_sent_finished)
    improvable: jax.Array  # [B] HF is_early_stop_heuristic_unsatisfied


def _gather(x, idx):
    """`x[b, idx[b, j]]` for x `[B, K', ...]`, idx `[B, J]`."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def _num_candidates(k: int, eos_id, table: np.ndarray) -> int:
    """HF's `beams_to_keep` when single-token stop sequences act as extra EOS ids."""
    singles = {int(row[-1]) for row in table if (row >= 0).sum() == 1}
    return max(2, 1 + len(singles | ({eos_id} if eos_id is not None else set()))) * k


def beam_search(
    tokens_to_logits: TokensToLogits,
    gather_cache: Callable[[Any, jax.Array], Any],
    first_logits,
    cache,
    *,
    num_beams: int,
    max_new_tokens: int,
    budget=None,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_id: int | None = None,
    pad_id: int = 0,
    stop_table=None,
    forced=None,
    forced_len=None,
) -> BeamResult:
    """Beam search over a cached model, in one `lax.while_loop`.

    Args:
      tokens_to_logits: `tokens [B*K, L], cache -> (logits [B*K, V], cache)`.
      gather_cache: `(cache, flat_indices [B*K]) -> cache` with batch rows reordered.
      first_logits: `[B*K, V]` logits after the prefill (rows of one prompt are equal).
      cache: Prefilled cache with `B*K` rows (prompt-major).
      num_beams: K.
      max_new_tokens: T, the width of the token arrays: the largest budget.
      budget: The generation budget (HF `max_length - decoder_prompt_len`), a traced int <= T
        (None: T); `generate` pads T to a shape bucket and passes the caller's budget here.
      length_penalty: Exponent of the length normaliser (HF `length_penalty`).
      early_stopping: True, False or "never" (module docstring).
      eos_id: End-of-sequence id, or None.
      pad_id: Filler after a hypothesis ends.
      stop_table: `[S, W]` numpy stop sequences (`decoding.stop_sequence_table`), or None.
      forced: `[B, F]` prefix tokens still to feed per prompt (`decoding` module docs), or None.
      forced_len: `[B]` valid entries per `forced` row. Forced steps add log-prob 0.

    Returns:
      A `BeamResult`.
    """
    flat, vocab = first_logits.shape
    k = num_beams
    batch = flat // k
    if forced_len is None:
        forced_len = jnp.zeros((batch,), jnp.int32)
    if budget is None:
        budget = max_new_tokens
    num_steps = (0 if forced is None else forced.shape[1]) + max_new_tokens
    positions = jnp.arange(max_new_tokens)
    # HF keeps max(2, 1 + #end-token ids) * K candidates so that K can keep running even if all
    # the best ones end; single-token stop sequences count as end-token ids (HF `eos_token_id`
    # lists), longer ones do not (HF stop-string criteria).
    width = 2 * k if stop_table is None else _num_candidates(k, eos_id, np.asarray(stop_table))
    # Only the first K candidates may become finished hypotheses (HF top_num_beam_mask).
    top_mask = jnp.arange(width) < k

    def advance(state: _BeamState, logits) -> _BeamState:
        is_forced, forced_tok = forced_tokens(forced, forced_len, state.step)  # [B]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, -1)
        # A forced token is free (log-prob 0) and the only choice, so beams do not diverge.
        only_forced = jnp.where(jnp.arange(vocab) == forced_tok[:, None, None], 0.0, _NEG)
        log_probs = jnp.where(is_forced[:, None, None], only_forced, log_probs)
        candidates = (log_probs + state.run_scores[:, :, None]).reshape(batch, k * vocab)
        top_scores, top_index = lax.top_k(candidates, width)  # [B, C], sorted
        src_beam, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)

        gen_index = state.step - forced_len  # [B]
        write = (~is_forced)[:, None, None] & (positions == gen_index[:, None, None])
        top_tokens = jnp.where(write, token[:, :, None], _gather(state.run_tokens, src_beam))
        prev_window = _gather(state.run_window, src_beam)
        top_window = jnp.where(
            is_forced[:, None, None], prev_window, push_window(prev_window, token)
        )
        ends = hits_stop(top_window, token, eos_id, stop_table)
        ends = ends | (gen_index >= budget - 1)[:, None]
        ends = ends & ~is_forced[:, None]

        # Running beams: the best K continuations that did not end.
        run_candidates = top_scores + ends.astype(jnp.float32) * _NEG
        next_run = lax.top_k(run_candidates, k)[1]
        run_scores = _gather(run_candidates, next_run)
        src_flat = (_gather(src_beam, next_run) + jnp.arange(batch)[:, None] * k).reshape(-1)

        # Finished hypotheses: merge new endings with the kept ones, keep the best K.
        # Clamped so rows still inside their forced prefix (no candidate can end) stay finite.
        gen_len = jnp.maximum(gen_index + 1, 1).astype(jnp.float32)
        new_scores = top_scores / (gen_len[:, None] ** length_penalty)
        full = jnp.all(state.fin_flags, axis=-1, keepdims=True) & (early_stopping is True)
        new_scores += full.astype(jnp.float32) * _NEG
        new_scores += (~state.improvable[:, None]).astype(jnp.float32) * _NEG
        just_finished = ends & top_mask[None, :]
        new_scores += (~just_finished).astype(jnp.float32) * _NEG
        merged_scores = jnp.concatenate([state.fin_scores, new_scores], axis=1)
        keep = lax.top_k(merged_scores, k)[1]
        merged = lambda old, new: _gather(jnp.concatenate([old, new], axis=1), keep)  # noqa: E731
        lengths = jnp.broadcast_to((gen_index + 1)[:, None], (batch, width)).astype(jnp.int32)
        fin_flags = merged(state.fin_flags, just_finished)
        fin_scores = _gather(merged_scores, keep)

        # Can a running beam still beat the worst kept hypothesis? (HF early-stop heuristic.)
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = jnp.full((batch,), budget, jnp.float32)
        else:
            best_len = gen_len
        best_running = run_scores[:, 0] / (best_len**length_penalty)
        worst_kept = jnp.where(fin_flags, jnp.min(fin_scores, axis=-1, keepdims=True), _NEG)
        still = jnp.any(best_running[:, None] > worst_kept, axis=-1)
        # A prompt whose budget is spent has all its hypotheses (HF stops the loop there).
        still = still & (gen_index + 1 < budget)
        improvable = jnp.where(is_forced, state.improvable, state.improvable & still)

        run_tokens = _gather(top_tokens, next_run)
        return _BeamState(
            step=state.step + 1,
            cache=gather_cache(state.cache, src_flat),
            last=_gather(token, next_run).reshape(-1),
            run_tokens=run_tokens,
            run_scores=run_scores,
            run_window=_gather(top_window, next_run),
            fin_tokens=merged(state.fin_tokens, top_tokens),
            fin_scores=fin_scores,
            fin_lengths=merged(state.fin_lengths, lengths),
            fin_flags=fin_flags,
            improvable=improvable,
        )

    def cond(state: _BeamState):
        open_beams = ~(jnp.all(state.fin_flags) & (early_stopping is True))
        return (state.step < num_steps) & jnp.any(state.improvable) & open_beams

    def body(state: _BeamState):
        logits, cache = tokens_to_logits(state.last[:, None], state.cache)
        return advance(state._replace(cache=cache), logits)

    # Only beam 0 starts alive, so the first step does not pick the same token K times.
    run_scores = jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(_NEG)
    init = _BeamState(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        last=jnp.full((flat,), pad_id, jnp.int32),
        run_tokens=jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32),
        run_scores=run_scores,
        run_window=initial_window((batch, k), stop_table),
        fin_tokens=jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32),
        fin_scores=jnp.full((batch, k), _NEG, jnp.float32),
        fin_lengths=jnp.zeros((batch, k), jnp.int32),
        fin_flags=jnp.zeros((batch, k), bool),
        improvable=jnp.ones((batch,), bool),
    )
    state = lax.while_loop(cond, body, advance(init, first_logits))
    return BeamResult(tokens=state.fin_tokens, scores=state.fin_scores, lengths=state.fin_lengths)
