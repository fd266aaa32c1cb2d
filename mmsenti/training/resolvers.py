"""OmegaConf resolvers our configs use (registered when ``mmsenti.training`` is imported)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def sqlite_url(path: str) -> str:
    """``${sqlite_url:logs/optuna.db}`` → ``sqlite:////abs/logs/optuna.db``, creating the folder.

    SQLite cannot create missing parent folders, and the Optuna sweeper opens its storage before
    any job (which would create the log folder) runs.
    """
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def last_epoch(schedule: Mapping[Any, Any] | Sequence[int]) -> int:
    """``${last_epoch:${compression.schedule}}`` → the last epoch of a pruning schedule.

    Takes the epochs (``[0, 1]``) or an ``epoch -> amount`` mapping (``{0: 0.2, 2: 0.5}``): the
    epoch at whose start the schedule completes, from which "best" checkpoints may be chosen.
    """
    epochs = [int(e) for e in (schedule.keys() if isinstance(schedule, Mapping) else schedule)]
    if not epochs:
        raise ValueError("an empty pruning schedule has no last epoch")
    return max(epochs)


def register_resolvers() -> None:
    for name, fn in (("sqlite_url", sqlite_url), ("last_epoch", last_epoch)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
