"""Segmentation models: an architecture registry over segmentation-models-pytorch (smp).

Every architecture named in :data:`segcore.catalog.BUILTIN_ARCHITECTURES` is registered here with
its smp class, followed by installed plugins' models (entry-point group ``segboard.models``, see
``docs/plugins.md``); :func:`build_model` turns a :class:`~segcore.config.ModelConfig` into a module
whose output is **logits** of shape ``[N, C, H, W]`` (no activation: the loss and the metrics apply
softmax or sigmoid themselves). Pretrained encoder weights come from a local cache first
(:mod:`segcore.weights`), then from the network unless the cache says offline.

Example:
    >>> from segcore.config import ModelConfig
    >>> model = build_model(ModelConfig(arch="Unet", encoder="resnet18"), num_classes=3)
    >>> model(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from segcore import catalog as _catalog, plugins as _plugins
from segcore.config import ModelConfig
from segcore.errors import CheckpointError, ConfigError, RegistryError
from segcore.registry import Entry, Registry
from segcore.weights import WeightsCache

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "model_input_multiple",
    "load_encoder_weights",
    "check_encoder_name",
]


def _plugin_entry(item: _plugins.PluginItem) -> Entry[Callable[..., nn.Module]]:
    return Entry(item.name, item.obj, item.summary(), {p.name: p.default for p in item.params if not p.required},
                 ("plugin",))


#: Architecture name -> smp model class (or a plugin's model factory, tagged ``plugin``). Entry
#: ``defaults`` are keyword arguments that :func:`build_model` passes unless ``ModelConfig.params`` sets them.
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture", plugins="models", adapt=_plugin_entry)

# DPT's ViT encoders have a fixed input size unless timm interpolates the position
# embeddings; training crops and validation images differ in size, so allow it.
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {"DPT": {"dynamic_img_size": True}}

for _name, _description in _catalog.BUILTIN_ARCHITECTURES.items():
    ARCHITECTURES.add(
        _name,
        getattr(smp, _name),
        description=_description,
        defaults=_ARCH_DEFAULTS.get(_name, {}),
        tags=("vit-only",) if _name in _catalog.VIT_ONLY_ARCHITECTURES else (),
    )

# Arguments build_model sets from ModelConfig's own fields; params may not repeat them.
_RESERVED = {
    "encoder_name": "model.encoder",
    "encoder_weights": "model.encoder_weights",
    "in_channels": "model.in_channels",
    "classes": "the dataset's class list",
}

# Classifier heads that pretrained state dicts carry and segmentation encoders drop.
_HEAD_PREFIXES = ("fc.", "_fc.", "classifier.", "last_linear.", "head.", "linear.")


def _arch_class(arch: str) -> Callable[..., nn.Module]:
    try:
        return ARCHITECTURES.get(arch).obj
    except RegistryError as exc:
        raise ConfigError(str(exc)) from exc


def _named_arguments(cls: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls.__init__)
    return {
        n: p
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _plugin(arch: str) -> _plugins.PluginItem | None:
    """The plugin item behind ``arch``; None for a built-in (smp) architecture."""
    _arch_class(arch)  # unknown or broken names raise here
    return None if arch in _catalog.BUILTIN_ARCHITECTURES else _plugins.items("models")[arch]


def _check_params(cfg: ModelConfig) -> None:
    """Reject params smp would ignore or that clash with ModelConfig's own fields."""
    cls = _arch_class(cfg.arch)
    named = _named_arguments(cls)
    for key, value in cfg.params.items():
        if key in _RESERVED:
            raise ConfigError(
                f"model.params.{key} is set by {_RESERVED[key]}; remove it from model.params of {cfg.arch}"
            )
        if key == "activation" and value is not None:
            raise ConfigError(
                f"model.params.activation={value!r}: segcore models output logits and the loss applies "
                f"softmax/sigmoid; remove 'activation' from model.params of {cfg.arch}"
            )
        if key == "aux_params" and value is not None:
            raise ConfigError(
                f"model.params.aux_params is not supported: {cfg.arch} must return one logits tensor; "
                "remove 'aux_params' from model.params"
            )
        if key not in named and not cfg.encoder.startswith("tu-"):
            # smp forwards unknown keywords to the encoder, where non-timm encoders drop them
            # silently; fail instead so a typo never trains the wrong model.
            valid = ", ".join(n for n in named if n not in _RESERVED)
            raise ConfigError(
                f"{cfg.arch} has no argument {key!r} (model.params.{key}); valid arguments: {valid}. "
                "Extra keyword arguments only reach the encoder for 'tu-' (timm) encoders."
            )


