"""The one runtime Predictor: load an export folder and score text (+ audio + vision features).

``mmsenti predict``, ``mmsenti serve``, the benchmarks and the stream job all score through this
class. ::

    from mmsenti.runtime import Predictor

    p = Predictor.load("export/fused_int8")                 # manifest.json + engine + tokenizer/
    out = p.predict(["i loved it", "dull and far too long"],
                    audio=[a0, None], vision=[v0, v1])     # per-sample [T, D] arrays, or None
    out["score"]      # float32 [B], sentiment in [-3, 3]
    out["polarity"]   # ["positive" | "negative" | "neutral"] (mmsenti.text.polarity: the sign; exactly 0 is neutral)
    out["class_7"]    # int [B] in -3..3 (round(clip(score)))

Text is normalised with the model's own rule (the manifest's ``text.normalization``, the one the
collator applied in training; :mod:`mmsenti.text`) before tokenising.

Needs only numpy, onnxruntime (or TensorRT for ``.engine`` folders) and the ``tokenizers``
library — never torch. Audio/vision may also be given pre-padded (``[B, T, D]`` arrays, with
optional ``audio_mask``/``vision_mask``); a missing modality is an all-false mask (the model's own
convention), NaN/inf feature values become 0 (as the data loader does). Raw features go in: the
standardisation with training-set statistics is inside the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.runtime.manifest import read_manifest
from mmsenti.text import check_normalization, normalize_text, polarity

FrameInput = Sequence[np.ndarray | None] | np.ndarray | None


def load_tokenizer(folder: str | Path, max_length: int, pad_id: int, pad_token: str = "[PAD]"):
    """The export's ``tokenizer.json`` (HF fast tokenizer format), padded and truncated as in training."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise MmsentiError(f"{path}: missing; the export folder is incomplete")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises a bare Exception for a corrupt file
        raise MmsentiError(f"{path}: not a readable tokenizer file ({str(err).splitlines()[0][:160]}); "
                           "re-export the model or copy the folder again") from None
    tok.enable_truncation(max_length=int(max_length))
    tok.enable_padding(pad_id=int(pad_id), pad_token=pad_token, direction="right")
    return tok


