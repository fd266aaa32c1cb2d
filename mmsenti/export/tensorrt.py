"""TensorRT: engine build from the exported ONNX file (the runner and EP options: :mod:`mmsenti.runtime.tensorrt`).

TensorRT is imported lazily and only here. It cannot be installed on our CPU machines (its
libraries come only from NVIDIA's package index), so everything *up to* the engine boundary is
plain Python and tested there: optimization profiles derived from the config, calibration
batches that fit them, and a check that the graph holds only ops TensorRT's ONNX parser takes.

Two routes:

* **TensorRT Python API** (:func:`build_engine`): ``OnnxParser`` → one optimization profile
  (min/opt/max for batch, tokens and frames) → serialized engine, with a timing cache reused
  across builds. Precision:

  - TensorRT ≤ 10 (weakly typed): ``BuilderFlag.FP16``; INT8 either from a Q/DQ graph (explicit
    quantization, preferred) or ``BuilderFlag.INT8`` + an entropy calibrator
    (``IInt8EntropyCalibrator2``) fed with datamodule batches;
  - TensorRT ≥ 11 removed those flags and the calibrator (strong typing): precision comes from
    the graph — an fp16-converted ONNX, or the Q/DQ INT8 ONNX from ORT static quantization with
    entropy calibration on datamodule batches. :func:`build_engine` picks the route by version.

* **ONNX Runtime's TensorRT execution provider** (:func:`ort_tensorrt_options`): the same ONNX
  file, profiles passed as provider options, engine and timing caches kept beside the export.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

from mmsenti.runtime.tensorrt import ProfileSpec, fit_to_profile, import_tensorrt, profile_shapes

log = logging.getLogger(__name__)

# ops TensorRT's ONNX parser rejects (onnx-tensorrt's operator matrix) that exports/quantizers can
# produce; anything in a non-default domain (com.microsoft fused ops) is rejected as well
UNSUPPORTED_OPS = frozenset({
    "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "ConvInteger", "QAttention",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SplitToSequence", "ConcatFromSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
    "Multinomial", "Optional", "OptionalGetElement", "OptionalHasElement", "Bernoulli", "BitShift", "Det",
    "Hardmax", "MaxRoiPool", "MaxUnpool", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss",
})


def check_onnx_for_tensorrt(path: str | Path) -> dict[str, Any]:
    """Ops TensorRT would reject, and notes (int64 inputs are cast to int32 by the parser)."""
    import onnx

    from mmsenti.export.onnx_export import onnx_ops

    ops = onnx_ops(path)
    unsupported = sorted(op for op in ops if op.split("::")[-1] in UNSUPPORTED_OPS or "::" in op)
    model = onnx.load(str(path), load_external_data=False)
    int64_inputs = [i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.INT64]
    has_qdq = "QuantizeLinear" in ops and "DequantizeLinear" in ops
    return {"ok": not unsupported, "unsupported_ops": unsupported, "op_counts": ops, "explicit_int8_qdq": has_qdq,
            "int64_inputs": int64_inputs, "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)}


# ----------------------------------------------------------------------------- builder
def _entropy_calibrator(trt, batches: list[dict[str, np.ndarray]], cache_path: Path):
    """An ``IInt8EntropyCalibrator2`` over datamodule batches (TensorRT ≤ 10 only)."""
    from polygraphy import cuda  # device memory without torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(batches)
            self.buffers: dict[str, Any] = {}
            self.batch_size = int(next(iter(batches[0].values())).shape[0])

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]):
            batch = next(self.batches, None)
            if batch is None:
                return None
            ptrs = []
            for name in names:
                host = batch[name].astype(np.int32) if batch[name].dtype == np.int64 else batch[name]
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = cuda.DeviceArray(shape=host.shape, dtype=host.dtype)
                buf.resize(host.shape)  # reallocates only when the batch is larger
                buf.copy_from(np.ascontiguousarray(host))
                ptrs.append(int(buf.ptr))
            return ptrs

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, inputs: list[dict[str, Any]],
                 profile: ProfileSpec, timing_cache: str | Path | None = None,
                 calibration: list[dict[str, np.ndarray]] | None = None, workspace_gb: float = 2.0) -> dict[str, Any]:
    """Build a serialized TensorRT engine from an ONNX file (see the module docstring for precision)."""
    trt = import_tensorrt()
    check = check_onnx_for_tensorrt(onnx_path)
    if not check["ok"]:
        raise MmsentiError(f"{onnx_path}: ops TensorRT cannot parse: {', '.join(check['unsupported_ops'])} "
                           "(dynamic INT8 graphs are ORT-only; TensorRT INT8 uses the Q/DQ graph)")
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as err:  # no CUDA device / driver
        raise MmsentiError(f"TensorRT found no usable NVIDIA GPU ({str(err).splitlines()[0][:160]}); build engines on a GPU machine") from None
    weak_typing = hasattr(trt.BuilderFlag, "FP16")  # TensorRT <= 10
    flags = 0 if weak_typing else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise MmsentiError(f"TensorRT could not parse {onnx_path}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    trt_profile = builder.create_optimization_profile()
    shapes = profile_shapes(inputs, profile)
    for name, (lo, opt, hi) in shapes.items():
        trt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(trt_profile)

    route = "strongly-typed (precision from the graph)"
    if weak_typing and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        route = "weakly-typed FP16"
    if weak_typing and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if check["explicit_int8_qdq"]:
            route = "explicit INT8 (Q/DQ graph)"
        else:
            if not calibration:
                raise MmsentiError("INT8 without a Q/DQ graph needs calibration batches")
            config.int8_calibrator = _entropy_calibrator(trt, [fit_to_profile(b, inputs, profile) for b in calibration],
                                                         Path(engine_path).with_suffix(".calib"))
            config.set_calibration_profile(trt_profile)
            route = "implicit INT8 (entropy calibrator)"

    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise MmsentiError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    Path(engine_path).write_bytes(bytes(serialized))
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, "route": route, "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
            "timing_cache": str(timing_cache) if timing_cache else None, "build_seconds": round(time.perf_counter() - started, 1)}
