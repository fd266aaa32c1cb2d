"""CMU-MOSI (and MOSEI) and CH-SIMS regression metrics, computed exactly as MMSA computes them.

Why a re-implementation rather than "accuracy + F1": published MOSI numbers (MMSA, the
MulT/MISA/Self-MM line of papers) all come from one function, MMSA's
``MetricsTop.__eval_mosi_regression``, and its details change the numbers by whole points:

* ``Has0_*`` is binary with ``>= 0`` on *all* samples (a neutral 0 counts as positive);
* ``Non0_*`` first drops samples whose *truth* is exactly 0, then uses ``> 0``;
* F1 is scikit-learn's **weighted** F1 of the two classes, not positive-class F1;
* ``Mult_acc_7`` / ``Mult_acc_5`` compare ``np.round`` of predictions and truths clipped to
  ``[-3, 3]`` / ``[-2, 2]`` (``np.round`` rounds half to even: 0.5 -> 0, 1.5 -> 2);
* ``MAE`` is the mean absolute error, ``Corr`` Pearson's r via ``np.corrcoef``.

MMSA reports every value rounded to 4 decimals; :func:`mosi_regression_metrics` returns
unrounded floats by default (``round_digits=4`` gives MMSA's printout).

Deliberate deviations, each where MMSA would give NaN or crash rather than a number:

* ``Corr`` is **0.0** when predictions or truths are constant (``np.corrcoef`` would return
  NaN with a RuntimeWarning; an untrained model that predicts the mean is the common case,
  and a NaN would poison "best checkpoint" selection).
* ``Non0_*`` are NaN when every truth is exactly 0 (MMSA raises inside scikit-learn).
* Inputs are flattened and computed in float64 (MMSA computes in the tensor's dtype,
  usually float32; the difference is below 1e-6).

CH-SIMS is scored differently (MMSA's ``__eval_sims_regression``, :func:`sims_regression_metrics`):
labels and predictions in [-1, 1] (both clipped), classes by intervals open on the left —
2 classes ``[-1, 0], (0, 1]``; 3 classes ``[-1, -0.1], (-0.1, 0.1], (0.1, 1]``; 5 classes
``[-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]`` — ``Mult_acc_2/3/5``, the weighted
``F1_score`` of the two classes, and MAE / Corr on the *clipped* values. A data config names its set
(``data.metrics: mosi | sims``, :data:`METRIC_SETS`).

:class:`MosiMetrics` wraps the same function as a torchmetrics ``Metric`` so that a
LightningModule can accumulate predictions over a whole val/test epoch, across DDP ranks
(list states reduced by concatenation), before computing: these metrics are not averages
of per-batch values.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, f1_score
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

METRIC_NAMES: tuple[str, ...] = (
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
)

SIMS_METRIC_NAMES: tuple[str, ...] = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")
# MMSA's interval edges for CH-SIMS: a value v is in class i when edges[i] < v <= edges[i + 1]
SIMS_EDGES = {2: (-1.01, 0.0, 1.01), 3: (-1.01, -0.1, 0.1, 1.01), 5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)}

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _as_flat_float64(x: ArrayLike, name: str) -> np.ndarray:
    """Flatten numpy/torch/list input to a 1-D float64 array (MMSA's ``.view(-1)``)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: MOSI metrics need at least one sample")
    return arr


def _multiclass_acc(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """MMSA's ``__multiclass_acc``: share of samples whose rounded values agree."""
    return float(np.sum(np.round(y_pred) == np.round(y_true)) / float(len(y_true)))


def _binary_acc_f1(pred_pos: np.ndarray, true_pos: np.ndarray) -> tuple[float, float]:
    """Accuracy and weighted F1 of two boolean arrays (scikit-learn, as MMSA)."""
    if true_pos.size == 0:
        return float("nan"), float("nan")
    acc = accuracy_score(pred_pos, true_pos)
    with warnings.catch_warnings():
        # An absent class gives precision 0/0; scikit-learn's default already scores it 0
        # (what MMSA reports), the warning is just noise in training logs.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        f1 = f1_score(true_pos, pred_pos, average="weighted")
    return float(acc), float(f1)


def _pearson(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """Pearson's r via ``np.corrcoef``; 0.0 (not NaN) when either side is constant."""
    if y_pred.size < 2 or np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        return 0.0
    return float(np.corrcoef(y_pred, y_true)[0][1])


def mosi_regression_metrics(y_pred: ArrayLike, y_true: ArrayLike, round_digits: int | None = None) -> dict[str, float]:
    """MMSA's MOSI/MOSEI regression metrics for predictions and truths in [-3, 3].

    Args:
        y_pred: model outputs, any shape (flattened), numpy array, torch tensor or list.
        y_true: sentiment labels, same number of elements.
        round_digits: round every value (MMSA prints ``round(x, 4)``); ``None`` = unrounded.

    Returns:
        ``{name: float}`` for the names in :data:`METRIC_NAMES`, in that order.
    """
    pred = _as_flat_float64(y_pred, "y_pred")
    true = _as_flat_float64(y_true, "y_true")
    if pred.shape != true.shape:
        raise ValueError(f"y_pred has {pred.size} values but y_true has {true.size}")

    non_zero = true != 0
    non0_acc, non0_f1 = _binary_acc_f1(pred[non_zero] > 0, true[non_zero] > 0)
    has0_acc, has0_f1 = _binary_acc_f1(pred >= 0, true >= 0)
    out = {
        "Has0_acc_2": has0_acc,
        "Has0_F1_score": has0_f1,
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(true, -2.0, 2.0)),
        "Mult_acc_7": _multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(true, -3.0, 3.0)),
        "MAE": float(np.mean(np.absolute(pred - true))),
        "Corr": _pearson(pred, true),
    }
    if round_digits is not None:
        out = {k: round(v, round_digits) for k, v in out.items()}
    return out


def _sims_classes(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Class index per value, ``edges[i] < v <= edges[i + 1]`` (values already clipped to [-1, 1]).

    Compared in float32, as MMSA compares its float32 tensors with the Python edges: a label of 0.1 (an
    average of five annotators: CH-SIMS labels are multiples of 0.1) is then exactly on the edge and
    neutral, where float64 would see float32's 0.10000000149 and call it positive.
    """
    inner = np.asarray(edges[1:-1], dtype=np.float32)
    return np.searchsorted(inner, values.astype(np.float32), side="left").astype(np.float64)


def sims_regression_metrics(y_pred: ArrayLike, y_true: ArrayLike, round_digits: int | None = None) -> dict[str, float]:
    """MMSA's CH-SIMS regression metrics for predictions and truths in [-1, 1] (both clipped first).

    Returns ``{name: float}`` for the names in :data:`SIMS_METRIC_NAMES`. ``Corr`` is 0.0 for constant
    inputs, as in :func:`mosi_regression_metrics`.
    """
    pred = np.clip(_as_flat_float64(y_pred, "y_pred"), -1.0, 1.0)
    true = np.clip(_as_flat_float64(y_true, "y_true"), -1.0, 1.0)
    if pred.shape != true.shape:
        raise ValueError(f"y_pred has {pred.size} values but y_true has {true.size}")
    classes = {n: (_sims_classes(pred, e), _sims_classes(true, e)) for n, e in SIMS_EDGES.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        f1 = float(f1_score(classes[2][1], classes[2][0], average="weighted"))
    out = {
        "Mult_acc_2": _multiclass_acc(*classes[2]),
        "Mult_acc_3": _multiclass_acc(*classes[3]),
        "Mult_acc_5": _multiclass_acc(*classes[5]),
        "F1_score": f1,
        "MAE": float(np.mean(np.absolute(pred - true))),
        "Corr": _pearson(pred, true),
    }
    if round_digits is not None:
        out = {k: round(v, round_digits) for k, v in out.items()}
    return out


# data.metrics -> the function; the first name of each set's table is what epoch logs lead with
METRIC_SETS = {"mosi": mosi_regression_metrics, "sims": sims_regression_metrics}


def metric_function(name: str):
    """The metric set ``name`` (``data.metrics``), or one line listing the sets."""
    try:
        return METRIC_SETS[name]
    except KeyError:
        raise ValueError(f"metric set {name!r}; choose one of {', '.join(METRIC_SETS)}") from None


class MosiMetrics(Metric):
    """Accumulates predictions/targets over an epoch, then computes the MMSA metric dict.

    Usage in a LightningModule::

        self.val_metrics = MosiMetrics()
        ...  # validation_step
        self.val_metrics.update(preds, batch.labels)
        ...  # on_validation_epoch_end
        self.log_dict({f"val/{k}": v for k, v in self.val_metrics.compute().items()})
        self.val_metrics.reset()

    States are lists concatenated across processes (``dist_reduce_fx="cat"``), so under DDP
    ``compute()`` sees every rank's samples (DistributedSampler's padding duplicates included).
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    preds: list[torch.Tensor]
    target: list[torch.Tensor]

    def __init__(self, round_digits: int | None = None, metric_set: str = "mosi", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_digits = round_digits
        self.metric_set = metric_set
        self._compute_fn = metric_function(metric_set)  # mosi (MOSI/MOSEI) or sims (CH-SIMS)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """Store one batch (any shapes with equal element counts; flattened)."""
        preds = torch.as_tensor(preds).detach().reshape(-1)
        target = torch.as_tensor(target).detach().reshape(-1)
        # float64 states: the same numbers the function sees (labels like 2.4 stay exact);
        # Apple's MPS has no float64, so there the values stay float32.
        dtype = torch.float32 if preds.device.type == "mps" else torch.float64
        preds, target = preds.to(dtype), target.to(dtype)
        if preds.numel() != target.numel():
            raise ValueError(f"preds has {preds.numel()} values but target has {target.numel()}")
        self.preds.append(preds)
        self.target.append(target)

    def compute(self) -> dict[str, float]:
        """The metric dict over everything seen since the last ``reset()``."""
        # after a DDP sync the list states arrive already concatenated into one tensor
        if isinstance(self.preds, list) and not self.preds:
            raise ValueError("MosiMetrics.compute() called before any update()")
        return self._compute_fn(dim_zero_cat(self.preds), dim_zero_cat(self.target), self.round_digits)


def format_metrics_table(metrics_by_split: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """Render ``{split: {metric: value}}`` as an aligned text table.

    Rows are metric names (MMSA's order first, then any others in first-seen order),
    columns are splits in the given order; values have ``digits`` decimals, ``-`` marks a
    metric a split lacks.
    """
    splits = list(metrics_by_split)
    seen = [name for m in metrics_by_split.values() for name in m]
    order = METRIC_NAMES + SIMS_METRIC_NAMES
    names = [n for n in dict.fromkeys(order) if n in seen] + [n for n in dict.fromkeys(seen) if n not in order]
    header = ["metric", *splits]
    rows = [[name, *(_fmt(metrics_by_split[s].get(name), digits) for s in splits)] for name in names]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"
