"""The CMU-MOSI loader's cache: one ``.npz`` per load setting (concatenated arrays + offsets, no pickle).

:func:`~mmsenti.data.mosi.load_mosi_csd` names the file by :func:`cache_key` of its settings (mode,
policies, folds and a stamp of every input file, :func:`file_stamp`), so a changed setting or input
misses the cache; :func:`save_cache` writes it atomically (:func:`mmsenti.io.save_npz_atomic`) and
:func:`load_cache` reads it back without unpickling anything. Strings are stored as fixed-width unicode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsenti.io import json_digest, save_npz_atomic

from .folds import SPLITS

if TYPE_CHECKING:
    from .mosi import MosiData

__all__ = ["CACHE_VERSION", "cache_key", "default_cache_dir", "file_stamp", "load_cache", "save_cache"]

CACHE_VERSION = 2  # 2: ids are <video>$_$<clip>, zero-length and per-split drop counts


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``<root>/.cache``, unless ``root`` is read-only (by its mode bits, which root ignores too):
    then ``$XDG_CACHE_HOME/mmsenti`` (``~/.cache/mmsenti``), so shared data folders stay untouched."""
    root = Path(root)
    try:
        read_only = not (root.stat().st_mode & 0o222) or not os.access(root, os.W_OK)
    except OSError:
        read_only = True
    if not read_only:
        return root / ".cache"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mmsenti" / "mosi"


def file_stamp(path: Path | None) -> list | None:
    """``[resolved path, size, mtime_ns]`` of an input file (``None`` when absent): part of the cache key."""
    if path is None or not path.is_file():
        return None
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(settings: dict[str, Any]) -> str:
    """20 hex digits naming the cache file of one load setting (``CACHE_VERSION`` included by the caller)."""
    return json_digest(settings, length=20)


def save_cache(data: MosiData, path: Path) -> None:
    samples = [s for split in SPLITS for s in data.splits[split]]
    split_code = np.concatenate([np.full(len(data.splits[s]), i, np.int8) for i, s in enumerate(SPLITS)])
    arrays: dict[str, np.ndarray] = {
        "ids": np.array([s["id"] for s in samples], dtype=str),
        "text": np.array([s["text"] or "" for s in samples], dtype=str),
        "text_present": np.array([s["text"] is not None for s in samples], dtype=bool),
        "label": np.array([s["label"] for s in samples], dtype=np.float64),
        "split": split_code,
        "meta": np.array(json.dumps({"audio_dim": data.audio_dim, "vision_dim": data.vision_dim,
                                     "report": data.report})),
    }
    for m, dim in (("audio", data.audio_dim), ("vision", data.vision_dim)):
        parts = [s[m] for s in samples]
        lengths = np.array([0 if p is None else len(p) for p in parts], dtype=np.int64)
        arrays[f"{m}_present"] = np.array([p is not None for p in parts], dtype=bool)
        arrays[f"{m}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        present = [p for p in parts if p is not None and len(p)]
        arrays[m] = np.concatenate(present).astype(np.float32, copy=False) if present else np.zeros((0, dim), np.float32)
    if not len(arrays["ids"]):  # np.array([], dtype=str) is fine, keep explicit shapes
        arrays["ids"] = np.zeros(0, dtype="<U1")
        arrays["text"] = np.zeros(0, dtype="<U1")
    save_npz_atomic(path, arrays)


def load_cache(path: Path) -> tuple[dict[str, list[dict]], int, int, dict[str, Any]]:
    """``(splits, audio_dim, vision_dim, report)``, the fields of :class:`~mmsenti.data.mosi.MosiData`."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    ids = arrays["ids"].tolist()
    texts = arrays["text"].tolist()
    text_present = arrays["text_present"]
    labels = arrays["label"].tolist()
    mods = {}
    for m in ("audio", "vision"):
        big, off, present = arrays[m], arrays[f"{m}_offsets"], arrays[f"{m}_present"]
        mods[m] = [big[off[i] : off[i + 1]] if present[i] else None for i in range(len(ids))]
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    codes = arrays["split"]
    for i in range(len(ids)):
        splits[SPLITS[codes[i]]].append({
            "id": ids[i],
            "text": texts[i] if text_present[i] else None,
            "audio": mods["audio"][i],
            "vision": mods["vision"][i],
            "label": labels[i],
        })
    return splits, int(meta["audio_dim"]), int(meta["vision_dim"]), meta["report"]
