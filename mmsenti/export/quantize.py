"""ONNX Runtime INT8 quantization (dynamic, and static with calibration batches from the
datamodule) and fp16 conversion of an exported fp32 graph.

* **dynamic** (``QOperator``: ``MatMulInteger`` + ``DynamicQuantizeLinear``): weights INT8 once,
  activations quantized per call from their observed range. No calibration; the usual CPU choice
  for transformers.
* **static** (``QDQ``): activation ranges fixed from calibration batches drawn from the training
  split of the datamodule (``MinMax``, ``Entropy`` or ``Percentile``). QDQ graphs are also what
  TensorRT 10+/11 consumes for explicit INT8.

Both take ``per_channel`` weights and ``exclude`` (node-name substrings kept in fp32 — the
sensitive layers, e.g. the regression head). Graphs are prepared first: the dynamo exporter's
intermediate shape annotations are removed (ORT's quantizer mis-reads them, ``../shared/ASSETS.md``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

log = logging.getLogger(__name__)

QUANT_OPS = ["MatMul", "Gemm"]
# dynamic INT8 also quantizes recurrent layers (ORT's DynamicQuantizeLSTM: INT8 input and recurrence
# weights): the BiLSTM text student's two LSTMs take ~85% of its engine time; measured on the
# serving benchmark's BiLSTM student, batch 16, 1 thread: 15.5 ms fp32 -> 9.0 ms (`experiments/serving`).
DYNAMIC_EXTRA_OPS = ["LSTM"]
# kept in fp32 by default: the regression head and the 7-class head decide the sign of the score
# from a handful of weights, and MulT's input projections see raw feature scales. Measured on the
# synthetic MOSI valid split (241 segments, experiments/engines): head only flipped 4 signs
# (+0.83 pt Non0_acc_2 drift), head + input projections 3 (+0.41 pt), at the same batch-1 latency.
DEFAULT_EXCLUDE: tuple[str, ...] = ("model.head", "model.fusion.inputs")


def _graph_nodes(path: str | Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def nodes_matching(path: str | Path, patterns: Iterable[str], op_types: Iterable[str] = QUANT_OPS) -> list[str]:
    """Names of quantizable nodes whose name contains any pattern (the exclude list for ORT)."""
    patterns = [p for p in patterns if p]
    ops = set(op_types)
    return [n.name for n in _graph_nodes(path) if n.op_type in ops and any(p in n.name for p in patterns)]


def batched_weight_matmuls(path: str | Path) -> list[str]:
    """MatMul nodes whose constant weight is not a matrix (rank != 2: e.g. LMF's per-rank factors
    ``[rank, d + 1, out]``). ORT's dynamic ``MatMulInteger`` takes per-channel INT8 weights of rank 2
    only (a rank-3 weight quantizes, then fails at run time: "b zero point is not valid"), so the
    dynamic quantizer keeps these in fp32."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and ranks.get(n.input[1], 2) != 2]


def prepare(src: str | Path, dst: str | Path) -> Path:
    """Strip stale shape annotations and run ORT's pre-processing (graph optimisation + ONNX shape inference)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mmsenti.export.onnx_export import strip_value_info

    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean.onnx"
        strip_value_info(src, clean)
        try:
            # symbolic shape inference fails on the exported encoder ("Min(512, seq)"); ONNX's own suffices
            quant_pre_process(str(clean), str(dst), skip_symbolic_shape=True)
        except Exception as err:  # pre-processing is an optimisation; the quantizer works without it
            log.warning("quant_pre_process failed (%s); quantizing the un-preprocessed graph", str(err).splitlines()[0][:160])
            strip_value_info(src, dst)
    return Path(dst)


def quantize_dynamic_int8(src: str | Path, dst: str | Path, per_channel: bool = True,
                          exclude: Iterable[str] = DEFAULT_EXCLUDE, embeddings: bool = True) -> dict[str, Any]:
    """Dynamic INT8; ``embeddings`` also stores the token-embedding table (a Gather) in INT8.

    The embedding table is ~half of MiniLM's weights: quantizing it takes the file from ~2.5x to
    ~3.7x smaller than fp32, at no measurable cost in agreement (rows are dequantized on lookup).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = QUANT_OPS + DYNAMIC_EXTRA_OPS + (["Gather"] if embeddings else [])
    with tempfile.TemporaryDirectory() as tmp:
        pre = prepare(src, Path(tmp) / "pre.onnx")
        excluded = nodes_matching(pre, exclude, op_types)
        batched = [n for n in batched_weight_matmuls(pre) if n not in excluded]
        if batched:
            log.info("dynamic INT8: %d MatMul(s) with a weight of rank != 2 kept in fp32 (ORT's MatMulInteger takes "
                     "rank-2 weights): %s", len(batched), ", ".join(batched))
            excluded = [*excluded, *batched]
        try:
            quantize_dynamic(str(pre), str(dst), op_types_to_quantize=op_types, per_channel=per_channel,
                             weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                             extra_options={"MatMulConstBOnly": True})
        except Exception as err:
            raise MmsentiError(f"INT8 dynamic quantization failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    return {"method": "dynamic", "format": "QOperator", "weight_type": "int8", "per_channel": per_channel,
            "op_types": op_types, "excluded_patterns": list(exclude), "excluded_nodes": excluded,
            "fp32_batched_weights": batched}


