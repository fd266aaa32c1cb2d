"""``mmsenti predict``: the sentiment of one clip (or of text alone) with a trained model.

Model sources:

* a **Lightning checkpoint** (``.ckpt``, what ``train.py`` writes): the model is rebuilt from the
  checkpoint's hyper-parameters and its ``net.*`` weights (loaded with ``weights_only=True``);
* an **export folder** (``mmsenti export``: ``manifest.json`` + engine + tokenizer): run through
  ``mmsenti.export.predictor.Predictor`` (ONNX Runtime / TensorRT, no torch for the text-only path);
  the manifest's ``data`` gives mode / max_text_len / max_frames and the feature folder.

Which extractors and settings (they must be the ones the training features came from):

1. ``--features DIR``: the feature folder the model was trained on; its CSD metadata
   (``extractor``: name, version, parameters) rebuilds the same extractors;
2. otherwise the checkpoint's run folder: ``<run>/resolved_config.yaml`` (``train.py`` writes it
   next to ``checkpoints/``) gives ``data.root`` (whose CSD metadata is read as in 1), and the
   data settings ``mode`` (aligned: frames averaged per word), ``collapse``, ``max_text_len`` and
   ``max_frames``;
3. otherwise the default extractors and ``mode=aligned`` (a note says so in the output).

The model's feature widths are checked against the extractors' (a mismatch is an error naming
both). Word timings follow :mod:`mmsenti.media.text` (``--words`` file, else spread over the
speech span), exactly as extraction did.

Per-modality contributions: the model is run once on a batch of variants (all modalities, audio
masked, vision masked, text alone); a modality's contribution is ``score(all) - score(without
it)``, i.e. how much it moved the prediction. Text cannot be masked (the fusion is anchored on
text), so ``text_only`` reports the score from text alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

__all__ = ["CheckpointPredictor", "ExportPredictor", "format_prediction", "load_predictor", "polarity"]

SENTIMENT_CLASSES = {-3: "strongly negative", -2: "negative", -1: "weakly negative", 0: "neutral",
                     1: "weakly positive", 2: "positive", 3: "strongly positive"}


def polarity(score: float) -> dict[str, Any]:
    """MOSI conventions: sign (Non0 Acc-2; 0 is neutral) and the Acc-7 class ``round(clip(score, -3, 3))``."""
    cls = int(np.rint(np.clip(score, -3, 3)))
    label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return {"polarity": label, "class_7": cls, "class_7_name": SENTIMENT_CLASSES[cls]}


def load_predictor(model: str | os.PathLike, features: str | os.PathLike | None = None, threads: int | None = None):
    """A predictor for a checkpoint file or an export folder (see the module docstring).

    ``threads``: intra-op threads of the engine (an export) or of torch (a checkpoint; this sets
    torch's process-wide setting); ``None`` leaves the libraries' defaults.
    """
    path = Path(model)
    if not path.exists():
        raise MmsentiError(f"--model {path}: no such file or folder")
    if path.is_dir():
        try:
            import mmsenti.export.predictor  # noqa: F401
        except ImportError as err:
            raise MmsentiError(f"{path}: export folders need mmsenti.export (not in this installation); pass a .ckpt") from err
        return ExportPredictor.load(path, features=features, threads=threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return CheckpointPredictor.load(path, features=features)


class _ClipFeatures:
    """Extracts a clip with the training-time extractors and turns it into one model sample."""

    def __init__(self, specs: dict[str, Any] | None, data: dict[str, Any], modalities: list[str]):
        self.specs = specs or {}
        self.data = data
        self.modalities = modalities
        self._extractors = None

    @property
    def extractors(self):
        if self._extractors is None:
            from .extract import DEFAULT_MAX_SECONDS, Extractors

            audio = self.specs.get("audio") or "librosa_prosody"
            face = (self.specs.get("vision") or "face_expression") if "vision" in self.modalities else None
            self._extractors = Extractors.build(audio, face, float(self.specs.get("max_seconds") or DEFAULT_MAX_SECONDS))
        return self._extractors

    def dims(self) -> dict[str, int]:
        from .audio import PROSODY_FEATURES
        from .face import FACE_FEATURES

        defaults = {"audio": len(PROSODY_FEATURES), "vision": len(FACE_FEATURES)}
        return {m: int((self.specs.get(m) or {}).get("dim") or defaults[m]) for m in ("audio", "vision")}

    def sample(self, clip: str | os.PathLike, text: str | None, words: str | os.PathLike | None) -> tuple[dict, dict]:
        from mmsenti.data.align import collapse_frames, subsample_frames

        from .extract import extract_clip
        from .text import read_word_timestamps

        stamps = read_word_timestamps(words) if words else None
        result = extract_clip(clip, text, self.extractors, stamps)
        sample: dict[str, Any] = {"id": str(clip), "text": result.transcript.text, "label": 0.0}
        mode = self.data.get("mode", "aligned")
        for m in ("audio", "vision"):
            feats = getattr(result, m)
            rows = None
            if feats is not None and feats.mask.any():
                f, iv = feats.valid_rows()
                if mode == "aligned":
                    if len(result.transcript.words):
                        rows = collapse_frames(f, iv, result.transcript.intervals, how=self.data.get("collapse", "mean")).features
                else:
                    rows = subsample_frames(f, self.data.get("max_frames"))
            sample[m] = None if rows is None else np.asarray(rows, np.float32)
        info = result.summary()
        return sample, info


class _Predictor:
    """What both model sources share: feature checks, the variants batch, the result dict."""

    modalities: list[str]
    source: dict[str, Any]
    clip_features: _ClipFeatures
    feature_mismatch: str | None = None

    def _setup_features(self, specs: dict[str, Any] | None, data: dict[str, Any], dims: dict[str, int]) -> None:
        self.data = data
        self.clip_features = _ClipFeatures(specs, data, self.modalities)
        want = self.clip_features.dims()
        # checked when a clip is given: text-only prediction works whatever features the model was trained on
        self.feature_mismatch = next((
            f"the model takes {d}-d {m} features but the extractor ({(specs or {}).get(m, {}).get('name', 'default')}) gives "
            f"{want[m]}-d; pass --features <the folder the model was trained on>, or predict from text alone"
            for m, d in dims.items() if d != want[m]), None)

    def _scores(self, samples: list[dict]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_text(self, text: str) -> float:
        """Text-only fast path: one forward pass, no media libraries touched."""
        from .text import tokenize

        return float(self._scores([{"id": "text", "text": " ".join(tokenize(text)), "audio": None, "vision": None, "label": 0.0}])[0])

    def predict(self, clip: str | os.PathLike | None = None, text: str | None = None,
                words: str | os.PathLike | None = None) -> dict[str, Any]:
        from .text import tokenize

        if clip is None and not tokenize(text):
            raise MmsentiError("nothing to predict: give a clip and/or a non-empty --text")
        result: dict[str, Any] = {"model": self.source, "modalities": self.modalities}
        if clip is None:
            t = time.perf_counter()
            score = self.predict_text(text or "")
            result.update(score=round(score, 4), **polarity(score), input={"text": " ".join(tokenize(text))},
                          contributions={}, text_only=round(score, 4), warnings=[],
                          timings_ms={"model": round(1000 * (time.perf_counter() - t), 2)})
            return result
        if self.feature_mismatch:
            raise MmsentiError(self.feature_mismatch)
        t = time.perf_counter()
        _ = self.clip_features.extractors  # built once per predictor (CNN weights, cascade)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        sample, info = self.clip_features.sample(clip, text, words)
        extract_s = time.perf_counter() - t
        warnings = list(info.get("warnings", []))
        if not sample["text"]:
            warnings.append("empty transcript: the model sees no words (pass --text)")
        variants = [sample]
        names = ["all"]
        for m in ("audio", "vision"):
            if m in self.modalities and sample.get(m) is not None:
                variants.append({**sample, m: None})
                names.append(f"without_{m}")
        variants.append({**sample, "audio": None, "vision": None})
        names.append("text_only")
        t = time.perf_counter()
        scores = dict(zip(names, (float(s) for s in self._scores(variants))))
        model_ms = 1000 * (time.perf_counter() - t)
        score = scores["all"]
        contributions = {m: round(score - scores[f"without_{m}"], 4) for m in ("audio", "vision") if f"without_{m}" in scores}
        used = {m: sample.get(m) is not None for m in ("audio", "vision") if m in self.modalities}
        result.update(
            score=round(score, 4), **polarity(score), contributions=contributions, text_only=round(scores["text_only"], 4),
            input={"clip": str(clip), "text": sample["text"], "modality_present": used, **{k: info[k] for k in ("duration", "words", "word_timing", "audio", "vision")}},
            warnings=warnings,
            timings_ms={"extractor_load": round(1000 * load_s, 1), "extraction": round(1000 * extract_s, 1),
                        "model": round(model_ms, 2)},
        )
        return result


class CheckpointPredictor(_Predictor):
    """A :class:`~mmsenti.models.SentimentModel` rebuilt from a Lightning checkpoint."""

    def __init__(self, model, tokenizer, data: dict[str, Any], specs: dict[str, Any] | None, source: dict[str, Any]):
        import torch

        from mmsenti.data.batch import SentimentCollator

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.modalities = list(model.modalities)
        dims = model.frame_dims
        self._setup_features(specs, data, dims)
        want = self.clip_features.dims()
        self.collator = SentimentCollator(tokenizer, dims.get("audio", want["audio"]), dims.get("vision", want["vision"]),
                                          int(data.get("max_text_len") or 64), data.get("max_frames"))
        self._torch = torch

    @classmethod
    def load(cls, path: str | os.PathLike, features: str | os.PathLike | None = None) -> "CheckpointPredictor":
        import torch

        from mmsenti.models import SentimentModel, SentimentModelConfig
        from mmsenti.models.pretrained import load_pretrained

        from .extract import read_extraction_specs

        path = Path(path)
        try:  # the per-tensor "Loading weights" bar is noise on a command line
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            hparams = dict(ckpt["hyper_parameters"])
            state = ckpt["state_dict"]
        except Exception as err:  # not a checkpoint, truncated, unsafe pickle content
            raise MmsentiError(f"{path}: not a readable mmsenti checkpoint ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:160] if str(err) else ''})") from err
        hparams["aux_7class"] = bool(hparams.get("aux_7class")) or float(hparams.get("aux_7class_weight") or 0) > 0
        config = SentimentModelConfig.from_dict(hparams)
        model = SentimentModel(config)
        net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        missing, unexpected = model.load_state_dict(net_state, strict=False)
        if missing or unexpected:
            raise MmsentiError(f"{path}: weights do not fit the model in its hyper-parameters "
                               f"(missing {len(missing)}, unexpected {len(unexpected)}, e.g. {(missing or unexpected)[:2]})")
        data, run_config = _run_data_config(path)
        feature_root = Path(features) if features else (Path(data["root"]) if data.get("root") else None)
        specs = read_extraction_specs(feature_root) if feature_root is not None and feature_root.is_dir() else None
        if features and specs is None:
            raise MmsentiError(f"--features {features}: no extracted CSD files with extractor metadata there")
        tokenizer = load_pretrained(config.text_encoder.get("pretrained", "minilm_l6"), "tokenizer")
        source = {"model": str(path), "kind": "checkpoint", "run_config": run_config,
                  "features": str(feature_root) if specs else None,
                  "extractor_settings": "from the feature folder's CSD metadata" if specs else "defaults (no feature folder found)",
                  "data_mode": data.get("mode", "aligned")}
        predictor = cls(model, tokenizer, data, specs, source)
        predictor.predict_text("warm up")  # first forward pays one-off allocations; timings after load exclude it
        return predictor

    def _scores(self, samples: list[dict]) -> np.ndarray:
        batch = self.collator(samples)
        with self._torch.inference_mode():
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             audio=batch.audio if "audio" in self.modalities else None, audio_mask=batch.audio_mask,
                             vision=batch.vision if "vision" in self.modalities else None, vision_mask=batch.vision_mask)
        return out.score.float().numpy()


class ExportPredictor(_Predictor):
    """An exported engine (``mmsenti.export.predictor.Predictor``: ONNX Runtime or TensorRT, torch-free).

    Data settings come from the manifest's ``data`` (mode, max_text_len, max_frames, location);
    extractor settings from the manifest's ``extractors`` when present, else from the CSD metadata
    of ``--features`` or of the manifest's ``data.location`` (the folder the model was trained on).
    """

    def __init__(self, engine, specs: dict[str, Any] | None, data: dict[str, Any], source: dict[str, Any]):
        self.engine = engine
        self.source = source
        self.modalities = list(engine.modalities)
        self.frame_modalities = list(engine.frame_modalities)
        self._setup_features(specs, data, {m: engine.feature_dims[m] for m in self.frame_modalities})

    @classmethod
    def load(cls, folder: str | os.PathLike, features: str | os.PathLike | None = None,
             threads: int | None = None) -> "ExportPredictor":
        from mmsenti.export.predictor import Predictor

        from .extract import read_extraction_specs

        folder = Path(folder)
        engine = Predictor.load(folder, threads=threads or 1)
        manifest = engine.manifest
        data = {k: v for k, v in (manifest.get("data") or {}).items() if v is not None}
        specs = manifest.get("extractors")
        origin = "the manifest"
        if not specs:
            root = Path(features) if features else (Path(data["location"]) if data.get("location") else None)
            specs = read_extraction_specs(root) if root is not None and root.is_dir() else None
            origin = f"the CSD metadata in {root}" if specs else "defaults (no feature folder found)"
            if features and specs is None:
                raise MmsentiError(f"--features {features}: no extracted CSD files with extractor metadata there")
        source = {"model": str(folder), "kind": f"export ({manifest.get('format')} {manifest.get('variant')} {manifest.get('precision')})",
                  "extractor_settings": origin, "data_mode": data.get("mode", "aligned")}
        predictor = cls(engine, specs, data, source)
        predictor.predict_text("warm up")
        return predictor

    def _scores(self, samples: list[dict]) -> np.ndarray:
        frames = {m: [s.get(m) for s in samples] for m in self.frame_modalities}
        out = self.engine.predict([s["text"] or "" for s in samples], audio=frames.get("audio"), vision=frames.get("vision"))
        return np.asarray(out["score"], dtype=np.float32)


def _run_data_config(ckpt: Path) -> tuple[dict[str, Any], str | None]:
    """``data`` settings from the run folder's ``resolved_config.yaml`` (``{}`` when not found)."""
    for folder in (ckpt.parent, ckpt.parent.parent):
        cfg = folder / "resolved_config.yaml"
        if cfg.is_file():
            from omegaconf import OmegaConf

            try:
                data = OmegaConf.to_container(OmegaConf.load(cfg).get("data") or {}, resolve=False)
            except Exception:  # an unreadable config is not fatal: fall back to the defaults
                return {}, None
            keep = ("mode", "collapse", "max_text_len", "max_frames", "root", "source")
            out = {k: data.get(k) for k in keep if data.get(k) is not None}
            if out.get("source") not in (None, "csd", "synthetic"):
                out.pop("root", None)
            return out, str(cfg)
    return {}, None


def format_prediction(result: dict[str, Any]) -> str:
    """The human-readable form of a :meth:`CheckpointPredictor.predict` result."""
    lines = [f"score {result['score']:+.3f}  {result['polarity']}  (Acc-7 class {result['class_7']:+d}: {result['class_7_name']})"]
    if result["contributions"]:
        parts = ", ".join(f"{m} {v:+.3f}" for m, v in result["contributions"].items())
        lines.append(f"contributions (score change when the modality is masked): {parts}")
    lines.append(f"text alone: {result['text_only']:+.3f}")
    inp = result["input"]
    if "clip" in inp:
        a, v = inp.get("audio"), inp.get("vision")
        desc = [f"{inp['duration']:.2f} s"]
        if a:
            voiced = f" ({100 * a['voiced_fraction']:.0f}% voiced)" if a.get("voiced_fraction") is not None else ""
            desc.append(f"audio {a['frames']} frames x {a['dim']} @ {a['rate']:g} Hz{voiced}")
        if v:
            desc.append(f"vision {v['frames']} frames x {v['dim']} @ {v['rate']:g} Hz (face in {100 * v.get('face_fraction', 0):.1f}%)")
        desc.append(f"{inp['words']} words ({inp['word_timing']})")
        lines.append("clip: " + ", ".join(desc))
    lines.append("timings: " + ", ".join(f"{k} {v:g} ms" for k, v in result["timings_ms"].items()))
    lines.append(f"model: {result['model']['model']} | extractors: {result['model']['extractor_settings']} | mode {result['model']['data_mode']}")
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