def pad_frames(seqs: FrameInput, dim: int, batch: int, mask: np.ndarray | None = None, name: str = "frames"
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``[T_i, dim]`` arrays (or None) → ``[B, T, dim]`` float32 + bool mask (T >= 1)."""
    if seqs is None:
        return np.zeros((batch, 1, dim), np.float32), np.zeros((batch, 1), bool)
    if isinstance(seqs, np.ndarray) and seqs.ndim == 3:
        if seqs.shape[0] != batch or seqs.shape[2] != dim:
            raise MmsentiError(f"{name}: expected [{batch}, T, {dim}], got {list(seqs.shape)}")
        x = np.nan_to_num(seqs.astype(np.float32, copy=True), nan=0.0, posinf=0.0, neginf=0.0)
        m = np.ones(seqs.shape[:2], bool) if mask is None else np.asarray(mask, bool)
        if m.shape != x.shape[:2]:
            raise MmsentiError(f"{name}_mask: expected shape {list(x.shape[:2])}, got {list(m.shape)}")
        if x.shape[1] == 0:
            return np.zeros((batch, 1, dim), np.float32), np.zeros((batch, 1), bool)
        return x, m
    seqs = list(seqs)
    if len(seqs) != batch:
        raise MmsentiError(f"{name}: {len(seqs)} entries for {batch} texts")
    lengths = []
    for i, s in enumerate(seqs):
        if s is None:
            lengths.append(0)
            continue
        s = np.asarray(s)
        if s.ndim != 2 or s.shape[1] != dim:
            raise MmsentiError(f"{name}[{i}]: expected [T, {dim}] features, got {list(s.shape)}")
        lengths.append(s.shape[0])
    t = max(1, max(lengths, default=0))
    x = np.zeros((batch, t, dim), np.float32)
    m = np.zeros((batch, t), bool)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        if n:
            x[i, :n] = np.nan_to_num(np.asarray(s, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            m[i, :n] = True
    return x, m


class Predictor:
    """An exported engine with its tokenizer and input conventions (see the module docstring)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], runner, tokenizer):
        self.folder = folder
        self.manifest = manifest
        self.runner = runner  # .run(feeds) -> list of arrays in manifest output order
        self.tokenizer = tokenizer
        self.input_names = [i["name"] for i in manifest["inputs"]]
        self.output_names = [o["name"] for o in manifest["outputs"]]
        self.feature_dims = {m: int(spec["dim"]) for m, spec in manifest.get("features", {}).items()}
        # exports written before the rule was recorded took their text as given
        self.text_normalization = check_normalization((manifest.get("text") or {}).get("normalization", "none"),
                                                      "manifest text.normalization")
        self.task = manifest.get("task", "regression")

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, export_dir: str | Path, device: str = "cpu", threads: int | None = None, spin: bool = False,
             optimization: str = "all") -> "Predictor":
        """Load ``export_dir`` (manifest.json + engine + tokenizer/).

        ``device``: ``cpu`` | ``cuda`` | ``tensorrt`` (ORT's TensorRT EP) | ``auto`` for ONNX
        engines; TensorRT ``.engine`` folders always run on the GPU through TensorRT itself.
        """
        folder = Path(export_dir)
        manifest = read_manifest(folder)
        engine = folder / manifest["engine"]
        if manifest["format"] == "tensorrt":
            from mmsenti.runtime.tensorrt import TensorRTRunner

            runner = TensorRTRunner(engine, [o["name"] for o in manifest["outputs"]])
        else:
            from mmsenti.runtime.session import make_session

            provider_options = None
            if device == "tensorrt":
                from mmsenti.runtime.tensorrt import ort_tensorrt_options

                provider_options = ort_tensorrt_options(manifest, cache_dir=folder / "trt_cache")
            runner = _OrtRunner(make_session(engine, threads=threads, spin=spin, device=device, optimization=optimization,
                                             provider_options=provider_options))
        tok_spec = manifest["tokenizer"]
        tokenizer = load_tokenizer(folder / tok_spec["path"], tok_spec["max_length"], tok_spec["pad_id"],
                                   tok_spec.get("pad_token", "[PAD]"))
        return cls(folder, manifest, runner, tokenizer)

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["modalities"])

    @property
    def frame_modalities(self) -> list[str]:
        return [m for m in ("audio", "vision") if m in self.input_names]

    # ------------------------------------------------------------------ inputs
    def normalize(self, text: str | None) -> str:
        """``text`` as the model saw text in training (its normalisation rule)."""
        return normalize_text(text, self.text_normalization)

    def encode_text(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if isinstance(texts, str):
            raise MmsentiError("predict() takes a list of texts, not one string")
        encodings = self.tokenizer.encode_batch([self.normalize(t) for t in texts])
        return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}

    def feeds(self, texts: Sequence[str], audio: FrameInput = None, vision: FrameInput = None,
              audio_mask: np.ndarray | None = None, vision_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Engine inputs for a batch (what :meth:`run` takes)."""
        feeds = self.encode_text(texts)
        batch = feeds["input_ids"].shape[0]
        given = {"audio": (audio, audio_mask), "vision": (vision, vision_mask)}
        for m, (x, mask) in given.items():
            if m in self.frame_modalities:
                feeds[m], feeds[f"{m}_mask"] = pad_frames(x, self.feature_dims[m], batch, mask, m)
            elif x is not None and m not in self.modalities:
                raise MmsentiError(f"this engine ({self.manifest['variant']}, modalities {self.modalities}) takes no {m} input")
        return feeds

    # ------------------------------------------------------------------ running
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise MmsentiError(f"missing engine inputs: {', '.join(missing)}")
        outputs = self.runner.run({n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outputs))

    def predict(self, texts: Sequence[str], audio: FrameInput = None, vision: FrameInput = None,
                audio_mask: np.ndarray | None = None, vision_mask: np.ndarray | None = None) -> dict[str, Any]:
        if len(texts) == 0:
            return {"score": np.zeros(0, np.float32), "polarity": [], "class_7": np.zeros(0, np.int64)}
        out = self.run(self.feeds(texts, audio, vision, audio_mask, vision_mask))
        score = np.asarray(out["score"], dtype=np.float32).reshape(-1)
        result: dict[str, Any] = {
            "score": score,
            "polarity": [polarity(float(s)) for s in score],
            "class_7": np.rint(np.clip(score, -3, 3)).astype(np.int64),
        }
        if "logits_7" in out:
            result["logits_7"] = np.asarray(out["logits_7"], dtype=np.float32)
        return result

    def __repr__(self) -> str:
        m = self.manifest
        return f"Predictor({self.folder}, {m['format']} {m['variant']} {m['precision']}, modalities={m['modalities']})"


class _OrtRunner:
    def __init__(self, session):
        self.session = session

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)
