"""CMU-MOSEI and CH-SIMS: loaders on synthetic sets of the real layout, the MOSEI download recipe, the
safe unpickler on SIMS/MOSEI pickles, unimodal labels in the batch, and a fast_dev_run on each set.

Downloads run against the local HTTP server of ``test_data_cli`` (127.0.0.1 only).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsenti.cli import main
from mmsenti.data import download as dl
from mmsenti.data.batch import SentimentCollator
from mmsenti.data.csd import CSDError, read_csd
from mmsenti.data.folds import FoldError, sdk_standard_folds
from mmsenti.data.mmsa import MmsaFormatError, UnsafePickleError, load_mmsa_pickle, read_label_csv
from mmsenti.data.mosei import LABEL_COLUMNS, load_mosei_csd
from mmsenti.data.sims import SimsDataError, load_sims
from mmsenti.data.synthetic import (
    MOSEI_FILES,
    SIMS_FEATURES_DIR,
    SIMS_LABEL_COLUMNS,
    write_synthetic_mosei,
    write_synthetic_sims,
)
from mmsenti.pretrained import load_pretrained
from test_data_cli import server  # noqa: F401  (the local HTTP server fixture)

ROOT = Path(__file__).resolve().parents[1]
MOSEI_LABELS = MOSEI_FILES["labels"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def mosei_small(tmp_path_factory) -> Path:
    return write_synthetic_mosei(tmp_path_factory.mktemp("mosei_small"), scale="small", seed=0)


@pytest.fixture(scope="module")
def sims_small(tmp_path_factory) -> Path:
    return write_synthetic_sims(tmp_path_factory.mktemp("sims_small"), scale="small", seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_pretrained("minilm_l6", "tokenizer")


# ----------------------------------------------------------------------------------------------
# CMU-MOSEI


def test_mosei_synthetic_counts_and_folds(mosei_small):
    folds = json.loads((mosei_small / "folds.json").read_text())
    assert {s: len(v) for s, v in folds.items()} == {"train": 6, "valid": 3, "test": 3}
    std = sdk_standard_folds("mosei")
    assert {s: len(v) for s, v in std.items()} == {"train": 2250, "valid": 300, "test": 678}
    for split, ids in folds.items():  # SDK-style ids: each from its own standard fold
        assert set(ids) <= set(std[split])
    data = load_mosei_csd(mosei_small, cache_dir=False)
    assert data.report["segments"] == {"train": 60, "valid": 30, "test": 30}
    assert data.report["videos"] == {"train": 6, "valid": 3, "test": 3}
    assert data.report["folds_source"].endswith("folds.json") and data.report["missing_files"] == []
    assert (data.audio_dim, data.vision_dim) == (74, 35)
    for split, samples in data.splits.items():
        assert {s["id"].split("$_$")[0] for s in samples} == set(folds[split])
        assert all(len(s["text"].split()) == len(s["audio"]) == len(s["vision"]) for s in samples)  # aligned


def test_mosei_label_is_sentiment_at_index_0(mosei_small):
    labels = read_csd(mosei_small / MOSEI_LABELS)
    assert labels.name == "All Labels" and labels.feature_dim == 7
    data = load_mosei_csd(mosei_small, mode="unaligned", cache_dir=False)
    assert data.report["label_columns"] == list(LABEL_COLUMNS) and LABEL_COLUMNS[0] == "sentiment"
    table = {}
    for vid, (values, _) in labels.data.items():
        for row, value in enumerate(values):
            table[f"{vid}$_${row + 1}"] = value
    samples = [s for split in data.splits.values() for s in split]
    assert len(samples) == len(table) == 120
    for s in samples:
        assert s["label"] == pytest.approx(float(table[s["id"]][0]))
    all_rows = np.stack(list(table.values()))
    assert all_rows[:, 0].min() >= -3 and all_rows[:, 0].max() <= 3 and all_rows[:, 0].std() > 0.8
    assert all_rows[:, 1:].min() >= 0 and all_rows[:, 1:].max() <= 3
    assert not np.allclose(all_rows[:, 0], all_rows[:, 1])  # a different column would give other labels


def test_mosei_sdk_standard_folds_are_the_default(mosei_small, tmp_path):
    root = tmp_path / "mosei"
    shutil.copytree(mosei_small, root)
    (root / "folds.json").unlink()
    with pytest.raises(FoldError, match=r"video id\(s\) in the folds \(sdk \(mosei\)\) are not in the data"):
        load_mosei_csd(root, cache_dir=False)
    data = load_mosei_csd(root, cache_dir=False, on_error="skip")
    assert data.report["folds_source"] == "sdk (mosei)"
    assert data.report["unknown_fold_ids"] == 3228 - 12
    assert data.report["segments"] == {"train": 60, "valid": 30, "test": 30}
    std = sdk_standard_folds("mosei")
    for split, samples in data.splits.items():
        assert {s["id"].split("$_$")[0] for s in samples} <= set(std[split])


def test_mosei_missing_label_file_is_one_line(tmp_path):
    (tmp_path / "CMU_MOSEI_COVAREP.csd").write_bytes(b"")
    with pytest.raises(CSDError) as info:
        load_mosei_csd(tmp_path, cache_dir=False)
    message = str(info.value)
    assert "\n" not in message and "CMU-MOSEI label file not found" in message
    assert "CMU_MOSEI_COVAREP.csd" in message and "mmsenti data download mosei" in message


# ----------------------------------------------------------------------------------------------
# CMU-MOSEI download recipe (local HTTP server)


def _download_mosei(capsys, server, dest: Path, *extra) -> tuple[int, str, str]:  # noqa: F811
    return _run(capsys, "data", "download", "mosei", "--dest", dest, "--features", "labels",
                "--mirror", server.url + "/mosei/", "--no-progress", *extra)


def test_mosei_recipe_urls():
    urls = dl.mosei_urls()
    assert list(urls) == ["words", "covarep", "facet", "labels"]
    base = "http://immortal.multicomp.cs.cmu.edu/CMU-MOSEI/"
    assert urls == {"words": base + "language/CMU_MOSEI_TimestampedWords.csd",
                    "covarep": base + "acoustic/CMU_MOSEI_COVAREP.csd",
                    "facet": base + "visual/CMU_MOSEI_VisualFacet42.csd",
                    "labels": base + "labels/CMU_MOSEI_Labels.csd"}
    assert {dl.file_name(u) for u in urls.values()} == set(MOSEI_FILES.values())  # what the loader reads
    assert dl.dataset_urls("mosei", ["glove"])["glove"].startswith(base + "language/")
    with pytest.raises(dl.DownloadError, match="unknown CMU-MOSEI feature 'opensmile_eb10'"):
        dl.mosei_urls(["opensmile_eb10"])


def test_mosei_download_resumes_a_partial_file(server, mosei_small, tmp_path, capsys):  # noqa: F811
    data = (mosei_small / MOSEI_LABELS).read_bytes()
    server.files["/mosei/" + MOSEI_LABELS] = data
    dest = tmp_path / "mosei"
    dest.mkdir()
    half = len(data) // 2
    (dest / (MOSEI_LABELS + ".part")).write_bytes(data[:half])
    rc, out, err = _download_mosei(capsys, server, dest)
    assert rc == 0, err
    assert (dest / MOSEI_LABELS).read_bytes() == data and not (dest / (MOSEI_LABELS + ".part")).exists()
    assert server.requests == [("/mosei/" + MOSEI_LABELS, f"bytes={half}-")]
    assert "resumed" in out
    rc, out, _ = _download_mosei(capsys, server, dest)  # present and valid: no request
    assert rc == 0 and "already present" in out and len(server.requests) == 1


def test_mosei_download_refuses_a_corrupt_file(server, mosei_small, tmp_path, capsys):  # noqa: F811
    data = (mosei_small / MOSEI_LABELS).read_bytes()
    server.files["/mosei/" + MOSEI_LABELS] = data[: len(data) * 2 // 3]  # truncated HDF5, served as whole
    dest = tmp_path / "mosei"
    rc, _, err = _download_mosei(capsys, server, dest)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a valid computational sequence" in lines[0]
    assert MOSEI_LABELS in lines[0] and "docs/datasets.md" in lines[0]
    assert not (dest / MOSEI_LABELS).exists() and not (dest / (MOSEI_LABELS + ".part")).exists()


def test_mosei_download_offline_is_one_line(server, tmp_path, capsys):  # noqa: F811
    with socket.socket() as sock:  # a local port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "mosei"
    rc, out, err = _run(capsys, "data", "download", "mosei", "--dest", dest, "--mirror", f"http://127.0.0.1:{port}",
                        "--no-progress", "--retries", "0")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: could not reach 127.0.0.1:{port} (connection refused)")
    for name in MOSEI_FILES.values():
        assert name in lines[0]
    assert f"put them in {dest}" in lines[0] and "docs/datasets.md" in lines[0]


# ----------------------------------------------------------------------------------------------
# CH-SIMS


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_sims_synthetic_counts_folds_and_unimodal_labels(sims_small):
    rows = _csv_rows(sims_small / "label.csv")
    assert list(rows[0]) == list(SIMS_LABEL_COLUMNS) and len(rows) == 40
    data = load_sims(sims_small, cache_dir=False)
    assert data.report["segments"] == {"train": 24, "valid": 8, "test": 8}
    assert data.report["folds_source"].endswith("label.csv (mode column)")
    assert (data.audio_dim, data.vision_dim) == (33, 35)
    assert data.report["unimodal_labels"] == 40 and data.report["modality_dropped"] == {}
    by_id = {f"{r['video_id']}$_${r['clip_id']}": r for r in rows}
    for split, samples in data.splits.items():
        for s in samples:
            row = by_id[s["id"]]
            assert row["mode"] == split  # the mode column is the fold
            assert s["text"] == row["text"] and any("\u4e00" <= ch <= "\u9fff" for ch in s["text"])
            assert (s["label"], s["label_T"], s["label_A"], s["label_V"]) == tuple(
                float(row[c]) for c in ("label", "label_T", "label_A", "label_V"))
            assert s["audio"].shape[1] == 33 and s["vision"].shape[1] == 35 and len(s["audio"]) > len(s["vision"])
    labels = np.array([[s[k] for k in ("label", "label_T", "label_A", "label_V")]
                       for v in data.splits.values() for s in v])
    assert labels.min() >= -1 and labels.max() <= 1 and np.allclose(labels * 5, np.rint(labels * 5))
    assert not np.allclose(labels[:, 0], labels[:, 1])  # unimodal labels are their own


def test_sims_clip_without_features_keeps_text_and_labels(sims_small, tmp_path):
    root = tmp_path / "sims"
    shutil.copytree(sims_small, root)
    with (root / "label.csv").open("a", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerow(
            ["video_9999", "0001", "这个结果很精彩。", "0.8", "1.0", "0.6", "0.4", "Positive", "valid"])
    data = load_sims(root, cache_dir=False)
    assert data.report["segments"] == {"train": 24, "valid": 9, "test": 8}
    extra = next(s for s in data.splits["valid"] if s["id"] == "video_9999$_$0001")
    assert extra["audio"] is None and extra["vision"] is None and extra["label_T"] == 1.0
    assert data.report["modality_dropped"] == {"valid": {"no extracted features for the clip": 1}}
    text_only = load_sims(root, features=None)
    assert (text_only.audio_dim, text_only.vision_dim) == (0, 0)
    assert all(s["audio"] is None for v in text_only.splits.values() for s in v)
    with pytest.raises(SimsDataError, match="set data.mode=unaligned"):
        load_sims(root, mode="aligned", cache_dir=False)
    with pytest.raises(SimsDataError, match="no label.csv"):
        load_sims(tmp_path / "nowhere")


def test_sims_bad_unimodal_label_names_the_line(tmp_path):
    path = tmp_path / "label.csv"
    path.write_text(",".join(SIMS_LABEL_COLUMNS) + "\n"
                    "video_0001,0001,很好,0.2,0.4,abc,0.0,Positive,train\n", encoding="utf-8")
    with pytest.raises(MmsaFormatError, match=r"label.csv: line 2: label_A 'abc' is not a number"):
        read_label_csv(path)


def test_unimodal_labels_reach_the_batch(sims_small, tokenizer):
    data = load_sims(sims_small, cache_dir=False)
    samples = data.splits["train"][:4]
    batch = SentimentCollator(tokenizer, data.audio_dim, data.vision_dim)(samples)
    for field, key in (("text_labels", "label_T"), ("audio_labels", "label_A"), ("vision_labels", "label_V")):
        torch.testing.assert_close(getattr(batch, field), torch.tensor([s[key] for s in samples]))
    assert batch.audio.shape[-1] == 33 and batch.audio_mask.any(1).all() and batch.vision_mask.any(1).all()
    moved = batch.to("cpu")
    assert torch.equal(moved.vision_labels, batch.vision_labels)
    plain = [{k: v for k, v in s.items() if not k.startswith("label_")} for s in samples]
    assert SentimentCollator(tokenizer, 33, 35)(plain).text_labels is None  # MOSI-style data: no field
    mixed = SentimentCollator(tokenizer, 33, 35)([samples[0], plain[1]]).audio_labels
    assert mixed[0] == samples[0]["label_A"] and torch.isnan(mixed[1])


# ----------------------------------------------------------------------------------------------
# MMSA pickles of CH-SIMS / CMU-MOSEI through the one safe unpickler


def _mmsa_payload(n: int = 3, sims: bool = True) -> dict:
    rng = np.random.default_rng(0)
    part = {"raw_text": np.array(["很好看"] * n if sims else ["a fine film"] * n, dtype=object),
            "id": np.array([f"video_0001$_${i + 1:04d}" for i in range(n)], dtype=object),
            "audio": rng.standard_normal((n, 4, 33 if sims else 74)).astype(np.float32),
            "vision": rng.standard_normal((n, 4, 709 if sims else 35)).astype(np.float32),
            "audio_lengths": np.array([4, 2, 3][:n]), "vision_lengths": np.array([4, 4, 1][:n]),
            "regression_labels": np.array([0.2, -0.4, 1.0][:n], np.float32)}
    if sims:
        for m, values in zip("TAV", ([0.4, -0.2, 1.0], [0.0, -0.6, 0.8], [0.2, 0.2, 0.6])):
            part[f"regression_labels_{m}"] = np.array(values[:n], np.float32)
    return {s: dict(part) for s in ("train", "valid", "test")}


def test_sims_pickle_carries_unimodal_labels(tmp_path):
    path = tmp_path / "unaligned_39.pkl"
    path.write_bytes(pickle.dumps(_mmsa_payload()))
    data = load_mmsa_pickle(path)
    first = data.splits["train"][0]
    assert (first["label"], first["label_T"], first["label_A"], first["label_V"]) == pytest.approx((0.2, 0.4, 0.0, 0.2))
    assert data.splits["train"][1]["audio"].shape == (2, 33) and data.vision_dim == 709
    mosei = tmp_path / "aligned_50.pkl"
    mosei.write_bytes(pickle.dumps(_mmsa_payload(sims=False)))
    assert "label_T" not in load_mmsa_pickle(mosei).splits["test"][2]


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["sims", "mosei"])
def test_pickle_with_a_foreign_class_is_refused(layout, tmp_path):
    marker = tmp_path / "ran"
    payload = _mmsa_payload(sims=layout == "sims")
    payload["train"]["raw_text"] = [_Payload(marker)] * 3
    path = tmp_path / f"{layout}.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match=r"refused to load global '(posix|os)\.system'"):
        load_mmsa_pickle(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# CLI, configs, training


def test_synth_cli_formats(tmp_path, capsys):
    rc, out, err = _run(capsys, "data", "synth", "--out", tmp_path / "mosei", "--format", "mosei", "--scale", "small")
    assert rc == 0, err
    assert "CMU_MOSEI_Labels.csd" in out and "train 6 videos / 60 segments" in out
    rc, out, err = _run(capsys, "data", "synth", "--out", tmp_path / "sims", "--format", "sims", "--scale", "small")
    assert rc == 0, err
    assert f"{SIMS_FEATURES_DIR}/CMU_MOSI_COVAREP.csd" in out and "train 4 videos / 24 clips" in out
    assert (tmp_path / "sims" / "label.csv").is_file()
    rc, _, err = _run(capsys, "data", "synth", "--out", tmp_path / "x", "--format", "sims", "--scale", "mosi")
    assert rc == 2 and "--scale mosi does not go with --format sims" in err


def test_same_seed_same_files(tmp_path):
    for name in ("a", "b"):
        write_synthetic_sims(tmp_path / name, scale="small", seed=5)
    assert (tmp_path / "a" / "label.csv").read_bytes() == (tmp_path / "b" / "label.csv").read_bytes()
    for f in ("CMU_MOSI_COVAREP.csd", "CMU_MOSI_Visual_Facet_41.csd"):
        a, b = (read_csd(tmp_path / n / SIMS_FEATURES_DIR / f) for n in ("a", "b"))
        assert all(np.array_equal(a.data[k][0], b.data[k][0]) for k in a.data)


def test_chinese_encoder_config_and_offline_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from mmsenti.errors import MmsentiError
    from test_train import compose_train

    cfg = compose_train(["experiment=mosi_fusion", "data=synthetic_sims", "model/text_encoder=bert_base_chinese"],
                        tmp_path, tmp_path / "sims")
    assert cfg.model.net.text_encoder.pretrained == "bert-base-chinese" == cfg.data.tokenizer
    assert cfg.data.text_normalization == "none" and cfg.data.mode == "unaligned"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: set it where it is kept
    with pytest.raises(MmsentiError) as info:
        load_pretrained("bert-base-chinese", "tokenizer")
    message = str(info.value)
    assert message.startswith("could not load tokenizer 'bert-base-chinese'") and "local folder" in message
    assert "\n" not in message


@pytest.mark.parametrize("data", ["synthetic_mosei", "synthetic_sims"])
def test_fast_dev_run_on_each_synthetic_set(data, tmp_path):
    from test_train import METRIC_KEYS, SMALL, compose_train

    from mmsenti.training.tasks import train

    cfg = compose_train(["experiment=mosi_fusion", f"data={data}", "debug=fdr", *SMALL], tmp_path / "run",
                        tmp_path / data)
    metrics, objects = train(cfg)
    from mmsenti.metrics import SIMS_METRIC_NAMES

    # each dataset is scored as MMSA scores it: MOSEI like MOSI, CH-SIMS by its own [-1, 1] classes
    expected = set(SIMS_METRIC_NAMES) if data == "synthetic_sims" else METRIC_KEYS
    assert {k.split("/", 1)[1] for k in metrics if k.startswith("test/")} - {"loss"} == expected
    assert objects["model"].hparams.metrics == ("sims" if data == "synthetic_sims" else "mosi")
    dm = objects["datamodule"]
    assert dm.feature_dims == ({"audio": 74, "vision": 35} if data == "synthetic_mosei" else {"audio": 33, "vision": 35})
    batch = dm.collator(dm.splits["train"][:2])
    assert (batch.text_labels is None) == (data == "synthetic_mosei")


def test_inspect_reads_a_mosei_folder(mosei_small, tmp_path):
    """`mmsenti data inspect` on a CMU-MOSEI folder: its own file names and folds, not MOSI's."""
    from mmsenti.data.inspect.stats import inspect_path
    from mmsenti.errors import MmsentiError

    info = inspect_path(mosei_small)
    assert info["kind"] == "csd_folder" and info["dataset"] == "CMU-MOSEI"
    assert {s: info["splits"][s]["segments"] for s in ("train", "valid", "test")} == {"train": 60, "valid": 30, "test": 30}
    assert not info["problems"]["missing_files"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MmsentiError, match="expected CMU_MOSI_Opinion_Labels.csd or CMU_MOSEI_Labels.csd"):
        inspect_path(empty)
