"""``manifest.json``: what an exported engine is, and how to feed it.

Every export folder holds one engine file, a ``tokenizer/`` folder and this manifest. The
runtime (:mod:`mmsenti.runtime.predictor`) needs nothing else: inputs/outputs with shapes and
dtypes, the tokenizer and frame-feature specs, modalities, precision, opset, the source
checkpoint's hash, metrics at export, parity figures and library versions.

``extractors`` (optional: manifests written before it was recorded load all the same) says which
feature extractor made the training features of each frame modality the engine takes, so that
``mmsenti predict EXPORT CLIP`` rebuilds the same one::

    "extractors": {"audio": {"kind": "audio_extractor", "name": "librosa_prosody", "version": "1",
                             "parameters": {...}, "rate": 100, "dim": 43, "file": "CMU_MOSI_COVAREP.csd", ...},
                   "vision": null,
                   "reasons": {"vision": "trained on the synthetic CMU-MOSI-shaped set: ..."},
                   "max_seconds": 300.0, "source": "CSD metadata in /data/features"}

A modality whose extractor is not known (the synthetic set, an MMSA pickle, CMU SDK features) is
``null`` with its reason under ``reasons``, never a guess.

Writes are atomic. A whole export is staged in a hidden sibling folder and renamed into place
only when everything (engine, tokenizer, parity check, manifest) succeeded, so a failed export
leaves nothing half-written; the manifest itself is written to a temp file and renamed.

This module is torch-free (the runtime imports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.io import _umask, file_digest, write_json_atomic
from mmsenti.registry import register_value

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# the choices a manifest may record, each registered once in the one registry (mmsenti.registry)
_CHOICES = {
    "export_format": {"onnx": "ONNX graph run by ONNX Runtime (CPU, CUDA or its TensorRT EP)",
                      "tensorrt": "serialized TensorRT engine built from the ONNX graph (NVIDIA GPUs)"},
    "export_variant": {"fused": "text + every frame modality the model was built with (audio/vision + masks)",
                       "text_only": "token ids and mask only: the text-only fast path"},
    "export_precision": {"fp32": "full precision (parity <= 1e-4 with PyTorch)",
                         "fp16": "half precision weights and activations (GPU engines)",
                         "int8": "8-bit integer weights (dynamic or static quantization)"},
    "quantization": {"dynamic": "INT8 weights, activations quantized at run time (no calibration data)",
                     "static": "INT8 Q/DQ graph calibrated on training batches (TensorRT's INT8 route)"},
}
for _kind, _names in _CHOICES.items():
    for _name, _description in _names.items():
        register_value(_kind, _name, description=_description)
FORMATS = tuple(_CHOICES["export_format"])
VARIANTS = tuple(_CHOICES["export_variant"])
PRECISIONS = tuple(_CHOICES["export_precision"])
QUANTIZATIONS = tuple(_CHOICES["quantization"])

# key -> type(s) the value must have; nested specs are checked separately below
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "name": str,
    "format": str,
    "engine": str,
    "variant": str,
    "precision": str,
    "opset": int,
    "modalities": list,
    "inputs": list,
    "outputs": list,
    "tokenizer": dict,
    "features": dict,
    "source": dict,
    "parity": dict,
    "metrics": dict,
    "files": dict,
    "versions": dict,
    "created": str,
}
#: optional keys (absent from older manifests) -> type(s) the value must have when present
OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "extractors": dict,
}
FRAME_MODALITIES = ("audio", "vision")
TENSOR_KEYS = {"name", "dtype", "shape"}
DTYPES = {"int64", "int32", "bool", "float32", "float16"}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_manifest(manifest: dict[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """Check a manifest against the schema (and, given its folder, that its files exist).

    Returns the manifest; raises :class:`MmsentiError` naming every problem found.
    """
    if not isinstance(manifest, dict):
        raise MmsentiError(f"invalid manifest{f' in {folder}' if folder else ''}: a JSON object expected, "
                           f"not {type(manifest).__name__}")
    problems: list[str] = []
    for key, kind in REQUIRED.items():
        if key not in manifest:
            problems.append(f"missing '{key}'")
        elif not isinstance(manifest[key], kind):
            problems.append(f"'{key}' should be {getattr(kind, '__name__', kind)}")
    for key, kind in OPTIONAL.items():
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            problems.append(f"'{key}' should be {getattr(kind, '__name__', kind)}")
    if problems:
        raise MmsentiError(f"invalid manifest: {'; '.join(problems)}")
    if manifest["schema_version"] > SCHEMA_VERSION:
        problems.append(f"schema_version {manifest['schema_version']} is newer than this mmsenti ({SCHEMA_VERSION}); upgrade")
    for key, allowed in (("format", FORMATS), ("variant", VARIANTS), ("precision", PRECISIONS)):
        if manifest[key] not in allowed:
            problems.append(f"{key}={manifest[key]!r} not in {list(allowed)}")
    if "text" not in manifest["modalities"]:
        problems.append("modalities must include 'text'")
    for side in ("inputs", "outputs"):
        for i, spec in enumerate(manifest[side]):
            if not isinstance(spec, dict) or not TENSOR_KEYS <= set(spec):
                problems.append(f"{side}[{i}] needs {sorted(TENSOR_KEYS)}")
            elif spec["dtype"] not in DTYPES:
                problems.append(f"{side}[{i}] ({spec['name']}): dtype {spec['dtype']!r} not in {sorted(DTYPES)}")
            elif not all(isinstance(d, (int, str)) for d in spec["shape"]):
                problems.append(f"{side}[{i}] ({spec['name']}): shape entries must be ints or axis names")
    names = {s.get("name") for s in manifest["inputs"] if isinstance(s, dict)}
    if not {"input_ids", "attention_mask"} <= names:
        problems.append("inputs must include input_ids and attention_mask")
    if manifest["variant"] == "fused":
        for m in ("audio", "vision"):
            if m in manifest["modalities"] and not {m, f"{m}_mask"} <= names:
                problems.append(f"fused engine with modality {m} needs inputs {m} and {m}_mask")
    if "score" not in {s.get("name") for s in manifest["outputs"] if isinstance(s, dict)}:
        problems.append("outputs must include 'score'")
    for key in ("path", "max_length", "pad_id"):
        if key not in manifest["tokenizer"]:
            problems.append(f"tokenizer.{key} missing")
    problems += _extractor_problems(manifest.get("extractors"), manifest["features"])
    if folder is not None:
        folder = Path(folder)
        if not (folder / manifest["engine"]).is_file():
            problems.append(f"engine file {manifest['engine']} is missing")
        if not (folder / manifest["tokenizer"].get("path", "tokenizer")).is_dir():
            problems.append("tokenizer folder is missing")
    if problems:
        raise MmsentiError(f"invalid manifest{f' in {folder}' if folder else ''}: {'; '.join(problems)}")
    return manifest


def _extractor_problems(extractors: dict[str, Any] | None, features: dict[str, Any]) -> list[str]:
    """What is wrong with a manifest's ``extractors`` (see the module docstring); ``None`` is fine (older manifests)."""
    if extractors is None:
        return []
    problems = []
    reasons = extractors.get("reasons")
    reasons = {} if reasons is None else reasons
    if not isinstance(reasons, dict):
        return ["extractors.reasons should be a dict of modality -> reason"]
    for m in FRAME_MODALITIES:
        if m not in extractors:
            continue
        spec = extractors[m]
        if spec is None:
            if not isinstance(reasons.get(m), str) or not reasons[m]:
                problems.append(f"extractors.{m} is null without a reason (extractors.reasons.{m})")
            continue
        if not isinstance(spec, dict):
            problems.append(f"extractors.{m} should be an extractor spec (dict) or null")
            continue
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            problems.append(f"extractors.{m}.name missing")
        if not isinstance(spec.get("dim"), int) or isinstance(spec.get("dim"), bool):
            problems.append(f"extractors.{m}.dim should be an int")
        elif m in features and isinstance(features[m], dict) and features[m].get("dim") not in (None, spec["dim"]):
            problems.append(f"extractors.{m}.dim {spec['dim']} != features.{m}.dim {features[m]['dim']}")
        if not isinstance(spec.get("parameters", {}), dict):
            problems.append(f"extractors.{m}.parameters should be a dict")
    seconds = extractors.get("max_seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
        problems.append("extractors.max_seconds should be a number or null")
    return problems


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Validate, then atomically write ``folder/manifest.json``."""
    validate_manifest(manifest, folder)
    return write_json_atomic(Path(folder) / MANIFEST_NAME, manifest)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise MmsentiError(f"{folder}: no {MANIFEST_NAME}; is this an `mmsenti export` folder?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MmsentiError(f"{path}: not valid JSON ({err}); re-export the model (mmsenti export)") from err
    except UnicodeDecodeError as err:
        raise MmsentiError(f"{path}: not UTF-8 JSON (byte {err.start}); re-export the model (mmsenti export)") from err
    return validate_manifest(manifest, folder)


def file_entries(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {bytes, sha256}}`` for every file of an export (manifest excluded)."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            out[str(p.relative_to(folder))] = {"bytes": p.stat().st_size, "sha256": file_digest(p)}
    return out


@contextlib.contextmanager
def staged_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build an export in a hidden sibling folder; move it to ``target`` only on success.

    On any exception the staging folder is removed and ``target`` is left exactly as it was
    (absent, or the previous complete export).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise MmsentiError(f"{target} already exists; choose another --out or pass --overwrite")
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST_NAME).is_file())):
        # --overwrite replaces a previous export, never an unrelated folder or file
        raise MmsentiError(f"refusing to overwrite {target}: it is not an export folder (no {MANIFEST_NAME}); choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    try:
        yield stage
        if not (stage / MANIFEST_NAME).is_file():
            raise MmsentiError(f"internal: export staged in {stage} wrote no manifest")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")  # move aside first: the rename below is then atomic
            os.replace(stage, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are skipped)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out
