"""Tiny HF checkpoints of every CodeT5+ T5-family kind, written the way the released ones are.

* "t5": `T5ForConditionalGeneration.save_pretrained` (safetensors, only `shared.weight` of the
  tied embeddings, as transformers 5 writes it).
* "embedding": `T5EncoderModel` + `proj` (`nn.Linear(D, E)`), `torch.save`d as
  `pytorch_model.bin` with the tied `encoder.embed_tokens.weight` copy, like the released
  `CodeT5p_Embedding` (FACTS §3.2).
* "bimodal": `T5ForConditionalGeneration` + `proj` + `itm_head`, `torch.save`d with all tied
  copies, like `CodeT5pBimodalModel` (FACTS §3.3).

Dimensions are deliberately uneven (3 heads x 8 != d_model 16; 2 encoder / 3 decoder blocks; 8
buckets) so a wrong reshape or transpose cannot pass by symmetry.
"""

import dataclasses
import json

import torch
import transformers

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
    # Non-trivial values everywhere (layer norms are ones at init) so every mapped tensor matters.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def build_reference(kind: str, seed: int = 0) -> TorchReference:
    """Random tiny torch modules of `kind` (fp32, eval mode)."""
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
    """Writes `ref` as a released-style HF directory at `path` (see the module docstring)."""
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
