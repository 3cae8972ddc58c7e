"""`from_pretrained(path)`: a released (HF) or converted (orbax) checkpoint, ready to run.

    model = codet5p_jax.from_pretrained("Salesforce/codet5p-220m downloaded dir")
    logits = model.logits(input_ids, decoder_input_ids)        # [B, T, V] float32
    hidden = model.encode(input_ids)                           # [B, S, D]
    vecs = model.embed(input_ids)                              # [B, E] (embedding / bimodal)
    model.save_pretrained("out", format="hf")
    model.generate_text(["def add(a, b):"], max_new_tokens=32)   # ["  return a + b", ...]
    model.embed_text(["sort a list"], max_length=64)            # [1, E] numpy
    model.tokenizer.encode("x = 1")                              # the checkpoint's vocabulary

Text goes through the checkpoint's own tokenizer files (`tokenizer_dir`; `codet5p convert`
exports them), loaded on first use as the project's CodeT5 vocabulary (`tasks.vocabularies`,
imported lazily so the id-level API never pays for TensorFlow/seqio).
"""

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

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

    def __init__(self, config, params, tokenizer_dir: pathlib.Path | None = None, source=None):
        self.config = config
        self.params = params
        self.model = families.build_model(config)
        self.tokenizer_dir = tokenizer_dir
        self.source = source

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

    @functools.cached_property
    def tokenizer(self):
        """The checkpoint's vocabulary (`encode(str) -> ids`, `decode(ids) -> str`).

        Raises:
          ValueError: The checkpoint has no tokenizer files (the message names `--tokenizer`).
        """
        return load_vocabulary(self.tokenizer_dir, self.source or "this checkpoint")

    def encode_text(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """`[B, max_length]` int32 ids `<s> ... </s>` (as the released HF tokenizers frame text),
        truncated to keep `</s>`, right-padded."""
        if max_length < 3:
            raise ValueError(
                f"max_length must leave room for <s>, a token and </s>, got {max_length}"
            )
        vocab = self.tokenizer
        out = np.full((len(texts), max_length), self.config.pad_token_id, np.int32)
        for i, text in enumerate(texts):
            ids = [vocab.bos_id] + list(vocab.encode(text))[: max_length - 2] + [vocab.eos_id]
            out[i, : len(ids)] = ids
        return out

    def decode_ids(self, ids) -> str:
        """Text of generated ids, cut at the first EOS or pad."""
        stop = (self.config.eos_token_id, self.config.pad_token_id)
        kept = []
        for t in np.asarray(ids).tolist():
            if t in stop:
                break
            kept.append(t)
        return self.tokenizer.decode(kept)

    def generate_text(
        self,
        prompts: str | Sequence[str],
        *,
        max_input_length: int = 512,
        decoder_prefix: str | None = None,
        **options,
    ) -> list[str] | list[list[str]]:
        """Text in, text out: completions of each prompt (the CodeT5+ encoder-decoder recipe).

        Args:
          prompts: A prompt or a list of prompts (encoded as `<s> ids </s>`, truncated to
            `max_input_length`).
          max_input_length: Prompt tokens kept (the released tokenizers' 512).
          decoder_prefix: Text fed to the decoder before generating (not in the output).
          **options: `codet5p_jax.decoding.generate` options (`max_new_tokens` required,
            `method`, `num_beams`, `temperature`, `num_samples`, `seed`, ...).

        Returns:
          One string per prompt; with several beams or samples, a list per prompt, best beam
          first. A single string prompt gives a list of one.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("generate_text needs non-empty prompts")
        ids = self.encode_text(prompts, max_input_length)
        width = int((ids != self.config.pad_token_id).sum(axis=1).max())
        ids = ids[:, :width]
        if decoder_prefix:
            prefix = list(self.tokenizer.encode(decoder_prefix))
            options["decoder_prefix_ids"] = np.tile(np.asarray([prefix], np.int32), (len(ids), 1))
        out = self.generate(ids, **options)
        texts = [[self.decode_ids(seq) for seq in row] for row in np.asarray(out.tokens)]
        return [row[0] for row in texts] if out.tokens.shape[1] == 1 else texts

    def embed_text(self, texts: Sequence[str], max_length: int = 64) -> np.ndarray:
        """`[B, E]` unit vectors of `texts` (64 tokens: the retrieval scripts' text length)."""
        if not self.config.embed_dim:
            raise ValueError(f"A {self.config.kind!r} model has no embedding head.")
        return np.asarray(self.embed(self.encode_text(texts, max_length)))

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


TOKENIZER_HINT = "pass --tokenizer DIR (a directory with tokenizer.json or vocab.json + merges.txt)"


def has_tokenizer_files(directory) -> bool:
    """Whether `directory` holds a `tokenizer.json` or a `vocab.json` + `merges.txt` pair."""
    if directory is None:
        return False
    d = epath.Path(directory)  # gs:// too (a run's default tokenizer may live in a bucket)
    return (d / "tokenizer.json").is_file() or any(
        (d / f"{p}vocab.json").is_file() and (d / f"{p}merges.txt").is_file()
        for p in ("", "codet5-")
    )


def load_vocabulary(tokenizer_dir, source="the checkpoint"):
    """The CodeT5 vocabulary of a checkpoint's tokenizer directory, loaded now.

    Args:
      tokenizer_dir: The checkpoint's tokenizer directory (or a user's `--tokenizer`), or None.
      source: What to name in the error (the model path).

    Raises:
      ValueError: No tokenizer files there (the message says to pass `--tokenizer`), or files
        that do not have the CodeT5 layout.
    """
    if not has_tokenizer_files(tokenizer_dir):
        where = f"{tokenizer_dir}" if tokenizer_dir is not None else f"{source}"
        raise ValueError(f"{where}: no tokenizer files; {TOKENIZER_HINT}")
    from tasks.vocabularies import CodeT5Vocabulary  # heavy (seqio, TF): only on first use

    vocabulary = CodeT5Vocabulary(tokenizer_dir)
    _ = vocabulary.tokenizer  # load now, so a bad file is reported here
    return vocabulary


def _mask(mask):
    return None if mask is None else jnp.asarray(mask).astype(bool)


def from_pretrained(
    path,
    *,
    param_dtype: str | None = None,
    scan_layers: bool | None = None,
    tokenizer_dir=None,
):
    """Loads an HF model directory, an orbax checkpoint directory or a training MODEL_DIR.

    Args:
      path: Checkpoint directory (layout detected; see `codet5p_jax.loading`).
      param_dtype: Cast params to this dtype ("float32", "bfloat16"); default the config's
        `param_dtype` (float32 for HF sources, so the released fp16 weights are upcast).
      scan_layers: Use the scanned (True) or unscanned (False) layout; None keeps the stored one.
      tokenizer_dir: Tokenizer files to use instead of the checkpoint's own.

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
    return Pretrained(cfg, params, tokenizer_dir or ckpt.tokenizer_dir, source=str(path))
