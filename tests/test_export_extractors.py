"""The feature extractors in an export's manifest (issue 11): recorded at export from the training
data's CSD metadata (``null`` with a reason when not known), validated, and used by ``mmsenti predict``
on a clip before any other source."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fake_export import audio_spec, make_export, manifest_for, write_feature_folder
from mmsenti.errors import MmsentiError
from mmsenti.media.csd_writer import training_extractors
from mmsenti.runtime.manifest import read_manifest, validate_manifest, write_manifest


def recorded(spec: dict | None = None, reason: str | None = None, max_seconds: float | None = None) -> dict:
    entry = {"audio": None if spec is None else {"kind": "audio_extractor", **{k: v for k, v in spec.items() if k != "dimension names"}},
             "reasons": {} if spec is not None else {"audio": reason or "not known"}, "max_seconds": max_seconds, "source": "test"}
    return entry


# ------------------------------------------------------------------------------ what export records

def test_recorded_from_the_csd_metadata_of_the_training_features(tmp_path):
    root = write_feature_folder(tmp_path / "features", audio_spec(fmin=70.0), max_seconds=120.0)
    out = training_extractors({"source": "csd", "root": str(root)}, {"audio": 43})
    audio = out["audio"]
    assert audio["kind"] == "audio_extractor" and audio["name"] == "librosa_prosody" and audio["version"] == "1"
    assert audio["parameters"]["fmin"] == 70.0 and audio["rate"] == 100 and audio["dim"] == 43
    assert audio["file"] == "CMU_MOSI_COVAREP.csd" and "dimension names" not in audio
    assert out["reasons"] == {} and out["max_seconds"] == 120.0 and str(root) in out["source"]
    # a renamed file named through data.files is read too
    (root / "CMU_MOSI_COVAREP.csd").rename(root / "prosody.csd")
    again = training_extractors({"source": "csd", "root": str(root), "files": {"audio": "prosody.csd"}}, {"audio": 43})
    assert again["audio"]["file"] == "prosody.csd"


@pytest.mark.parametrize("data, dims, expected", [
    (None, {"audio": 43}, "training data is not known"),
    ({"source": "synthetic", "root": "data/synthetic_mosi"}, {"audio": 74, "vision": 47}, "synthetic"),
    ({"source": "mmsa", "path": "/d/unaligned_50.pkl"}, {"audio": 5}, "MMSA feature pickle (/d/unaligned_50.pkl)"),
    ({"source": "label_csv", "path": "/d/label.csv"}, {"audio": 74}, "text-only data"),
    ({"source": "csd", "root": "NO_METADATA"}, {"audio": 43}, "records no mmsenti extractor"),
    ({"source": "csd", "root": "WIDTH"}, {"audio": 74}, "takes 74-d audio features"),
    ({"source": "csd", "root": "EMPTY"}, {"audio": 43}, "is not there"),
    ({"source": "csd", "root": "EMPTY", "files": {"audio": None}}, {"audio": 43}, "data.files.audio=null"),
])
def test_unknown_extractors_are_null_with_a_reason(data, dims, expected, tmp_path):
    if data and data.get("root") == "NO_METADATA":
        data = {**data, "root": str(write_feature_folder(tmp_path / "sdk", None))}  # e.g. the CMU SDK's COVAREP
    elif data and data.get("root") == "WIDTH":
        data = {**data, "root": str(write_feature_folder(tmp_path / "f", audio_spec()))}  # 43-d, model takes 74
    elif data and data.get("root") == "EMPTY":
        (tmp_path / "empty").mkdir()
        data = {**data, "root": str(tmp_path / "empty")}
    out = training_extractors(data, dims)
    for m in dims:
        assert out[m] is None and expected in out["reasons"][m], out["reasons"]
    assert out["max_seconds"] is None


def test_text_only_engines_record_no_extractors():
    out = training_extractors({"source": "csd", "root": "/anywhere"}, {})
    assert out == {"source": "the engine takes no frame features", "max_seconds": None, "reasons": {}}


def test_export_reads_the_data_of_the_datamodule_or_of_the_checkpoint(tmp_path):
    import torch

    from mmsenti.export.pipeline import extractor_facts

    root = write_feature_folder(tmp_path / "features", audio_spec(fmin=75.0))
    dm = SimpleNamespace(hparams={"source": "csd", "root": str(root), "path": None}, location=str(root))
    assert extractor_facts({"audio": 43}, datamodule=dm)["audio"]["parameters"]["fmin"] == 75.0
    assert extractor_facts({"audio": 43}, data_config={"source": "csd", "root": str(root)})["audio"]["name"] == "librosa_prosody"
    ckpt = tmp_path / "run.ckpt"  # `mmsenti export --no-data`: the checkpoint still says what it was trained on
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": {"source": "csd", "root": str(root)}}, ckpt)
    assert extractor_facts({"audio": 43}, source={"checkpoint": str(ckpt)})["audio"]["dim"] == 43
    torch.save({"state_dict": {}}, ckpt)
    assert "not known" in extractor_facts({"audio": 43}, source={"checkpoint": str(ckpt)})["reasons"]["audio"]


# ------------------------------------------------------------------------------ schema

def test_manifest_round_trip_and_old_manifests(tmp_path):
    folder = make_export(tmp_path / "exp", {"audio": 43}, extractors=recorded(audio_spec(), max_seconds=300.0))
    manifest = read_manifest(folder)
    assert manifest["extractors"]["audio"]["parameters"] == audio_spec()["parameters"]
    write_manifest(folder, manifest)
    assert read_manifest(folder) == json.loads((folder / "manifest.json").read_text()) == manifest
    old = manifest_for({"audio": 43})  # written before the field existed
    assert "extractors" not in old and validate_manifest(old) is old
    assert validate_manifest(manifest_for({"audio": 43}, recorded(None, "synthetic")))


@pytest.mark.parametrize("extractors, problem", [
    ("librosa", "'extractors' should be dict"),
    ({"audio": None, "reasons": {}}, "extractors.audio is null without a reason"),
    ({"audio": "librosa_prosody", "reasons": {}}, "extractors.audio should be an extractor spec"),
    ({"audio": {"dim": 43}, "reasons": {}}, "extractors.audio.name missing"),
    ({"audio": {"name": "librosa_prosody", "dim": 74}, "reasons": {}}, "extractors.audio.dim 74 != features.audio.dim 43"),
    ({"audio": {"name": "librosa_prosody", "dim": 43}, "reasons": [], "max_seconds": None}, "extractors.reasons should be"),
    ({"audio": {"name": "librosa_prosody", "dim": 43}, "reasons": {}, "max_seconds": "300"}, "max_seconds should be a number"),
])
def test_malformed_extractors_are_refused(extractors, problem):
    with pytest.raises(MmsentiError, match="invalid manifest") as info:
        validate_manifest(manifest_for({"audio": 43}, extractors))
    assert problem in str(info.value)


# ------------------------------------------------------------------------------ predict

@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    import soundfile as sf

    t = np.arange(16000) / 16000
    path = tmp_path_factory.mktemp("clip") / "vowel.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 150 * t) * np.minimum(1, t / 0.05)).astype(np.float32), 16000)
    return path


def test_predict_uses_the_manifests_extractor(tmp_path, wav):
    from mmsenti.media.predict import format_prediction, load_predictor

    folder = make_export(tmp_path / "exp", {"audio": 43}, extractors=recorded(audio_spec(fmin=70.0), max_seconds=0.5))
    predictor = load_predictor(folder)
    assert predictor.source["extractor_settings"] == "the manifest" and predictor.notes == []
    assert predictor.clip_features.extractors.audio.params["fmin"] == 70.0  # rebuilt from the manifest's spec
    assert predictor.clip_features.extractors.max_seconds == 0.5
    res = predictor.predict(wav, text="really good")
    assert res["notes"] == [] and res["input"]["audio"]["frames"] == 50  # 0.5 s at 100 Hz: max_seconds applied
    assert "note:" not in format_prediction(res)
    # --features naming the same extractor is fine; another one is an error (test_cli_errors has the line)
    same = write_feature_folder(tmp_path / "same", audio_spec(fmin=70.0))
    assert load_predictor(folder, features=same).source["extractor_settings"] == "the manifest"
    with pytest.raises(MmsentiError, match=r"its audio extractor, librosa_prosody v1 \(43-d; fmin=90.0\), is not the one"):
        load_predictor(folder, features=write_feature_folder(tmp_path / "other", audio_spec(fmin=90.0)))


def test_predict_falls_back_with_a_note(tmp_path, wav):
    from mmsenti.media.predict import format_prediction, load_predictor

    features = write_feature_folder(tmp_path / "features", audio_spec(fmin=80.0))
    # the manifest knows no extractor (e.g. trained on the synthetic set): the data folder's metadata is used
    folder = make_export(tmp_path / "exp", {"audio": 43}, extractors=recorded(None, "trained on the synthetic set"),
                         data={"mode": "aligned", "location": str(features)})
    predictor = load_predictor(folder)
    assert predictor.clip_features.specs["audio"]["parameters"]["fmin"] == 80.0
    (note,) = predictor.notes
    assert "records no audio extractor (trained on the synthetic set)" in note and str(features) in note
    res = predictor.predict(wav, text="really good")
    assert res["notes"] == [note] and f"note: {note}" in format_prediction(res).splitlines()
    assert "note" not in json.dumps(predictor.predict(None, text="really good"))  # text alone: no extractor involved

    old = make_export(tmp_path / "old", {"audio": 43}, data={"mode": "aligned"})  # an export from before the field
    predictor = load_predictor(old, features=features)
    (note,) = predictor.notes
    assert "records no feature extractors" in note and "--features" in note
    assert predictor.clip_features.specs["audio"]["parameters"]["fmin"] == 80.0


@pytest.mark.slow
def test_export_records_the_extractors_of_the_training_features(tmp_path):
    from mmsenti.export.pipeline import ExportOptions, export_model
    from mmsenti.models import SentimentModel, SentimentModelConfig

    hp = dict(modalities=["text", "audio"], text_encoder={"pretrained": "minilm_l6", "finetune": "frozen"},
              audio_encoder={"name": "lstm", "input_dim": 43, "d_model": 8}, fusion={"name": "late", "d_model": 8})
    model = SentimentModel(SentimentModelConfig.from_dict(hp)).eval()
    features = write_feature_folder(tmp_path / "features", audio_spec(fmin=72.0), max_seconds=60.0)
    export_model(model, tmp_path / "exp", ExportOptions(metrics=False), source={"checkpoint": None},
                 data_config={"source": "csd", "root": str(features)})
    extractors = read_manifest(tmp_path / "exp")["extractors"]
    assert extractors["audio"]["parameters"]["fmin"] == 72.0 and extractors["max_seconds"] == 60.0
    assert "vision" not in extractors
