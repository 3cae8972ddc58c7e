"""The family seam is real: a toy decoder-only family defined entirely in this file.

Its own config class, a 2-layer GPT-2 network and a rule table for
`transformers.GPT2LMHeadModel` register through `codet5p_jax.families`, and then, with no change
to library code, the toy model trains through `codet5p train` (gin), saves and resumes, loads
with `from_pretrained`, generates, exports to HF with logits equal to `GPT2LMHeadModel`
(<= 1e-4) and re-imports bit-exactly. The registry's bad inputs are named too.
"""

import contextlib
import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

import gin
from codet5p_jax import families, from_pretrained, loading
from codet5p_jax.cli.train import main as train_main
from codet5p_jax.convert import mapping
from codet5p_jax.decoding.generate import generate


@dataclasses.dataclass(frozen=True)
class ToyGPTConfig:
    """GPT-2 in miniature; field names follow the library's conventions where it reads them."""

    name: str = "toy-gpt"
    vocab_size: int = 256
    emb_dim: int = 32
    num_heads: int = 4
    num_layers: int = 2
    max_positions: int = 64
    layer_norm_epsilon: float = 1e-5
    pad_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 1  # GPT-2's "bos" in this toy
    param_dtype: str = "float32"


def _dense(features, name):
    # GPT-2's Conv1D stores [in, out] like a flax kernel, with std-0.02 init and a bias.
    return nn.Dense(features, kernel_init=nn.initializers.normal(0.02), name=name)


class ToyBlock(nn.Module):
    """Pre-LN GPT-2 block with a self-attention KV cache for decoding."""

    config: ToyGPTConfig

    @nn.compact
    def __call__(self, x, positions, decode: bool):
        cfg = self.config
        b, length, d = x.shape
        h, hd = cfg.num_heads, cfg.emb_dim // cfg.num_heads
        y = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, name="ln_1")(x)
        q, k, v = jnp.split(_dense(3 * d, "c_attn")(y), 3, axis=-1)
        q, k, v = (t.reshape(b, length, h, hd) for t in (q, k, v))
        if decode:
            is_new = not self.has_variable("cache", "key")
            ck = self.variable("cache", "key", jnp.zeros, (b, cfg.max_positions, h, hd))
            cv = self.variable("cache", "value", jnp.zeros, (b, cfg.max_positions, h, hd))
            if not is_new:
                start = (0, positions[0], 0, 0)
                ck.value = jax.lax.dynamic_update_slice(ck.value, k, start)
                cv.value = jax.lax.dynamic_update_slice(cv.value, v, start)
                k, v = ck.value, cv.value
        key_pos = jnp.arange(k.shape[1])
        if k.shape[1] == length:  # teacher forcing / cache creation: keys are the queries
            key_pos = positions
        mask = key_pos[None, :] <= positions[:, None]
        scores = jnp.einsum("blhd,bshd->bhls", q, k) / np.sqrt(hd)
        scores = jnp.where(mask[None, None], scores, jnp.finfo(jnp.float32).min)
        attn = jnp.einsum("bhls,bshd->blhd", jax.nn.softmax(scores, -1), v).reshape(b, length, d)
        x = x + _dense(d, "c_proj")(attn)
        y = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, name="ln_2")(x)
        return x + _dense(d, "c_proj_mlp")(nn.gelu(_dense(4 * d, "c_fc")(y), approximate=True))


class CachePosition(nn.Module):
    """The write position of the decoding cache (a stack-level entry, not per row)."""

    @nn.compact
    def __call__(self, length: int):
        """Returns `(is_cache_creation, start)` and advances the position by `length`."""
        is_new = not self.has_variable("cache", "position")
        position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
        start = position.value
        if not is_new:
            position.value = start + length
        return is_new, start


class ToyGPT(nn.Module):
    """Decoder-only LM speaking the library's decoding protocol (`encode` / `decode`)."""

    config: ToyGPTConfig

    def setup(self):
        cfg = self.config
        self.wte = nn.Embed(
            cfg.vocab_size, cfg.emb_dim, embedding_init=nn.initializers.normal(0.02)
        )
        self.wpe = nn.Embed(
            cfg.max_positions, cfg.emb_dim, embedding_init=nn.initializers.normal(0.01)
        )
        self.blocks = [ToyBlock(cfg, name=f"h_{i}") for i in range(cfg.num_layers)]
        self.ln_f = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon)
        self.cursor = CachePosition()

    def _run(self, tokens, positions, decode):
        x = self.wte(tokens) + self.wpe(positions)[None]
        for block in self.blocks:
            x = block(x, positions, decode)
        return self.wte.attend(self.ln_f(x))

    def __call__(self, encoder_tokens, decoder_tokens, enable_dropout: bool = False):
        """The seq2seq objective's signature; a decoder-only model ignores the encoder side."""
        del encoder_tokens, enable_dropout
        return self._run(decoder_tokens, jnp.arange(decoder_tokens.shape[1]), decode=False)

    def encode(self, input_ids, mask=None):
        del mask
        return jnp.zeros((input_ids.shape[0], 1, self.config.emb_dim))

    def decode(self, encoded, mask, tokens, decode: bool = False):
        del encoded, mask
        length = tokens.shape[1]
        if not decode:
            return self._run(tokens, jnp.arange(length), decode=False)
        is_new, start = self.cursor(length)
        if is_new:  # cache creation: shapes only
            return self._run(tokens, jnp.arange(length), decode=True)
        return self._run(tokens, start + jnp.arange(length), decode=True)


