"""codet5p_jax: CodeT5+ in JAX/Flax."""

from codet5p_jax.config import PRESETS, T5Config, get_preset

__all__ = ["PRESETS", "T5Config", "get_preset", "from_pretrained"]


def from_pretrained(path, **kwargs):
    """Loads an HF directory, an orbax checkpoint or a training MODEL_DIR (see `pretrained.py`)."""
    from codet5p_jax.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(path, **kwargs)
