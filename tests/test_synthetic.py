"""Synthetic CMU-MOSI: real file format, MOSI shapes, determinism, a learnable multimodal signal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsenti.data.csd import decode_words, read_csd
from mmsenti.data.synthetic import (
    AUDIO_DIM,
    AUDIO_NEGINF_DIM,
    FILES,
    LEXICON,
    VISION_DIM,
    write_synthetic_mosi,
)


def test_small_layout(synthetic_small):
    for name in FILES.values():
        assert (synthetic_small / name).is_file()
    folds = json.loads((synthetic_small / "folds.json").read_text())
    assert {k: len(v) for k, v in folds.items()} == {"train": 6, "valid": 3, "test": 3}
    labels = read_csd(synthetic_small / FILES["labels"])
    words = read_csd(synthetic_small / FILES["words"])
    audio = read_csd(synthetic_small / FILES["audio"])
    vision = read_csd(synthetic_small / FILES["vision"])
    vids = sorted(v for ids in folds.values() for v in ids)
    for seq in (labels, words, audio, vision):
        assert sorted(seq.data) == vids
    assert labels.num_rows == 120 and labels.feature_dim == 1
    lab = np.concatenate([f[:, 0] for f, _ in labels.data.values()])
    assert lab.min() >= -3 and lab.max() <= 3 and lab.std() > 0.8
    assert audio.feature_dim == AUDIO_DIM and vision.feature_dim == VISION_DIM
    vid = vids[0]
    a_iv, v_iv = audio.data[vid][1], vision.data[vid][1]
    np.testing.assert_allclose(np.diff(a_iv, axis=1), 0.01, atol=1e-9)  # 100 Hz
    np.testing.assert_allclose(np.diff(v_iv, axis=1), 1 / 30, atol=1e-9)  # 30 Hz
    all_audio = np.concatenate([f for f, _ in audio.data.values()])
    assert np.isneginf(all_audio[:, AUDIO_NEGINF_DIM]).any()
    assert np.isnan(all_audio).any() and np.isfinite(all_audio).mean() > 0.99
    tokens = [w for f, _ in words.data.values() for w in decode_words(f)]
    assert "sp" in tokens
    lexicon = {w for ws in LEXICON.values() for w in ws}
    assert sum(t in lexicon for t in tokens) >= 120  # every segment has an opinion word
    w_iv = words.data[vid][1]
    assert np.all(w_iv[:, 1] > w_iv[:, 0]) and np.all(w_iv[1:, 0] >= w_iv[:-1, 1] - 1e-9)
    assert labels.metadata["root name"] == "Opinion Segment Labels"


def test_sdk_reads_synthetic(synthetic_small):
    from mmsdk import mmdatasdk

    seq = mmdatasdk.computational_sequence(str(synthetic_small / FILES["words"]))
    assert len(seq.data) == 12
    seq.h5handle.close()


def test_deterministic(tmp_path, synthetic_small):
    again = write_synthetic_mosi(tmp_path / "again", scale="small", seed=0)
    for name in [*FILES.values(), "folds.json"]:
        assert (again / name).read_bytes() == (synthetic_small / name).read_bytes(), name
    other = write_synthetic_mosi(tmp_path / "other", scale="small", seed=1)
    a = read_csd(synthetic_small / FILES["audio"])
    b = read_csd(other / FILES["audio"])
    vid = next(iter(a.data))
    assert a.data[vid][0].shape != b.data[vid][0].shape or not np.array_equal(
        np.nan_to_num(a.data[vid][0]), np.nan_to_num(b.data[vid][0])
    )


def test_bad_scale(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        write_synthetic_mosi(tmp_path, scale="huge")


def test_mosi_scale_shape(synthetic_mosi):
    folds = json.loads((synthetic_mosi / "folds.json").read_text())
    assert {k: len(v) for k, v in folds.items()} == {"train": 52, "valid": 10, "test": 31}
    from mmsenti.data.folds import sdk_standard_folds

    assert folds == sdk_standard_folds()  # real standard video ids
    labels = read_csd(synthetic_mosi / FILES["labels"])
    assert len(labels) == 93 and labels.num_rows == 2199
    n_words = read_csd(synthetic_mosi / FILES["words"]).num_rows
    assert 24_000 <= n_words <= 29_000


def _pooled(samples):
    lvl = {w: level for level, ws in LEXICON.items() for w in ws}
    text = np.array([[sum(lvl.get(w) == level for w in s["text"].split()) for level in range(-3, 4)] for s in samples], float)
    audio = np.array([s["audio"].mean(0) for s in samples])
    vision = np.array([s["vision"].mean(0) for s in samples])
    y = np.array([s["label"] for s in samples])
    return text, audio, vision, y


def test_signal_is_learnable_and_multimodal(synthetic_small):
    """Ridge on mean-pooled features: each modality carries signal, all three beat text alone."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    from mmsenti.data.mosi import load_mosi_csd

    data = load_mosi_csd(synthetic_small, cache_dir=False)
    samples = [s for split in data.splits.values() for s in split]
    text, audio, vision, y = _pooled(samples)

    def corr(x):
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 3, 12)), x, y, cv=5)
        return float(np.corrcoef(pred, y)[0, 1])

    c_text, c_audio, c_vision = corr(text), corr(audio), corr(vision)
    c_all = corr(np.hstack([text, audio, vision]))
    assert 0.35 < c_text < 0.8, c_text
    assert c_audio > 0.2 and c_vision > 0.2, (c_audio, c_vision)
    assert c_all > c_text + 0.15 and c_all > 0.75, (c_all, c_text)


def test_a_root_holding_another_scale_or_seed_is_rewritten_not_read(tmp_path, caplog):
    """The default root written by a ``data.scale=small`` run must not be read as the full set later (it was,
    silently: the zoo report's first runs trained on 60 segments instead of MOSI's 2,199)."""
    import logging

    from mmsenti.data.datamodule import ensure_synthetic
    from mmsenti.data.synthetic import RECORD_FILENAME, read_record

    root = tmp_path / "synthetic_mosi"
    ensure_synthetic(root, "small", 0)
    assert read_record(root) == {"dataset": "mosi", "scale": "small", "seed": 0}
    labels = root / FILES["labels"]
    stamp = labels.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="mmsenti.data.datamodule"):
        ensure_synthetic(root, "small", 0)  # the same set: left as it is, nothing said
    assert labels.stat().st_mtime_ns == stamp and not caplog.records

    before = read_csd(labels).data
    with caplog.at_level(logging.WARNING, logger="mmsenti.data.datamodule"):
        ensure_synthetic(root, "small", 1)  # another seed: rewritten, and said so
    after = read_csd(labels).data
    assert read_record(root)["seed"] == 1
    assert after.keys() != before.keys() or any(not np.array_equal(after[v][0], before[v][0]) for v in before)
    assert "holds the synthetic MOSI set (scale=small, seed=0), not the requested MOSI set (scale=small, seed=1)" in caplog.text

    caplog.clear()
    (root / RECORD_FILENAME).unlink()  # a set written before the record existed
    with caplog.at_level(logging.WARNING, logger="mmsenti.data.datamodule"):
        ensure_synthetic(root, "small", 1)
    assert "written before its scale and seed were recorded" in caplog.text and read_record(root)["seed"] == 1
