"""ONNX Runtime sessions, configured once for everything that runs an engine (torch-free).

Why each setting:

* ``intra_op_num_threads`` — pinned (default: the physical cores we may use) so figures say what
  they were measured with;
* ``session.intra_op.allow_spinning = 0`` by default — ORT's worker threads otherwise spin after
  each run and steal the cores from whatever runs next (on 2 cores that slowed the next variant
  3–4x, see ``../shared/ASSETS.md``). A dedicated server may turn it back on (``spin=True``);
* ``graph_optimization_level = ORT_ENABLE_ALL`` — layout and fusion passes (LayerNorm, GELU,
  attention, MatMul+Add); ``optimized_model_path`` can save the result for inspection;
* ``disabled_optimizers`` — on CPU, ORT's ``SkipLayerNormFusion`` is turned off: ORT 1.31's fused
  ``SkipLayerNormalization`` CPU kernel took ~63 µs per ``[1, 32, 384]`` call, 13% of the fused INT8
  engine's batch-1 time; the unfused Add + LayerNormalization is 7–12% faster end to end (fp32
  and INT8, batch 1 and 64; ``experiments/engines``);
* execution providers — ``cpu``, ``cuda``, or ``tensorrt`` (ORT's TensorRT EP; see
  :mod:`mmsenti.runtime.tensorrt` for its options), each with a clear error when unavailable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError

CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)  # see the module notes
PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (non-Linux)
        return max(1, os.cpu_count() or 1)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_providers(device: str = "cpu", provider_options: dict[str, Any] | None = None) -> list[Any]:
    """``cpu`` | ``cuda`` | ``tensorrt`` | ``auto`` → an ORT providers list (with fall-backs)."""
    have = available_providers()
    if device == "auto":
        device = "tensorrt" if PROVIDER_NAMES["tensorrt"] in have else "cuda" if PROVIDER_NAMES["cuda"] in have else "cpu"
    if device not in PROVIDER_NAMES:
        raise MmsentiError(f"device {device!r}; choose cpu, cuda, tensorrt or auto")
    name = PROVIDER_NAMES[device]
    if name not in have:
        hint = ("install the GPU build instead of the CPU one: pip install -e '.[gpu]' (onnxruntime-gpu; the two "
                "cannot be installed together)" if device != "cpu" else "reinstall onnxruntime")
        if device == "tensorrt":
            hint += "; the TensorRT EP also needs TensorRT's libraries and an NVIDIA GPU"
        raise MmsentiError(f"ONNX Runtime here has no {name} (available: {', '.join(have)}); {hint}")
    providers: list[Any] = [(name, provider_options or {})] if provider_options else [name]
    if device == "tensorrt":
        providers += ["CUDAExecutionProvider", "CPUExecutionProvider"]  # nodes TensorRT rejects fall back
    elif device == "cuda":
        providers += ["CPUExecutionProvider"]
    return providers


def make_session(model_path: str | Path, threads: int | None = None, spin: bool = False, device: str = "cpu",
                 optimization: str = "all", provider_options: dict[str, Any] | None = None,
                 optimized_model_path: str | Path | None = None, sequential: bool = True,
                 disabled_optimizers: tuple[str, ...] | None = None):
    """An ``onnxruntime.InferenceSession`` with the settings above.

    ``disabled_optimizers``: ORT graph transformers to skip; ``None`` = :data:`CPU_DISABLED_OPTIMIZERS` on CPU.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or default_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if sequential else ort.ExecutionMode.ORT_PARALLEL
    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise MmsentiError(f"graph optimization {optimization!r}; choose one of {', '.join(levels)}")
    opts.graph_optimization_level = levels[optimization]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
    opts.log_severity_level = 3
    if optimized_model_path:
        opts.optimized_model_filepath = str(optimized_model_path)
    path = Path(model_path)
    if not path.is_file():
        raise MmsentiError(f"{path}: no such ONNX file")
    try:
        if disabled_optimizers is None:
            disabled_optimizers = CPU_DISABLED_OPTIMIZERS if device == "cpu" else ()
        return ort.InferenceSession(str(path), sess_options=opts, providers=resolve_providers(device, provider_options),
                                    disabled_optimizers=list(disabled_optimizers))
    except MmsentiError:
        raise
    except Exception as err:  # a corrupt / truncated file, or an op the provider cannot run
        raise MmsentiError(f"{path}: ONNX Runtime cannot load it ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
