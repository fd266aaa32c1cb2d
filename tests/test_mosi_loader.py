"""CMU-MOSI loader: folds, sample contract, SDK-equal alignment, cleaning rules, cache."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import mmsenti.data.mosi as mosi
from mmsenti.data.align import overlap_ranges
from mmsenti.data.csd import CSDError, decode_words, read_csd, write_csd
from mmsenti.data.folds import FoldError, assign_folds, resolve_folds, sdk_standard_folds
from mmsenti.data.mosi import MosiDataError, load_mosi_csd
from mmsenti.data.mosi_cache import default_cache_dir
from mmsenti.data.synthetic import FILES

ID_RE = re.compile(r"^[\w-]+\$_\$[1-9]\d*$")  # MMSA's <video>$_$<clip>, clip = label row + 1


def _row(sample_id: str) -> tuple[str, int]:
    """``vid$_$clip`` -> (vid, row of the video's label entry)."""
    vid, clip = sample_id.split("$_$")
    return vid, int(clip) - 1


def _copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in [*FILES.values(), "folds.json"]:
        if f not in skip:
            shutil.copy(src / f, dst / f)
    return dst


def _edit(path: Path, fn) -> None:
    """Rewrite a .csd with ``fn(data dict)`` applied, using raw h5py (allows invalid entries)."""
    seq = read_csd(path)
    data = {v: (f.copy(), iv.copy()) for v, (f, iv) in seq.data.items()}
    fn(data)
    path.unlink()
    with h5py.File(path, "w") as h:
        g = h.create_group(seq.name).create_group("data")
        for vid, (f, iv) in data.items():
            e = g.create_group(vid)
            e["features"], e["intervals"] = f, iv


def _all(data):
    return [s for split in ("train", "valid", "test") for s in data.splits[split]]


# ------------------------------------------------------------------------------- folds


def test_sdk_folds_counts():
    folds = sdk_standard_folds()
    assert {k: len(v) for k, v in folds.items()} == {"train": 52, "valid": 10, "test": 31}
    assert len({v for ids in folds.values() for v in ids}) == 93


def test_sdk_folds_match_shared_copy(shared_data):
    path = shared_data / "mosi" / "standard_folds.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    assert json.loads(path.read_text()) == sdk_standard_folds()


def test_real_fold_segment_counts(mosi_label_file):
    labels = read_csd(mosi_label_file)
    folds = sdk_standard_folds()
    direct = {s: sum(len(labels.data[v][1]) for v in ids) for s, ids in folds.items()}
    assert direct == {"train": 1284, "valid": 229, "test": 686}
    data = load_mosi_csd(mosi_label_file.parent, files={"words": None, "audio": None, "vision": None}, cache_dir=False)
    assert data.report["segments"] == direct
    assert data.report["folds_source"] == "sdk"
    assert data.report["missing_modality"] == {"text": 2199, "audio": 2199, "vision": 2199}
    assert set(data.report["missing_files"]) == {"words", "audio", "vision"}
    s = data.splits["test"][0]
    assert ID_RE.match(s["id"]) and s["audio"] is None and s["text"] is None and -3 <= s["label"] <= 3


def test_fold_precedence_and_unknown_ids(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    from_file = resolve_folds(root)
    assert from_file.source.endswith("folds.json") and from_file.counts() == {"train": 6, "valid": 3, "test": 3}
    explicit = {"train": from_file.folds["train"][:2], "valid": from_file.folds["valid"][:1], "test": []}
    assert resolve_folds(root, explicit).folds == explicit
    assert resolve_folds(tmp_path / "empty").source == "sdk"

    data = load_mosi_csd(root, folds=explicit, cache_dir=False)
    assert data.report["segments"] == {"train": 20, "valid": 10, "test": 0}
    assert data.report["videos_not_in_folds"] == 9

    bad = {"train": explicit["train"] + ["ghost1", "ghost2"], "valid": [], "test": []}
    with pytest.raises(FoldError, match="ghost1"):
        load_mosi_csd(root, folds=bad, cache_dir=False)
    data = load_mosi_csd(root, folds=bad, on_error="skip", cache_dir=False)
    assert data.report["unknown_fold_ids"] == 2 and data.report["segments"]["train"] == 20
    # without folds.json the SDK folds apply: 81 of their ids are not in the small set
    (root / "folds.json").unlink()
    with pytest.raises(FoldError, match="81 video id"):
        load_mosi_csd(root, cache_dir=False)
    with pytest.raises(FoldError, match="both"):
        resolve_folds(root, {"train": ["a"], "valid": ["a"], "test": []})
    with pytest.raises(FoldError, match="unknown split"):
        resolve_folds(root, {"training": ["a"]})
    assert assign_folds(resolve_folds(root, explicit), ["x"], on_error="skip").unassigned == ["x"]


# ------------------------------------------------------------------------------- contract


def test_aligned_sample_contract(synthetic_small):
    data = load_mosi_csd(synthetic_small, mode="aligned", cache_dir=False)
    assert data.report["segments"] == {"train": 60, "valid": 30, "test": 30}
    assert (data.audio_dim, data.vision_dim) == (74, 47)
    words = read_csd(synthetic_small / FILES["words"])
    for s in _all(data):
        assert set(s) == {"id", "text", "audio", "vision", "label"}
        assert ID_RE.match(s["id"]) and isinstance(s["label"], float) and -3 <= s["label"] <= 3
        n = len(s["text"].split())
        assert "sp" not in s["text"].split() and n > 0
        assert s["audio"].dtype == np.float32 and s["audio"].shape == (n, 74)
        assert s["vision"].dtype == np.float32 and s["vision"].shape == (n, 47)
        assert np.isfinite(s["audio"]).all() and np.isfinite(s["vision"]).all()
    s = data.splits["train"][0]
    vid = s["id"].split("$_$")[0]
    tokens = decode_words(words.data[vid][0])
    assert s["text"] in " ".join(t for t in tokens if t != "sp")
    assert data.report["words_without_frames"]["audio"] == 0  # audio covers the whole video
    assert data.report["nonfinite_replaced"]["audio"]["neginf"] > 0


def test_aligned_features_equal_sdk_alignment(synthetic_small):
    """End to end: our aligned rows == the SDK's mmdataset.align(words, [avg]) on the same files."""
    from mmsdk import mmdatasdk

    def avg(intervals, features):
        try:
            return np.average(features, axis=0)
        except Exception:
            return features

    names = {k: str(synthetic_small / FILES[k]) for k in ("words", "audio", "vision")}
    ds = mmdatasdk.mmdataset({"words": names["words"], "audio": names["audio"], "vision": names["vision"]})
    ds.align("words", collapse_functions=[avg])
    data = load_mosi_csd(synthetic_small, cache_dir=False)
    words = read_csd(synthetic_small / FILES["words"])
    labels = read_csd(synthetic_small / FILES["labels"])
    compared = 0
    for s in _all(data)[::7]:
        vid, k = _row(s["id"])
        w_iv = words.data[vid][1]
        tokens = decode_words(words.data[vid][0])
        lo, hi = overlap_ranges(w_iv, labels.data[vid][1][int(k)][None])
        idx = [i for i in range(lo[0], hi[0]) if tokens[i] != "sp"]
        for m in ("audio", "vision"):
            for row, i in enumerate(idx):
                entry = ds[m].data.get(f"{vid}[{i}]")
                if entry is None:  # SDK drops words without frames; we give zeros
                    assert not s[m][row].any()
                    continue
                ref = np.asarray(entry["features"]).reshape(-1)
                ok = np.isfinite(ref)  # we replace NaN/-inf before averaging, the SDK does not
                np.testing.assert_allclose(s[m][row][ok], ref[ok], rtol=1e-5, atol=1e-5)
                compared += 1
    assert compared > 100


def test_unaligned_frames_and_max_frames(synthetic_small):
    data = load_mosi_csd(synthetic_small, mode="unaligned", cache_dir=False)
    audio = read_csd(synthetic_small / FILES["audio"])
    labels = read_csd(synthetic_small / FILES["labels"])
    s = data.splits["valid"][2]
    vid, k = _row(s["id"])
    seg = labels.data[vid][1][int(k)]
    lo, hi = overlap_ranges(audio.data[vid][1], seg[None])
    assert s["audio"].shape == (hi[0] - lo[0], 74)
    assert abs(len(s["audio"]) / 100 - (seg[1] - seg[0])) < 0.03  # 100 Hz over the segment
    assert abs(len(s["vision"]) / 30 - (seg[1] - seg[0])) < 2.5  # 30 Hz, minus dropped runs
    raw = np.nan_to_num(audio.data[vid][0][lo[0] : hi[0]], nan=0, posinf=0, neginf=0)
    np.testing.assert_array_equal(s["audio"], raw)
    capped = load_mosi_csd(synthetic_small, mode="unaligned", max_frames=32, cache_dir=False)
    assert all(len(x["audio"]) <= 32 and len(x["vision"]) <= 32 for x in _all(capped))
    assert capped.report["subsampled_segments"]["audio"] == 120
    assert capped.splits["valid"][2]["audio"][0].tolist() == s["audio"][0].tolist()


# ------------------------------------------------------------------------------- cleaning rules


def test_nonfinite_replaced_and_counted(synthetic_small):
    data = load_mosi_csd(synthetic_small, mode="unaligned", cache_dir=False)
    for m in ("audio", "vision"):
        raw = np.concatenate([f for f, _ in read_csd(synthetic_small / FILES[m]).data.values()])
        expected = {"nan": int(np.isnan(raw).sum()), "posinf": int(np.isposinf(raw).sum()),
                    "neginf": int(np.isneginf(raw).sum())}
        assert data.report["nonfinite_replaced"][m] == expected
        assert expected["nan"] > 0
        assert all(np.isfinite(s[m]).all() for s in _all(data))


def test_missing_modality_file_and_video(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d", skip=(FILES["vision"],))
    first = json.loads((root / "folds.json").read_text())["train"][0]
    _edit(root / FILES["audio"], lambda d: d.pop(first))
    data = load_mosi_csd(root, cache_dir=False)
    assert data.report["missing_files"] == ["vision"]
    assert data.report["missing_modality"] == {"text": 0, "audio": 10, "vision": 120}
    assert data.report["videos_missing_from"]["audio"] == 1
    assert data.vision_dim == 47  # default width when the file is absent
    for s in _all(data):
        assert s["vision"] is None
        assert (s["audio"] is None) == s["id"].startswith(first + "$_$")
    disabled = load_mosi_csd(synthetic_small, files={"audio": None}, cache_dir=False)
    assert disabled.report["missing_modality"]["audio"] == 120
    with pytest.raises(ValueError, match="unknown keys"):
        load_mosi_csd(synthetic_small, files={"facet": None}, cache_dir=False)


def test_missing_label_file_is_an_error(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d", skip=(FILES["labels"],))
    with pytest.raises(CSDError, match="not found"):
        load_mosi_csd(root, cache_dir=False)


def test_bad_label_intervals_raise_or_skip(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    victim = json.loads((root / "folds.json").read_text())["test"][0]

    def reverse_one(d):
        f, iv = d[victim]
        iv[3] = iv[3, ::-1]  # end before start

    _edit(root / FILES["labels"], reverse_one)
    with pytest.raises(CSDError, match=f"'{victim}'.*end before") as err:
        load_mosi_csd(root, cache_dir=False)
    assert FILES["labels"] in str(err.value)
    data = load_mosi_csd(root, on_error="skip", cache_dir=False)
    assert data.report["segments"]["test"] == 20
    assert sum(data.report["skipped"]["videos"].values()) == 1
    assert victim in data.report["invalid_entries"]["labels"]


def test_length_mismatch_and_zero_length_in_modalities(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    train = json.loads((root / "folds.json").read_text())["train"]

    def mismatch(d):
        f, iv = d[train[0]]
        d[train[0]] = (f, iv[:-5])

    def empty(d):
        d[train[1]] = (d[train[1]][0][:0], d[train[1]][1][:0])

    _edit(root / FILES["audio"], mismatch)
    _edit(root / FILES["vision"], empty)
    with pytest.raises(CSDError, match="length mismatch"):
        load_mosi_csd(root, cache_dir=False)
    data = load_mosi_csd(root, on_error="skip", cache_dir=False)
    assert data.report["missing_modality"]["audio"] == 10 and data.report["missing_modality"]["vision"] == 10
    assert sum(data.report["skipped"]["modality_entries"].values()) == 2
    assert data.report["segments"]["train"] == 60  # samples kept, the broken modality is None


def test_nonfinite_labels_raise_or_skip(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    vid = json.loads((root / "folds.json").read_text())["valid"][0]

    def nan_label(d):
        d[vid][0][0, 0] = np.nan

    _edit(root / FILES["labels"], nan_label)
    with pytest.raises(MosiDataError, match="non-finite label"):
        load_mosi_csd(root, cache_dir=False)
    data = load_mosi_csd(root, on_error="skip", cache_dir=False)
    assert data.report["skipped"]["segments"] == {"non-finite label": 1}
    assert data.report["segments"]["valid"] == 29
    assert f"{vid}$_$1" not in {s["id"] for s in data.splits["valid"]}
    assert f"{vid}$_$2" in {s["id"] for s in data.splits["valid"]}


def test_bad_arguments(synthetic_small):
    for kwargs in ({"mode": "both"}, {"on_error": "ignore"}, {"collapse": "median"}, {"max_frames": 0}):
        with pytest.raises(ValueError):
            load_mosi_csd(synthetic_small, cache_dir=False, **kwargs)


# ------------------------------------------------------------------------------- cache


def test_cache_hit_skips_recompute(tmp_path, synthetic_small, monkeypatch):
    root = _copy(synthetic_small, tmp_path / "d")
    first = load_mosi_csd(root, mode="unaligned", max_frames=40)
    assert not first.from_cache and Path(first.report["cache"]["path"]).parent == root / ".cache"

    def boom(*a, **k):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(mosi, "_build", boom)
    second = load_mosi_csd(root, mode="unaligned", max_frames=40)
    assert second.from_cache
    for a, b in zip(_all(first), _all(second)):
        assert a["id"] == b["id"] and a["text"] == b["text"] and a["label"] == b["label"]
        np.testing.assert_array_equal(a["audio"], b["audio"])
        np.testing.assert_array_equal(a["vision"], b["vision"])
    with np.load(first.report["cache"]["path"], allow_pickle=False) as z:  # no pickle inside
        assert "audio_offsets" in z.files
    # different settings or a changed input file miss the cache
    with pytest.raises(AssertionError, match="recomputed"):
        load_mosi_csd(root, mode="unaligned", max_frames=41)
    write_csd(read_csd(root / FILES["vision"]), root / FILES["vision"])
    with pytest.raises(AssertionError, match="recomputed"):
        load_mosi_csd(root, mode="unaligned", max_frames=40)


def test_cache_keeps_missing_modalities(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    a = load_mosi_csd(root, files={"vision": None}, cache_dir=tmp_path / "c")
    b = load_mosi_csd(root, files={"vision": None}, cache_dir=tmp_path / "c")
    assert b.from_cache and all(s["vision"] is None for s in _all(b))
    assert b.report["missing_modality"] == a.report["missing_modality"]


def test_corrupt_cache_is_rebuilt(tmp_path, synthetic_small):
    first = load_mosi_csd(synthetic_small, cache_dir=tmp_path)
    path = Path(first.report["cache"]["path"])
    path.write_bytes(path.read_bytes()[:1000])  # truncated zip
    again = load_mosi_csd(synthetic_small, cache_dir=tmp_path)
    assert not again.from_cache and len(again) == 120
    assert load_mosi_csd(synthetic_small, cache_dir=tmp_path).from_cache


def test_unwritable_cache_is_reported(tmp_path, synthetic_small):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = load_mosi_csd(synthetic_small, cache_dir=blocker / "cache")
    assert "error" in data.report["cache"] and len(data) == 120


def test_default_cache_dir_avoids_read_only_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ro = tmp_path / "ro"
    ro.mkdir()
    assert default_cache_dir(ro) == ro / ".cache"
    ro.chmod(0o555)
    try:
        assert default_cache_dir(ro) == tmp_path / "xdg" / "mmsenti" / "mosi"
    finally:
        ro.chmod(0o755)


def test_mosi_scale_load_times(synthetic_mosi, tmp_path):
    t0 = time.perf_counter()
    first = load_mosi_csd(synthetic_mosi, cache_dir=tmp_path)
    uncached = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = load_mosi_csd(synthetic_mosi, cache_dir=tmp_path)
    cached = time.perf_counter() - t0
    assert len(first) == len(second) == 2199 and second.from_cache
    assert uncached < 15, uncached  # ~1 s on 2 idle cores
    assert cached < 1.0, cached  # ~0.02 s


# ------------------------------------------------------------------------------- ids, file names, bad inputs


def test_ids_join_the_mmsa_label_csv_of_the_same_segments(mosi_label_file, shared_data):
    """The CSD path names samples as MMSA does (clip = label row + 1): the real transcripts join the
    official label file on id, with the same labels, and both split by video into the same folds."""
    from mmsenti.data.mmsa import load_label_csv

    csv_path = shared_data / "mosi" / "label_trainvalid.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} is absent")
    csd = load_mosi_csd(mosi_label_file.parent, files={"words": None, "audio": None, "vision": None}, cache_dir=False)
    text = load_label_csv(csv_path)
    for split in ("train", "valid"):
        labels = {s["id"]: s["label"] for s in csd.splits[split]}
        rows = text.splits[split]
        assert len(rows) == len(labels) and all(ID_RE.match(i) for i in labels)
        assert all(labels[s["id"]] == pytest.approx(s["label"], abs=1e-6) for s in rows)
    assert "2WGyTLYerpo$_$44" in {s["id"] for v in csd.splits.values() for s in v}  # the SDK's 2WGyTLYerpo[43]


def test_clip_entries_keep_their_name_as_id(tmp_path, synthetic_small):
    """`mmsenti extract` writes one entry per clip, named <video>$_$<clip>: that name is the id."""
    from mmsenti.data.csd import ComputationalSequence

    labels = ComputationalSequence("labels", {"vA$_$3": (np.array([[1.0]]), np.array([[0.0, 2.0]])),
                                              "vB$_$1": (np.array([[-1.0]]), np.array([[0.0, 1.0]]))})
    write_csd(labels, tmp_path / FILES["labels"])
    (tmp_path / "folds.json").write_text(json.dumps({"train": ["vA$_$3"], "valid": ["vB$_$1"], "test": []}))
    data = load_mosi_csd(tmp_path, cache_dir=False)
    assert [s["id"] for s in data.splits["train"]] == ["vA$_$3"] and [s["id"] for s in data.splits["valid"]] == ["vB$_$1"]


def test_renamed_files_are_named_with_files_and_missing_ones_listed(tmp_path, synthetic_small, caplog):
    root = _copy(synthetic_small, tmp_path / "d")
    (root / FILES["audio"]).rename(root / "my_covarep.csd")
    (root / FILES["labels"]).rename(root / "labels_v2.csd")
    with pytest.raises(CSDError, match="label file not found") as err:
        load_mosi_csd(root, cache_dir=False)
    msg = str(err.value)
    assert "\n" not in msg and "labels_v2.csd" in msg and "my_covarep.csd" in msg and "data.files.labels" in msg
    with caplog.at_level("WARNING", logger="mmsenti.data.mosi"):
        data = load_mosi_csd(root, files={"labels": "labels_v2.csd"}, cache_dir=False)
    assert data.report["missing_files"] == ["audio"] and data.report["unused_files"] == ["my_covarep.csd"]
    warned = [r.getMessage() for r in caplog.records if "my_covarep.csd" in r.getMessage()]
    assert len(warned) == 1 and "data.files.audio=<file>" in warned[0]
    named = load_mosi_csd(root, files={"labels": "labels_v2.csd", "audio": "my_covarep.csd"}, cache_dir=False)
    assert named.report["missing_files"] == [] and named.splits["train"][0]["audio"].shape[1] == 74
    assert named.report["unused_files"] == []
    with pytest.raises(CSDError, match=r"covarep\.csd: file not found \(named as the audio file") as err:
        load_mosi_csd(root, files={"labels": "labels_v2.csd", "audio": "covarep.csd"}, cache_dir=False)
    assert "my_covarep.csd" in str(err.value) and "data.files.audio" in str(err.value)


def test_numeric_words_file_is_refused(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    shutil.copy(root / FILES["vision"], root / FILES["words"])  # a feature file under the words name
    with pytest.raises(MosiDataError, match="a words file must hold words") as err:
        load_mosi_csd(root, cache_dir=False)
    msg = str(err.value)
    assert "\n" not in msg and FILES["words"] in msg and "float32 numbers" in msg and "data.files.words" in msg


def test_zero_length_segments_are_kept_and_counted(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    vid = json.loads((root / "folds.json").read_text())["valid"][1]

    def collapse_one(d):
        iv = d[vid][1]
        iv[2, 1] = iv[2, 0]  # start == end, like the official file's 2WGyTLYerpo[43]

    _edit(root / FILES["labels"], collapse_one)
    for mode in ("aligned", "unaligned"):
        data = load_mosi_csd(root, mode=mode, cache_dir=False)
        assert data.report["zero_length_segments"] == {"train": 0, "valid": 1, "test": 0}
        assert data.report["zero_length_examples"] == [f"{vid}$_$3"]
        (s,) = [s for s in data.splits["valid"] if s["id"] == f"{vid}$_$3"]
        assert s["text"] == "" and s["audio"].shape == (0, 74) and s["vision"].shape == (0, 47)


def test_drops_are_counted_per_split_and_reason(tmp_path, synthetic_small):
    root = _copy(synthetic_small, tmp_path / "d")
    folds = json.loads((root / "folds.json").read_text())

    def nan_labels(d):
        d[folds["valid"][0]][0][:2, 0] = np.nan
        d[folds["test"][0]][0][0, 0] = np.inf

    def broken_audio(d):
        f, iv = d[folds["train"][0]]
        d[folds["train"][0]] = (f, iv[:-5])

    _edit(root / FILES["labels"], nan_labels)
    _edit(root / FILES["audio"], broken_audio)
    data = load_mosi_csd(root, on_error="skip", cache_dir=False)
    assert data.report["dropped"] == {"train": {}, "valid": {"non-finite label": 2}, "test": {"non-finite label": 1}}
    (reason,) = data.report["modality_dropped"]["train"]
    assert reason.startswith("audio entry invalid: features/intervals length mismatch")
    assert data.report["modality_dropped"]["train"][reason] == 10 and data.report["modality_dropped"]["valid"] == {}
