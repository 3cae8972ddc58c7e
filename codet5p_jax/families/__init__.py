"""The model-family registry: everything above the networks reaches a family through it.

A family is one `Family` record: its frozen config class, its network builder, its HF
conversion (`HFConversion`), its scanned <-> unscanned relayout, the logical-axis rules it adds,
its named parameter groups (what optimizer masks and freezing select) and how decoding finds
its caches. The trainer, checkpointing, the loader, the façade, decoding, evaluation and the
commands never import a family's modules; they ask `family_of(config)` or `get(name)`.

Saved configs (training metadata, orbax exports) are `config_to_dict(cfg)`: the dataclass
fields plus a `"family"` tag, read back by `config_from_dict` with one policy: an unknown tag or
a field this version does not know is an error that names it (a config from a newer version
must not be half-read).

The built-in families register on import of this package (`families/t5.py`); a new family is a
module that builds a `Family` and calls `register` (see CONTRIBUTING.md, "Adding a family").
"""

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

FAMILY_KEY = "family"
# Saved configs written before the registry existed carry no tag: they are all T5-family.
LEGACY_FAMILY = "t5"


class FamilyError(ValueError):
    """An unknown, duplicate or inconsistent model family or family config."""


@dataclasses.dataclass(frozen=True)
class HFConversion:
    """How a family's params and config map to a Hugging Face `transformers` directory.

    Attributes:
      architectures: `config.json` `architectures` values this family reads (the first one
        of a config's kind is written by `config_to_hf`).
      config_from_hf: `(hf_config_dict, name) -> config`; raises ValueError / KeyError.
      config_to_hf: `config -> hf_config_dict` of the released layout.
      hf_to_params: `(state_dict, config, source) -> nested params` (layout per the config).
      params_to_hf: `(params, config, source) -> state_dict` (tied copies not written).
      model_types: `config.json` `model_type` values this family reads (a second way in).
      readme: Optional `config -> str`: a `README.md` note written beside an HF export (how
        to load it, what differs from the released files).
    """

    architectures: tuple[str, ...]
    config_from_hf: Callable[[dict, str], Any]
    config_to_hf: Callable[[Any], dict]
    hf_to_params: Callable[..., dict]
    params_to_hf: Callable[..., dict]
    model_types: tuple[str, ...] = ()
    readme: Callable[[Any], str] | None = None


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """Where decoding finds its caches inside a network's `cache` collection.

    Attributes:
      shared_entries: Cache leaf names that belong to the stack, not to a batch row (write
        position, key positions): never repeated per beam or sample.
      beam_invariant_modules: Module names whose cache is identical for all beams of one prompt
        (cross-attention keys/values): repeated once, never reordered between beams.
      write_position: The scalar leaf holding the next write offset of a self-attention cache;
        decoding rewinds it after a padded (bucketed) prefill.
    """

    shared_entries: tuple[str, ...] = ("position", "key_positions")
    beam_invariant_modules: tuple[str, ...] = ()
    write_position: str = "position"

    def _has(self, path, names) -> bool:
        return any(getattr(k, "key", None) in names for k in path)

    def is_shared(self, path) -> bool:
        """Whether the cache leaf at `path` (a pytree key path) is not per-row."""
        return getattr(path[-1], "key", None) in self.shared_entries

    def is_write_position(self, path) -> bool:
        """Whether the cache leaf at `path` is a write offset (`write_position`)."""
        return getattr(path[-1], "key", None) == self.write_position

    def is_beam_invariant(self, path) -> bool:
        """Whether the cache leaf at `path` is the same for every beam of a prompt."""
        return self._has(path, self.beam_invariant_modules)


@dataclasses.dataclass(frozen=True)
class Family:
    """One registered model family.

    Attributes:
      name: Registry key, saved as the `family` tag of configs.
      config_cls: Its frozen config dataclass.
      build_model: `config -> flax.linen.Module`.
      init_args: `config -> tuple` of dummy arrays for which `model.init` creates every param.
      hf: Its `HFConversion`, or None when it has no HF layout.
      check_params: `(params, config, source)`: raise `ConversionError` unless `params` has
        exactly the paths and shapes of `config` (in its scan layout).
      relayout: `(params, config, scan: bool) -> (config, params)` in the scanned (or
        unscanned) layout; a family without scanned stacks returns its inputs.
      param_groups: Group name -> regular expressions over "/"-joined param paths (e.g.
        "encoder", "decoder", "cross_attention", "heads"); optimizer masks select groups.
      axis_rules: Axis-rule preset name -> extra (logical axis, mesh axes) rules the family's
        params need beyond `partitioning.AXIS_RULES`.
      cache: Its `CacheSpec` for decoding, or None when it cannot generate.
      architecture_fields: Config fields that change parameter names or shapes (a checkpoint
        whose fields differ here cannot be restored into the model).
      decoder_prompt: Generation feeds the prompt to the decoder as well (after the start
        token), as the released HumanEval recipe does for CodeT5+ >= 2B (FACTS §1.5).
    """

    name: str
    config_cls: type
    build_model: Callable[[Any], Any]
    init_args: Callable[[Any], tuple]
    check_params: Callable[..., None]
    relayout: Callable[[Mapping, Any, bool], tuple[Any, dict]]
    hf: HFConversion | None = None
    param_groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    axis_rules: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    cache: CacheSpec | None = None
    architecture_fields: tuple[str, ...] = ()
    decoder_prompt: bool = False


