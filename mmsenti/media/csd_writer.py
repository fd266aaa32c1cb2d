"""The output folder of ``mmsenti extract``: extracted clips -> SDK-named CSD files, folds and specs.

:func:`write_outputs` writes the words / audio / vision / label computational sequences (labels
last: their presence marks a complete set) and ``folds.json``; :func:`read_extraction_specs` reads
back, from a feature folder's CSD metadata, the extractor specs it was made with
(:func:`read_extractor_spec`: one file's), and :func:`training_extractors` says, for the data a model
was trained on, which extractor made each frame modality's features (what an export's manifest
records under ``extractors``), or why that is not known.
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
from mmsenti.errors import MmsentiError
from mmsenti.io import write_json_atomic

__all__ = ["EXTRACTOR_KINDS", "FILES", "MANIFEST", "read_extraction_specs", "read_extractor_spec", "same_extractor",
           "training_extractors", "write_outputs"]

FILES = {key: names[0] for key, names in DEFAULT_FILES.items()}
ROOT_NAMES = {"words": "mmsenti_words", "audio": "mmsenti_audio", "vision": "mmsenti_vision", "labels": "Opinion Segment Labels"}
MANIFEST = "extraction.json"
#: the registry kind of each frame modality's extractor (``mmsenti info``)
EXTRACTOR_KINDS = {"audio": "audio_extractor", "vision": "face_extractor"}


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


def read_extractor_spec(path: str | os.PathLike) -> dict[str, Any] | None:
    """The extractor spec in one CSD file's metadata (``None`` when it records none: not made by ``mmsenti extract``)."""
    with CSDReader(path) as reader:
        spec = reader.metadata.get("extractor")
    return spec if isinstance(spec, dict) else None


def read_extraction_specs(root: str | os.PathLike) -> dict[str, Any] | None:
    """The extractor specs a feature folder was made with, from its CSD metadata (``None`` if not ours)."""
    root = Path(root)
    specs: dict[str, Any] = {}
    for m in ("audio", "vision"):
        path = root / FILES[m]
        if path.is_file():
            spec = read_extractor_spec(path)
            if spec is not None:
                specs[m] = spec
    max_seconds = _max_seconds(root)
    if max_seconds is not None and specs:
        specs.setdefault("max_seconds", max_seconds)
    return specs or None


def _max_seconds(root: Path) -> float | None:
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            value = json.loads(manifest.read_text())["extractors"].get("max_seconds")
            return None if value is None else float(value)
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            return None
    return None


def _identity(spec: dict[str, Any]) -> tuple:
    """What makes two extractor specs the same extractor: name (aliases resolved), version, settings, width."""
    name = str(spec.get("name"))
    return ({"librosa": "librosa_prosody"}.get(name, name), str(spec.get("version")),
            json.dumps(spec.get("parameters") or {}, sort_keys=True, default=str), spec.get("dim"))


def same_extractor(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _identity(a) == _identity(b)


def describe_extractor(spec: dict[str, Any], other: dict[str, Any] | None = None) -> str:
    """``name vVERSION (D-d; settings)``; with ``other``, only the settings that differ from its."""
    params = dict(spec.get("parameters") or {})
    if other is not None:
        theirs = other.get("parameters") or {}
        params = {k: v for k, v in params.items() if theirs.get(k) != v} | {k: None for k in theirs if k not in params}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{spec.get('name')} v{spec.get('version')} ({spec.get('dim')}-d{'; ' + shown if shown else ''})"


def training_extractors(data: dict[str, Any] | None, dims: dict[str, int], origin: str = "the data config") -> dict[str, Any]:
    """The ``extractors`` entry of an export manifest: per frame modality of the engine (``dims``:
    modality -> the width the model takes), the spec of the extractor that made the training features,
    read from the training data's CSD metadata, or ``None`` with the reason under ``reasons``.

    ``data``: the training datamodule's settings (``source``, ``root`` / ``path``, ``files``); ``None``
    when they are not known. Nothing is guessed: the synthetic set, an MMSA pickle or CMU SDK
    features record no extractor, and get ``None``.
    """
    out: dict[str, Any] = {m: None for m in dims}
    reasons: dict[str, str] = {}
    out.update(source=None, max_seconds=None, reasons=reasons)
    if not dims:
        out["source"] = "the engine takes no frame features"
        return out
    if not data:
        for m in dims:
            reasons[m] = ("the training data is not known here (exported without data, and the checkpoint records no "
                          "data config)")
        return out
    source = data.get("source")
    location = data.get("path") or data.get("root")
    if source != "csd":
        for m in dims:
            if source == "synthetic":
                reasons[m] = "trained on the synthetic CMU-MOSI-shaped set: planted features, made by no extractor"
            elif source == "mmsa":
                reasons[m] = f"trained on an MMSA feature pickle ({location}): it does not record what extracted its features"
            elif source in ("label_csv", "sst2"):
                reasons[m] = f"trained on text-only data ({source}): the model saw no {m} features"
            else:
                reasons[m] = f"data source {source!r} records no extractor"
        out["source"] = f"{origin}: data.source={source}"
        return out
    from mmsenti.data.mosi import DEFAULT_FILES

    root = Path(str(location)).expanduser()
    files = dict(data.get("files") or {})
    out["source"] = f"CSD metadata in {root}"
    found_any = False
    for m, dim in dims.items():
        if m in files and files[m] is None:
            reasons[m] = f"data.files.{m}=null: the model was trained without {m} features"
            continue
        if files.get(m):
            path = Path(str(files[m])) if Path(str(files[m])).is_absolute() else root / str(files[m])
        else:
            path = next((root / n for n in DEFAULT_FILES[m] if (root / n).is_file()), root / DEFAULT_FILES[m][0])
        if not path.is_file():
            reasons[m] = f"{path} is not there (any more): what extracted the training features is not known"
            continue
        try:
            spec = read_extractor_spec(path)
        except MmsentiError as err:
            reasons[m] = f"cannot read {path} ({err})"
            continue
        if spec is None:
            reasons[m] = (f"{path.name} records no mmsenti extractor (features made elsewhere, e.g. the CMU SDK's "
                          f"COVAREP / FACET): no registered extractor is known to reproduce them")
        elif spec.get("dim") != dim:
            reasons[m] = (f"{path.name} says its features are {spec.get('dim')}-d ({spec.get('name')}) but the model "
                          f"takes {dim}-d {m} features")
        else:
            out[m] = {"kind": EXTRACTOR_KINDS[m], **{k: v for k, v in spec.items() if k != "dimension names"},
                      "file": path.name}
            found_any = True
    if found_any:
        out["max_seconds"] = _max_seconds(root)
    return out
