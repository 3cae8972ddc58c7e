"""`generate` rejects bad arguments with errors that name the offending value."""

import jax
import numpy as np
import pytest

from codet5p_jax.config import get_preset
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models import build_model, init_params

IDS = np.array([[5, 6, 7, 8], [9, 10, 0, 0]])


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny", vocab_size=64)
    return build_model(cfg), jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(0)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="topk"), r"Unknown decoding method 'topk'"),
        (dict(method="beam", num_beams=0), r"num_beams must be >= 1; got 0"),
        (dict(method="sample", num_samples=0), r"num_samples must be >= 1; got 0"),
        (dict(max_new_tokens=0), r"max_new_tokens must be >= 1; got 0"),
        (dict(max_input_length=3), r"Prompt 0 has 4 tokens, more than max_input_length=3"),
        (dict(method="sample", temperature=0.0), r"temperature must be > 0.*got 0.0"),
        (dict(method="sample", top_p=1.5), r"top_p must be in \(0, 1\]; got 1.5"),
        (dict(method="sample", top_k=-2), r"top_k must be >= 0; got -2"),
        (dict(early_stopping="sometimes"), r"early_stopping .* got 'sometimes'"),
        (dict(stop_token_ids=[[]]), r"Stop sequences must be non-empty"),
        (dict(decoder_prefix_ids=np.array([[4]])), r"decoder_prefix_ids has 1 rows .* 2"),
        (dict(decoder_prefix_ids=np.array([[0, 4], [4, 4]])), r"right-padded"),
        (
            dict(decoder_prefix_ids=np.array([[4], [4]]), decoder_prefix_mask=np.ones((2, 2))),
            r"decoder_prefix_mask shape \(2, 2\)",
        ),
        (dict(attention_mask=np.ones((2, 3))), r"attention_mask shape \(2, 3\)"),
    ],
)
def test_bad_arguments(tiny, kwargs, message):
    model, params = tiny
    kwargs = {"max_new_tokens": 4, **kwargs}
    mask = kwargs.pop("attention_mask", None)
    with pytest.raises(ValueError, match=message):
        generate(model, params, IDS, mask, **kwargs)


def test_bad_prompt_array(tiny):
    model, params = tiny
    with pytest.raises(ValueError, match=r"input_ids .* shape \(4,\)"):
        generate(model, params, IDS[0], max_new_tokens=2)


def test_encoder_only_model_cannot_generate():
    cfg = get_preset("codet5p-110m-embedding")
    with pytest.raises(ValueError, match="'embedding' has no decoder"):
        generate(build_model(cfg), {}, IDS, max_new_tokens=2)
