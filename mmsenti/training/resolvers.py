"""OmegaConf resolvers our configs use (registered when ``mmsenti.training`` is imported)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def sqlite_url(path: str) -> str:
    """``${sqlite_url:logs/optuna.db}`` → ``sqlite:////abs/logs/optuna.db``, creating the folder.

    SQLite cannot create missing parent folders, and the Optuna sweeper opens its storage before
    any job (which would create the log folder) runs.
    """
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sqlite_url"):
        OmegaConf.register_new_resolver("sqlite_url", sqlite_url)
