"""MMSA pickles load as sample dicts without running code; label.csv loads text-only."""

from __future__ import annotations

import builtins
import codecs
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mmsenti.data.batch import pad_frames
from mmsenti.data.mmsa import (
    UNSAFE_FIX,
    MmsaData,
    MmsaFormatError,
    UnsafePickleError,
    load_label_csv,
    load_mmsa_pickle,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABEL_CSV = DATA / "mosi" / "label_trainvalid.csv"

TA, DA, TV, DV = 6, 5, 4, 3


def _split(n: int, seed: int, lengths: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    part = {
        "raw_text": np.array([f"clip {seed} {i}" for i in range(n)], dtype=object),
        "text": rng.standard_normal((n, 7, 300)).astype(np.float32),
        "text_bert": np.ones((n, 3, 7), dtype=np.float32),
        "audio": rng.standard_normal((n, TA, DA)).astype(np.float32),
        "vision": rng.standard_normal((n, TV, DV)).astype(np.float32),
        "regression_labels": np.linspace(-3, 3, n).astype(np.float32),
        "classification_labels": np.arange(n) % 3,
        "id": np.array([f"vid{seed}$_${i}" for i in range(n)], dtype=object),
    }
    if lengths:
        part["audio_lengths"] = [TA - i % TA for i in range(n)]
        part["vision_lengths"] = np.array([TV - i % TV for i in range(n)])
    return part


def _mmsa(lengths: bool = True) -> dict:
    return {"train": _split(5, 0, lengths), "valid": _split(3, 1, lengths), "test": _split(2, 2, lengths)}


def _write(tmp_path: Path, obj, name: str = "unaligned_50.pkl", protocol: int = 4) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# --------------------------------------------------------------------------- legitimate pickles


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_legitimate_pickle_loads_as_sample_dicts(tmp_path, protocol):
    raw = _mmsa()
    data = load_mmsa_pickle(_write(tmp_path, raw, protocol=protocol))
    assert isinstance(data, MmsaData)
    assert (data.audio_dim, data.vision_dim) == (DA, DV)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 5, "valid": 3, "test": 2}
    assert data.report.samples == {"train": 5, "valid": 3, "test": 2}
    first = data.splits["valid"][0]
    assert set(first) == {"id", "text", "audio", "vision", "label"}
    assert first["id"] == "vid1$_$0" and first["text"] == "clip 1 0"
    assert first["label"] == pytest.approx(-3.0) and isinstance(first["label"], float)
    assert first["audio"].dtype == np.float32 and first["audio"].shape == (TA, DA)
    np.testing.assert_array_equal(first["audio"], raw["valid"]["audio"][0])
    np.testing.assert_array_equal(data.splits["test"][1]["vision"], raw["test"]["vision"][1][: TV - 1])


def test_trims_to_lengths_and_clips_overlong_lengths(tmp_path):
    raw = _mmsa()
    raw["train"]["audio_lengths"] = [TA, 2, 0, TA + 10, 1]
    data = load_mmsa_pickle(_write(tmp_path, raw))
    audio = [s["audio"] for s in data.splits["train"]]
    assert [len(a) for a in audio] == [TA, 2, 0, TA, 1]
    np.testing.assert_array_equal(audio[1], raw["train"]["audio"][1, :2])
    assert audio[2].shape == (0, DA)
    assert data.report.lengths_clipped == 1
    # zero frames -> an all-false mask row through the batch contract
    _, mask = pad_frames(audio, DA)
    assert mask.sum(1).tolist() == [TA, 2, 0, TA, 1]


def test_aligned_pickle_without_lengths_keeps_padded_frames(tmp_path):
    data = load_mmsa_pickle(_write(tmp_path, _mmsa(lengths=False), name="aligned_50.pkl"))
    assert all(s["audio"].shape == (TA, DA) and s["vision"].shape == (TV, DV) for s in data.splits["train"])
    assert data.report.lengths_clipped == 0


def test_nonfinite_values_become_zero_and_are_counted(tmp_path):
    raw = _mmsa()
    audio = raw["train"]["audio"]
    audio[0, 0, 0], audio[0, 1, 2], audio[3, 0, 4] = np.nan, -np.inf, np.inf
    audio[1, TA - 1, 0] = np.nan  # beyond sample 1's length (TA - 1): trimmed away, not counted
    raw["test"]["vision"][0, 0, :] = np.nan
    data = load_mmsa_pickle(_write(tmp_path, raw))
    assert data.report.nonfinite_audio == 3
    assert data.report.nonfinite_vision == DV
    first = data.splits["train"][0]["audio"]
    assert first[0, 0] == 0 and first[1, 2] == 0 and np.isfinite(first).all()
    samples = [s for v in data.splits.values() for s in v]
    assert all(np.isfinite(s["audio"]).all() and np.isfinite(s["vision"]).all() for s in samples)
    assert "nonfinite_audio=3" in str(data.report)


def test_missing_key_and_split_name_file_and_key(tmp_path):
    raw = _mmsa()
    del raw["valid"]["audio"]
    path = _write(tmp_path, raw)
    with pytest.raises(MmsaFormatError, match=r"split 'valid' has no key 'audio'") as err:
        load_mmsa_pickle(path)
    assert str(path) in str(err.value)

    raw = _mmsa()
    del raw["test"]
    path = _write(tmp_path, raw, name="no_test.pkl")
    with pytest.raises(MmsaFormatError, match=r"no_test\.pkl: missing split 'test'"):
        load_mmsa_pickle(path)
    assert set(load_mmsa_pickle(path, splits=("train", "valid")).splits) == {"train", "valid"}


def test_inconsistent_or_bad_contents_raise(tmp_path):
    raw = _mmsa()
    raw["train"]["raw_text"] = raw["train"]["raw_text"][:4]
    with pytest.raises(MmsaFormatError, match=r"'raw_text' has 4 entries, regression_labels has 5"):
        load_mmsa_pickle(_write(tmp_path, raw))

    raw = _mmsa()
    raw["train"]["regression_labels"][2] = 4.5
    with pytest.raises(MmsaFormatError, match=r"sample 2 \(id vid0\$_\$2\): label 4.5 is not a number in \[-3, 3\]"):
        load_mmsa_pickle(_write(tmp_path, raw))

    raw = _mmsa()
    raw["test"]["vision"] = np.zeros((2, TV, DV + 1), dtype=np.float32)
    with pytest.raises(MmsaFormatError, match=r"'vision' feature width differs"):
        load_mmsa_pickle(_write(tmp_path, raw))

    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(MmsaFormatError, match="not a readable pickle"):
        load_mmsa_pickle(tmp_path / "junk.pkl")
    with pytest.raises(MmsaFormatError, match="not found"):
        load_mmsa_pickle(tmp_path / "absent.pkl")


# --------------------------------------------------------------------------- malicious pickles


class _Payload:
    """Pickles as ``func(*args)``: what a malicious pickle would run on ``pickle.load``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, tuple]:
    """Refused global (as reported, Python 3 spelling) -> (callable, args) that would write ``marker``."""
    shell = f"echo pwned > {marker}"
    return {
        f"{os.system.__module__}.system": (os.system, (shell,)),  # posix.system on Linux/macOS
        "builtins.eval": (builtins.eval, (f"__import__('os').system({shell!r})",)),
        "subprocess.check_call": (subprocess.check_call, (["sh", "-c", shell],)),
        "io.open": (builtins.open, (str(marker), "w")),  # builtins.open is io.open
    }


@pytest.mark.parametrize("attack", ["system", "eval", "check_call", "open"])
@pytest.mark.parametrize("protocol", [2, 4])  # protocol 2 spells them the Python 2 way (__builtin__.eval)
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, attack, protocol):
    marker = tmp_path / "pwned.txt"
    attacks = _attacks(marker)
    global_name = next(name for name in attacks if name.endswith("." + attack))
    raw = _mmsa()
    raw["train"]["raw_text"] = [_Payload(*attacks[global_name])]  # buried among real arrays
    path = _write(tmp_path, raw, name="evil.pkl", protocol=protocol)
    assert attack.encode() in path.read_bytes()

    with pytest.raises(UnsafePickleError) as err:
        load_mmsa_pickle(path)
    message = str(err.value)
    assert message == f"{path}: refused to load global '{global_name}' from pickle; {UNSAFE_FIX}"
    assert "\n" not in message and isinstance(err.value, ValueError)
    assert err.value.global_name == global_name
    assert not marker.exists()


def test_refusal_message_text(tmp_path):
    path = _write(tmp_path, {"train": _Payload(os.system, (f"echo pwned > {tmp_path / 'x'}",))}, name="aligned_50.pkl")
    with pytest.raises(UnsafePickleError) as err:
        load_mmsa_pickle(path)
    assert str(err.value) == (
        f"{path}: refused to load global '{os.system.__module__}.system' from pickle; this file is not a plain MMSA "
        "feature pickle; only numpy arrays, lists, dicts, strings and numbers are loaded"
    )
    assert not (tmp_path / "x").exists()


def test_codecs_encode_only_allowed_for_latin1(tmp_path):
    # protocol-2 pickles encode bytes as _codecs.encode(text, 'latin1'); other codecs are refused
    path = _write(tmp_path, {"train": _Payload(codecs.encode, ("abc", "rot13"))}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"_codecs.encode\(\.\.\., 'rot13'\)"):
        load_mmsa_pickle(path)


# --------------------------------------------------------------------------- label.csv

CSV_HEADER = "video_id,clip_id,text,label,mode\n"


def _csv(tmp_path: Path, body: str, name: str = "label.csv") -> Path:
    path = tmp_path / name
    path.write_text(CSV_HEADER + body, encoding="utf-8")
    return path


def test_label_csv_synthetic_counts_and_samples(tmp_path):
    path = _csv(
        tmp_path,
        'vA,1,"well, i liked it",2.4,train\n'
        "vA,2,,0.0,train\n"  # empty text: skipped and counted
        "vB,1,meh,-0.6,valid\n"
        "vC,1,awful,-3,test\n",
    )
    data = load_label_csv(path, folds=("train", "valid"))
    assert set(data.splits) == {"train", "valid"}
    want = {"id": "vA$_$1", "text": "well, i liked it", "audio": None, "vision": None, "label": 2.4}
    assert data.splits["train"] == [want]
    assert [s["id"] for s in data.splits["valid"]] == ["vB$_$1"]
    assert (data.audio_dim, data.vision_dim) == (0, 0)
    assert data.report.samples == {"train": 1, "valid": 1}
    assert data.report.skipped_empty_text == 1 and data.report.skipped_other_folds == 1
    assert len(load_label_csv(path).splits["test"]) == 1


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ("vA,1,hi,great,train\n", r"label\.csv: line 3: label 'great' is not a number in \[-3, 3\]"),
        ("vA,1,hi,3.5,train\n", r"label\.csv: line 3: label 3\.5 is not a number in \[-3, 3\]"),
        ("vA,1,hi,nan,train\n", r"line 3: label nan"),
        ("vA,1,hi,1.0,dev\n", r"line 3: mode 'dev' is not one of"),
        ("vA,1,again,1.0,valid\n", r"line 3: id vA\$_\$1 already on line 2"),
    ],
)
def test_label_csv_bad_rows_name_the_line(tmp_path, row, pattern):
    path = _csv(tmp_path, "vA,1,fine,1.0,train\n" + row)
    with pytest.raises(MmsaFormatError, match=pattern):
        load_label_csv(path)


def test_label_csv_missing_column(tmp_path):
    path = tmp_path / "label.csv"
    path.write_text("video_id,clip_id,text,label\nvA,1,hi,1.0\n")
    with pytest.raises(MmsaFormatError, match=r"missing column\(s\) \['mode'\]"):
        load_label_csv(path)
    with pytest.raises(ValueError, match="unknown fold"):
        load_label_csv(path, folds=("train", "dev"))


def test_label_csv_in_another_encoding_is_one_line_then_read_with_encoding(tmp_path):
    body = CSV_HEADER + "vA,1,fine,1.0,train\nvB,1,un film très réussi,2.0,valid\nvC,1,ok,0.0,test\n"
    path = tmp_path / "label.csv"
    path.write_bytes(body.encode("cp1252"))
    with pytest.raises(MmsaFormatError) as err:
        load_label_csv(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: line 3: not utf-8 text (byte 0xe8") and "data.encoding=latin-1" in msg
    assert "--encoding" in msg and "\n" not in msg
    data = load_label_csv(path, encoding="cp1252")
    assert data.splits["valid"][0]["text"] == "un film très réussi"
    with pytest.raises(MmsaFormatError, match="unknown text encoding 'klingon'"):
        load_label_csv(path, encoding="klingon")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))  # Excel's UTF-8: the BOM is not part of 'video_id'
    assert load_label_csv(bom).splits["valid"][0]["text"] == "un film très réussi"


def test_extract_reads_label_csv_with_the_same_reader(tmp_path):
    """`mmsenti extract` and the label_csv source share one reader: same checks, same messages."""
    from mmsenti.media.extract import read_label_rows

    path = _csv(tmp_path, "vA,1,,1.0,train\nvA,2,x,1.0,test\n")
    rows = read_label_rows(path)
    assert [r["key"] for r in rows] == ["vA$_$1", "vA$_$2"] and rows[0]["text"] == ""  # empty texts kept
    bad = _csv(tmp_path, "vA,1,hi,1.0,train\nvA,1,again,1.0,valid\n", name="dup.csv")
    for read in (read_label_rows, load_label_csv):
        with pytest.raises(MmsaFormatError, match=r"line 3: id vA\$_\$1 already on line 2"):
            read(bad)
    latin = tmp_path / "latin.csv"
    latin.write_bytes((CSV_HEADER + "vA,1,déçu,-1.0,train\n").encode("latin-1"))
    with pytest.raises(MmsaFormatError, match="line 2: not utf-8 text"):
        read_label_rows(latin)
    assert read_label_rows(latin, encoding="latin-1")[0]["text"] == "déçu"


def test_label_csv_empty_text_is_counted_per_split(tmp_path):
    path = _csv(tmp_path, "vA,1,,1.0,train\nvA,2, ,1.0,train\nvB,1,,0.5,valid\nvB,2,ok,0.5,valid\n")
    data = load_label_csv(path)
    assert data.report.dropped == {"train": {"empty text": 2}, "valid": {"empty text": 1}, "test": {}}


def test_real_label_trainvalid_csv():
    if not LABEL_CSV.is_file():
        pytest.skip(f"shared CMU-MOSI label file not found at {LABEL_CSV} (only present beside the project checkout)")
    data = load_label_csv(LABEL_CSV)
    assert data.report.samples == {"train": 1284, "valid": 229, "test": 0}
    assert data.report.skipped_empty_text == 0
    first = data.splits["valid"][0]
    assert first["id"] == "_dI--eQ6qVU$_$1" and first["label"] == pytest.approx(2.4)
    assert first["text"].startswith("but i can safely assure you")
    samples = [s for v in data.splits.values() for s in v]
    assert all(s["audio"] is None and s["vision"] is None and -3 <= s["label"] <= 3 for s in samples)
    train_videos = {s["id"].split("$_$")[0] for s in data.splits["train"]}
    valid_videos = {s["id"].split("$_$")[0] for s in data.splits["valid"]}
    assert not train_videos & valid_videos  # standard folds split by video


def test_numpy1_pickle_names_load(tmp_path):
    # MMSA's files were written by numpy 1.x, which names numpy.core.multiarray._reconstruct.
    raw = _mmsa()
    blob = pickle.dumps(raw, protocol=2)  # GLOBAL opcodes: newline-terminated names, length-free
    assert b"numpy._core.multiarray" in blob
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data = load_mmsa_pickle(path)
    np.testing.assert_array_equal(data.splits["train"][0]["audio"], raw["train"]["audio"][0])
