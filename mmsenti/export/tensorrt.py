"""TensorRT: engine build from the exported ONNX file, the ORT TensorRT EP route, and a runner.

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

log = logging.getLogger(__name__)

INSTALL_HINT = ("TensorRT's libraries come only from NVIDIA's package index (pypi.nvidia.com), unreachable from "
                "our machines; on a machine with an NVIDIA GPU run: pip install -e '.[gpu]' — meanwhile use --format onnx")

# ops TensorRT's ONNX parser rejects (onnx-tensorrt's operator matrix) that exports/quantizers can
# produce; anything in a non-default domain (com.microsoft fused ops) is rejected as well
UNSUPPORTED_OPS = frozenset({
    "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "ConvInteger", "QAttention",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SplitToSequence", "ConcatFromSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
    "Multinomial", "Optional", "OptionalGetElement", "OptionalHasElement", "Bernoulli", "BitShift", "Det",
    "Hardmax", "MaxRoiPool", "MaxUnpool", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss",
})


def import_tensorrt():
    """``import tensorrt``, or one clear :class:`MmsentiError` saying why not and what to do."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception as err:  # ImportError, or the metapackage's own failure to find its libraries
        raise MmsentiError(f"TensorRT is not available here ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else 'no module'}); "
                           f"{INSTALL_HINT}") from None
    return trt


def tensorrt_status() -> dict[str, Any]:
    """What this machine offers: TensorRT version, ORT's TensorRT/CUDA EPs (never raises)."""
    status: dict[str, Any] = {"tensorrt": None, "ort_tensorrt_ep": False, "ort_cuda_ep": False}
    try:
        import tensorrt as trt  # noqa: PLC0415

        status["tensorrt"] = trt.__version__
    except Exception:
        pass
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        status["ort_tensorrt_ep"] = "TensorrtExecutionProvider" in providers
        status["ort_cuda_ep"] = "CUDAExecutionProvider" in providers
    except Exception:
        pass
    return status


# ----------------------------------------------------------------------------- graph check
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


# ----------------------------------------------------------------------------- profiles
@dataclass
class ProfileSpec:
    """min/opt/max of each dynamic axis, e.g. from ``configs/export/onnx.yaml`` (``tensorrt.profile``)."""

    batch: tuple[int, int, int] = (1, 8, 64)
    seq: tuple[int, int, int] = (1, 32, 64)
    frames: tuple[int, int, int] = (1, 50, 400)
    extra: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # any other axis by name

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> "ProfileSpec":
        cfg = dict(cfg or {})
        spec = cls(**{k: tuple(int(x) for x in cfg.pop(k)) for k in ("batch", "seq", "frames") if k in cfg})
        spec.extra = {k: tuple(int(x) for x in v) for k, v in cfg.items()}
        for name, dims in spec.axes().items():
            if len(dims) != 3 or not 1 <= dims[0] <= dims[1] <= dims[2]:
                raise MmsentiError(f"tensorrt profile {name}={list(dims)}: need 1 <= min <= opt <= max")
        return spec

    def axes(self) -> dict[str, tuple[int, int, int]]:
        return {"batch": self.batch, "seq": self.seq, "frames": self.frames, **self.extra}

    def axis(self, name: str) -> tuple[int, int, int]:
        if name in self.extra:
            return self.extra[name]
        if name.endswith("_frames"):
            return self.frames
        if name in ("batch", "seq"):
            return getattr(self, name)
        raise MmsentiError(f"no tensorrt profile for axis {name!r}; add it under tensorrt.profile")


def profile_shapes(inputs: list[dict[str, Any]], spec: ProfileSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input: (min_shape, opt_shape, max_shape)}`` from the manifest's input specs."""
    out = {}
    for inp in inputs:
        dims = [(d, d, d) if isinstance(d, int) else spec.axis(d) for d in inp["shape"]]
        out[inp["name"]] = tuple(tuple(int(d[i]) for d in dims) for i in range(3))
    return out


def ort_profile_strings(shapes: dict[str, tuple[tuple[int, ...], ...]]) -> dict[str, str]:
    """ORT TensorRT EP's ``trt_profile_{min,opt,max}_shapes`` strings (``name:1x8,name2:1x8x74``)."""
    return {key: ",".join(f"{name}:{'x'.join(map(str, s[i]))}" for name, s in shapes.items())
            for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"))}


def ort_tensorrt_options(manifest: dict[str, Any], cache_dir: str | Path, fp16: bool | None = None,
                         profile: ProfileSpec | None = None) -> dict[str, Any]:
    """Provider options for ``TensorrtExecutionProvider`` (the second TensorRT route)."""
    spec = profile or ProfileSpec.from_config(manifest.get("tensorrt", {}).get("profile"))
    cache = Path(cache_dir)
    options: dict[str, Any] = {
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": bool(manifest["precision"] == "fp16" if fp16 is None else fp16),
        "trt_max_workspace_size": 2 << 30,
        **ort_profile_strings(profile_shapes(manifest["inputs"], spec)),
    }
    # a Q/DQ graph carries its own INT8 scales; TensorRT reads them (no calibration table needed)
    if manifest["precision"] == "int8":
        options["trt_int8_enable"] = True
    return options


def fit_to_profile(feeds: dict[str, np.ndarray], inputs: list[dict[str, Any]], spec: ProfileSpec) -> dict[str, np.ndarray]:
    """Crop a calibration batch to the profile's max shapes (TensorRT rejects anything larger)."""
    shapes = profile_shapes(inputs, spec)
    out = {}
    for name, (lo, _, hi) in shapes.items():
        x = feeds[name]
        x = x[tuple(slice(0, h) for h in hi)]
        if any(d < m for d, m in zip(x.shape, lo)):
            raise MmsentiError(f"calibration input {name} {list(x.shape)} is below the profile minimum {list(lo)}")
        out[name] = np.ascontiguousarray(x)
    return out


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


class TensorRTRunner:
    """Runs a serialized engine with polygraphy's ``TrtRunner`` (dynamic shapes, no torch)."""

    def __init__(self, engine_path: str | Path, output_names: list[str]):
        import_tensorrt()
        try:
            from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        except ImportError:
            raise MmsentiError("running TensorRT engines needs polygraphy: pip install -e '.[gpu]'") from None
        self.output_names = output_names
        self.runner = TrtRunner(EngineFromBytes(Path(engine_path).read_bytes()))
        self.runner.activate()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.runner.infer(feeds)
        return [np.asarray(out[n]) for n in self.output_names]
