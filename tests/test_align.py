"""Vectorised alignment == the slow reference == the SDK's own intersection rule."""

from __future__ import annotations

import numpy as np
import pytest

from mmsenti.data.align import (
    EPS,
    collapse_frames,
    overlap_pairs,
    overlap_ranges,
    reference_collapse,
    select_frames,
    sort_by_start,
    subsample_frames,
)

HOWS = ("mean", "max", "first")


def _grid(n: int, rate: float, t0: float = 0.0) -> np.ndarray:
    edges = t0 + np.arange(n + 1) / rate
    return np.stack([edges[:-1], edges[1:]], 1)


def _check(feats, frames, words, how):
    fast = collapse_frames(feats, frames, words, how=how)
    ref = reference_collapse(feats, frames, words, how=how)
    np.testing.assert_array_equal(fast.counts, ref.counts)
    np.testing.assert_allclose(fast.features, ref.features, rtol=1e-6, atol=1e-6)
    assert fast.features.dtype == np.float32
    return fast


@pytest.mark.parametrize("how", HOWS)
def test_edge_cases_match_reference(how):
    frames = _grid(10, 10.0)  # [0, 0.1], [0.1, 0.2], ..., [0.9, 1.0]
    feats = np.arange(20, dtype=np.float32).reshape(10, 2)
    words = np.array([
        [0.0, 0.1],  # exactly one frame; neighbours touch at the edges (overlap 0)
        [0.0995, 0.2],  # frame 0 overlaps by 0.0005 < eps: not counted
        [0.098, 0.2],  # frame 0 overlaps by 0.002 > eps: counted
        [0.25, 0.26],  # inside one frame
        [0.5, 0.5005],  # shorter than eps: the SDK drops it
        [1.5, 2.0],  # after all frames: no frames
        [-1.0, -0.5],  # before all frames
        [0.35, 0.65],  # partial frames at both edges count
        [0.9, 1.2],  # runs past the last frame (hi == number of frames)
        [0.3, 0.2],  # end before start
    ])
    out = _check(feats, frames, words, how)
    np.testing.assert_array_equal(out.counts, [1, 1, 2, 1, 0, 0, 0, 4, 1, 0])
    assert out.num_empty == 4
    np.testing.assert_array_equal(out.features[5], [0, 0])  # empty -> zeros


@pytest.mark.parametrize("how", HOWS)
def test_frames_outside_words_and_unsorted(how):
    rng = np.random.default_rng(1)
    frames = _grid(40, 10.0)
    feats = rng.standard_normal((40, 3)).astype(np.float32)
    words = np.array([[0.52, 0.97], [1.31, 1.33], [2.0, 2.4]])  # most frames fall outside any word
    perm = rng.permutation(40)
    a = _check(feats, frames, words, how)
    b = _check(feats[perm], frames[perm], words, how)  # frame order must not matter
    np.testing.assert_allclose(a.features, b.features, rtol=1e-6)


@pytest.mark.parametrize("how", HOWS)
def test_irregular_frames_take_general_path(how):
    # overlapping frames of varying length (ends not monotone), plus a zero-length frame
    frames = np.array([[0.0, 1.0], [0.1, 0.2], [0.15, 0.9], [0.5, 0.5], [0.6, 0.7], [0.95, 1.5]])
    feats = np.arange(12, dtype=np.float32).reshape(6, 2)
    words = np.array([[0.0, 0.12], [0.19, 0.55], [0.5, 0.5004], [0.7, 0.96], [1.2, 1.3], [2, 3]])
    _check(feats, frames, words, how)


@pytest.mark.parametrize("seed", range(6))
def test_random_grids_match_reference(seed):
    rng = np.random.default_rng(seed)
    rate = rng.choice([30.0, 100.0])
    frames = _grid(int(rng.integers(1, 300)), rate, t0=float(rng.uniform(0, 0.05)))
    frames = frames[rng.random(len(frames)) > 0.1]  # gaps (dropped frames)
    feats = rng.standard_normal((len(frames), 4)).astype(np.float32)
    n = int(rng.integers(1, 40))
    starts = np.sort(rng.uniform(-0.2, 3.2, n))
    words = np.stack([starts, starts + rng.uniform(0, 0.4, n)], 1)
    for how in HOWS:
        _check(feats, frames, words, how)


