"""Tokenizer files written into exported checkpoints, as HF `save_pretrained` writes them.

A training run (`MODEL_DIR`) stores no tokenizer: its tasks used the project's default CodeT5
vocabulary (`tasks.vocabularies.tokenizer_path`: the run's gin binding, else
`CODET5P_TOKENIZER_DIR`, else the stdlib-trained BPE). `codet5p convert` exports that vocabulary
with the weights, so the HF / orbax directory is usable by `retrieval`, `embed`, `generate` and
`from_pretrained` on its own:

* `tokenizer.json`: the full vocabulary as loaded (BPE, padding `<reserved_K>` ids, sentinels,
  stage-2 tokens), readable by `tokenizers` and HF fast tokenizers with identical ids;
* `vocab.json` + `merges.txt`: the BPE files (also from CodeT5's `codet5-vocab.json` /
  `codet5-merges.txt` names);
* `tokenizer_config.json` + `special_tokens_map.json`: the RoBERTa-style special tokens of the
  released CodeT5+ checkpoints.
"""

import json
import pathlib
import re
import tempfile

from etils import epath

_BINDING = re.compile(r"^\s*tokenizer_path\.path\s*=\s*(['\"])(.+?)\1\s*$", re.M)
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def run_tokenizer_dir(step_dir) -> tuple[epath.Path, str]:
    """`(directory, how it was found)` of the vocabulary a training run used.

    Args:
      step_dir: The run's `checkpoints/<step>` directory (`loading.resolve`'s answer).
    """
    from tasks.vocabularies import tokenizer_path

    model_dir = epath.Path(step_dir).parent.parent  # gs:// too
    for name in ("config.gin", "operative_config.gin"):
        gin_file = model_dir / name
        if gin_file.is_file():
            match = _BINDING.search(gin_file.read_text(encoding="utf-8"))
            if match:
                return epath.Path(match.group(2)), f"the run's binding in {gin_file}"
    return tokenizer_path(), "the default tokenizer (the run bound none)"


def write_tokenizer_files(src_dir, dst_dir) -> list[str]:
    """Writes the tokenizer files of `src_dir`'s CodeT5 vocabulary into `dst_dir`.

    Raises:
      ValueError: `src_dir` has no tokenizer files, or not the CodeT5 layout.
    """
    from codet5p_jax.pretrained import load_vocabulary

    src_dir, dst_dir = epath.Path(src_dir), pathlib.Path(dst_dir)  # src may be gs://
    vocabulary = load_vocabulary(src_dir, str(src_dir))
    written = []
    for vocab, merges in (("vocab.json", "merges.txt"), ("codet5-vocab.json", "codet5-merges.txt")):
        if (src_dir / vocab).is_file() and (src_dir / merges).is_file():
            (src_dir / vocab).copy(dst_dir / "vocab.json")  # HF's names
            (src_dir / merges).copy(dst_dir / "merges.txt")
            written += ["vocab.json", "merges.txt"]
            break
    vocabulary.tokenizer.save(str(dst_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "RobertaTokenizer",
        "model_max_length": 512,
        "add_prefix_space": False,
        **SPECIAL_TOKENS,
    }
    (dst_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (dst_dir / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n")
    return written + ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def staged_tokenizer_dir(src_dir) -> tempfile.TemporaryDirectory:
    """A temporary directory holding `write_tokenizer_files(src_dir)` (caller cleans it up)."""
    tmp = tempfile.TemporaryDirectory(prefix="codet5p_tokenizer_")
    write_tokenizer_files(src_dir, tmp.name)
    return tmp
