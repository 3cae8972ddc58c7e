"""`from_pretrained(path)`: a released (HF) or converted (orbax) checkpoint, ready to run.

    model = codet5p_jax.from_pretrained("Salesforce/codet5p-220m downloaded dir")
    logits = model.logits(input_ids, decoder_input_ids)        # [B, T, V] float32
    hidden = model.encode(input_ids)                           # [B, S, D]
    vecs = model.embed(input_ids)                              # [B, E] (embedding / bimodal)
    model.save_pretrained("out", format="hf")

The class stays small on purpose: generation and text inputs are added by other modules through
`Pretrained.apply`, which runs any model method under one cached `jax.jit`.
"""

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from codet5p_jax import families, loading
from codet5p_jax.decoding.generate import GenerateOutput, generate


class Pretrained:
    """A model config, its params on device, and jitted entry points.

    Attributes:
      config: The model config (any registered family's).
      params: Param tree of jax arrays, in `config.param_dtype`.
      model: The Linen module (`families.build_model(config)`).
      tokenizer_dir: Directory with the checkpoint's tokenizer files, or None.
    """

    def __init__(self, config, params, tokenizer_dir: pathlib.Path | None = None):
        self.config = config
        self.params = params
        self.model = families.build_model(config)
        self.tokenizer_dir = tokenizer_dir

    @functools.cached_property
    def _jitted(self):
        # One jit per model method; the method name and keyword flags are static.
        def run(params, args, method, kwargs):
            return self.model.apply(
                {"params": params}, *args, method=getattr(self.model, method), **dict(kwargs)
            )

        return jax.jit(run, static_argnums=(2, 3))

    def apply(self, method: str, *args, **static_kwargs):
        """Runs `model.<method>(*args, **static_kwargs)` jitted with `self.params`.

        Args:
          method: Name of a model method (`"__call__"`, `"encode"`, `"decode"`, `"embed"`, ...).
          *args: Array arguments (traced).
          **static_kwargs: Hashable keyword arguments (static; e.g. `return_hidden=True`).
        """
        return self._jitted(self.params, args, method, tuple(sorted(static_kwargs.items())))

    def logits(
        self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None
    ):
        """[B, S] encoder ids, [B, T] decoder ids -> [B, T, V] float32 logits (teacher forcing).

        `attention_mask` ([B, S], 1 = real token) defaults to `input_ids != pad`. The decoder is
        causal; `decoder_attention_mask` additionally hides padded decoder keys, as HF does.
        """
        if not self.config.has_decoder:
            raise ValueError(f"A {self.config.kind!r} model has no decoder: use encode/embed.")
        args = [jnp.asarray(input_ids), jnp.asarray(decoder_input_ids), _mask(attention_mask)]
        args.append(_mask(decoder_attention_mask))
        return self.apply("__call__", *args)

    def encode(self, input_ids, attention_mask=None):
        """[B, S] ids -> [B, S, D] final encoder states."""
        return self.apply("encode", jnp.asarray(input_ids), _mask(attention_mask))

    def embed(self, input_ids, attention_mask=None):
        """[B, S] ids -> [B, E] L2-normalised first-token embeddings (embedding / bimodal)."""
        if not self.config.embed_dim:
            raise ValueError(f"A {self.config.kind!r} model has no embedding head.")
        return self.apply("embed", jnp.asarray(input_ids), _mask(attention_mask))

    def generate(self, input_ids, attention_mask=None, **options) -> GenerateOutput:
        """Greedy / beam / sampled continuations; options as `codet5p_jax.decoding.generate`."""
        return generate(self.model, self.params, input_ids, attention_mask, **options)

    def save_pretrained(self, path, format: str = "hf") -> None:  # noqa: A002 (HF's name)
        """Writes the model as a new HF (`format="hf"`) or orbax directory at `path`.

        Raises:
          ConversionError: If `path` exists (nothing is overwritten) or `format` is unknown.
        """
        params = jax.tree.map(np.asarray, jax.device_get(self.params))
        loading.save(path, self.config, params, format, self.tokenizer_dir)


def _mask(mask):
    return None if mask is None else jnp.asarray(mask).astype(bool)


def from_pretrained(path, *, param_dtype: str | None = None, scan_layers: bool | None = None):
    """Loads an HF model directory, an orbax checkpoint directory or a training MODEL_DIR.

    Args:
      path: Checkpoint directory (layout detected; see `codet5p_jax.loading`).
      param_dtype: Cast params to this dtype ("float32", "bfloat16"); default the config's
        `param_dtype` (float32 for HF sources, so the released fp16 weights are upcast).
      scan_layers: Use the scanned (True) or unscanned (False) layout; None keeps the stored one.

    Returns:
      A `Pretrained` with params on the default device.

    Raises:
      ConversionError: On a missing, unreadable or inconsistent checkpoint.
    """
    ckpt = loading.load(path, scan_layers=scan_layers)
    cfg = ckpt.config
    if param_dtype is not None:
        cfg = dataclasses.replace(cfg, param_dtype=param_dtype)
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.dtype(cfg.param_dtype)), ckpt.params)
    return Pretrained(cfg, params, ckpt.tokenizer_dir)
