"""MOSI metrics match MMSA: shared test vectors when present, hand-computed cases always."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsenti.metrics import (METRIC_NAMES, SIMS_METRIC_NAMES, MosiMetrics, format_metrics_table, mosi_regression_metrics,
                             sims_regression_metrics)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VECTORS = DATA / "mosi_metrics_vectors.json"


def _vector_cases() -> list[dict]:
    if not VECTORS.is_file():
        return []
    return json.loads(VECTORS.read_text())["cases"]


@pytest.fixture(scope="module")
def vector_cases() -> list[dict]:
    cases = _vector_cases()
    if not cases:
        pytest.skip(f"shared MOSI metric vectors not found at {VECTORS} (only present beside the project checkout)")
    return cases


def test_shared_vectors_unrounded(vector_cases):
    for case in vector_cases:
        got = mosi_regression_metrics(case["y_pred"], case["y_true"])
        assert list(got) == list(METRIC_NAMES)
        for name, want in case["expected"].items():
            assert got[name] == pytest.approx(want, abs=1e-9, rel=0), (case["name"], name)


def test_shared_vectors_rounded(vector_cases):
    for case in vector_cases:
        got = mosi_regression_metrics(case["y_pred"], case["y_true"], round_digits=4)
        assert got == case["expected_rounded"], case["name"]


def test_shared_vectors_accept_torch_and_numpy(vector_cases):
    case = vector_cases[1]
    want = mosi_regression_metrics(case["y_pred"], case["y_true"])
    pred_column = torch.tensor(case["y_pred"], dtype=torch.float64)[:, None]  # [N, 1] like a regression head
    as_torch = mosi_regression_metrics(pred_column, torch.tensor(case["y_true"]))
    as_numpy = mosi_regression_metrics(np.array(case["y_pred"]), np.array(case["y_true"]))
    assert as_numpy == want
    for name in METRIC_NAMES:  # torch.tensor(y_true) is float32: equal to ~1e-6
        assert as_torch[name] == pytest.approx(want[name], abs=1e-6)


def test_hand_computed_mixed_signs_and_zero_truth():
    # truth 0 counts as positive for Has0 and is dropped for Non0.
    got = mosi_regression_metrics([0.5, -0.4, -0.2, 1.4], [1.0, -1.0, 0.0, 2.0])
    # Has0: pred>=0 [T,F,F,T] vs truth>=0 [T,F,T,T] -> 3/4. Weighted F1: class True (support 3)
    # P=1, R=2/3, F1=0.8; class False (support 1) P=1/2, R=1, F1=2/3 -> (3*0.8 + 2/3) / 4.
    assert got["Has0_acc_2"] == pytest.approx(0.75)
    assert got["Has0_F1_score"] == pytest.approx(23 / 30)
    # Non0: drop the zero truth -> [T,F,T] vs [T,F,T].
    assert got["Non0_acc_2"] == pytest.approx(1.0)
    assert got["Non0_F1_score"] == pytest.approx(1.0)
    # rounded preds 0, -0, -0, 1 vs truths 1, -1, 0, 2: only the zero matches.
    assert got["Mult_acc_7"] == pytest.approx(0.25)
    assert got["Mult_acc_5"] == pytest.approx(0.25)
    assert got["MAE"] == pytest.approx((0.5 + 0.6 + 0.2 + 0.6) / 4)
    # deviations from means 0.325 / 0.5: cov sum 3.05, squares 1.9875 and 5.
    assert got["Corr"] == pytest.approx(3.05 / math.sqrt(1.9875 * 5))


def test_hand_computed_clipping_and_half_to_even_rounding():
    got = mosi_regression_metrics([4.2, -2.4, 1.6, 0.4], [3.0, -3.0, 2.5, 0.5])
    # Acc-7: preds clip+round 3, -2, 2, 0; truths 3, -3, 2 (2.5 -> 2), 0 (0.5 -> 0) -> 3/4.
    assert got["Mult_acc_7"] == pytest.approx(0.75)
    # Acc-5: clipping to [-2, 2] makes -2.4 and -3 agree -> 4/4.
    assert got["Mult_acc_5"] == pytest.approx(1.0)
    assert got["MAE"] == pytest.approx((1.2 + 0.6 + 0.9 + 0.1) / 4)  # MAE uses unclipped values


def test_hand_computed_zero_prediction_and_constant_corr():
    got = mosi_regression_metrics(np.zeros(2), [1.0, -1.0])
    # pred 0 is positive for Has0 (>=0) and negative for Non0 (>0).
    assert got["Has0_acc_2"] == pytest.approx(0.5)
    assert got["Has0_F1_score"] == pytest.approx(1 / 3)  # (1 * 2/3 + 1 * 0) / 2
    assert got["Non0_acc_2"] == pytest.approx(0.5)
    assert got["Non0_F1_score"] == pytest.approx(1 / 3)
    assert got["Corr"] == 0.0  # np.corrcoef would give NaN for a constant prediction


@pytest.mark.filterwarnings("error")  # no RuntimeWarning from np.corrcoef either
def test_constant_prediction_corr_is_zero_not_nan():
    got = mosi_regression_metrics(torch.full((50,), 0.7), torch.linspace(-3, 3, 50))
    assert got["Corr"] == 0.0
    assert all(not math.isnan(v) for v in got.values())
    assert mosi_regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])["Corr"] == 0.0  # constant truth too


def test_all_zero_truth_gives_nan_non0_and_errors_on_bad_input():
    got = mosi_regression_metrics([0.1, -0.1], [0.0, 0.0])
    assert math.isnan(got["Non0_acc_2"]) and math.isnan(got["Non0_F1_score"])
    with pytest.raises(ValueError, match="empty"):
        mosi_regression_metrics([], [])
    with pytest.raises(ValueError, match="3 values"):
        mosi_regression_metrics([1.0, 2.0, 3.0], [1.0])


def test_round_digits():
    got = mosi_regression_metrics([0.5, -0.4, -0.2, 1.4], [1.0, -1.0, 0.0, 2.0], round_digits=4)
    assert got["Has0_F1_score"] == 0.7667
    assert got["Corr"] == round(3.05 / math.sqrt(1.9875 * 5), 4)


def _random_case(n: int = 97, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.round(torch.empty(n).uniform_(-3, 3, generator=g) * 5) / 5  # labels on a 0.2 grid, zeros included
    preds = target + 0.8 * torch.randn(n, generator=g)
    return preds, target


def test_torchmetrics_class_matches_function_over_several_updates():
    preds, target = _random_case()
    metric = MosiMetrics()
    for lo, hi in [(0, 10), (10, 11), (11, 60), (60, 97)]:
        metric.update(preds[lo:hi, None], target[lo:hi])  # [B, 1] outputs, as a regression head gives
    assert metric.compute() == mosi_regression_metrics(preds, target)

    metric.reset()
    metric.update(preds[:30], target[:30])
    assert metric.compute() == mosi_regression_metrics(preds[:30], target[:30])


def test_torchmetrics_class_states_are_cat_lists_and_rounding():
    metric = MosiMetrics(round_digits=4)
    assert metric._defaults == {"preds": [], "target": []}
    assert all(fx.__name__ == "dim_zero_cat" for fx in metric._reductions.values())
    preds, target = _random_case(seed=1)
    metric.update(preds, target)
    assert metric.compute() == mosi_regression_metrics(preds, target, round_digits=4)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_torchmetrics_class_errors():
    metric = MosiMetrics()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match="3 values"):
        metric.update(torch.zeros(3), torch.zeros(2))


def test_format_metrics_table():
    table = format_metrics_table(
        {
            "valid": {"MAE": 0.71234, "Corr": 0.5, "Has0_acc_2": 0.8},
            "test": {"Has0_acc_2": 0.75, "MAE": 0.9, "extra": 1},
        }
    )
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "valid", "test"]
    assert set(lines[1]) <= {"-", " "}
    body = [line.split() for line in lines[2:]]
    assert body == [
        ["Has0_acc_2", "0.8000", "0.7500"],
        ["MAE", "0.7123", "0.9000"],
        ["Corr", "0.5000", "-"],
        ["extra", "-", "1.0000"],
    ]
    assert len({len(line) for line in lines}) == 1  # values right-aligned under their split


# ---------------------------------------------------------------------------- CH-SIMS (MMSA's __eval_sims_regression)
def test_sims_classes_by_hand_with_edges_and_clipping():
    # truths on every class edge; CH-SIMS labels are multiples of 0.1 (five annotators in steps of 0.5)
    truth = [-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0, 0.2]
    pred = [-3.0, -0.69, -0.11, 0.05, 0.1, 0.71, 2.0, -0.2]  # -3 and 2 clip to -1 and 1
    m = sims_regression_metrics(pred, truth)
    assert list(m) == list(SIMS_METRIC_NAMES)
    # 2 classes [-1,0] (0,1]: truth 0,0,0,0,1,1,1,1; pred 0,0,0,1,1,1,1,0 -> 6/8
    assert m["Mult_acc_2"] == pytest.approx(6 / 8)
    # 3 classes [-1,-.1] (-.1,.1] (.1,1]: truth 0,0,0,1,1,2,2,2; pred 0,0,0,1,1,2,2,0 -> 7/8
    assert m["Mult_acc_3"] == pytest.approx(7 / 8)
    # 5 classes [-1,-.7] (-.7,-.1] (-.1,.1] (.1,.7] (.7,1]: truth 0,0,1,2,2,3,4,3; pred 0,1,1,2,2,4,4,1 -> 5/8
    assert m["Mult_acc_5"] == pytest.approx(5 / 8)
    # MAE on the clipped values
    clipped = np.clip(pred, -1, 1)
    assert m["MAE"] == pytest.approx(float(np.mean(np.abs(clipped - np.array(truth)))))
    assert m["Corr"] == pytest.approx(float(np.corrcoef(clipped, truth)[0, 1]))


def test_sims_edge_labels_compare_in_float32_like_mmsa():
    # float32 labels (what a batch holds): 0.1f is 0.10000000149 and -0.7f is -0.69999999 in float64, yet MMSA,
    # comparing float32 tensors with the edges, counts them on the edge: neutral and most negative
    labels = torch.tensor([0.1, -0.7], dtype=torch.float32)
    m = sims_regression_metrics(torch.tensor([0.0, -0.9]), labels)
    assert m["Mult_acc_3"] == 1.0 and m["Mult_acc_5"] == 1.0  # float64 comparisons would give 0.5 and 0.0


def test_metric_set_in_the_torchmetrics_class():
    metric = MosiMetrics(metric_set="sims")
    metric.update(torch.tensor([0.5, -0.5]), torch.tensor([0.4, -0.6]))
    assert set(metric.compute()) == set(SIMS_METRIC_NAMES)
    with pytest.raises(ValueError, match="metric set 'simz'; choose one of mosi, sims"):
        MosiMetrics(metric_set="simz")