def _init_args(cfg):
    ids = jnp.ones((1, 4), jnp.int32)
    return ids, ids


def _rules(cfg: ToyGPTConfig) -> mapping.RuleTable:
    d, v, p = cfg.emb_dim, cfg.vocab_size, cfg.max_positions
    rules = [
        mapping.Rule("transformer.wte.weight", "wte/embedding", (v, d), (v, d)),
        mapping.Rule("transformer.wpe.weight", "wpe/embedding", (p, d), (p, d)),
        mapping.Rule("transformer.ln_f.weight", "ln_f/scale", (d,), (d,)),
        mapping.Rule("transformer.ln_f.bias", "ln_f/bias", (d,), (d,)),
    ]
    for i in range(cfg.num_layers):
        hf, jx = f"transformer.h.{i}", f"h_{i}"
        for norm in ("ln_1", "ln_2"):
            rules.append(mapping.Rule(f"{hf}.{norm}.weight", f"{jx}/{norm}/scale", (d,), (d,)))
            rules.append(mapping.Rule(f"{hf}.{norm}.bias", f"{jx}/{norm}/bias", (d,), (d,)))
        for hf_name, jx_name, fan_in, fan_out in (
            ("attn.c_attn", "c_attn", d, 3 * d),
            ("attn.c_proj", "c_proj", d, d),
            ("mlp.c_fc", "c_fc", d, 4 * d),
            ("mlp.c_proj", "c_proj_mlp", 4 * d, d),
        ):
            shape = (fan_in, fan_out)  # Conv1D is [in, out], as a flax kernel
            rules.append(
                mapping.Rule(f"{hf}.{hf_name}.weight", f"{jx}/{jx_name}/kernel", shape, shape)
            )
            rules.append(
                mapping.Rule(f"{hf}.{hf_name}.bias", f"{jx}/{jx_name}/bias", (fan_out,), (fan_out,))
            )
    return mapping.RuleTable(tuple(rules), tied={"lm_head.weight": "transformer.wte.weight"})


def _hf_to_params(state, cfg, source="HF state dict"):
    flat = mapping.apply_hf_to_jax(state, _rules(cfg), source)
    return traverse_util.unflatten_dict(flat, sep="/")


def _params_to_hf(params, cfg, source="params"):
    flat = traverse_util.flatten_dict(params, sep="/")
    return mapping.apply_jax_to_hf(flat, _rules(cfg), source)


def _check_params(params, cfg, source="params"):
    want = _rules(cfg).jax_shapes()
    got = {k: tuple(np.shape(x)) for k, x in traverse_util.flatten_dict(params, sep="/").items()}
    if got != want:
        raise mapping.ConversionError(f"{source} is not a {cfg.name} param tree")


def _config_to_hf(cfg):
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.num_heads,
        "n_layer": cfg.num_layers,
        "n_positions": cfg.max_positions,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "activation_function": "gelu_new",
        "bos_token_id": cfg.decoder_start_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": True,
    }


def _config_from_hf(hf, name):
    return ToyGPTConfig(
        name=name,
        vocab_size=hf["vocab_size"],
        emb_dim=hf["n_embd"],
        num_heads=hf["n_head"],
        num_layers=hf["n_layer"],
        max_positions=hf["n_positions"],
        layer_norm_epsilon=hf["layer_norm_epsilon"],
        decoder_start_token_id=hf["bos_token_id"],
        eos_token_id=hf["eos_token_id"],
        pad_token_id=hf["pad_token_id"],
    )


