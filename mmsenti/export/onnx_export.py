"""ONNX export of the wrapped model (``torch.onnx.export(dynamo=True)``) and the parity check.

Why ``dynamo=True``: the legacy TorchScript exporter freezes the sequence length of
``nn.TransformerEncoder`` graphs (the frame encoders and MulT's self-attention); the dynamo
exporter with ``dynamic_shapes`` keeps batch, token and frame axes dynamic (``../shared/ASSETS.md``).
Weights are stored inside the ``.onnx`` file (``external_data=False``; the fused model is ~100 MB).

Parity: after every export the engine runs the same inputs as PyTorch — random batches at several
batch/sequence/frame sizes and, when a datamodule is given, real validation batches — and the
export **fails** when the largest absolute difference of the score exceeds the tolerance for its
precision. Metric drift (engine vs PyTorch MOSI metrics on the validation split) is recorded too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsenti.errors import MmsentiError
from mmsenti.export import DEFAULT_OPSET
from mmsenti.export.wrapper import ExportWrapper, batch_feeds, example_feeds, to_torch_args, torch_outputs
from mmsenti.models.attention import onnx_attention_op

log = logging.getLogger(__name__)

# largest |score difference| (score in [-3, 3]) tolerated between engine and PyTorch, per precision
PARITY_TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2, "int8": 0.35}
# static (calibrated Q/DQ) INT8 also quantizes activations: the fused model measured max |diff| 0.53 on
# the parity shapes (experiments/engines), dynamic INT8 0.26; a real bound, not a bypass
STATIC_INT8_TOLERANCE = 0.6


def parity_tolerance(precision: str, quantization: str | None = None) -> float:
    """The parity bound on |score difference| an export of this precision (and INT8 mode) must meet."""
    if precision == "int8" and quantization == "static":
        return STATIC_INT8_TOLERANCE
    return PARITY_TOLERANCE[precision]
ATTENTION_OPSET = 23  # the first opset with ONNX `Attention`; below it attention exports decomposed
# the random shapes every export is checked at: (batch, tokens, frames)
PARITY_SHAPES = ((1, 8, 5), (2, 32, 50), (5, 17, 1), (8, 64, 120))


def export_onnx(wrapper: ExportWrapper, path: str | Path, opset: int = DEFAULT_OPSET, quiet: bool = True) -> dict[str, Any]:
    """Trace ``wrapper`` with the dynamo exporter and write one self-contained ``.onnx`` file."""
    wrapper = wrapper.eval()
    _forget_rnn_decompositions()
    feeds = example_feeds(wrapper, batch=2, seq=16)
    args = to_torch_args(wrapper, feeds)
    started = time.perf_counter()
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")
        stack.enter_context(onnx_attention_op(wrapper, opset >= ATTENTION_OPSET))
        if quiet:  # the exporter prints progress and per-op notes on stdout
            stack.enter_context(contextlib.redirect_stdout(sink))
            for name in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo"):
                logging.getLogger(name).setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                wrapper, args, dynamo=True, dynamic_shapes=wrapper.dynamic_shapes(),
                input_names=wrapper.input_names, output_names=wrapper.output_names,
                opset_version=opset, external_data=False, optimize=True, verbose=False,
            )
        except Exception as err:
            root = err
            while root.__cause__ is not None:
                root = root.__cause__
            raise MmsentiError(f"ONNX export failed ({type(root).__name__}: {str(root).strip().splitlines()[0][:300]})") from err
        program.save(str(path), external_data=False)
    name_nodes_by_module(path)
    return {"opset": opset, "exporter": "torch.onnx.export(dynamo=True)", "export_seconds": round(time.perf_counter() - started, 2)}


def _forget_rnn_decompositions() -> None:
    """Clear the dispatch caches of the recurrent aten ops before an export.

    An export leaves a cached decomposition of ``aten.lstm`` behind; the next ``torch.export`` in the
    same process then traces LSTMs as a Python loop over the time steps, which specialises the
    sequence axis (seen: the second export of an LSTM model got a fixed frame axis of 20 and tokens
    of 16 instead of ``audio_frames`` / ``seq``; tests/test_lstm_export.py exports twice in one process).
    """
    for packet in (torch.ops.aten.lstm, torch.ops.aten.gru, torch.ops.aten.rnn_tanh, torch.ops.aten.rnn_relu):
        for name in packet.overloads():
            cache = getattr(getattr(packet, name), "_dispatch_cache", None)
            if cache is not None:
                cache.clear()


def name_nodes_by_module(path: str | Path) -> None:
    """Prefix every node name with the module it came from (``model.head.1/node_linear_121``).

    The dynamo exporter records the module path in each node's metadata; putting it in the name
    keeps it visible after ORT's passes, so quantization can leave chosen modules in fp32 and
    profiles read naturally.
    """
    import ast

    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            continue
        try:
            parts = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            continue
        module = parts[-2] if len(parts) > 1 else (parts[0] if parts else "")
        if module and not node.name.startswith(module + "/"):
            node.name = f"{module}/{node.name}"
    onnx.save(model, str(path))


def strip_value_info(src: str | Path, dst: str | Path) -> None:
    """Drop intermediate shape annotations (graph inputs/outputs keep theirs).

    The dynamo exporter annotates intermediate values with symbolic shapes that ORT's quantization
    tools mis-read ("(384) vs (1)"); ORT re-infers what it needs.
    """
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))


def onnx_ops(path: str | Path) -> dict[str, int]:
    """Op type → count (main graph and subgraphs), for the manifest and the TensorRT op check."""
    import onnx

    counts: dict[str, int] = {}

    def walk(graph) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- parity
def parity_cases(wrapper: ExportWrapper, datamodule=None, max_real_batches: int = 2) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Named input sets: random ones at :data:`PARITY_SHAPES`, plus real validation batches."""
    cases = []
    for b, s, t in PARITY_SHAPES:
        frames = {m: t + 3 * j for j, m in enumerate(wrapper.frame_modalities)}
        cases.append((f"random b={b} seq={s} frames={t}", example_feeds(wrapper, batch=b, seq=s, frames=frames, seed=b * 100 + s)))
    if datamodule is not None:
        for i, batch in enumerate(_val_batches(datamodule)):
            if i >= max_real_batches:
                break
            feeds = batch_feeds(wrapper, batch)
            cases.append((f"valid batch {i} b={len(batch)} seq={feeds['input_ids'].shape[1]}", feeds))
    return cases


