"""CodeT5+ 2B-16B network (`shallow_deep` family) against torch references (fp32, 1e-4).

* Without cross-attention the decoder is `transformers.CodeGenForCausalLM`, and the encoder run
  causally is `transformers.CodeGenModel`, on the same random weights loaded through the real
  CodeGen key layout (pins the mp_num=4 qkv permutation and the interleaved partial rotary).
* The whole encoder-decoder equals a torch reference assembled from `transformers` CodeGen
  blocks plus the block formula of CODET5P_FACTS §3.5 (cross-attention added in parallel, rotary
  on its query and keys, mp_num=4 value/key split), teacher-forced, and cached greedy decoding
  through `codet5p_jax.decoding` equals that reference's step-by-step loop in both
  cross-attention rotary modes.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from torch import nn
from transformers.models.codegen import modeling_codegen as cg

from codet5p_jax import families
from codet5p_jax.convert import hf_shallow_deep, mapping
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models.shallow_deep import Stack
from codet5p_jax.models.shallow_deep_config import ShallowDeepConfig

ATOL = 1e-4


def _config(**overrides) -> ShallowDeepConfig:
    base = dict(
        name="parity",
        vocab_size=120,
        encoder_emb_dim=32,
        encoder_num_heads=4,
        encoder_mlp_dim=80,  # != 4 * width: n_inner is honoured
        encoder_rotary_dim=4,
        num_encoder_layers=2,
        emb_dim=48,
        num_heads=4,
        mlp_dim=192,
        rotary_dim=6,  # partial: 6 of 12 head dims
        num_decoder_layers=3,
        num_cross_attention_layers=1,
        max_positions=64,
        pad_token_id=0,
        eos_token_id=-1,  # never stop: every compared step is generated
        decoder_start_token_id=1,
    )
    return ShallowDeepConfig(**{**base, **overrides})


def _codegen_config(cfg: ShallowDeepConfig, stack: str) -> transformers.CodeGenConfig:
    enc = stack == "encoder"
    hf = transformers.CodeGenConfig(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_positions,
        n_embd=cfg.encoder_emb_dim if enc else cfg.emb_dim,
        n_layer=cfg.num_encoder_layers if enc else cfg.num_decoder_layers,
        n_head=cfg.encoder_num_heads if enc else cfg.num_heads,
        rotary_dim=cfg.encoder_rotary_dim if enc else cfg.rotary_dim,
        n_inner=cfg.encoder_mlp_dim if enc else cfg.mlp_dim,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=cfg.layer_norm_epsilon,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    hf._attn_implementation = "eager"
    return hf


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter random (LayerNorm scales around 1, biases non-zero), so none is inert."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("ln_1.weight") else 0.2 * noise)
    return module.eval()


def _state(module: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().numpy() for k, v in module.state_dict().items()}


def _convert(state, rules, source="reference"):
    flat = mapping.apply_hf_to_jax(
        hf_shallow_deep.SplitState(state), mapping.RuleTable(tuple(rules)), source
    )
    return traverse_util.unflatten_dict(flat, sep="/")


def _tokens(cfg, batch, length, seed):
    return np.random.RandomState(seed).randint(2, cfg.vocab_size, (batch, length))


# ---------------------------------------------------------------------------------------------
# CodeGen stacks alone.


def test_decoder_without_cross_attention_is_codegen_for_causal_lm():
    cfg = _config(num_cross_attention_layers=0)
    torch.manual_seed(0)
    hf = _randomize(transformers.CodeGenForCausalLM(_codegen_config(cfg, "decoder")), 1)
    rules = hf_shallow_deep.decoder_rules(cfg, prefix="transformer.", lm_head="lm_head")
    params = _convert(_state(hf), rules)
    model = families.build_model(cfg)
    tokens = _tokens(cfg, 2, 17, seed=2)
    encoded = jnp.zeros((2, 1, cfg.encoder_emb_dim))  # no cross-attention: never read
    ours = model.apply(
        {"params": params},
        encoded,
        jnp.ones((2, 1), bool),
        jnp.asarray(tokens),
        method=model.decode,
    )
    with torch.no_grad():
        theirs = hf(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=ATOL, rtol=0)


def test_encoder_run_causally_is_codegen_model():
    cfg = _config()
    torch.manual_seed(0)
    hf = _randomize(transformers.CodeGenModel(_codegen_config(cfg, "encoder")), 3)
    params = _convert(_state(hf), hf_shallow_deep.encoder_rules(cfg, prefix=""))
    tokens = _tokens(cfg, 2, 13, seed=4)
    ours = Stack(cfg, "encoder", causal=True).apply({"params": params["encoder"]}, tokens)
    with torch.no_grad():
        theirs = hf(torch.as_tensor(tokens)).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# The whole encoder-decoder against a torch reference (FACTS §3.5).


class RefCrossAttention(nn.Module):
    """The released `CodeT5pAttention(is_cross_attention=True)` per FACTS §3.5."""

    def __init__(self, d: int, n: int, rotary_dim: int, max_positions: int):
        super().__init__()
        self.d, self.n, self.hd, self.rotary_dim = d, n, d // n, rotary_dim
        self.q_attn = nn.Linear(d, d, bias=False)
        self.qkv_proj = nn.Linear(d, 2 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.table = cg.create_sinusoidal_positions(max_positions, rotary_dim)

    def _rotate(self, x, positions):
        sin, cos = torch.split(self.table[positions][None], self.rotary_dim // 2, dim=-1)
        rot = cg.apply_rotary_pos_emb(x[..., : self.rotary_dim], sin, cos)
        return torch.cat([rot, x[..., self.rotary_dim :]], dim=-1)

    def forward(self, h, enc, enc_mask_add, q_positions):
        b, t, s = h.shape[0], h.shape[1], enc.shape[1]
        q = self.q_attn(h).view(b, t, self.n, self.hd)
        kv = self.qkv_proj(enc).view(b, s, 4, 2 * self.d // 4)
        value, key = kv.split(self.d // 4, dim=-1)  # mp_num=4 blocks: (value, key)
        value, key = (x.reshape(b, s, self.n, self.hd) for x in (value, key))
        q = self._rotate(q, q_positions)
        key = self._rotate(key, torch.arange(s))
        scores = torch.einsum("btnh,bsnh->bnts", q, key) / math.sqrt(self.hd)
        probs = torch.softmax(scores + enc_mask_add, dim=-1)
        out = torch.einsum("bnts,bsnh->btnh", probs, value).reshape(b, t, self.d)
        return self.out_proj(out)


class RefEncDec(nn.Module):
    """CodeGen blocks from `transformers` wired as the released `CodeT5pEncoderDecoderModel`."""

    def __init__(self, cfg: ShallowDeepConfig):
        super().__init__()
        self.cfg = cfg
        enc_cfg, dec_cfg = _codegen_config(cfg, "encoder"), _codegen_config(cfg, "decoder")
        self.encoder = transformers.CodeGenModel(enc_cfg)  # run bidirectionally below
        self.enc_to_dec_proj = nn.Linear(cfg.encoder_emb_dim, cfg.emb_dim)
        self.decoder = transformers.CodeGenForCausalLM(dec_cfg)
        first = cfg.num_uniform_decoder_layers
        self.cross = nn.ModuleDict(
            {
                str(i): RefCrossAttention(
                    cfg.emb_dim, cfg.num_heads, cfg.rotary_dim, cfg.max_positions
                )
                for i in range(first, cfg.num_decoder_layers)
            }
        )

    @staticmethod
    def _blocks(model, x, mask_add, positions, cross=None):
        emb = model.rotary_emb(x, position_ids=positions[None])
        for i, block in enumerate(model.h):
            h = block.ln_1(x)
            a, _ = block.attn(h, position_embeddings=emb, attention_mask=mask_add)
            if cross is not None and str(i) in cross[0]:
                a = a + cross[0][str(i)](h, *cross[1:])
            x = a + block.mlp(h) + x
        return model.ln_f(x)

    def forward(self, enc_ids, enc_mask, dec_ids, cross_q_positions=None):
        neg = torch.finfo(torch.float32).min
        enc_add = (1.0 - enc_mask[:, None, None, :].float()) * neg
        enc = self.encoder
        encoded = self._blocks(enc, enc.wte(enc_ids), enc_add, torch.arange(enc_ids.shape[1]))
        encoded = self.enc_to_dec_proj(encoded)
        t = dec_ids.shape[1]
        causal = torch.triu(torch.full((t, t), neg), diagonal=1)[None, None]
        if cross_q_positions is None:
            cross_q_positions = torch.arange(t)
        dec = self.decoder.transformer
        x = self._blocks(
            dec,
            dec.wte(dec_ids),
            causal,
            torch.arange(t),
            cross=(self.cross, encoded, enc_add, cross_q_positions),
        )
        return self.decoder.lm_head(x)

    def released_state(self) -> dict[str, np.ndarray]:
        """The reference's weights under the released key names (`decoder.transformer.*`)."""
        state = {**_state(self.encoder, "encoder."), **_state(self.decoder, "decoder.")}
        state.update(_state(self.enc_to_dec_proj, "enc_to_dec_proj."))
        for i, module in self.cross.items():
            for k, v in _state(module).items():
                state[f"decoder.transformer.h.{i}.crossattention.{k}"] = v
        return state

    def params(self, cfg) -> dict:
        """The reference's weights through the released layout's rule table."""
        return hf_shallow_deep.hf_to_params(self.released_state(), cfg, "reference")


