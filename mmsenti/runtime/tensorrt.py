"""TensorRT at run time: optimization profiles, ONNX Runtime's TensorRT EP options, and the engine runner.

TensorRT is imported lazily and only here and in :mod:`mmsenti.export.tensorrt` (the builder). It
cannot be installed on our CPU machines (its libraries come only from NVIDIA's package index), so
everything up to the engine boundary is plain Python and tested there.

The profile an engine was built for is recorded in its manifest (``tensorrt.profile``: min/opt/max
per dynamic axis, written by every ONNX and TensorRT export); :func:`manifest_profile` reads it back,
so ORT's TensorRT EP gets the same shapes the export declared (e.g. ``seq`` up to the data's
``max_text_len``), never a hard-coded default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

log = logging.getLogger(__name__)

INSTALL_HINT = ("TensorRT's libraries come only from NVIDIA's package index (pypi.nvidia.com), unreachable from "
                "our machines; on a machine with an NVIDIA GPU run: pip install -e '.[gpu]' — meanwhile use --format onnx")

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
# ----------------------------------------------------------------------------- profiles
@dataclass
class ProfileSpec:
    """min/opt/max of each dynamic axis (``export.tensorrt_profile`` / ``--profile``; default: :meth:`for_text_len`)."""

    batch: tuple[int, int, int] = (1, 8, 64)
    seq: tuple[int, int, int] = (1, 32, 64)
    frames: tuple[int, int, int] = (1, 50, 400)
    extra: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # any other axis by name

    @classmethod
    def for_text_len(cls, max_text_len: int) -> "ProfileSpec":
        """The default profile of an export whose tokenizer truncates at ``max_text_len`` tokens."""
        n = int(max_text_len)
        return cls(seq=(1, min(32, n), n))

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
    spec = profile or manifest_profile(manifest)
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


def manifest_profile(manifest: dict[str, Any]) -> "ProfileSpec":
    """The TensorRT profile a manifest records (``tensorrt.profile``), or the defaults for old manifests."""
    return ProfileSpec.from_config((manifest.get("tensorrt") or {}).get("profile"))


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