def _check_timm_encoder(encoder: str) -> None:
    model_name = encoder[3:].split(".", 1)[0]
    if timm.is_model(model_name):
        return
    stem = re.split(r"[_\d]", model_name, maxsplit=1)[0] or model_name
    close = timm.list_models(f"*{stem}*")[:8]
    hint = f" Similar timm models: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"unknown timm model {model_name!r} in encoder {encoder!r}; list names with "
        f"timm.list_models('*{stem}*') and use 'tu-<name>'.{hint}"
    )


def model_input_multiple(cfg: ModelConfig) -> int:
    """The number both input height and width must be a multiple of for ``cfg``'s model.

    32 for most architectures with the default encoder depth (``2 ** encoder_depth``); PAN's
    feature pyramid attention pools its deepest feature map three more times, so it needs
    ``8 * encoder_output_stride`` (128 by default); DPT needs the ViT patch size.

    Args:
        cfg: the model config (``params`` such as ``encoder_depth`` are taken into account).

    A plugin model declares its own with an ``input_multiple`` attribute on its factory (default 32).

    Returns:
        A size multiple (e.g. 32); any positive multiple of it is a valid input size.
    """
    item = _plugin(cfg.arch)
    if item is not None:
        return int(getattr(item.obj, "input_multiple", 32))
    cls = _arch_class(cfg.arch)
    named = _named_arguments(cls)
    if cfg.arch == "PAN":
        stride = int(cfg.params.get("encoder_output_stride", named["encoder_output_stride"].default))
        return 8 * stride
    if cfg.arch == "DPT":
        m = re.search(r"patch(\d+)", cfg.encoder)
        return int(m.group(1)) if m else 16
    depth = cfg.params.get("encoder_depth", named["encoder_depth"].default)
    return max(2 ** int(depth), 32)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle refused by weights_only, ...
        raise CheckpointError(
            f"cannot read encoder weights {path}: {exc}. Save a plain state dict with "
            "safetensors.torch.save_file or torch.save(model.state_dict(), path)."
        ) from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors; save one with torch.save(encoder.state_dict(), path)"
        )
    return dict(state)