@pytest.fixture(
    scope="module",
    # Two cross-attention blocks (a configurable L): their cached keys carry earlier tokens'
    # cross-attention output into the last block; slow tier on 2 cores.
    params=[1, pytest.param(2, marks=pytest.mark.slow)],
    ids=["1_cross_layer", "2_cross_layers"],
)
def reference(request):
    cfg = _config(num_cross_attention_layers=request.param)
    torch.manual_seed(0)
    ref = _randomize(RefEncDec(cfg), 5)
    return cfg, ref, ref.params(cfg)


def _encoder_batch(cfg):
    enc = _tokens(cfg, 2, 11, seed=6)
    mask = np.ones_like(enc)
    mask[1, 7:] = 0
    return enc * mask, mask


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_teacher_forced_logits_equal_the_reference(reference, scan):
    cfg, ref, params = reference
    if scan:
        cfg, params = families.family_of(cfg).relayout(params, cfg, True)
    model = families.build_model(cfg)
    enc, mask = _encoder_batch(cfg)
    dec = _tokens(cfg, 2, 9, seed=7)
    ours = model.apply({"params": params}, jnp.asarray(enc), jnp.asarray(dec), jnp.asarray(mask))
    with torch.no_grad():
        theirs = ref(torch.as_tensor(enc), torch.as_tensor(mask), torch.as_tensor(dec)).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=ATOL, rtol=0)