TOY_FAMILY = families.Family(
    name="toy_gpt",
    config_cls=ToyGPTConfig,
    build_model=ToyGPT,
    init_args=_init_args,
    check_params=_check_params,
    relayout=lambda params, cfg, scan: (cfg, dict(params)),  # no scanned stacks
    hf=families.HFConversion(
        architectures=("GPT2LMHeadModel",),
        model_types=("gpt2",),
        config_from_hf=_config_from_hf,
        config_to_hf=_config_to_hf,
        hf_to_params=_hf_to_params,
        params_to_hf=_params_to_hf,
    ),
    param_groups={"decoder": (r"^h_\d+/",), "embeddings": (r"^wte/", r"^wpe/")},
    cache=families.CacheSpec(shared_entries=("position",)),
    architecture_fields=("vocab_size", "emb_dim", "num_heads", "num_layers", "max_positions"),
)


@pytest.fixture(scope="module")
def toy_family():
    families.register(TOY_FAMILY)
    with contextlib.suppress(ValueError):  # registered by an earlier module of this worker
        gin.external_configurable(ToyGPTConfig, module="toy")
    yield TOY_FAMILY
    families.unregister(TOY_FAMILY.name)


@pytest.fixture(scope="module")
def toy_run(toy_family, toy_gin, tmp_path_factory):
    """`codet5p train` of the toy family for 4 steps, then resumed to 6 (same MODEL_DIR)."""
    model_dir = tmp_path_factory.mktemp("toy_family") / "run"
    argv = [
        f"--gin_file={toy_gin}",
        f"--gin.MODEL_DIR='{model_dir}'",
        "--gin.MODEL_CONFIG=@toy.ToyGPTConfig()",
        "--gin.train.save_every=2",
    ]
    assert train_main([*argv, "--gin.TRAIN_STEPS=4"]) == 0
    assert train_main([*argv, "--gin.TRAIN_STEPS=6"]) == 0
    return model_dir


def test_trains_saves_and_resumes_through_the_trainer(toy_run):
    rows = [json.loads(line) for line in (toy_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert max(steps) == 6 and 5 in steps and 6 in steps  # the second run continued from 4
    meta = json.loads((toy_run / "checkpoints" / "6" / "meta" / "metadata").read_text())
    assert meta["model_config"]["family"] == "toy_gpt"
    losses = [r["loss"] for r in rows if "loss" in r]
    assert all(np.isfinite(losses))


def test_from_pretrained_generates_and_exports_like_gpt2(toy_run, tmp_path):
    model = from_pretrained(toy_run)
    assert isinstance(model.config, ToyGPTConfig)
    # Export to HF; transformers' own GPT2LMHeadModel must compute the same logits.
    model.save_pretrained(tmp_path / "hf", format="hf")
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    tokens = np.random.default_rng(0).integers(5, 200, (2, 12)).astype(np.int32)
    ours = np.asarray(model.apply("__call__", jnp.asarray(tokens), jnp.asarray(tokens)))
    with torch.no_grad():
        theirs = hf_model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)

    # Greedy generation with the decoding package equals HF greedy `generate` on the same
    # weights: the prompt is the decoder prefix after the start token. EOS is switched off on
    # both sides (the trained toy model emits it early) so all 8 new tokens are compared.
    prompt = tokens[:1, :6]
    endless = families.build_model(dataclasses.replace(model.config, eos_token_id=-1))
    out = generate(endless, model.params, prompt, max_new_tokens=8, decoder_prefix_ids=prompt)
    start = np.full((1, 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        hf_out = hf_model.generate(
            torch.as_tensor(np.concatenate([start, prompt], 1), dtype=torch.long),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=model.config.pad_token_id,
        ).numpy()[0, 7:]
    assert out.lengths[0, 0] == 8 and hf_out.shape == (8,)
    np.testing.assert_array_equal(out.tokens[0, 0], hf_out)

    # Re-import of the export is bit-exact, through the same loader.
    back = loading.load(tmp_path / "hf")
    assert back.config == dataclasses.replace(model.config, name="hf")
    flat_a = traverse_util.flatten_dict(back.params)
    flat_b = traverse_util.flatten_dict(jax.device_get(model.params))
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        np.testing.assert_array_equal(value, np.asarray(flat_b[key]))


def test_registry_bad_inputs_are_named(toy_family):
    with pytest.raises(families.FamilyError, match="'toy_gpt' is registered twice"):
        families.register(TOY_FAMILY)
    with pytest.raises(families.FamilyError, match="unknown model family 'nope'"):
        families.config_from_dict({"family": "nope"}, "cfg.json")
    saved = families.config_to_dict(ToyGPTConfig())
    with pytest.raises(
        families.FamilyError, match=r"cfg.json: fields \['rope_theta'\] are unknown"
    ):
        families.config_from_dict({**saved, "rope_theta": 1e4}, "cfg.json")
    assert families.config_from_dict(saved) == ToyGPTConfig()
