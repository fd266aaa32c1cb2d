"""Benchmark: real-time factor of the default extractors, and ``predict`` latency.

On the real CMU-MOSI clip (``../shared/data/mosi/clips/Oz06ZWiO20M_6.mp4``: 7.5 s, 480x360, 30 fps,
AAC) or ``--clip FILE``:

* **extraction** with the defaults ``mmsenti extract`` uses (librosa_prosody audio + Haar every 5
  frames / interpolated boxes / PyEmotion CNN on every frame's face crop): ``cold`` is the first
  clip in a fresh process after ``Extractors.build()`` (whose time, reported separately, includes
  the one-off start-up: librosa's lazy imports and cached numba kernels, CNN weights, cascade),
  ``warm`` the median of ``--repeats`` further runs; each stage is timed separately (audio decode,
  prosody, video decode + detection + CNN, word timing). RTF = seconds / clip seconds; the target
  is <= 0.5 on 2 cores.
* **predict**: a model of the ``experiment=mosi_fusion`` size (MiniLM-L6 text, d_model 64, 2 MulT
  layers; untrained weights, same compute) saved as a checkpoint and loaded with
  :func:`mmsenti.media.predict.load_predictor`; text-only ``predict`` end to end (tokenise, forward,
  result dict) after load, median and p99 over ``--text-runs`` calls (target <= 20 ms), and a full
  clip prediction (extraction + 4-variant forward) warm.

Shared, noisy machines: the load average is reported next to the numbers. Usage::

    .venv/bin/python benchmarks/bench_extract.py [--clip FILE] [--repeats 3] [--export EXPORT_DIR] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "mosi" / "clips" / "Oz06ZWiO20M_6.mp4"
DEFAULT_TEXT = "and sucker punch is a failer but like a really ambitious weird the interesting idiosyncratic failure"


def stage_times(clip: Path, text: str, extractors) -> dict[str, float]:
    from mmsenti.media.io import read_audio
    from mmsenti.media.text import align_transcript

    out = {}
    t = time.perf_counter()
    audio = read_audio(clip)
    out["audio_decode"] = time.perf_counter() - t
    t = time.perf_counter()
    a = extractors.audio(audio)
    out["audio_prosody"] = time.perf_counter() - t
    t = time.perf_counter()
    v = extractors.face.from_path(clip)
    out["video_face_expression"] = time.perf_counter() - t
    t = time.perf_counter()
    align_transcript(text, audio.duration, a)
    out["word_timing"] = time.perf_counter() - t
    out["total"] = sum(out.values())
    out["_shapes"] = {"audio": list(a.features.shape), "vision": list(v.features.shape),
                      "face_fraction": round(v.stats["face_fraction"], 4), "detections": v.stats["detections"],
                      "voiced_fraction": round(a.stats["voiced_fraction"], 4), "f0_median_hz": round(a.stats["f0_median_hz"] or 0, 1),
                      "duration": round(audio.duration, 3)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text-runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--export", type=Path, default=None, help="also time text-only predict on this export folder")
    args = parser.parse_args()
    if not args.clip.is_file():
        print(json.dumps({"error": f"{args.clip} not found (pass --clip)"}))
        return 2

    import torch

    from mmsenti.media.clip import Extractors
    from mmsenti.media.io import probe

    info = probe(args.clip)
    result: dict = {
        "clip": str(args.clip), "clip_seconds": info.duration, "video": f"{info.width}x{info.height} @ {info.fps:g} fps",
        "hardware": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                     "load_average_before": os.getloadavg()},
        "versions": _versions(),
    }

    t = time.perf_counter()
    extractors = Extractors.build()
    build = time.perf_counter() - t
    cold = stage_times(args.clip, args.text, extractors)
    threads_default = torch.get_num_threads()
    by_threads: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):  # interleaved: machine noise hits both thread counts alike
        for threads, runs in by_threads.items():
            torch.set_num_threads(threads)
            runs.append(stage_times(args.clip, args.text, extractors))
    torch.set_num_threads(threads_default)
    shapes = cold.pop("_shapes")
    for runs in by_threads.values():
        for r in runs:
            r.pop("_shapes")
    dur = shapes["duration"]
    warm_by = {t: {k: float(np.median([r[k] for r in runs])) for k in cold} for t, runs in by_threads.items()}
    warm = warm_by[2]
    result["extraction"] = {
        "shapes": shapes,
        "settings": extractors.specs()["audio"]["parameters"] | {"face": extractors.specs()["vision"]["parameters"]},
        "extractor_build_seconds": round(build, 3),
        "cold_seconds": {k: round(v, 3) for k, v in cold.items()},
        "cold_threads": threads_default,
        "warm_median_seconds_2_threads": {k: round(v, 3) for k, v in warm.items()},
        "warm_median_seconds_1_thread": {k: round(v, 3) for k, v in warm_by[1].items()},
        "rtf_first_clip": round(cold["total"] / dur, 3),
        "rtf_first_clip_with_startup": round((cold["total"] + build) / dur, 3),
        "rtf_warm_2_threads": round(warm["total"] / dur, 3),
        "rtf_warm_1_thread": round(warm_by[1]["total"] / dur, 3),
        "rtf_target": 0.5,
    }

    result["predict"] = bench_predict(args.clip, args.text, args.text_runs)
    if args.export:
        result["predict_export"] = bench_export(args.export, args.text, args.text_runs)
    result["hardware"]["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def bench_predict(clip: Path, text: str, runs: int) -> dict:
    import torch

    from mmsenti.media.predict import load_predictor
    from mmsenti.models import SentimentModel, SentimentModelConfig

    hp = dict(modalities=["text", "audio", "vision"], text_encoder={"pretrained": "minilm_l6", "finetune": "top_k", "top_k": 2},
              audio_encoder={"name": "conv_transformer", "input_dim": 43, "d_model": 64, "num_layers": 1, "num_heads": 4},
              vision_encoder={"name": "conv_transformer", "input_dim": 267, "d_model": 64, "num_layers": 1, "num_heads": 4},
              fusion={"name": "mult", "d_model": 64, "num_layers": 2, "num_heads": 4})
    torch.manual_seed(0)
    model = SentimentModel(SentimentModelConfig.from_dict(hp))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench.ckpt"
        torch.save({"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, ckpt)
        t = time.perf_counter()
        predictor = load_predictor(ckpt)
        load_s = time.perf_counter() - t
    sentences = ["it was really good", "i did not like the ending at all", text, "the acting was fine but the story was weak"]
    times: dict[int, list[float]] = {1: [], 2: []}
    for i in range(runs):  # thread counts interleaved so machine noise hits both alike
        for threads in times:
            torch.set_num_threads(threads)
            t = time.perf_counter()
            predictor.predict(None, text=sentences[i % len(sentences)])
            times[threads].append(1000 * (time.perf_counter() - t))
    torch.set_num_threads(1)  # what `mmsenti predict` uses by default (--threads 1)
    predictor.predict(clip, text=text)  # builds the extractors once
    clip_times = []
    for _ in range(2):
        t = time.perf_counter()
        res = predictor.predict(clip, text=text)
        clip_times.append(time.perf_counter() - t)
    return {
        "model": "mosi_fusion size (MiniLM-L6 + d_model 64, 2 MulT layers), untrained weights",
        "load_seconds": round(load_s, 3),
        "text_only_ms": {f"threads_{k}": {"median": round(float(np.median(v)), 2), "p99": round(float(np.percentile(v, 99)), 2),
                                          "min": round(float(np.min(v)), 2)} for k, v in times.items()}
        | {"runs": runs, "target_median": 20.0},
        "clip_threads": 1,
        "clip_seconds_warm": round(float(np.median(clip_times)), 3),
        "clip_rtf_warm": round(float(np.median(clip_times)) / res["input"]["duration"], 3),
        "clip_result_example": {k: res[k] for k in ("score", "polarity", "contributions", "text_only")},
    }


def bench_export(folder: Path, text: str, runs: int) -> dict:
    """Text-only ``predict`` end to end on an export folder (ONNX Runtime, 1 thread, torch-free path)."""
    from mmsenti.media.predict import load_predictor

    t = time.perf_counter()
    predictor = load_predictor(folder, threads=1)
    load_s = time.perf_counter() - t
    sentences = ["it was really good", "i did not like the ending at all", text, "the acting was fine but the story was weak"]
    times = []
    for i in range(runs):
        t = time.perf_counter()
        predictor.predict(None, text=sentences[i % len(sentences)])
        times.append(1000 * (time.perf_counter() - t))
    return {"export": str(folder), "kind": predictor.source["kind"], "load_seconds": round(load_s, 3),
            "text_only_ms": {"median": round(float(np.median(times)), 2), "p99": round(float(np.percentile(times, 99)), 2),
                             "min": round(float(np.min(times)), 2), "runs": runs, "target_median": 20.0}}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "librosa", "av", "cv2", "numpy", "numba"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