def _align_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Pick the key prefixing (as saved, without 'encoder.', with 'model.') that matches best."""
    candidates = [state]
    if any(k.startswith("encoder.") for k in state):
        candidates.append({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
    candidates.append({f"model.{k}": v for k, v in state.items()})
    return max(candidates, key=lambda sd: len(expected & sd.keys()))


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict file into ``model.encoder`` (strictly).

    Accepts a safetensors file or a ``torch.save``'d state dict (read with ``weights_only=True``),
    keyed like the encoder itself, like a full smp model (``encoder.`` prefix), or like the bare
    timm model of a ``tu-`` encoder. Classifier-head keys (``fc.``, ``head.``, ...) are dropped.

    Args:
        model: an smp model with an ``encoder`` attribute.
        path: the weights file.

    Raises:
        ConfigError: the file does not exist.
        CheckpointError: the file is unreadable or its keys or shapes do not match the encoder.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"encoder weights file {p} does not exist; fix model.encoder_weights_path "
            "(a local .safetensors or .pt state dict)"
        )
    encoder = cast(nn.Module, model.encoder)  # nn.Module types attributes as Tensor | Module
    own = encoder.state_dict()
    state = _align_keys(_read_state_dict(p), set(own))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_HEAD_PREFIXES)}
    missing = sorted(set(own) - state.keys())
    unexpected = sorted(state.keys() - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_few(unexpected)}")
        raise CheckpointError(
            f"encoder weights {p} do not match encoder {type(encoder).__name__}: {'; '.join(parts)}. "
            "Check that model.encoder names the same network the weights were saved from."
        )
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(
            f"encoder weights {p} have {len(wrong)} tensors of the wrong shape (file vs model): {_few(wrong, 3)}. "
            "Check model.encoder and model.in_channels."
        )
    # nn.Module's own loader: some smp encoders override load_state_dict with other signatures.
    nn.Module.load_state_dict(encoder, state, strict=True)


def check_encoder_name(encoder: str) -> None:
    """Raise unless ``encoder`` is an smp encoder name or ``tu-<timm model>``.

    Raises:
        ConfigError: naming similar valid names.
    """
    if encoder.startswith("tu-"):
        _check_timm_encoder(encoder)
    elif encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(
            f"unknown encoder {encoder!r}; use a name from smp.encoders.get_encoder_names() or 'tu-<timm model>'"
        )


def _build_plugin(item: _plugins.PluginItem, cfg: ModelConfig, num_classes: int) -> nn.Module:
    """A plugin's model: ``factory(in_channels=, classes=, **params)`` (+ encoder arguments it declares)."""
    kwargs: dict[str, Any] = {"in_channels": cfg.in_channels, "classes": num_classes}
    try:
        accepted = set(inspect.signature(item.obj).parameters)
    except (TypeError, ValueError):
        accepted = set()  # no signature to read: pass only the arguments every model takes
    if "encoder_name" in accepted:
        kwargs["encoder_name"] = cfg.encoder
    if "encoder_weights" in accepted:
        kwargs["encoder_weights"] = cfg.encoder_weights
    model = item.obj(**kwargs, **_plugins.checked_params(item, cfg.params))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"plugin model {item.source} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def build_model(cfg: ModelConfig, num_classes: int, *, weights_cache: WeightsCache | None = None) -> nn.Module:
    """Build the model ``cfg`` describes: an smp architecture, or an installed plugin's model.

    Args:
        cfg: architecture, encoder, weights and extra keyword arguments (``cfg.params``).
        num_classes: output channels ``C``.
        weights_cache: Where cached pretrained weights are read first, and whether downloading is
            allowed; None: no cache, download as usual.

    Returns:
        A module mapping images ``[N, in_channels, H, W]`` (H, W multiples of
        :func:`model_input_multiple`) to logits ``[N, C, H, W]``.

    Raises:
        ConfigError: unknown timm model, bad ``params``, missing weights file, or weights neither
            cached nor downloadable (naming the expected cache file and the import command).
        CheckpointError: a weights file that does not match the encoder.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    item = _plugin(cfg.arch)
    if item is not None:
        return _build_plugin(item, cfg, num_classes)
    cls = _arch_class(cfg.arch)
    _check_params(cfg)
    is_timm = cfg.encoder.startswith("tu-")
    check_encoder_name(cfg.encoder)

    cache = weights_cache or WeightsCache()
    weights: str | bool | None = None
    cached: Path | None = None
    if cfg.encoder_weights_path is None and cfg.encoder_weights is not None:
        cached = cache.find(cfg.encoder, cfg.encoder_weights)
        if cached is None and cache.offline:
            raise cache.missing(cfg.encoder, cfg.encoder_weights, "downloads are off (offline mode)")
        if cached is None:
            # smp expects True (the timm default tag) for 'tu-' encoders and a tag name otherwise.
            weights = True if is_timm else cfg.encoder_weights
    kwargs = {**ARCHITECTURES.get(cfg.arch).defaults, **cfg.params}
    try:
        model = cls(
            encoder_name=cfg.encoder,
            encoder_weights=weights,
            in_channels=cfg.in_channels,
            classes=num_classes,
            **kwargs,
        )
    except OSError as exc:  # weights download failed (offline, hub unreachable); before ValueError: HF's is both
        raise cache.missing(cfg.encoder, str(cfg.encoder_weights), f"downloading them failed ({exc})") from exc
    except (TypeError, ValueError, AssertionError) as exc:
        bad = re.search(r"argument '(\w+)'", str(exc))
        named = f" (argument {bad.group(1)!r})" if bad else ""
        raise ConfigError(
            f"cannot build {cfg.arch} with encoder {cfg.encoder!r} and params {cfg.params}{named}: {exc}. "
            "Fix model.params or choose another encoder/architecture."
        ) from exc
    except KeyError as exc:  # smp: unknown pretrained weights tag
        raise ConfigError(
            f"cannot build {cfg.arch} with encoder {cfg.encoder!r}: {exc.args[0] if exc.args else exc}. "
            "Fix model.encoder_weights (e.g. 'imagenet') or set it to null."
        ) from exc
    if cfg.encoder_weights_path is not None:
        load_encoder_weights(model, cfg.encoder_weights_path)
    elif cached is not None:
        load_encoder_weights(model, cached)
    return model
