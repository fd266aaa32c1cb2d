"""Raw media -> CMU-SDK computational sequences: ``mmsenti extract DATASET_DIR --out DIR``.

Input (the MMSA-FET layout)::

    DATASET_DIR/label.csv                       video_id, clip_id, text, label, mode (train|valid|test)
    DATASET_DIR/Raw/<video_id>/<clip_id>.mp4    or .mkv/.webm/.mov/.avi/.wav/.flac/...
    DATASET_DIR/Raw/<video_id>/<clip_id>.words.json   optional word timestamps (see mmsenti.media.text)

Output (what :func:`mmsenti.data.mosi.load_mosi_csd` and ``data=extracted`` read)::

    OUT/CMU_MOSI_TimestampedWords.csd   words (bytes) + intervals, per clip
    OUT/CMU_MOSI_COVAREP.csd            audio prosody, 100 Hz (librosa_prosody: 43-d)
    OUT/CMU_MOSI_Visual_Facet_41.csd    facial expression, video rate <= 30 Hz (face_expression: 267-d);
                                        frames without a face are left out, as in the SDK's FACET files
    OUT/CMU_MOSI_Opinion_Labels.csd     one segment per clip, [0, duration], label in [-3, 3]
    OUT/folds.json                      the label.csv ``mode`` column as train/valid/test lists
    OUT/extraction.json                 extractor specs, dims, per-clip stats, failures, timings
    OUT/.cache/clips/*.npz              per-clip results: a re-run skips clips whose media, text
                                        and extractor settings are unchanged

The file names are the SDK's CMU-MOSI names because that is what the data layer looks for; what
they hold is stated in each file's metadata (``extractor``: name, version, parameters, dimension
names; plus the SDK's own keys). Each clip is its own "video" entry keyed ``<video_id>$_$<clip_id>``
(MMSA's id), so folds follow the ``mode`` of each clip, and each sample's id is that key.

A clip that cannot be used (missing/corrupt media, no audio *and* no video...) is counted and
listed in ``extraction.json`` and the summary, never aborts the batch; it gets no label entry, so
the data layer never sees it. A clip with one unusable modality (no audio track, silent audio, no
face, empty transcript) keeps the others and that modality is simply absent for it (a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.data.csd import ComputationalSequence, CSDReader, encode_words, write_csd
from mmsenti.data.mmsa import LABEL_CSV_COLUMNS, read_label_csv
from mmsenti.data.mosi import DEFAULT_FILES
from mmsenti.errors import MmsentiError
from mmsenti.io import save_npz_atomic

from .features import FrameFeatures
from .io import MEDIA_EXTENSIONS, MediaError, probe, read_audio
from .text import Transcript, align_transcript, read_word_timestamps

__all__ = [
    "ClipResult",
    "Extractors",
    "extract_clip",
    "extract_dataset",
    "read_extraction_specs",
]

FILES = {key: names[0] for key, names in DEFAULT_FILES.items()}
ROOT_NAMES = {"words": "mmsenti_words", "audio": "mmsenti_audio", "vision": "mmsenti_vision", "labels": "Opinion Segment Labels"}
MANIFEST = "extraction.json"
DEFAULT_MAX_SECONDS = 300.0
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------- one clip


@dataclass
class Extractors:
    """The audio and face extractors (built once per process)."""

    audio: Any
    face: Any | None
    max_seconds: float = DEFAULT_MAX_SECONDS

    @classmethod
    def build(cls, audio: str | dict = "librosa_prosody", face: str | dict | None = "face_expression",
              max_seconds: float = DEFAULT_MAX_SECONDS, warm_up: bool = True) -> "Extractors":
        from .audio import build_audio_extractor
        from .face import build_face_extractor

        built = cls(build_audio_extractor(audio), build_face_extractor(face) if face is not None else None, max_seconds)
        if warm_up:
            built.warm_up()
        return built

    def warm_up(self) -> None:
        """Pay the one-off per-process costs now (librosa's lazy imports and cached numba kernels, ~2 s),
        so that timings of the first clip measure extraction, not start-up."""
        from .io import SAMPLE_RATE, Audio

        noise = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE // 4).astype(np.float32)
        self.audio(Audio(noise, SAMPLE_RATE, SAMPLE_RATE, 1))

    def specs(self) -> dict[str, Any]:
        return {"audio": self.audio.spec(), "vision": self.face.spec() if self.face is not None else None,
                "max_seconds": self.max_seconds}


@dataclass
class ClipResult:
    """Everything extracted from one clip (a modality is ``None`` when the file lacks it)."""

    audio: FrameFeatures | None
    vision: FrameFeatures | None
    transcript: Transcript
    duration: float
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"duration": round(self.duration, 3), "words": len(self.transcript.words),
                               "word_timing": self.transcript.source}
        for m in ("audio", "vision"):
            f = getattr(self, m)
            out[m] = None if f is None else {"frames": len(f), "valid_frames": int(f.mask.sum()), "dim": f.dim,
                                             "rate": round(float(f.rate), 3),
                                             **{k: v for k, v in f.stats.items() if isinstance(v, (int, float, bool, type(None)))}}
        out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        out["warnings"] = list(self.warnings)
        return out


def extract_clip(path: str | os.PathLike, text: str | None, extractors: Extractors,
                 timestamps: tuple[list[str], np.ndarray] | None = None) -> ClipResult:
    """Extract audio, vision and word timings from one media file.

    Raises :class:`~mmsenti.media.io.MediaError` when the file is unreadable or holds neither a
    usable audio nor a video stream; a missing or unusable single modality becomes ``None`` (or
    all-masked features) with a warning.
    """
    path = Path(path)
    started = time.perf_counter()
    info = probe(path)
    timings: dict[str, float] = {"probe": time.perf_counter() - started}
    warnings: list[str] = []
    audio_feats = vision_feats = None
    if info.has_audio:
        t = time.perf_counter()
        try:
            audio = read_audio(path, max_seconds=extractors.max_seconds)
            timings["audio_decode"] = time.perf_counter() - t
            t = time.perf_counter()
            audio_feats = extractors.audio(audio)
            timings["audio_features"] = time.perf_counter() - t
            warnings += audio_feats.warnings
        except MediaError as err:
            if not info.has_video:
                raise
            warnings.append(f"audio unusable ({err.problem}): audio masked")
    else:
        warnings.append("no audio track: audio masked")
    if info.has_video and extractors.face is not None:
        t = time.perf_counter()
        try:
            vision_feats = extractors.face.from_path(path, max_seconds=extractors.max_seconds)
            warnings += vision_feats.warnings
        except MediaError as err:
            if audio_feats is None:
                raise
            warnings.append(f"video unusable ({err.problem}): vision masked")
        timings["vision"] = time.perf_counter() - t
    elif not info.has_video:
        warnings.append("no video stream: vision masked")
    if audio_feats is None and vision_feats is None:
        raise MediaError(path, "neither a usable audio track nor a video stream")
    ends = [f.intervals[-1, 1] for f in (audio_feats, vision_feats) if f is not None and len(f)]
    duration = float(max(ends)) if ends else float(info.duration or 0.0)
    if info.duration and extractors.max_seconds and info.duration > extractors.max_seconds:
        warnings.append(f"clip is {info.duration:.1f} s long: only the first {extractors.max_seconds:g} s were used")
    elif info.duration and duration < info.duration - 0.5:
        warnings.append(f"decoded {duration:.2f} s of the {info.duration:.2f} s the container declares: file truncated?")
    transcript = align_transcript(text, duration, audio_feats, timestamps)
    warnings += transcript.warnings
    timings["total"] = time.perf_counter() - started
    return ClipResult(audio_feats, vision_feats, transcript, duration, _dedupe(warnings), timings)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------- dataset


@dataclass
class ClipTask:
    key: str
    media: str | None
    text: str
    timestamps: str | None
    cache: str
    fingerprint: str


def read_label_rows(path: Path, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """Rows of an MMSA-FET ``label.csv`` (all rows, including empty texts), validated by the data
    layer's one reader (:func:`mmsenti.data.mmsa.read_label_csv`); ``key`` is the clip's CSD entry name."""
    if not path.is_file():
        raise MmsentiError(f"{path}: no label.csv (expected columns {', '.join(LABEL_CSV_COLUMNS)})")
    rows = []
    for row in read_label_csv(path, encoding=encoding):
        if "/" in row.id:  # an HDF5 group name: '/' would nest groups
            raise MmsentiError(f"{path}: line {row.line}: video_id and clip_id must contain no '/'")
        rows.append({"video_id": row.video_id, "clip_id": row.clip_id, "text": row.text, "mode": row.mode,
                     "key": row.id, "label_value": row.label})
    return rows


def find_media(raw_dir: Path, video_id: str, clip_id: str) -> Path | None:
    folder = raw_dir / video_id
    for ext in MEDIA_EXTENSIONS:
        for candidate in (folder / f"{clip_id}{ext}", folder / f"{clip_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _fingerprint(media: Path | None, text: str, timestamps: Path | None, specs: dict) -> str:
    parts: dict[str, Any] = {"text": text, "specs": specs}
    for name, p in (("media", media), ("timestamps", timestamps)):
        if p is not None:
            st = p.stat()
            parts[name] = [str(p.resolve()), st.st_size, st.st_mtime_ns]
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


_WORKER: Extractors | None = None


def _init_worker(audio_spec: dict, face_spec: dict | None, max_seconds: float, threads: int) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover
        pass
    _WORKER = Extractors.build(audio_spec, face_spec, max_seconds)


def _run_task(task: ClipTask) -> dict[str, Any]:
    """Extract one clip into its cache file; never raises (errors are returned)."""
    assert _WORKER is not None
    try:
        if task.media is None:
            raise MediaError(task.key, "media file not found under Raw/<video_id>/<clip_id>.<ext>")
        stamps = read_word_timestamps(task.timestamps) if task.timestamps else None
        result = extract_clip(task.media, task.text, _WORKER, stamps)
        _save_clip(Path(task.cache), result, task.fingerprint)
        return {"key": task.key, "ok": True, "summary": result.summary()}
    except MmsentiError as err:
        return {"key": task.key, "ok": False, "error": str(err)}
    except Exception as err:  # a decoder/library failure on one clip must not stop the batch
        return {"key": task.key, "ok": False, "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}


def _save_clip(path: Path, result: ClipResult, fingerprint: str) -> None:
    arrays: dict[str, np.ndarray] = {
        "words": np.array(result.transcript.words, dtype=str) if result.transcript.words else np.zeros(0, "<U1"),
        "word_intervals": np.asarray(result.transcript.intervals, np.float64).reshape(-1, 2),
        "meta": np.array(json.dumps({"fingerprint": fingerprint, "duration": result.duration, "summary": result.summary()})),
    }
    for m in ("audio", "vision"):
        f = getattr(result, m)
        feats, iv = f.valid_rows() if f is not None else (np.zeros((0, 0), np.float32), np.zeros((0, 2)))
        arrays[m], arrays[f"{m}_intervals"] = feats.astype(np.float32), iv.astype(np.float64)
    save_npz_atomic(path, arrays)


def _load_clip(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        out["meta"] = json.loads(str(out["meta"]))
        return out
    except (OSError, ValueError, KeyError):
        return None  # unreadable cache entry: extract again


def extract_dataset(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 1,
    audio: str | dict = "librosa_prosody",
    face: str | dict | None = "face_expression",
    max_seconds: float = DEFAULT_MAX_SECONDS,
    progress: bool = True,
    force: bool = False,
    limit: int | None = None,
    encoding: str = "utf-8",
) -> dict[str, Any]:
    """Extract every clip of ``dataset_dir`` into CSD files in ``out_dir``; returns the manifest dict.

    ``workers > 1`` runs clips in that many processes (one torch/OpenCV thread each). ``force``
    ignores the cache. ``encoding`` is label.csv's text encoding. Raises :class:`MmsentiError` only
    when nothing at all could be extracted (or label.csv is unreadable).
    """
    dataset_dir, out = Path(dataset_dir), Path(out_dir)
    rows = read_label_rows(dataset_dir / "label.csv", encoding=encoding)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise MmsentiError(f"{dataset_dir / 'label.csv'}: no rows")
    started = time.perf_counter()
    local = Extractors.build(audio, face, max_seconds, warm_up=False)  # fails early (missing weights...), gives the specs
    specs = local.specs()
    cache_dir = out / ".cache" / "clips"
    raw = dataset_dir / "Raw"
    tasks: list[ClipTask] = []
    for row in rows:
        media = find_media(raw, row["video_id"], row["clip_id"])
        stamps = media.with_name(f"{row['clip_id']}.words.json") if media is not None else None
        stamps = stamps if stamps is not None and stamps.is_file() else None
        fp = _fingerprint(media, row["text"], stamps, specs)
        cache = cache_dir / f"{hashlib.sha1(row['key'].encode()).hexdigest()[:20]}.npz"
        tasks.append(ClipTask(row["key"], str(media) if media else None, row["text"], str(stamps) if stamps else None, str(cache), fp))

    cached: dict[str, dict] = {}
    todo: list[ClipTask] = []
    for task in tasks:
        entry = None if force or not Path(task.cache).is_file() else _load_clip(Path(task.cache))
        if entry is not None and entry["meta"]["fingerprint"] == task.fingerprint:
            cached[task.key] = entry
        else:
            todo.append(task)

    results: dict[str, dict] = {}
    bar = _progress(len(todo), progress)
    if todo and workers > 1:
        ctx = get_context("spawn")  # no forked torch/OpenMP state
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(specs["audio"], specs["vision"], max_seconds, 1)) as pool:
            futures = [pool.submit(_run_task, t) for t in todo]
            for fut in as_completed(futures):
                r = fut.result()
                results[r["key"]] = r
                bar.update(1)
                bar.set_postfix(failed=sum(not x["ok"] for x in results.values()))
    else:
        global _WORKER
        if todo:
            local.warm_up()
        _WORKER = local
        for task in todo:
            r = _run_task(task)
            results[r["key"]] = r
            bar.update(1)
            bar.set_postfix(failed=sum(not x["ok"] for x in results.values()))
    bar.close()

    failed = [{"id": k, "media": t.media, "error": results[k]["error"]} for t in tasks
              for k in [t.key] if k in results and not results[k]["ok"]]
    clips: dict[str, dict] = {}
    for task in tasks:
        if task.key in cached:
            clips[task.key] = cached[task.key]
        elif task.key in results and results[task.key]["ok"]:
            entry = _load_clip(Path(task.cache))
            if entry is None:
                failed.append({"id": task.key, "media": task.media, "error": "cache entry unreadable after extraction"})
            else:
                clips[task.key] = entry
    if not clips:
        sample = "; ".join(f"{f['id']}: {f['error']}" for f in failed[:3])
        raise MmsentiError(f"no clip could be extracted from {dataset_dir} ({len(failed)} failed; e.g. {sample})")

    manifest = _write_outputs(out, rows, clips, specs, dataset_dir)
    seconds = time.perf_counter() - started
    media_seconds = sum(c["meta"]["duration"] for k, c in clips.items() if k in results)
    compute = sum(results[k]["summary"]["timings"].get("total", 0.0) for k in clips if k in results)
    manifest["report"] = {
        "clips": len(tasks), "extracted": len(clips) - len(cached), "from_cache": len(cached), "failed": len(failed),
        "failures": failed,
        "warnings": {k: c["meta"]["summary"]["warnings"] for k, c in clips.items() if c["meta"]["summary"]["warnings"]},
        "seconds": round(seconds, 2), "workers": workers,
        "media_seconds_extracted": round(media_seconds, 2),
        "real_time_factor": round(compute / media_seconds, 3) if media_seconds else None,
    }
    manifest["clips"] = {k: c["meta"]["summary"] for k, c in clips.items()}
    _write_json(out / MANIFEST, manifest)
    return manifest


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="extract", unit="clip", disable=not enabled or total == 0, dynamic_ncols=True)


def _metadata(key: str, description: str, spec: dict | None, dataset: str, dims: list[str]) -> dict[str, Any]:
    from mmsenti import __version__

    meta = {
        "root name": ROOT_NAMES[key],
        "computational sequence description": description,
        "computational sequence version": 1.0,
        "alignment compatible": True,
        "dataset name": dataset,
        "dataset version": 1.0,
        "creator": f"mmsenti extract ({__version__})",
        "contact": "none",
        "featureset bib citation": "see the extractor metadata",
        "dataset bib citation": "see the dataset",
        "dimension names": dims,
        "extractor": spec,
    }
    return meta


def _write_outputs(out: Path, rows: list[dict], clips: dict[str, dict], specs: dict, dataset_dir: Path) -> dict[str, Any]:
    dataset = dataset_dir.resolve().name
    data: dict[str, dict] = {"words": {}, "audio": {}, "vision": {}, "labels": {}}
    folds: dict[str, list[str]] = {s: [] for s in SPLITS}
    for row in rows:
        clip = clips.get(row["key"])
        if clip is None:
            continue
        key = row["key"]
        if len(clip["words"]):
            data["words"][key] = (encode_words(clip["words"].tolist()), clip["word_intervals"])
        for m in ("audio", "vision"):
            if len(clip[m]):
                data[m][key] = (clip[m], clip[f"{m}_intervals"])
        duration = max(float(clip["meta"]["duration"]), 1e-2)
        data["labels"][key] = (np.array([[row["label_value"]]], np.float32), np.array([[0.0, duration]]))
        folds[row["mode"]].append(key)
    audio_spec, vision_spec = specs["audio"], specs["vision"]
    describe = {
        "words": ("words of each clip; timings given or spread over the speech span (mmsenti.media.text)", None, ["word"]),
        "audio": (f"audio features '{audio_spec['name']}' ({audio_spec['dim']}-d, {audio_spec['rate']} Hz)", audio_spec,
                  audio_spec["dimension names"]),
        "vision": (f"vision features '{vision_spec['name']}' ({vision_spec['dim']}-d)" if vision_spec else "no vision extractor",
                   vision_spec, vision_spec["dimension names"] if vision_spec else []),
        "labels": ("sentiment label per clip in [-3, 3] (label.csv)", None, ["sentiment score"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "folds.json", folds)
    written = {}
    for key in ("words", "audio", "vision", "labels"):  # labels last: their presence marks a complete set
        path = out / FILES[key]
        description, spec, dims = describe[key]
        if not data[key] and key != "labels":
            path.unlink(missing_ok=True)  # no stale file from an earlier run
            written[key] = None
            continue
        seq = ComputationalSequence(ROOT_NAMES[key], data[key], _metadata(key, description, spec, dataset, dims))
        write_csd(seq, path)
        written[key] = {"file": path.name, "entries": len(data[key])}
    return {
        "format": "mmsenti extraction 1",
        "dataset": str(dataset_dir),
        "files": written,
        "dims": {"audio": audio_spec["dim"], "vision": vision_spec["dim"] if vision_spec else 0},
        "extractors": specs,
        "folds": {s: len(v) for s, v in folds.items()},
    }


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_extraction_specs(root: str | os.PathLike) -> dict[str, Any] | None:
    """The extractor specs a feature folder was made with, from its CSD metadata (``None`` if not ours)."""
    root = Path(root)
    specs: dict[str, Any] = {}
    for m in ("audio", "vision"):
        path = root / FILES[m]
        if path.is_file():
            with CSDReader(path) as reader:
                spec = reader.metadata.get("extractor")
            if isinstance(spec, dict):
                specs[m] = spec
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            specs.setdefault("max_seconds", json.loads(manifest.read_text())["extractors"].get("max_seconds"))
        except (ValueError, KeyError):
            pass
    return specs or None