def _reference_greedy(ref, enc, mask, start, prefix, common, steps, mode):
    """Greedy decoding by full recomputation, one row at a time.

    The cross-attention query positions are what the cached model uses: true positions in
    "absolute" mode; in "released" mode, positions within each call, i.e. `0..common` for the
    prefilled start token + common prefix, then 0 for every token fed alone (the forced rest
    of the prefix and each generated token).
    """
    tokens = [start, *prefix]
    cross = list(range(common + 1)) + [0] * (len(prefix) - common)
    out = []
    for _ in range(steps):
        positions = torch.arange(len(tokens)) if mode == "absolute" else torch.tensor(cross)
        with torch.no_grad():
            logits = ref(
                torch.as_tensor(enc[None]),
                torch.as_tensor(mask[None]),
                torch.tensor([tokens]),
                positions,
            )
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        tokens.append(nxt)
        cross.append(0)
    return out


@pytest.mark.parametrize("mode", ["absolute", "released"])
def test_cached_greedy_equals_the_reference_loop(reference, mode):
    cfg, ref, params = reference
    cfg = cfg.replace(cross_attention_query_positions=mode)
    model = families.build_model(cfg)
    enc, mask = _encoder_batch(cfg)
    # Ragged decoder prefixes: 2 tokens prefilled with the start token, the rest forced.
    prefix = np.array([[5, 9, 17, 4], [7, 3, 0, 0]])
    steps = 6
    out = generate(
        model,
        params,
        enc,
        mask,
        max_new_tokens=steps,
        decoder_prefix_ids=prefix,
        decoder_prefix_mask=prefix != 0,
    )
    for row, length in enumerate((4, 2)):
        want = _reference_greedy(
            ref,
            enc[row],
            mask[row],
            cfg.decoder_start_token_id,
            list(prefix[row, :length]),
            2,
            steps,
            mode,
        )
        np.testing.assert_array_equal(out.tokens[row, 0], want, err_msg=f"row {row}")