def _val_batches(datamodule):
    datamodule.setup("validate")
    split = "valid" if datamodule.splits.get("valid") else "train"
    return iter(datamodule._loader(split, train=False))


def run_session(session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def check_parity(wrapper: ExportWrapper, session, precision: str = "fp32", datamodule=None,
                 tolerance: float | None = None, reference=None) -> dict[str, Any]:
    """Max |engine − PyTorch| over the parity cases; raises when beyond ``tolerance``.

    ``reference`` (another session, e.g. the fp32 engine) replaces PyTorch as the reference.
    """
    tol = PARITY_TOLERANCE[precision] if tolerance is None else float(tolerance)
    # a classification score is an unbounded logit: compared as p(positive) = sigmoid(score), on the
    # same bound at the decision boundary (sigmoid' <= 1/4: the tolerance / 4), so a large logit's
    # INT8 rounding (12.0 vs 11.5, both p > 0.99999) is not a parity failure while a flip near 0 is
    classification = getattr(getattr(wrapper.model, "config", None), "task", "regression") == "classification"
    if classification:
        tol = tol / 4
    rows = []
    for name, feeds in parity_cases(wrapper, datamodule):
        ref = run_session(reference, feeds) if reference is not None else torch_outputs(wrapper, feeds)
        got = run_session(session, feeds)
        a, b = got[0].astype(np.float64), np.asarray(ref[0], np.float64)
        if classification:
            a, b = _sigmoid(a), _sigmoid(b)
        diff = float(np.max(np.abs(a - b)))
        row = {"case": name, "max_abs_diff": diff}
        if classification:
            row["max_abs_logit_diff"] = float(np.max(np.abs(got[0].astype(np.float64) - np.asarray(ref[0], np.float64))))
        if len(ref) > 1 and len(got) > 1:
            row["logits_7_max_abs_diff"] = float(np.max(np.abs(got[1].astype(np.float32) - ref[1])))
        row["sign_agreement"] = float(np.mean(np.sign(got[0]) == np.sign(ref[0])))
        rows.append(row)
    worst = max(r["max_abs_diff"] for r in rows)
    report = {"reference": "onnx fp32" if reference is not None else "pytorch eager", "tolerance": tol,
              "compared": "sigmoid(score)" if classification else "score",
              "max_abs_diff": worst, "passed": worst <= tol, "cases": rows}
    if worst > tol:
        what = "p(positive) = sigmoid(score)" if classification else "score"
        raise MmsentiError(f"parity check failed: max |{what} difference| {worst:.3g} > tolerance {tol:g} "
                           f"({max(rows, key=lambda r: r['max_abs_diff'])['case']}); the engine does not match the model")
    return report


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


# ----------------------------------------------------------------------------- metrics
def predict_split(run, datamodule, split: str = "valid", wrapper: ExportWrapper | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels over a whole split; ``run(feeds) -> scores`` (an engine or PyTorch)."""
    datamodule.setup("validate")
    scores, labels = [], []
    for batch in datamodule._loader(split, train=False):
        feeds = batch_feeds(wrapper, batch)
        scores.append(np.asarray(run(feeds), dtype=np.float64).reshape(-1))
        labels.append(batch.labels.numpy().astype(np.float64))
    return np.concatenate(scores), np.concatenate(labels)


def metric_drift(wrapper: ExportWrapper, session, datamodule, splits: tuple[str, ...] = ("valid", "test")) -> dict[str, Any]:
    """MOSI metrics of PyTorch and of the engine on each available split, and their difference."""
    from mmsenti.metrics import mosi_regression_metrics

    out: dict[str, Any] = {}
    for split in splits:
        if not datamodule.splits.get(split):
            continue
        ref, labels = predict_split(lambda f: torch_outputs(wrapper, f)[0], datamodule, split, wrapper)
        got, _ = predict_split(lambda f: run_session(session, f)[0], datamodule, split, wrapper)
        m_ref = mosi_regression_metrics(ref, labels)
        m_got = mosi_regression_metrics(got, labels)
        key = "val" if split == "valid" else split
        out[key] = {
            "n": int(labels.size),
            "pytorch": m_ref,
            "engine": m_got,
            "drift": {k: m_got[k] - m_ref[k] for k in m_ref},
            "sign_changes": int(np.sum(np.sign(got) != np.sign(ref))),
            "max_abs_diff": float(np.max(np.abs(got - ref))),
        }
    return out
