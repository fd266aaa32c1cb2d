"""The output folder of ``mmsenti extract``: extracted clips -> SDK-named CSD files, folds and specs.

:func:`write_outputs` writes the words / audio / vision / label computational sequences (labels
last: their presence marks a complete set) and ``folds.json``; :func:`read_extraction_specs` reads
back, from a feature folder's CSD metadata, the extractor specs it was made with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.data.csd import ComputationalSequence, CSDReader, encode_words, write_csd
from mmsenti.data.folds import SPLITS
from mmsenti.data.mosi import DEFAULT_FILES
from mmsenti.io import write_json_atomic

__all__ = ["FILES", "MANIFEST", "read_extraction_specs", "write_outputs"]

FILES = {key: names[0] for key, names in DEFAULT_FILES.items()}
ROOT_NAMES = {"words": "mmsenti_words", "audio": "mmsenti_audio", "vision": "mmsenti_vision", "labels": "Opinion Segment Labels"}
MANIFEST = "extraction.json"


def _metadata(key: str, description: str, spec: dict | None, dataset: str, dims: list[str]) -> dict[str, Any]:
    from mmsenti import __version__

    meta = {
        "root name": ROOT_NAMES[key],
        "computational sequence description": description,
        "computational sequence version": 1.0,
        "alignment compatible": True,
        "dataset name": dataset,
        "dataset version": 1.0,
        "creator": f"mmsenti extract ({__version__})",
        "contact": "none",
        "featureset bib citation": "see the extractor metadata",
        "dataset bib citation": "see the dataset",
        "dimension names": dims,
        "extractor": spec,
    }
    return meta


def write_outputs(out: Path, rows: list[dict], clips: dict[str, dict], specs: dict, dataset_dir: Path) -> dict[str, Any]:
    dataset = dataset_dir.resolve().name
    data: dict[str, dict] = {"words": {}, "audio": {}, "vision": {}, "labels": {}}
    folds: dict[str, list[str]] = {s: [] for s in SPLITS}
    for row in rows:
        clip = clips.get(row["key"])
        if clip is None:
            continue
        key = row["key"]
        if len(clip["words"]):
            data["words"][key] = (encode_words(clip["words"].tolist()), clip["word_intervals"])
        for m in ("audio", "vision"):
            if len(clip[m]):
                data[m][key] = (clip[m], clip[f"{m}_intervals"])
        duration = max(float(clip["meta"]["duration"]), 1e-2)
        data["labels"][key] = (np.array([[row["label_value"]]], np.float32), np.array([[0.0, duration]]))
        folds[row["mode"]].append(key)
    audio_spec, vision_spec = specs["audio"], specs["vision"]
    describe = {
        "words": ("words of each clip; timings given or spread over the speech span (mmsenti.media.text)", None, ["word"]),
        "audio": (f"audio features '{audio_spec['name']}' ({audio_spec['dim']}-d, {audio_spec['rate']} Hz)", audio_spec,
                  audio_spec["dimension names"]),
        "vision": (f"vision features '{vision_spec['name']}' ({vision_spec['dim']}-d)" if vision_spec else "no vision extractor",
                   vision_spec, vision_spec["dimension names"] if vision_spec else []),
        "labels": ("sentiment label per clip in [-3, 3] (label.csv)", None, ["sentiment score"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "folds.json", folds, indent=1)
    written = {}
    for key in ("words", "audio", "vision", "labels"):  # labels last: their presence marks a complete set
        path = out / FILES[key]
        description, spec, dims = describe[key]
        if not data[key] and key != "labels":
            path.unlink(missing_ok=True)  # no stale file from an earlier run
            written[key] = None
            continue
        seq = ComputationalSequence(ROOT_NAMES[key], data[key], _metadata(key, description, spec, dataset, dims))
        write_csd(seq, path)
        written[key] = {"file": path.name, "entries": len(data[key])}
    return {
        "format": "mmsenti extraction 1",
        "dataset": str(dataset_dir),
        "files": written,
        "dims": {"audio": audio_spec["dim"], "vision": vision_spec["dim"] if vision_spec else 0},
        "extractors": specs,
        "folds": {s: len(v) for s, v in folds.items()},
    }


def read_extraction_specs(root: str | os.PathLike) -> dict[str, Any] | None:
    """The extractor specs a feature folder was made with, from its CSD metadata (``None`` if not ours)."""
    root = Path(root)
    specs: dict[str, Any] = {}
    for m in ("audio", "vision"):
        path = root / FILES[m]
        if path.is_file():
            with CSDReader(path) as reader:
                spec = reader.metadata.get("extractor")
            if isinstance(spec, dict):
                specs[m] = spec
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            specs.setdefault("max_seconds", json.loads(manifest.read_text())["extractors"].get("max_seconds"))
        except (ValueError, KeyError):
            pass
    return specs or None