def _sdk_intersections(ref, frames, feats):
    """The SDK's own per-word intersection (``mmdataset.__intersect_and_copy``, epsilon 1e-3)."""
    from mmsdk.mmdatasdk.dataset import dataset as sdk_dataset

    fn = sdk_dataset.mmdataset._mmdataset__intersect_and_copy
    assert sdk_dataset.epsilon == pytest.approx(EPS)
    return fn(None, ref, {"intervals": frames, "features": feats}, sdk_dataset.epsilon)


@pytest.mark.parametrize("seed", range(4))
def test_rule_matches_sdk_intersection(seed):
    rng = np.random.default_rng(100 + seed)
    frames = _grid(200, 100.0, t0=float(rng.uniform(0, 0.01)))
    feats = rng.standard_normal((200, 3)).astype(np.float32)
    starts = np.sort(rng.uniform(0, 2, 30))
    words = np.stack([starts, starts + rng.uniform(0.0, 0.3, 30)], 1)
    ours = collapse_frames(feats, frames, words)
    for i, w in enumerate(words):
        if abs(w[1] - w[0]) < EPS:  # the SDK skips such words before intersecting
            assert ours.counts[i] == 0
            continue
        _, hit_feats = _sdk_intersections(w, frames, feats)
        assert ours.counts[i] == len(hit_feats)
        if len(hit_feats):
            np.testing.assert_allclose(ours.features[i], np.average(hit_feats, axis=0), rtol=1e-5, atol=1e-6)


def test_overlap_ranges_and_pairs():
    frames = _grid(10, 10.0)
    lo, hi = overlap_ranges(frames, np.array([[0.25, 0.55], [2, 3], [0.5, 0.5]]))
    np.testing.assert_array_equal(lo, [2, 10, 5])
    np.testing.assert_array_equal(hi - lo, [4, 0, 0])
    q, f = overlap_pairs(frames, np.array([[0.25, 0.45], [0.0, 0.1]]))
    np.testing.assert_array_equal(q, [0, 0, 0, 1])
    np.testing.assert_array_equal(f, [2, 3, 4, 0])
    assert select_frames(frames, 0.25, 0.45) == slice(2, 5)
    q, f = overlap_pairs(np.zeros((0, 2)), np.array([[0, 1]]))
    assert q.size == 0 and f.size == 0


def test_empty_inputs_and_bad_collapse():
    out = collapse_frames(np.zeros((0, 3)), np.zeros((0, 2)), np.array([[0, 1.0]]))
    assert out.features.shape == (1, 3) and out.counts.tolist() == [0]
    out = collapse_frames(np.ones((2, 3)), _grid(2, 10), np.zeros((0, 2)))
    assert out.features.shape == (0, 3)
    with pytest.raises(ValueError, match="collapse"):
        collapse_frames(np.ones((2, 3)), _grid(2, 10), np.array([[0, 1.0]]), how="median")


def test_nonfinite_values_propagate():
    feats = np.array([[1.0], [-np.inf], [np.nan]], dtype=np.float32)
    out = collapse_frames(feats, _grid(3, 10), np.array([[0, 0.1], [0.1, 0.2], [0.2, 0.3]]))
    assert out.features[0, 0] == 1 and np.isneginf(out.features[1, 0]) and np.isnan(out.features[2, 0])


def test_sort_and_subsample():
    iv = np.array([[2, 3], [0, 1], [1, 2.0]])
    f, s = sort_by_start(np.arange(3)[:, None], iv)
    assert f[:, 0].tolist() == [1, 2, 0] and s[:, 0].tolist() == [0, 1, 2]
    x = np.arange(100)[:, None]
    assert subsample_frames(x, None) is x and subsample_frames(x, 200) is x
    sub = subsample_frames(x, 10)
    assert sub[:, 0].tolist() == list(range(0, 100, 10))
    assert len(subsample_frames(x, 7)) == 7 and subsample_frames(x, 7)[0, 0] == 0
