"""Computational sequence I/O: SDK round trips both ways, the official label file, clear errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from mmsenti.data.csd import (
    SDK_METADATA_KEYS,
    ComputationalSequence,
    CSDError,
    decode_words,
    encode_words,
    read_csd,
    write_csd,
)


def _sample_sequences() -> tuple[ComputationalSequence, ComputationalSequence]:
    rng = np.random.default_rng(0)
    feats = {}
    for i, n in enumerate((5, 1, 12)):
        starts = np.sort(rng.uniform(0, 10, n))
        feats[f"vid{i}"] = (rng.standard_normal((n, 3)).astype(np.float32), np.stack([starts, starts + 0.5], 1))
    words = {"vid0": (encode_words(["i", "sp", "loved", "it", "café"]), np.array([[0, 0.2], [0.2, 0.5], [0.5, 0.9], [0.9, 1.0], [1.0, 1.4]]))}
    meta = {"dataset name": "test", "dimension names": ["a", "b", "c"], "computational sequence version": 1.0}
    return ComputationalSequence("feats", feats, meta), ComputationalSequence("words", words, {})


def _same(a: ComputationalSequence, b: ComputationalSequence) -> None:
    assert set(a.data) == set(b.data)
    for vid in a.data:
        np.testing.assert_array_equal(a.data[vid][0], b.data[vid][0])
        np.testing.assert_array_equal(a.data[vid][1], b.data[vid][1])


def test_roundtrip_ours(tmp_path):
    feats, words = _sample_sequences()
    write_csd(feats, tmp_path / "f.csd")
    write_csd(words, tmp_path / "w.csd")
    back = read_csd(tmp_path / "f.csd")
    _same(feats, back)
    assert back.name == "feats" and back.feature_dim == 3 and back.num_rows == 18
    assert back.metadata["dataset name"] == "test"
    assert back.metadata["dimension names"] == ["a", "b", "c"]
    assert back.metadata["root name"] == "feats"
    assert set(SDK_METADATA_KEYS) <= set(back.metadata)
    wback = read_csd(tmp_path / "w.csd")
    assert decode_words(wback.data["vid0"][0]) == ["i", "sp", "loved", "it", "café"]
    assert wback.data["vid0"][0].shape == (5, 1)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must not be left behind"


def test_write_is_deterministic(tmp_path):
    feats, _ = _sample_sequences()
    write_csd(feats, tmp_path / "a.csd")
    write_csd(feats, tmp_path / "b.csd")
    assert (tmp_path / "a.csd").read_bytes() == (tmp_path / "b.csd").read_bytes()


def test_ours_loads_in_sdk(tmp_path):
    from mmsdk import mmdatasdk

    feats, words = _sample_sequences()
    for seq in (feats, words):
        path = write_csd(seq, tmp_path / f"{seq.name}.csd")
        sdk = mmdatasdk.computational_sequence(str(path))
        assert set(sdk.data) == set(seq.data)
        for vid, (f, iv) in seq.data.items():
            np.testing.assert_array_equal(sdk.data[vid]["features"][()], f)
            np.testing.assert_array_equal(sdk.data[vid]["intervals"][()], iv)
        for key in SDK_METADATA_KEYS:
            assert key in sdk.metadata
        sdk.h5handle.close()


def test_sdk_written_loads_in_ours(tmp_path):
    from mmsdk import mmdatasdk

    feats, words = _sample_sequences()
    for seq in (feats, words):
        sdk = mmdatasdk.computational_sequence(seq.name)  # blank
        sdk.setData({v: {"features": f, "intervals": iv} for v, (f, iv) in seq.data.items()}, seq.name)
        sdk.setMetadata({k: f"value of {k}" for k in SDK_METADATA_KEYS} | {"root name": seq.name}, seq.name)
        sdk.deploy(str(tmp_path / f"sdk_{seq.name}.csd"))
        ours = read_csd(tmp_path / f"sdk_{seq.name}.csd")
        _same(seq, ours)
        assert ours.name == seq.name
        assert ours.metadata["creator"] == "value of creator"  # SDK stores str(), not JSON: kept as text


def test_official_label_file(mosi_label_file, tmp_path):
    seq = read_csd(mosi_label_file)
    assert seq.name == "Opinion Segment Labels"
    assert len(seq) == 93
    assert seq.num_rows == 2199
    labels = np.concatenate([f[:, 0] for f, _ in seq.data.values()])
    assert labels.min() >= -3 and labels.max() <= 3
    assert seq.metadata["dataset name"] == "CMU-MOSI"
    assert seq.metadata["dimension names"] == ["sentiment score"]
    # our re-write of the official file is readable by the SDK and by us, unchanged
    from mmsdk import mmdatasdk

    path = write_csd(seq, tmp_path / "labels.csd", compression="gzip")
    _same(seq, read_csd(path))
    sdk = mmdatasdk.computational_sequence(str(path))
    assert len(sdk.data) == 93
    sdk.h5handle.close()


# ------------------------------------------------------------------------------- errors


def _assert_clear(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(CSDError) as err:
        read_csd(tmp_path / "nope.csd")
    _assert_clear(err, tmp_path / "nope.csd", "not found", "re-download")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.csd"
    path.write_text("this is not HDF5\n" * 10)
    with pytest.raises(CSDError) as err:
        read_csd(path)
    _assert_clear(err, path, "HDF5", "re-download")
    assert isinstance(err.value, ValueError)


def test_truncated(tmp_path):
    feats, _ = _sample_sequences()
    full = write_csd(feats, tmp_path / "full.csd").read_bytes()
    for cut in (100, len(full) // 2, len(full) - 200):
        path = tmp_path / f"cut{cut}.csd"
        path.write_bytes(full[:cut])
        with pytest.raises(CSDError) as err:
            read_csd(path)
        _assert_clear(err, path, "re-download")


def test_missing_root_and_data_groups(tmp_path):
    empty = tmp_path / "empty.csd"
    h5py.File(empty, "w").close()
    with pytest.raises(CSDError, match="no root group") as err:
        read_csd(empty)
    _assert_clear(err, empty)
    nodata = tmp_path / "nodata.csd"
    with h5py.File(nodata, "w") as f:
        f.create_group("seq").create_group("metadata")
    with pytest.raises(CSDError, match="no 'data' group"):
        read_csd(nodata)


def _raw(path: Path, entries: dict) -> Path:
    with h5py.File(path, "w") as f:
        data = f.create_group("seq").create_group("data")
        for vid, (feats, iv) in entries.items():
            g = data.create_group(vid)
            g["features"], g["intervals"] = feats, iv
    return path


@pytest.mark.parametrize(
    "feats, iv, reason",
    [
        (np.zeros((3, 2)), np.array([[0, 1], [1, 2.0]]), "length mismatch"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "zero-length"),
        (np.zeros((2, 2)), np.array([[0, 1], [3, 2.0]]), "end before"),
    ],
)
def test_bad_entries_strict_and_lenient(tmp_path, feats, iv, reason):
    good = (np.ones((2, 2)), np.array([[0, 1], [1, 2.0]]))
    path = _raw(tmp_path / "bad.csd", {"good": good, "bad": (feats, iv)})
    with pytest.raises(CSDError, match=reason) as err:
        read_csd(path)
    _assert_clear(err, path, "'bad'", "on_error='skip'")
    seq = read_csd(path, strict=False)
    assert list(seq.data) == ["good"] and reason in seq.invalid["bad"]


def test_write_rejects_bad_entry_and_keeps_old_file(tmp_path):
    feats, _ = _sample_sequences()
    path = write_csd(feats, tmp_path / "f.csd")
    before = path.read_bytes()
    bad = ComputationalSequence("bad", {"v": (np.zeros((3, 2)), np.zeros((2, 2)))})
    with pytest.raises(CSDError, match="length mismatch"):
        write_csd(bad, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_words_roundtrip_helpers():
    words = ["hello", "sp", "naïve", ""]
    enc = encode_words(words)
    assert enc.shape == (4, 1) and enc.dtype.kind == "S"
    assert decode_words(enc) == words
    assert decode_words(np.array([["a"], ["b"]], dtype=object)) == ["a", "b"]
    assert decode_words(np.zeros((0, 1), dtype="S1")) == []


def test_missing_metadata_group_warns_once_per_file_and_reads(tmp_path, caplog):
    entries = {"v": (np.ones((2, 2)), np.array([[0, 1], [1, 2.0]]))}
    first, second = _raw(tmp_path / "a.csd", entries), _raw(tmp_path / "b.csd", entries)
    with caplog.at_level("WARNING", logger="mmsenti.data.csd"):
        for _ in range(3):
            seq = read_csd(first)
            assert seq.metadata == {} and seq.data["v"][0].shape == (2, 2)
        read_csd(second)
    warned = [r.getMessage() for r in caplog.records if "no 'metadata' group" in r.getMessage()]
    assert len(warned) == 2 and str(first) in warned[0] and str(second) in warned[1]
    assert all("\n" not in w for w in warned)
    caplog.clear()
    feats, _ = _sample_sequences()
    with caplog.at_level("WARNING", logger="mmsenti.data.csd"):
        read_csd(write_csd(feats, tmp_path / "with_meta.csd"))  # files we write carry metadata: no warning
    assert not caplog.records
