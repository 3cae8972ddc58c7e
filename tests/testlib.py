"""Helpers shared by test modules (not fixtures: those stay in the conftest.py files).

Test modules import it as `testlib`: pytest puts tests/ on sys.path for tests/conftest.py.
torch and transformers are imported inside the helpers that need them, so the data tests that
only use the literal samples do not load them.

* Data samples: `STDLIB_FILES`, `SAMPLE_MODULES`, `PY_SOURCE`, `GO_SOURCE`, `JAVA_SOURCE`.
* Tiny released-style HF checkpoints (tests/convert): `SMALL`, `EMBED_DIM`, `KINDS`,
  `TOKENIZER_FILES`, `TorchReference`, `build_reference`, `released_config`, `write_hf_dir`.
* Paired HF torch / JAX models for decoding parity (tests/decoding): `SMALL_DIMS`, `make_pair`,
  `hf_generate`, `padded_prompts`.
* Stage-2 batches (tests/objectives): `make_bimodal_batch`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------------------------------
# Data samples (tests/tasks)
# ---------------------------------------------------------------------------------------------
STDLIB_FILES = 150  # stdlib corpus cap for the tests (first files in sorted order)

# Real files of this interpreter's stdlib used as tokenizer samples (fixed list: deterministic).
SAMPLE_MODULES = (
    "json/decoder.py",
    "textwrap.py",
    "heapq.py",
    "bisect.py",
    "fnmatch.py",
    "colorsys.py",
    "string.py",
    "shlex.py",
    "difflib.py",
    "calendar.py",
    "glob.py",
    "keyword.py",
)


PY_SOURCE = '''import os


def join_all(parts, sep="/"):
    """Join path parts with a separator.

    Empty parts are skipped.
    """
    out = [p for p in parts if p]
    return sep.join(out)


def one_liner():
    """Only a docstring, no body."""


class Walker:
    def walk(self, root):
        """Walk a directory tree and yield files."""
        for dirpath, _, names in os.walk(root):
            for n in names:
                yield os.path.join(dirpath, n)
'''
GO_SOURCE = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n'
JAVA_SOURCE = "class A {\n  int f(int x) {\n    return x + 1;\n  }\n}\n"


# ---------------------------------------------------------------------------------------------
# Tiny HF checkpoints of every CodeT5+ T5-family kind, written the way the released ones are
# (tests/convert).
#
# * "t5": `T5ForConditionalGeneration.save_pretrained` (safetensors, only `shared.weight` of the
#   tied embeddings, as transformers 5 writes it).
# * "embedding": `T5EncoderModel` + `proj` (`nn.Linear(D, E)`), `torch.save`d as
#   `pytorch_model.bin` with the tied `encoder.embed_tokens.weight` copy, like the released
#   `CodeT5p_Embedding` (FACTS §3.2).
# * "bimodal": `T5ForConditionalGeneration` + `proj` + `itm_head`, `torch.save`d with all tied
#   copies, like `CodeT5pBimodalModel` (FACTS §3.3).
#
# Dimensions are deliberately uneven (3 heads x 8 != d_model 16; 2 encoder / 3 decoder blocks; 8
# buckets) so a wrong reshape or transpose cannot pass by symmetry.
# ---------------------------------------------------------------------------------------------
SMALL = dict(
    vocab_size=61,
    d_model=16,
    d_kv=8,
    num_heads=3,
    d_ff=40,
    num_layers=2,
    num_decoder_layers=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    feed_forward_proj="relu",
    dropout_rate=0.0,
    decoder_start_token_id=0,
)
EMBED_DIM = 12
KINDS = ("t5", "embedding", "bimodal")
TOKENIZER_FILES = {"vocab.json": '{"a": 0}\n', "merges.txt": "#version: 0.2\n"}


@dataclasses.dataclass
class TorchReference:
    """The torch modules a tiny checkpoint was written from."""

    kind: str
    t5: torch.nn.Module  # T5ForConditionalGeneration, or T5EncoderModel for "embedding"
    proj: torch.nn.Linear | None = None
    itm_head: torch.nn.Linear | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = dict(self.t5.state_dict())
        for name in ("proj", "itm_head"):
            if getattr(self, name) is not None:
                state.update(
                    {f"{name}.{k}": v for k, v in getattr(self, name).state_dict().items()}
                )
        return state


def _randomize(*modules, seed: int):
    import torch

    # Non-trivial values everywhere (layer norms are ones at init) so every mapped tensor matters.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def build_reference(kind: str, seed: int = 0) -> TorchReference:
    """Random tiny torch modules of `kind` (fp32, eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    if kind == "embedding":
        cfg = transformers.T5Config(**{**SMALL, "num_decoder_layers": 0})
        ref = TorchReference(kind, transformers.T5EncoderModel(cfg))
    else:
        ref = TorchReference(
            kind, transformers.T5ForConditionalGeneration(transformers.T5Config(**SMALL))
        )
    if kind != "t5":
        ref.proj = torch.nn.Linear(SMALL["d_model"], EMBED_DIM)
    if kind == "bimodal":
        ref.itm_head = torch.nn.Linear(SMALL["d_model"], 2)
    modules = [m for m in (ref.t5, ref.proj, ref.itm_head) if m is not None]
    _randomize(*modules, seed=seed)
    for m in modules:
        m.eval()
    return ref


def released_config(kind: str) -> dict:
    """config.json of the released layout for a tiny `kind` model (FACTS §3.1-3.3)."""
    hf = {**SMALL, "architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}
    if kind == "embedding":
        hf.update(architectures=["CodeT5p_Embedding"], model_type="codet5p_embedding")
        hf["embed_dim"] = EMBED_DIM
        del hf["num_decoder_layers"]
    if kind == "bimodal":
        hf.update(architectures=["CodeT5pBimodalModel"], model_type="codet5p_bimodal")
        hf["embed_dim"] = EMBED_DIM
    return hf


def write_hf_dir(ref: TorchReference, path, tokenizer: bool = True):
    """Writes `ref` as a released-style HF directory at `path` (see the section comment)."""
    import torch

    if ref.kind == "t5":
        ref.t5.save_pretrained(path)
    else:
        path.mkdir()
        (path / "config.json").write_text(json.dumps(released_config(ref.kind)))
        torch.save(ref.state_dict(), path / "pytorch_model.bin")
    if tokenizer:
        for name, text in TOKENIZER_FILES.items():
            (path / name).write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Paired random models for decoding parity: an HF torch T5 and the same weights in JAX
# (tests/decoding).
#
# A freshly initialised HF T5 decodes degenerately (the residual stream is dominated by the input
# embedding, so greedy repeats the start token forever), which would make token equality vacuous.
# `make_pair` therefore redraws the weights (small embeddings, large projections, unit relative
# biases) so that continuations vary and, with a small vocabulary, EOS is actually produced.
# ---------------------------------------------------------------------------------------------

# Preset structure shrunk to CPU-test size: (emb_dim, num_heads, head_dim, mlp_dim, layers).
SMALL_DIMS = {
    "codet5p-220m": (48, 6, 8, 192, 2),
    "codet5p-770m": (64, 8, 8, 256, 3),
}


@functools.cache
def make_pair(
    preset: str,
    vocab_size: int | None = None,
    scan_layers: bool = False,
    eos_boost=1.3,
    emb_std=1.0,
    seed=0,
):
    """Returns `(hf_model, jax_model, params, cfg)` sharing one set of random weights."""
    import torch
    import transformers

    from codet5p_jax.config import get_preset, to_hf_config
    from codet5p_jax.convert.hf_t5 import hf_to_params
    from codet5p_jax.models import build_model

    emb, heads, head_dim, mlp, layers = SMALL_DIMS[preset]
    overrides = dict(
        emb_dim=emb,
        num_heads=heads,
        head_dim=head_dim,
        mlp_dim=mlp,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        dropout_rate=0.0,
        scan_layers=scan_layers,
    )
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    cfg = get_preset(preset, **overrides)
    torch.manual_seed(seed)
    hf_cfg = transformers.T5Config(**to_hf_config(cfg))
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "shared" in name:
                p.normal_(0.0, emb_std)
                p[cfg.eos_token_id] *= eos_boost  # a larger EOS logit, so hypotheses end
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
            elif p.ndim == 2:
                p.normal_(0.0, 4.0 / p.shape[1] ** 0.5)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = hf_to_params(state, cfg)
    return hf, build_model(cfg), params, cfg


def hf_generate(hf, input_ids, attention_mask, **kwargs):
    """HF `generate` on numpy inputs; returns the output object (dict form)."""
    import torch

    with torch.no_grad():
        return hf.generate(
            torch.tensor(np.asarray(input_ids), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(attention_mask), dtype=torch.long),
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )


def padded_prompts(vocab_size: int, batch: int = 3, length: int = 9, seed: int = 0):
    """Random prompts without special ids; row 1 is right-padded, row 2 left-padded."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (batch, length))
    mask = np.ones_like(ids)
    if batch > 1:
        mask[1, length - 3 :] = 0
    if batch > 2:
        mask[2, :2] = 0
    return np.where(mask == 1, ids, 0), mask


# ---------------------------------------------------------------------------------------------
# Stage-2 (bimodal) batches (tests/objectives)
# ---------------------------------------------------------------------------------------------
BIMODAL_TEXT_LENGTH, BIMODAL_CODE_LENGTH = 8, 12
# The stage-2 decoder start tokens (FACTS §3.4): [TDEC] = 32101, [CDEC] = 32102.
TDEC, CDEC = 32101, 32102


def make_bimodal_batch(seed: int, ids=None, bsz: int = 4) -> dict[str, np.ndarray]:
    """Random `[CLS] ... </s>` texts and codes of varied lengths, with shifted decoder features.

    Texts are `BIMODAL_TEXT_LENGTH`, codes `BIMODAL_CODE_LENGTH` wide; `ids` become `pair_ids`.
    """
    rng = np.random.default_rng(seed)
    text_len, code_len = BIMODAL_TEXT_LENGTH, BIMODAL_CODE_LENGTH
    text = np.zeros((bsz, text_len), np.int32)
    code = np.zeros((bsz, code_len), np.int32)
    for i in range(bsz):
        nt, nc = rng.integers(2, text_len - 1), rng.integers(3, code_len - 1)
        text[i, : nt + 2] = [1, *rng.integers(5, 32000, nt), 2]
        code[i, : nc + 2] = [1, *rng.integers(5, 32000, nc), 2]
    batch = dict(text_tokens=text, code_tokens=code)
    for prefix, start, seq in (("text_to_code", CDEC, code), ("code_to_text", TDEC, text)):
        target = np.concatenate([seq[:, 1:], np.zeros((bsz, 1), np.int32)], axis=1)
        dec_in = np.concatenate([np.full((bsz, 1), start, np.int32), target[:, :-1]], axis=1)
        batch[f"{prefix}_decoder_input_tokens"] = dec_in
        batch[f"{prefix}_decoder_target_tokens"] = target
        batch[f"{prefix}_decoder_loss_weights"] = (target != 0).astype(np.int32)
    if ids is not None:
        batch["pair_ids"] = np.asarray(ids, np.int32)
    return batch
