"""A tiny export folder written without torch (for tests of loading, errors and the manifest).

``make_export(folder, dims={"audio": 43})`` writes what ``mmsenti export`` writes, in miniature: a
valid ONNX graph whose score is 0.1 x the number of tokens (frame inputs accepted and ignored), a
word-level ``tokenizer/tokenizer.json`` and a ``manifest.json`` checked by the real validator.
Milliseconds instead of the half-minute of a real export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = ["[PAD]", "[UNK]", "a", "good", "bad", "film", "hi", "i", "liked", "it", "really", "warm", "up"]


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def write_graph(path: Path, dims: dict[str, int]) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])]
    for m, d in dims.items():
        inputs += [helper.make_tensor_value_info(m, TensorProto.FLOAT, ["batch", f"{m}_frames", d]),
                   helper.make_tensor_value_info(f"{m}_mask", TensorProto.BOOL, ["batch", f"{m}_frames"])]
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["mask_f", "axes"], ["tokens"], keepdims=0),
             helper.make_node("Mul", ["tokens", "tenth"], ["score"])]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(np.array(0.1, np.float32), "tenth")]
    graph = helper.make_graph(nodes, "fake", inputs, [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def manifest_for(dims: dict[str, int], extractors: dict[str, Any] | None = None, data: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    inputs = [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
              {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]}]
    for m, d in dims.items():
        inputs += [{"name": m, "dtype": "float32", "shape": ["batch", f"{m}_frames", d]},
                   {"name": f"{m}_mask", "dtype": "bool", "shape": ["batch", f"{m}_frames"]}]
    manifest = {
        "schema_version": 1, "name": "fake", "format": "onnx", "engine": "model.onnx", "onnx": "model.onnx",
        "variant": "fused" if dims else "text_only", "precision": "fp32", "opset": 17,
        "modalities": ["text", *dims], "inputs": inputs, "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch"]}],
        "tokenizer": {"path": "tokenizer", "source": "fake", "max_length": 16, "pad_id": 0, "pad_token": "[PAD]"},
        "features": {m: {"dim": d, "shape": [f"{m}_frames", d]} for m, d in dims.items()},
        "source": {"checkpoint": None}, "parity": {}, "metrics": {}, "files": {}, "versions": {}, "created": "2024-01-01T00:00:00+00:00",
        "data": data or {"mode": "aligned"}, "text": {"normalization": "none"},
    }
    if extractors is not None:
        manifest["extractors"] = extractors
    return manifest


def make_export(folder: str | Path, dims: dict[str, int] | None = None, extractors: dict[str, Any] | None = None,
                data: dict[str, Any] | None = None) -> Path:
    """An export folder at ``folder`` (``dims``: frame modality -> width; none: a text-only engine)."""
    from mmsenti.runtime.manifest import write_manifest

    folder = Path(folder)
    dims = dict(dims or {})
    folder.mkdir(parents=True, exist_ok=True)
    write_graph(folder / "model.onnx", dims)
    write_tokenizer(folder / "tokenizer")
    write_manifest(folder, manifest_for(dims, extractors, data))
    return folder


def audio_spec(**parameters: Any) -> dict[str, Any]:
    """An extractor spec as ``mmsenti extract`` writes it into CSD metadata (librosa_prosody, 43-d)."""
    from mmsenti.media.audio import PROSODY_FEATURES

    params = dict(fmin=65.0, fmax=600.0, pitch_resolution=0.1, pitch_frame_length=1024, n_fft=512, win_length=400,
                  n_mels=40, n_mfcc=13)
    params.update(parameters)
    return {"name": "librosa_prosody", "version": "1", "library": "librosa 0.10", "parameters": params, "rate": 100,
            "sample_rate": 16000, "dim": len(PROSODY_FEATURES), "dimension names": list(PROSODY_FEATURES)}


def write_feature_folder(root: str | Path, spec: dict[str, Any] | None, key: str = "audio", max_seconds: float | None = None) -> Path:
    """A feature folder holding one frame CSD file whose metadata names ``spec`` (``None``: no extractor metadata)."""
    import json

    import numpy as np

    from mmsenti.data.csd import ComputationalSequence, write_csd
    from mmsenti.media.csd_writer import FILES

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dim = int((spec or {}).get("dim") or 43)
    data = {"vid$_$1": (np.zeros((3, dim), np.float32), np.array([[0.0, 0.01], [0.01, 0.02], [0.02, 0.03]]))}
    meta = {"extractor": spec} if spec is not None else {}
    write_csd(ComputationalSequence(f"mmsenti_{key}", data, meta), root / FILES[key])
    if max_seconds is not None:
        (root / "extraction.json").write_text(json.dumps({"extractors": {"max_seconds": max_seconds}}))
    return root
