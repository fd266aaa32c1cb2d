"""Config checks at composition: a typo fails before any data or weights are loaded.

Hydra already refuses an override of a key that does not exist (``data.batchsize=8``); a key misspelt
*inside a config file* would otherwise reach a constructor and fail minutes later (or, for a
``**kwargs`` constructor, be silently ignored). :func:`check_config` runs right after composition
(first thing in :func:`~mmsenti.training.tasks.train` / ``evaluate``) and checks every node against the
definition that consumes it — never a second list of keys:

=======================  ===============================================================
node                     valid keys come from
=======================  ===============================================================
``data``                 ``SentimentDataModule.__init__`` (or the ``_target_``'s signature)
``model``                the LightningModule named by ``model._target_``
``model.net``            :class:`~mmsenti.models.SentimentModelConfig`'s fields
``model.net.<encoder>``  ``TextEncoder`` / the registered sequence encoder or fusion named there
``distill``              :class:`~mmsenti.distill.module.DistillConfig`'s fields
``export``               :class:`~mmsenti.export.hooks.ExportConfig`'s fields
=======================  ===============================================================

An unknown key is one line naming the config file it came from (from Hydra's group choices), the key
and the valid keys; unknown registered names (``model.net.fusion.name=mlt``) likewise list the
registered ones.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig

from mmsenti.errors import MmsentiError

# config node -> the config group whose file defines it (for the message)
GROUP_OF = {"data": "data", "model": "model", "model.net": "model", "model.net.text_encoder": "model/text_encoder",
            "model.net.audio_encoder": "model/audio_encoder", "model.net.vision_encoder": "model/vision_encoder",
            "model.net.fusion": "model/fusion", "distill": "distill", "export": "export"}
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def _callable_keys(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts; ``None`` when it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}


def _class_keys(cls: type) -> set[str] | None:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    keys: set[str] = set()
    for klass in cls.__mro__:  # a subclass passing **kwargs up: its parents' keywords count too
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        own = _callable_keys(init)
        if own is None and any(p.kind is inspect.Parameter.VAR_KEYWORD and p.name.startswith("_")
                               for p in inspect.signature(init).parameters.values()):
            return None  # ``**_``: the constructor takes (and ignores) any other key on purpose
        if own is None:
            keys |= {p.name for p in inspect.signature(init).parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
            continue
        return keys | own
    return keys or None


def _target_keys(node: DictConfig) -> set[str] | None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        return None
    from hydra.utils import get_class, get_method

    try:
        obj = get_class(target)
    except Exception:
        obj = get_method(target)
    return _class_keys(obj) if inspect.isclass(obj) else _callable_keys(obj)


def _source(cfg: DictConfig, node: str) -> str:
    group = GROUP_OF.get(node, node.split(".")[0])
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get(group)
    except Exception:  # not under @hydra.main (tests, compose API)
        choice = None
    return f"configs/{group}/{choice}.yaml (or an override)" if choice else f"the {node} config"


def _check_keys(cfg: DictConfig, path: str, node: Any, valid: Iterable[str] | None, extra: Iterable[str] = ()) -> None:
    if valid is None or not isinstance(node, DictConfig):
        return
    allowed = set(valid) | set(extra) | HYDRA_KEYS
    unknown = sorted(k for k in node.keys() if k not in allowed)
    if unknown:
        listed = ", ".join(sorted(set(valid) | set(extra)))
        raise MmsentiError(f"{_source(cfg, path)}: unknown key{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(k) for k in unknown)} in {path}; valid keys: {listed}")


def _registered_keys(cfg: DictConfig, path: str, kind: str, node: Any) -> None:
    from mmsenti import registry

    if not isinstance(node, DictConfig) or "name" not in node:
        return
    name = node.get("name")
    registry.check(kind, name, f"{path}.name")
    _check_keys(cfg, path, node, _class_keys(registry.lookup(kind, name)) if inspect.isclass(registry.lookup(kind, name))
                else _callable_keys(registry.lookup(kind, name)), extra=("name", "input_dims"))


def check_config(cfg: DictConfig) -> None:
    """Check the composed config's nodes against their definitions (see the module docstring)."""
    if cfg.get("data") is not None:
        _check_keys(cfg, "data", cfg.data, _target_keys(cfg.data))
    model = cfg.get("model")
    if model is not None:
        _check_keys(cfg, "model", model, _target_keys(model), extra=("optimizer", "scheduler", "net", "distill"))
        net = model.get("net")
        if net is not None:
            from mmsenti.models import SentimentModelConfig
            from mmsenti.models.encoders import TextEncoder

            _check_keys(cfg, "model.net", net, _class_keys(SentimentModelConfig))
            text = net.get("text_encoder")
            _check_keys(cfg, "model.net.text_encoder", text, _class_keys(TextEncoder))
            for m in ("audio_encoder", "vision_encoder"):
                _registered_keys(cfg, f"model.net.{m}", "sequence_encoder", net.get(m))
            _registered_keys(cfg, "model.net.fusion", "fusion", net.get("fusion"))
    distill = cfg.get("distill") if cfg.get("distill") is not None else (model.get("distill") if model is not None else None)
    if distill is not None:
        from mmsenti.distill.module import DistillConfig

        _check_keys(cfg, "distill", distill, _class_keys(DistillConfig))
    if cfg.get("export"):
        from mmsenti.export.hooks import ExportConfig

        _check_keys(cfg, "export", cfg.export, _class_keys(ExportConfig))

