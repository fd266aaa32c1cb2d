"""A watched model repository: ``DIR/<name>/<version>/``, each version folder a complete export.

The layout is Triton's (and ``mmsenti serve --model-repo``'s): a new version is a new folder
beside the old ones; the highest one is the one to serve (:func:`version_key`: numeric names by
value, so 10 is above 9; other names by text, above every number). A folder counts once it holds ``manifest.json`` (exports appear
complete: :func:`mmsenti.runtime.manifest.staged_folder`); names starting with ``.`` or ``_``
(staging, hidden) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from mmsenti.errors import MmsentiError
from mmsenti.runtime.manifest import MANIFEST_NAME


def version_key(name: str) -> tuple:
    """Sort key of version names: numbers by value (``2 < 10``), then other names by text."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def versions(model_dir: str | Path) -> list[str]:
    """The complete version folders' names under ``model_dir``, oldest first (empty if none)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir()
             if p.is_dir() and not p.name.startswith((".", "_")) and (p / MANIFEST_NAME).is_file()]
    return sorted(names, key=version_key)


def latest_version(model_dir: str | Path) -> str | None:
    found = versions(model_dir)
    return found[-1] if found else None


def model_dir(repo: str | Path, name: str) -> Path:
    """``repo/name``, refused in one line when the repository itself is missing."""
    repo = Path(repo)
    if not repo.is_dir():
        raise MmsentiError(f"model repository {repo} is not a folder; lay exports out as {repo}/<name>/<version>/")
    return repo / name
