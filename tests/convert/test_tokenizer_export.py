"""`codet5p convert` exports tokenizer files with the weights, as HF `save_pretrained` does, so
an exported training run is usable by `retrieval` / `embed` / `from_pretrained` on its own."""

import json

import flax.linen as nn
import jax
import pytest

from codet5p_jax import checkpointing, from_pretrained, loading
from codet5p_jax.cli import convert as convert_cli
from codet5p_jax.cli import retrieval as retrieval_cli
from codet5p_jax.config import get_preset
from codet5p_jax.models import init_params

TEXTS = ["def add(a, b):\n    return a + b", "sort a list in place <extra_id_0> [ENC]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = get_preset("tiny-bimodal")
    params = jax.device_get(nn.unbox(init_params(cfg, jax.random.PRNGKey(0))))
    path = tmp_path_factory.mktemp("run") / "model_dir"
    checkpointing.save_params(path, params, cfg, step=3)
    return path


def _same_vocabulary(exported_dir, reference_dir):
    from tasks.vocabularies import CodeT5Vocabulary

    ref = CodeT5Vocabulary(reference_dir)
    got = from_pretrained(exported_dir).tokenizer
    for text in TEXTS:
        assert got.encode(text) == ref.encode(text)
    assert got.tokenizer.token_to_id("[CDEC]") == 32102
    assert got.tokenizer.get_vocab_size() == ref.tokenizer.get_vocab_size()


@pytest.mark.parametrize("to", ["hf", "orbax"])
def test_run_export_carries_the_runs_bound_tokenizer(run_dir, codet5_tokenizer_dir, tmp_path, to):
    (run_dir / "config.gin").write_text(f"tokenizer_path.path = '{codet5_tokenizer_dir}'\n")
    dst = tmp_path / "out"
    assert convert_cli.main([str(run_dir), str(dst), "--to", to]) == 0
    tok_dir = dst if to == "hf" else dst / "tokenizer"
    names = {p.name for p in tok_dir.iterdir()}
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= names
    assert json.loads((tok_dir / "special_tokens_map.json").read_text())["eos_token"] == "</s>"
    _same_vocabulary(dst, codet5_tokenizer_dir)
    (run_dir / "config.gin").unlink()


def test_run_without_binding_exports_the_default_tokenizer(
    run_dir, codet5_tokenizer_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))
    assert convert_cli.main([str(run_dir), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert "default tokenizer" in capsys.readouterr().out
    _same_vocabulary(tmp_path / "hf", codet5_tokenizer_dir)
    # The exported directory works for retrieval without --tokenizer.
    data = tmp_path / "pairs.jsonl"
    rows = [{"text": f"return {i}", "code": f"def f{i}(): return {i}"} for i in range(3)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["--model", str(tmp_path / "hf"), "--data", str(data), "--text-length", "8"]
    assert retrieval_cli.main(args + ["--code-length", "16"]) == 0


def test_checkpoint_without_tokenizer_names_the_flag(run_dir, tmp_path, capsys):
    ckpt = loading.load(run_dir)
    loading.save(tmp_path / "bare", ckpt.config, ckpt.params, "hf")  # no tokenizer files
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"text": "a", "code": "b"}) + "\n")
    assert retrieval_cli.main(["--model", str(tmp_path / "bare"), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer files" in err and "--tokenizer" in err and len(err.splitlines()) == 1
