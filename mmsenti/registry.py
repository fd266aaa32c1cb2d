"""One registry: every buildable kind of thing, by name.

Each part registers itself once, where it is defined (``@register("fusion", "mult")``); configs and
command lines name it; nothing lists the choices a second time — argparse ``choices``, config
validation and ``mmsenti info`` all read :func:`available`. Kinds and the module that fills each:

========================  ====================================  =========================================
kind                      filled by                             what a name builds / means
========================  ====================================  =========================================
``sequence_encoder``      :mod:`mmsenti.models.encoders`        audio/vision frame encoders
``fusion``                :mod:`mmsenti.models.fusion`, zoo/     fusion modules (zoo/: published models)
``text_backbone``         :mod:`mmsenti.models.students`        non-HF text backbones (students)
``text_architecture``     :mod:`mmsenti.models.adapters`        HF encoder adapters (by ``model_type``)
``text_weights``          :mod:`mmsenti.pretrained`             packaged pretrained encoder weights
``data_source``           :mod:`mmsenti.data.datamodule`        dataset readers (``data.source``)
``audio_extractor``       :mod:`mmsenti.media.audio`            raw audio → frame features
``face_extractor``        :mod:`mmsenti.media.face`             raw video → facial-expression features
``face_detector``         :mod:`mmsenti.media.face`             face detectors of the face extractor
``export_format``         :mod:`mmsenti.runtime.manifest`       engine formats
``export_variant``        :mod:`mmsenti.runtime.manifest`       graphs exported from one model
``export_precision``      :mod:`mmsenti.runtime.manifest`       engine precisions
``quantization``          :mod:`mmsenti.runtime.manifest`       INT8 quantization modes
========================  ====================================  =========================================

A kind is filled on first use (its module is imported then), so ``import mmsenti`` stays cheap and
the torch-free runtime never imports torch through the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

PROVIDERS: dict[str, tuple[str, ...]] = {
    "sequence_encoder": ("mmsenti.models.encoders",),
    "fusion": ("mmsenti.models.fusion", "mmsenti.models.zoo.tfn", "mmsenti.models.zoo.lmf", "mmsenti.models.zoo.misa",
               "mmsenti.models.zoo.self_mm", "mmsenti.models.zoo.mult_paper"),
    "text_backbone": ("mmsenti.models.students",),
    "text_architecture": ("mmsenti.models.adapters",),
    "text_weights": ("mmsenti.pretrained",),
    "data_source": ("mmsenti.data.datamodule",),
    "audio_extractor": ("mmsenti.media.audio",),
    "face_extractor": ("mmsenti.media.face",),
    "face_detector": ("mmsenti.media.face",),
    "export_format": ("mmsenti.runtime.manifest",),
    "export_variant": ("mmsenti.runtime.manifest",),
    "export_precision": ("mmsenti.runtime.manifest",),
    "quantization": ("mmsenti.runtime.manifest",),
}

_REGISTRY: dict[str, dict[str, Any]] = {}
_DESCRIPTIONS: dict[str, dict[str, str]] = {}
_LOADED: set[str] = set()


def _ensure(kind: str) -> None:
    """Import the modules that fill ``kind`` (once); a module that cannot be imported here is skipped."""
    if kind in _LOADED:
        return
    _LOADED.add(kind)
    for module in PROVIDERS.get(kind, ()):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # an optional dependency of that feature is not installed
            if not (err.name or "").startswith("mmsenti"):
                _DESCRIPTIONS.setdefault("_unavailable", {})[module] = f"not importable here: {err}"
                continue
            raise


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register(kind: str, name: str, description: str | None = None) -> Callable[[Any], Any]:
    """Decorator: ``@register("fusion", "mult")`` makes ``build("fusion", "mult", ...)`` work."""

    def deco(fn: Any) -> Any:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not fn:
            raise KeyError(f"{kind} '{name}' is registered twice ({table[name]} and {fn})")
        table[name] = fn
        _DESCRIPTIONS.setdefault(kind, {})[name] = description or _first_line(fn)
        return fn

    return deco


def register_value(kind: str, name: str, value: Any = None, description: str = "") -> Any:
    """Register a named choice that is data, not a constructor (an export precision, a format...)."""
    return register(kind, name, description)(name if value is None else value)


def available(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    _ensure(kind)
    return sorted(_REGISTRY.get(kind, {}))


def lookup(kind: str, name: str) -> Any | None:
    """The registered entry itself (a constructor or a value), or ``None``."""
    _ensure(kind)
    return _REGISTRY.get(kind, {}).get(name)


def check(kind: str, name: str, what: str | None = None) -> str:
    """``name`` if registered, else one line naming the setting and every valid choice."""
    if lookup(kind, name) is None:
        from mmsenti.errors import MmsentiError

        raise MmsentiError(f"{what or kind}={name!r}: unknown {kind.replace('_', ' ')}; "
                           f"choose one of {', '.join(available(kind)) or '(none registered)'}")
    return name


def kinds() -> list[str]:
    """Every kind of the registry (declared in :data:`PROVIDERS` or registered under), sorted."""
    return sorted(set(PROVIDERS) | {k for k in _REGISTRY})


def describe() -> dict[str, dict[str, str]]:
    """``{kind: {name: one-line description}}`` for every kind (what ``mmsenti info`` prints)."""
    out = {}
    for kind in kinds():
        names = available(kind)
        out[kind] = {n: _DESCRIPTIONS.get(kind, {}).get(n, "") for n in names}
    return out


def build(kind: str, name: str, **kwargs: Any) -> Any:
    """Build a registered component by name, with a clear error for unknown names."""
    check(kind, name)
    return _REGISTRY[kind][name](**kwargs)
