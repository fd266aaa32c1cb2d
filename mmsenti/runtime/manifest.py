"""``manifest.json``: what an exported engine is, and how to feed it.

Every export folder holds one engine file, a ``tokenizer/`` folder and this manifest. The
runtime (:mod:`mmsenti.runtime.predictor`) needs nothing else: inputs/outputs with shapes and
dtypes, the tokenizer and frame-feature specs, modalities, precision, opset, the source
checkpoint's hash, metrics at export, parity figures and library versions.

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
TENSOR_KEYS = {"name", "dtype", "shape"}
DTYPES = {"int64", "int32", "bool", "float32", "float16"}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_manifest(manifest: dict[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """Check a manifest against the schema (and, given its folder, that its files exist).

    Returns the manifest; raises :class:`MmsentiError` naming every problem found.
    """
    problems: list[str] = []
    for key, kind in REQUIRED.items():
        if key not in manifest:
            problems.append(f"missing '{key}'")
        elif not isinstance(manifest[key], kind):
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
    if folder is not None:
        folder = Path(folder)
        if not (folder / manifest["engine"]).is_file():
            problems.append(f"engine file {manifest['engine']} is missing")
        if not (folder / manifest["tokenizer"].get("path", "tokenizer")).is_dir():
            problems.append("tokenizer folder is missing")
    if problems:
        raise MmsentiError(f"invalid manifest{f' in {folder}' if folder else ''}: {'; '.join(problems)}")
    return manifest


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
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MmsentiError(f"{path}: not valid JSON ({err})") from err
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