def test_the_rotary_modes_differ_only_in_cached_decoding(reference):
    """Both modes are the same network under teacher forcing; the switch matters (the reference's
    last-step logits move by far more than the tolerance) only for tokens decoded one by one."""
    cfg, ref, params = reference
    enc, mask = _encoder_batch(cfg)
    dec = _tokens(cfg, 2, 9, seed=7)
    logits = {
        mode: np.asarray(
            families.build_model(cfg.replace(cross_attention_query_positions=mode)).apply(
                {"params": params}, jnp.asarray(enc), jnp.asarray(dec), jnp.asarray(mask)
            )
        )
        for mode in ("absolute", "released")
    }
    np.testing.assert_array_equal(logits["absolute"], logits["released"])
    with torch.no_grad():
        args = (torch.as_tensor(enc), torch.as_tensor(mask), torch.as_tensor(dec))
        true_pos = ref(*args)[:, -1]
        last_at_zero = ref(*args, torch.tensor([*range(8), 0]))[:, -1]
    assert float((true_pos - last_at_zero).abs().max()) > 100 * ATOL


def test_cached_cross_attention_keys_are_projected_once(reference):
    """The cache-creating call stores the encoder keys/values; later steps ignore `encoded`."""
    cfg, _, params = reference
    model = families.build_model(cfg)
    enc, mask = _encoder_batch(cfg)
    encoded = model.apply(
        {"params": params}, jnp.asarray(enc), jnp.asarray(mask), method=model.encode
    )
    dummy = jnp.zeros((2, 8), jnp.int32)
    _, init = model.apply(
        {"params": params},
        encoded,
        mask,
        dummy,
        decode=True,
        mutable=["cache"],
        method=model.decode,
    )
    step = jnp.full((2, 1), cfg.decoder_start_token_id)
    run = lambda e: model.apply(  # noqa: E731
        {"params": params, "cache": init["cache"]},
        e,
        mask,
        step,
        decode=True,
        mutable=["cache"],
        method=model.decode,
    )[0]
    np.testing.assert_array_equal(run(encoded), run(jnp.zeros((2, 1, encoded.shape[-1]))))
    last = f"layers_{cfg.num_decoder_layers - 1}"
    cross = init["cache"]["decoder"][last]["encoder_decoder_attention"]
    assert cross["cached_key"].shape == (2, cfg.num_heads, cfg.head_dim, enc.shape[1])  # bnhs


def test_export_writes_the_reference_state_dict_back(reference):
    """params -> released layout reproduces the reference's tensors bit for bit (the mp_num=4
    fusing in the export direction), plus the causal-mask buffers the released loader wants."""
    cfg, ref, params = reference
    state = ref.released_state()
    out = hf_shallow_deep.params_to_hf(params, cfg)
    masks = set(hf_shallow_deep.causal_mask_keys(cfg))
    assert set(out) == set(state) | masks
    for key, value in state.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)
    tril = np.tril(np.ones((cfg.max_positions,) * 2, np.uint8))
    for key in masks:
        assert out[key].dtype == np.uint8 and np.array_equal(out[key][0, 0], tril), key
