"""SentimentDataModule: widths from the data, named CSD files, label.csv encoding, drops printed per
split, empty splits refused. The datamodule is built directly (no training), so these run in seconds."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmsenti.data.datamodule import SentimentDataModule
from mmsenti.errors import MmsentiError

ROOT = Path(__file__).resolve().parents[1]
LOGGER = "mmsenti.data.datamodule"


def _pickle(path: Path, audio_dim: int, vision_dim: int) -> Path:
    rng = np.random.default_rng(0)
    raw = {}
    for i, split in enumerate(("train", "valid", "test")):
        n = 4
        raw[split] = {"raw_text": np.array([f"clip {i} {k}" for k in range(n)], dtype=object),
                      "id": np.array([f"v{i}$_${k + 1}" for k in range(n)], dtype=object),
                      "audio": rng.standard_normal((n, 6, audio_dim)).astype(np.float32),
                      "vision": rng.standard_normal((n, 5, vision_dim)).astype(np.float32),
                      "regression_labels": rng.uniform(-3, 3, n).astype(np.float32)}
    path.write_bytes(pickle.dumps(raw, protocol=4))
    return path


def _label_csv(path: Path, body: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(("video_id,clip_id,text,label,mode\n" + body).encode(encoding))
    return path


def test_feature_widths_come_from_the_data(tmp_path):
    """An MMSA pickle with 73-d audio / 35-d vision, read under mosi_mmsa's 5 / 20 defaults."""
    pkl = _pickle(tmp_path / "unaligned_50.pkl", 73, 35)
    dm = SentimentDataModule(source="mmsa", path=str(pkl), audio_dim=5, vision_dim=20)
    assert dm.feature_dims == {"audio": 5, "vision": 20}  # the config's, before setup
    dm.setup("fit")
    assert dm.feature_dims == {"audio": 73, "vision": 35}
    assert (dm.hparams.audio_dim, dm.hparams.vision_dim) == (73, 35)  # what checkpoints record
    assert [m.shape for m in dm.feature_stats["audio"]] == [(73,), (73,)]


def test_config_width_stays_for_a_modality_the_data_lacks(tmp_path):
    csv = _label_csv(tmp_path / "label.csv", "vA,1,good,1.0,train\nvB,1,bad,-1.0,valid\nvC,1,so so,0.0,test\n")
    dm = SentimentDataModule(source="label_csv", path=str(csv), audio_dim=74, vision_dim=47)
    dm.setup("fit")
    assert dm.feature_dims == {"audio": 74, "vision": 47}


def test_named_csd_files_reach_the_loader(tmp_path, synthetic_small):
    root = tmp_path / "d"
    shutil.copytree(synthetic_small, root, ignore=shutil.ignore_patterns(".cache"))
    (root / "CMU_MOSI_COVAREP.csd").rename(root / "covarep_v2.csd")
    files = {"words": None, "audio": "covarep_v2.csd", "vision": None, "labels": None}  # as configs/data/*.yaml
    dm = SentimentDataModule(source="csd", root=str(root), files=files)
    dm.setup("fit")
    assert dm.report["missing_files"] == [] and dm.splits["train"][0]["audio"].shape[1] == 74
    bad = SentimentDataModule(source="csd", root=str(root), files={**files, "audio": "covarep.csd"})
    with pytest.raises(MmsentiError, match=r"covarep\.csd: file not found.*covarep_v2\.csd"):
        bad.setup("fit")


def test_label_csv_encoding_option(tmp_path):
    csv = _label_csv(tmp_path / "label.csv", "vA,1,très bon,2.0,train\nvB,1,nul,-2.0,valid\n", encoding="latin-1")
    with pytest.raises(MmsentiError, match="line 2: not utf-8 text.*data.encoding=latin-1"):
        SentimentDataModule(source="label_csv", path=str(csv)).setup("fit")
    dm = SentimentDataModule(source="label_csv", path=str(csv), encoding="latin-1")
    dm.setup("fit")
    assert dm.splits["train"][0]["text"] == "très bon"


def test_drops_are_printed_per_split_and_empty_test_is_a_warning(tmp_path, caplog):
    csv = _label_csv(tmp_path / "label.csv",
                     "vA,1,,1.0,train\nvA,2,,1.0,train\nvA,3,fine,1.0,train\nvB,1,,0.0,valid\nvB,2,meh,0.0,valid\n")
    dm = SentimentDataModule(source="label_csv", path=str(csv))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dm.setup("fit")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    train, valid, test = (next(x for x in lines if f"'{s}' split" in x) for s in ("train", "valid", "test"))
    assert "dropped 2 (empty text: 2)" in train and "dropped 1 (empty text: 1)" in valid
    assert "'test' split is empty" in test and "testing is skipped" in test
    assert len(lines) == 3 and all("\n" not in x for x in lines)


@pytest.mark.parametrize("empty", ["train", "valid"])
def test_empty_train_or_valid_split_is_refused(tmp_path, empty):
    rows = {"train": "vA,1,,1.0,train\nvB,1,ok,0.0,valid\n", "valid": "vA,1,good,1.0,train\nvB,1,,0.0,valid\n"}[empty]
    dm = SentimentDataModule(source="label_csv", path=str(_label_csv(tmp_path / "label.csv", rows)))
    with pytest.raises(MmsentiError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert f"the '{empty}' split is empty" in msg and "empty text: 1" in msg and "\n" not in msg


def test_skipped_csd_segments_are_printed(tmp_path, synthetic_small, caplog):
    import h5py

    root = tmp_path / "d"
    shutil.copytree(synthetic_small, root, ignore=shutil.ignore_patterns(".cache"))
    vid = json.loads((root / "folds.json").read_text())["train"][0]
    with h5py.File(root / "CMU_MOSI_Opinion_Labels.csd", "r+") as h:
        ds = h["Opinion Segment Labels"]["data"][vid]["features"]
        values = ds[()]
        values[:3, 0] = np.nan
        ds[...] = values
    dm = SentimentDataModule(source="csd", root=str(root), on_error="skip")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dm.setup("fit")
    (line,) = [r.getMessage() for r in caplog.records if "'train' split" in r.getMessage()]
    assert "dropped 3 (non-finite label: 3)" in line and str(root) in line


def test_data_configs_take_files_and_encoding_overrides():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    os.environ["PROJECT_ROOT"] = str(ROOT)
    for name in ("mosi", "extracted", "synthetic_mosi"):
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
            cfg = compose("train", overrides=[f"data={name}", "data.files.audio=my_covarep.csd",
                                              "data.files.labels=/abs/labels.csd", "data.encoding=latin-1"])
        assert cfg.data.files.audio == "my_covarep.csd" and cfg.data.files.labels == "/abs/labels.csd"
        assert cfg.data.files.words is None and cfg.data.encoding == "latin-1"
        GlobalHydra.instance().clear()
