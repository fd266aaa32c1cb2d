"""``mmsenti predict``: the sentiment of one clip (or of text alone) with a trained model.

This module turns a clip into model inputs (features from the training-time extractors, aligned
as in training) and scores them with the one runtime :class:`~mmsenti.runtime.predictor.Predictor`:

* a **Lightning checkpoint** (``.ckpt``, what ``train.py`` writes): loaded by the one checkpoint
  loader (:func:`mmsenti.models.checkpoint.load_sentiment_checkpoint`) and run eagerly behind the
  Predictor interface (:func:`mmsenti.export.wrapper.eager_predictor`); its data settings come from
  the checkpoint's datamodule hyper-parameters;
* an **export folder** (``mmsenti export``: ``manifest.json`` + engine + tokenizer): ONNX Runtime /
  TensorRT, no torch for the text-only path; the manifest's ``data`` gives mode / max_text_len /
  max_frames and the feature folder.

Either way text is normalised by the model's own rule (:mod:`mmsenti.text`), and polarity is the
one rule there.

Which extractors and settings (they must be the ones the training features came from), per frame
modality:

1. an export: its manifest's ``extractors`` (recorded at export from the training data's CSD
   metadata, :func:`mmsenti.media.csd_writer.training_extractors`). ``--features DIR`` naming
   another extractor is an error; where the manifest records none (the synthetic set, an MMSA
   pickle, an export older than the field) the sources below are used, with a ``note`` saying so;
2. ``--features DIR``: the feature folder the model was trained on; its CSD metadata
   (``extractor``: name, version, parameters) rebuilds the same extractors;
3. otherwise the data folder of the export's ``data.location`` or of the checkpoint's datamodule
   (``data.root``), whose CSD metadata is read as in 2;
4. otherwise the default extractors and ``mode=aligned`` (the output says so).

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
from mmsenti.text import SENTIMENT_CLASSES, class_7, polarity

__all__ = ["ClipPredictor", "format_prediction", "load_predictor", "sentiment_fields"]


def sentiment_fields(score: float) -> dict[str, Any]:
    """The one polarity rule and the Acc-7 class (:mod:`mmsenti.text`), as result fields."""
    cls = class_7(score)
    return {"polarity": polarity(score), "class_7": cls, "class_7_name": SENTIMENT_CLASSES[cls]}


def load_predictor(model: str | os.PathLike, features: str | os.PathLike | None = None,
                   threads: int | None = None) -> "ClipPredictor":
    """A :class:`ClipPredictor` for a checkpoint file or an export folder (see the module docstring).

    ``threads``: intra-op threads of the engine (an export) or of torch (a checkpoint; this sets
    torch's process-wide setting); ``None`` leaves the libraries' defaults.
    """
    path = Path(model)
    if not path.exists():
        raise MmsentiError(f"--model {path}: no such file or folder")
    return ClipPredictor.load(path, features=features, threads=threads)


def resolve_extractors(recorded: dict[str, Any] | None, frame_modalities: list[str], features: str | os.PathLike | None,
                       root: Path | None, manifest_path: str | os.PathLike | None = None
                       ) -> tuple[dict[str, Any] | None, str, list[str]]:
    """The extractor specs to rebuild (``{"audio": spec, "vision": spec, "max_seconds": s}``), where they
    came from, and notes (see the module docstring for the order).

    ``manifest_path``: the export's manifest (``None``: a checkpoint, which has none); ``recorded``: its
    ``extractors`` (``None``: an export from before they were recorded). ``features``: ``--features``;
    ``root``: the training data folder the model's settings name.
    """
    from .csd_writer import describe_extractor, read_extraction_specs, same_extractor

    given = None
    if features:
        given = read_extraction_specs(features) if Path(features).is_dir() else None
        if given is None:
            raise MmsentiError(f"--features {features}: no extracted CSD files with extractor metadata there")
    if given is not None:
        other, other_origin = given, f"the CSD metadata in {features} (--features)"
    else:
        found = read_extraction_specs(root) if root is not None and root.is_dir() else None
        other, other_origin = found, (f"the CSD metadata in {root}" if found else "defaults (no feature folder found)")
    if manifest_path is None or not frame_modalities:  # a checkpoint, or an engine that takes no frames
        return other, other_origin, []
    if recorded is None:
        return other, other_origin, [f"{manifest_path} records no feature extractors (an export from before they were "
                                     f"recorded): using {other_origin}; re-export to record them"]
    specs: dict[str, Any] = {}
    origins: dict[str, str] = {}
    notes: list[str] = []
    reasons = recorded.get("reasons") or {}
    for m in frame_modalities:
        spec = recorded.get(m)
        if isinstance(spec, dict):
            mine = (given or {}).get(m)
            if isinstance(mine, dict) and not same_extractor(spec, mine):
                raise MmsentiError(f"--features {features}: its {m} extractor, {describe_extractor(mine, spec)}, is not the one "
                                   f"this model was trained with, {describe_extractor(spec, mine)} (recorded in {manifest_path}); "
                                   f"drop --features (the manifest's is used) or export a model trained on those features")
            specs[m], origins[m] = spec, "the manifest"
        else:
            fallback = (other or {}).get(m)
            specs[m], origins[m] = fallback, (other_origin if fallback else "defaults")
            why = reasons.get(m) or "not recorded"
            notes.append(f"{manifest_path} records no {m} extractor ({why}): using {origins[m]}")
    seconds = recorded.get("max_seconds") if any(o == "the manifest" for o in origins.values()) else None
    specs["max_seconds"] = seconds if seconds is not None else (other or {}).get("max_seconds")
    if len(set(origins.values())) == 1:
        origin = next(iter(origins.values()))
    else:
        origin = "; ".join(f"{m}: {o}" for m, o in origins.items())
    return specs, origin, notes


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
            from .clip import DEFAULT_MAX_SECONDS, Extractors

            audio = self.specs.get("audio") or "librosa_prosody"
            face = (self.specs.get("vision") or "face_expression") if "vision" in self.modalities else None
            self._extractors = Extractors.build(audio, face, float(self.specs.get("max_seconds") or DEFAULT_MAX_SECONDS))
        return self._extractors

    def dims(self) -> dict[str, int]:
        from .audio import PROSODY_FEATURES
        from .face import FACE_FEATURES

        defaults = {"audio": len(PROSODY_FEATURES), "vision": len(FACE_FEATURES)}
        return {m: int((self.specs.get(m) or {}).get("dim") or defaults[m]) for m in ("audio", "vision")}

    def sample(self, clip: str | os.PathLike, text: str | None, stamps: tuple[list[str], np.ndarray] | None
               ) -> tuple[dict, dict]:
        from mmsenti.data.align import collapse_frames, subsample_frames

        from .clip import extract_clip

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


class ClipPredictor:
    """Clip → features → the runtime :class:`~mmsenti.runtime.predictor.Predictor` (``self.engine``)."""

    feature_mismatch: str | None = None

    def __init__(self, engine, specs: dict[str, Any] | None, data: dict[str, Any], source: dict[str, Any]):
        self.engine = engine
        self.notes: list[str] = []  # how the extractors were chosen, when not from the manifest (clip results carry them)
        self.source = source
        self.modalities = list(engine.modalities)
        self.frame_modalities = list(engine.frame_modalities)
        self._setup_features(specs, data, {m: engine.feature_dims[m] for m in self.frame_modalities})

    @classmethod
    def load(cls, path: str | os.PathLike, features: str | os.PathLike | None = None,
             threads: int | None = None) -> "ClipPredictor":
        path = Path(path)
        recorded: dict[str, Any] | None = None
        if path.is_dir():
            from mmsenti.runtime.predictor import Predictor

            engine = Predictor.load(path, threads=threads or 1)
            manifest = engine.manifest
            data = {k: v for k, v in (manifest.get("data") or {}).items() if v is not None}
            recorded = manifest.get("extractors") if isinstance(manifest.get("extractors"), dict) else None
            manifest_path: Path | None = path / "manifest.json"
            root = Path(data["location"]) if data.get("location") else None
            kind = f"export ({manifest.get('format')} {manifest.get('variant')} {manifest.get('precision')})"
        else:
            if threads:
                import torch

                torch.set_num_threads(threads)
            _quiet_transformers()
            from mmsenti.export.wrapper import eager_predictor
            from mmsenti.models.checkpoint import load_sentiment_checkpoint

            loaded = load_sentiment_checkpoint(path, what="--model")
            keep = ("mode", "collapse", "max_text_len", "max_frames", "root", "source")
            data = {k: loaded.data_config.get(k) for k in keep if loaded.data_config.get(k) is not None}
            if data.get("source") not in (None, "csd", "synthetic"):
                data.pop("root", None)  # a file source (pickle, label.csv) holds no extractor metadata
            engine = eager_predictor(loaded.model, int(data.get("max_text_len") or 64), name=path.stem)
            root = Path(data["root"]) if data.get("root") else None
            kind, manifest_path = "checkpoint", None
        specs, origin, notes = resolve_extractors(recorded, list(engine.frame_modalities), features, root, manifest_path)
        source = {"model": str(path), "kind": kind, "extractor_settings": origin, "data_mode": data.get("mode", "aligned"),
                  "text_normalization": engine.text_normalization}
        predictor = cls(engine, specs, data, source)
        predictor.notes = notes
        predictor.predict_text("warm up")  # first run pays one-off allocations; timings after load exclude it
        return predictor

    def _setup_features(self, specs: dict[str, Any] | None, data: dict[str, Any], dims: dict[str, int]) -> None:
        self.data = data
        self.clip_features = _ClipFeatures(specs, data, self.modalities)
        want = self.clip_features.dims()
        # checked when a clip is given: text-only prediction works whatever features the model was trained on
        self.feature_mismatch = next((
            f"the model takes {d}-d {m} features but the extractor ({((specs or {}).get(m) or {}).get('name', 'default')}) gives "
            f"{want[m]}-d; pass --features <the folder the model was trained on>, or predict from text alone"
            for m, d in dims.items() if d != want[m]), None)

    def _scores(self, samples: list[dict]) -> np.ndarray:
        frames = {m: [s.get(m) for s in samples] for m in self.frame_modalities}
        out = self.engine.predict([s["text"] or "" for s in samples], audio=frames.get("audio"), vision=frames.get("vision"))
        return np.asarray(out["score"], dtype=np.float32)

    def predict_text(self, text: str) -> float:
        """Text-only fast path: one forward pass, no media libraries touched."""
        return float(self._scores([{"id": "text", "text": text, "audio": None, "vision": None, "label": 0.0}])[0])

    def predict(self, clip: str | os.PathLike | None = None, text: str | None = None,
                words: str | os.PathLike | None = None) -> dict[str, Any]:
        if clip is None and not self.engine.normalize(text):
            raise MmsentiError("nothing to predict: give a clip and/or a non-empty --text")
        result: dict[str, Any] = {"model": self.source, "modalities": self.modalities}
        if clip is None:
            t = time.perf_counter()
            score = self.predict_text(text or "")
            result.update(score=round(score, 4), **sentiment_fields(score), input={"text": self.engine.normalize(text)},
                          contributions={}, text_only=round(score, 4), warnings=[],
                          timings_ms={"model": round(1000 * (time.perf_counter() - t), 2)})
            return result
        if self.feature_mismatch:
            raise MmsentiError(self.feature_mismatch)
        from .io import probe
        from .text import read_word_timestamps

        stamps = read_word_timestamps(words) if words else None
        probe(clip)  # a missing, unreadable or still-image file fails now, before the extractors load
        t = time.perf_counter()
        _ = self.clip_features.extractors  # built once per predictor (CNN weights, cascade)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        sample, info = self.clip_features.sample(clip, text, stamps)
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
            score=round(score, 4), **sentiment_fields(score), contributions=contributions, text_only=round(scores["text_only"], 4),
            notes=list(self.notes),
            input={"clip": str(clip), "text": sample["text"], "modality_present": used, **{k: info[k] for k in ("duration", "words", "word_timing", "audio", "vision")}},
            warnings=warnings,
            timings_ms={"extractor_load": round(1000 * load_s, 1), "extraction": round(1000 * extract_s, 1),
                        "model": round(model_ms, 2)},
        )
        return result


def _quiet_transformers() -> None:
    try:  # the per-tensor "Loading weights" bar is noise on a command line
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def format_prediction(result: dict[str, Any]) -> str:
    """The human-readable form of a :meth:`ClipPredictor.predict` result."""
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
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