_REGISTRY: dict[str, Family] = {}
# Modules that register the built-in families; imported on first registry lookup so that
# `families` itself stays importable from anywhere without cycles.
_BUILTIN_MODULES = ("codet5p_jax.families.t5", "codet5p_jax.families.shallow_deep")
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def register(family: Family) -> Family:
    """Adds `family` to the registry; returns it.

    Raises:
      FamilyError: When a family of that name, or one using the same config class, exists.
    """
    if family.name in _REGISTRY:
        raise FamilyError(f"model family {family.name!r} is registered twice")
    for other in _REGISTRY.values():
        if other.config_cls is family.config_cls:
            raise FamilyError(
                f"model family {family.name!r} reuses the config class "
                f"{family.config_cls.__name__} of family {other.name!r}"
            )
    if not dataclasses.is_dataclass(family.config_cls):
        raise FamilyError(f"model family {family.name!r}: config_cls must be a dataclass")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Removes a family (tests that register a temporary one clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Registered family names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Family:
    """The family registered as `name`.

    Raises:
      FamilyError: For an unknown name (the message lists the known ones).
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise FamilyError(f"unknown model family {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def family_of(config) -> Family:
    """The family whose config class `config` is an instance of.

    Raises:
      FamilyError: When no registered family uses `type(config)`.
    """
    _load_builtins()
    for family in _REGISTRY.values():
        if type(config) is family.config_cls:
            return family
    raise FamilyError(
        f"{type(config).__name__} is the config of no registered model family "
        f"(known: {', '.join(sorted(_REGISTRY))})"
    )


def build_model(config):
    """The Linen network of `config`'s family."""
    return family_of(config).build_model(config)


def init_args(config) -> tuple:
    """Dummy inputs that make `model.init` create every parameter of `config`'s network."""
    return family_of(config).init_args(config)


def config_to_dict(config) -> dict[str, Any]:
    """JSON-able dict of `config`: its fields plus the `family` tag."""
    return {FAMILY_KEY: family_of(config).name, **dataclasses.asdict(config)}


def config_from_dict(d: Mapping[str, Any], source: str = "config"):
    """Inverse of `config_to_dict`: one policy for every reader of saved configs.

    Args:
      d: The saved dict. Without a `family` tag it is a config saved before the registry
        existed, which is always a T5-family one.
      source: Names the file in error messages.

    Raises:
      FamilyError: For a non-dict, an unknown family, a field this version's config class lacks
        (a config from a newer version), or values the config class rejects.
    """
    if not isinstance(d, Mapping):
        raise FamilyError(f"{source}: expected a JSON object, got {type(d).__name__}")
    fields = dict(d)
    family = get_for(fields.pop(FAMILY_KEY, LEGACY_FAMILY), source)
    known = {f.name for f in dataclasses.fields(family.config_cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise FamilyError(
            f"{source}: fields {unknown} are unknown to model family {family.name!r} of this "
            "version (a config from a newer codet5p_jax?)"
        )
    try:
        return family.config_cls(**fields)
    except (TypeError, ValueError) as e:
        raise FamilyError(f"{source}: invalid {family.name!r} config: {e}") from e


def get_for(name: Any, source: str) -> Family:
    """`get(name)` with the file that named it in the error."""
    try:
        return get(name)
    except FamilyError as e:
        raise FamilyError(f"{source}: {e}") from None


def family_for_hf(hf_config: Mapping[str, Any], source: str = "config.json") -> Family:
    """The family that reads an HF `config.json` (by `architectures`, then `model_type`).

    Raises:
      FamilyError: When no registered family reads it.
    """
    _load_builtins()
    archs = hf_config.get("architectures") or []
    model_type = hf_config.get("model_type")
    with_hf = [f for f in _REGISTRY.values() if f.hf is not None]
    for family in with_hf:
        if any(a in family.hf.architectures for a in archs):
            return family
    for family in with_hf:
        if model_type in family.hf.model_types:
            return family
    known = sorted(a for f in with_hf for a in f.hf.architectures)
    raise FamilyError(
        f"{source}: unsupported architecture {archs or model_type!r}; supported: {known}"
    )


def architecture_differences(saved: Mapping[str, Any], config) -> list[str]:
    """`["emb_dim: checkpoint 64, model 768", ...]`: shape-relevant fields that differ.

    A different family tag is itself a difference (listed first).
    """
    family = family_of(config)
    now = config_to_dict(config)
    saved_family = saved.get(FAMILY_KEY, LEGACY_FAMILY)
    if saved_family != family.name:
        return [f"family: checkpoint {saved_family!r}, model {family.name!r}"]
    return [
        f"{k}: checkpoint {saved.get(k)!r}, model {now[k]!r}"
        for k in family.architecture_fields
        if k in saved and saved.get(k) != now[k]
    ]