class FeedReader:
    """ORT ``CalibrationDataReader`` over a list of feed dicts (restricted to the graph's inputs)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], input_names: Iterable[str]):
        names = set(input_names)
        self.feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        self._it: Iterator[dict[str, np.ndarray]] = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def calibration_feeds(wrapper, datamodule, num_batches: int = 8, batch_size: int = 16, split: str = "train",
                      seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Calibration batches drawn (shuffled, fixed seed) from a datamodule split, as numpy feeds."""
    from mmsenti.export.wrapper import batch_feeds

    datamodule.setup("fit")
    samples = list(datamodule.splits.get(split) or [])
    if not samples:
        raise MmsentiError(f"static INT8 needs calibration data: the '{split}' split of {datamodule.location} is empty")
    order = np.random.default_rng(seed).permutation(len(samples))
    feeds = []
    for i in range(num_batches):
        chunk = [samples[j] for j in order[i * batch_size:(i + 1) * batch_size]]
        if not chunk:
            break
        feeds.append(batch_feeds(wrapper, datamodule.collator(chunk)))
    return pad_to_common_shape(feeds)


def pad_to_common_shape(feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Pad every batch to the longest token/frame axis of the set (ORT's calibrators stack batches).

    Padding is masked (token id 0 / mask 0, zero frames / mask False), as the collator pads.
    """
    if not feeds:
        return feeds
    longest = {k: max(f[k].shape[1] for f in feeds) for k in feeds[0]}
    out = []
    for f in feeds:
        padded = {}
        for k, x in f.items():
            extra = longest[k] - x.shape[1]
            widths = [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2)
            padded[k] = np.pad(x, widths) if extra else x
        out.append(padded)
    batch = {f["input_ids"].shape[0] for f in out}
    if len(batch) > 1:  # a short last batch: drop it rather than stack ragged batches
        size = out[0]["input_ids"].shape[0]
        out = [f for f in out if f["input_ids"].shape[0] == size]
    return out


def quantize_static_int8(src: str | Path, dst: str | Path, feeds: list[dict[str, np.ndarray]], method: str = "minmax",
                         per_channel: bool = True, exclude: Iterable[str] = DEFAULT_EXCLUDE,
                         symmetric_activations: bool = False) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise MmsentiError(f"calibration method {method!r}; choose one of {', '.join(methods)}")
    if not feeds:
        raise MmsentiError("static INT8 needs at least one calibration batch")
    with tempfile.TemporaryDirectory() as tmp:
        pre = prepare(src, Path(tmp) / "pre.onnx")
        import onnx

        inputs = [i.name for i in onnx.load(str(pre), load_external_data=False).graph.input]
        excluded = nodes_matching(pre, exclude)
        try:
            quantize_static(str(pre), str(dst), FeedReader(feeds, inputs), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=QUANT_OPS, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=excluded, calibrate_method=methods[method],
                            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                                           "MatMulConstBOnly": True})
        except Exception as err:
            raise MmsentiError(f"INT8 static quantization failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    return {"method": "static", "format": "QDQ", "calibration": {"method": method, "batches": len(feeds),
            "samples": int(sum(f["input_ids"].shape[0] for f in feeds))}, "weight_type": "int8", "activation_type": "int8",
            "per_channel": per_channel, "op_types": QUANT_OPS, "excluded_patterns": list(exclude), "excluded_nodes": excluded}


def convert_fp16(src: str | Path, dst: str | Path, keep_io_types: bool = True) -> dict[str, Any]:
    """fp16 weights and compute with fp32 inputs/outputs kept (for GPUs / TensorRT strong typing).

    Ops ORT's converter knows to be unsafe in fp16 stay fp32; LayerNorm/Softmax keep fp32 inputs.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=["LayerNormalization", "Softmax", "Range"])
    # the converter inserts one identical Cast per blocked consumer of a value, all with the same
    # node and output name (invalid ONNX); keep the first of each
    seen: set[tuple[str, ...]] = set()
    nodes = []
    for node in converted.graph.node:
        key = tuple(node.output)
        if node.op_type == "Cast" and key in seen:
            continue
        seen.add(key)
        nodes.append(node)
    del converted.graph.node[:]
    converted.graph.node.extend(nodes)
    onnx.save(converted, str(dst))
    return {"method": "fp16", "keep_io_types": keep_io_types, "kept_fp32_ops": ["LayerNormalization", "Softmax", "Range"]}
