"""``mmsenti extract`` and ``mmsenti predict`` (wired into the ``mmsenti`` command by :mod:`mmsenti.cli`).

    mmsenti extract DATASET_DIR --out DIR [--workers 2] [--force] [--audio librosa_prosody|egemaps]
                    [--detect-every 5] [--max-seconds 300] [--limit N] [--encoding utf-8] [--no-progress] [--json]
    mmsenti predict [CLIP] --text "..." --model MODEL.ckpt|EXPORT_DIR [--words FILE.json] [--features DIR] [--threads 1] [--json]

Heavy imports (librosa, OpenCV, PyAV, torch) happen inside the commands, so ``mmsenti --help``
and the other sub-commands stay fast.
"""

from __future__ import annotations

from mmsenti.registry import available

import argparse
import json
import sys

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    ext = sub.add_parser(
        "extract", help="raw media (label.csv + Raw/<video_id>/<clip_id>.mp4) -> CSD feature files",
        description="Extract audio prosody, facial expression and word timings from a dataset in the MMSA-FET "
                    "layout into CMU-SDK .csd files that data=extracted (source: csd) trains on.",
    )
    ext.add_argument("dataset_dir", help="folder with label.csv and Raw/<video_id>/<clip_id>.<ext>")
    ext.add_argument("--out", required=True, help="output folder for the .csd files, folds.json and extraction.json")
    ext.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    ext.add_argument("--audio", default="librosa_prosody", choices=available("audio_extractor"),
                     help="audio extractor (default librosa_prosody; egemaps needs opensmile, non-commercial licence)")
    ext.add_argument("--detect-every", type=int, default=5, help="run the face detector every K frames, track between (default 5)")
    ext.add_argument("--no-vision", action="store_true", help="skip face/expression extraction")
    ext.add_argument("--max-seconds", type=float, default=300.0, help="use at most this many seconds of each clip (default 300)")
    ext.add_argument("--limit", type=int, default=None, help="only the first N rows of label.csv")
    ext.add_argument("--encoding", default="utf-8", help="label.csv's text encoding (default utf-8; e.g. latin-1, cp1252)")
    ext.add_argument("--force", action="store_true", help="ignore the per-clip cache")
    ext.add_argument("--no-progress", action="store_true", help="no progress bar")
    ext.add_argument("--json", action="store_true", help="print the manifest (extraction.json) as JSON")
    ext.set_defaults(func=_extract)

    pred = sub.add_parser(
        "predict", help="sentiment of a clip (or of text alone) with a trained model",
        description="Score in [-3, 3], polarity and per-modality contributions (score change when a modality is masked). "
                    "Without CLIP only the text is used (fast path).",
    )
    pred.add_argument("clip", nargs="?", default=None, help="video or audio file (omit for text only)")
    pred.add_argument("--text", default=None, help="transcript of the clip")
    pred.add_argument("--model", required=True, help="a Lightning checkpoint (.ckpt) or an export folder (manifest)")
    pred.add_argument("--words", default=None, help="word timestamps JSON ([{word, start, end}, ...]); default: spread over the speech")
    pred.add_argument("--features", default=None, help="the extracted feature folder the model was trained on "
                      "(its CSD metadata names the extractors; default: found through the checkpoint's run config)")
    pred.add_argument("--threads", type=int, default=1, help="engine/torch threads (default 1: a batch-1 forward gains little from "
                      "more, and on a busy machine extra threads mostly wait on each other)")
    pred.add_argument("--json", action="store_true", help="print the result as JSON")
    pred.set_defaults(func=_predict)


def _extract(args: argparse.Namespace) -> int:
    from mmsenti.errors import MmsentiError

    from .extract import extract_dataset

    if args.detect_every < 1:
        raise MmsentiError(f"--detect-every must be >= 1, got {args.detect_every}")
    if not args.max_seconds > 0:
        raise MmsentiError(f"--max-seconds must be > 0, got {args.max_seconds:g}")

    face = None if args.no_vision else {"name": "face_expression", "parameters": {"detect_every": args.detect_every}}
    manifest = extract_dataset(args.dataset_dir, args.out, workers=max(1, args.workers), audio=args.audio, face=face,
                               max_seconds=args.max_seconds, progress=not args.no_progress and sys.stderr.isatty(),
                               force=args.force, limit=args.limit, encoding=args.encoding)
    if args.json:
        print(json.dumps(manifest, indent=1, default=str))
        return 0
    rep = manifest["report"]
    print(f"extracted {rep['extracted']} clip(s), {rep['from_cache']} from cache, {rep['failed']} failed "
          f"in {rep['seconds']:.1f} s with {rep['workers']} worker(s)"
          + (f"; real-time factor {rep['real_time_factor']:.3f}" if rep["real_time_factor"] else ""))
    print(f"features: audio {manifest['dims']['audio']}-d, vision {manifest['dims']['vision']}-d -> {args.out} "
          f"(folds {manifest['folds']})")
    clips = manifest["clips"]
    faces = [c["vision"]["face_fraction"] for c in clips.values() if c.get("vision")]
    if faces:
        print(f"face found in {100 * sum(faces) / len(faces):.1f}% of frames on average over {len(faces)} video clip(s)")
    for key, warns in rep["warnings"].items():
        for w in warns:
            print(f"warning: {key}: {w}")
    for f in rep["failures"]:
        print(f"failed: {f['id']}: {f['error']}")
    print(f"train with: python train.py experiment=mosi_fusion data=extracted data.root={args.out}{_overrides(manifest)}")
    return 0


def _overrides(manifest: dict) -> str:
    """Hydra overrides ``data=extracted`` needs for these features: the modalities extracted (the
    feature widths need none: the datamodule reads them from the files)."""
    modalities = ["text"] + [m for m in ("audio", "vision") if manifest["files"].get(m) is not None]
    return "" if len(modalities) == 3 else f" model.net.modalities=[{','.join(modalities)}]"


def _predict(args: argparse.Namespace) -> int:
    from .predict import format_prediction, load_predictor

    predictor = load_predictor(args.model, features=args.features, threads=args.threads if args.threads > 0 else None)
    result = predictor.predict(args.clip, text=args.text, words=args.words)
    print(json.dumps(result, indent=1) if args.json else format_prediction(result))
    return 0
