"""One registry: a name in a config maps to the constructor that builds it.

Every buildable part (sequence encoders, fusion modules) registers itself here once, where it is
defined; configs name it; nothing lists the choices a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register("fusion", "mult")`` makes ``build("fusion", "mult", ...)`` work."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not fn:
            raise KeyError(f"{kind} '{name}' is registered twice ({table[name]} and {fn})")
        table[name] = fn
        return fn

    return deco


def available(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    return sorted(_REGISTRY.get(kind, {}))


def lookup(kind: str, name: str) -> Any | None:
    """The registered entry itself (a constructor or a description object), or ``None``."""
    return _REGISTRY.get(kind, {}).get(name)


def kinds() -> list[str]:
    """Every kind something has registered under, sorted."""
    return sorted(_REGISTRY)


def build(kind: str, name: str, **kwargs: Any) -> Any:
    """Build a registered component by name, with a clear error for unknown names."""
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise KeyError(f"unknown {kind} '{name}'; choose one of: {', '.join(available(kind)) or '(none registered)'}")
    return table[name](**kwargs)
