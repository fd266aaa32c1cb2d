"""Raw media -> CMU-SDK computational sequences: ``mmsenti extract DATASET_DIR --out DIR`` (the dataset runner).

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

This module runs the clips (worker processes, the per-clip cache); one clip's extraction is
:mod:`mmsenti.media.clip`, the CSD files and folds are written by :mod:`mmsenti.media.csd_writer`.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.data.mmsa import LABEL_CSV_COLUMNS, read_label_csv
from mmsenti.errors import MmsentiError
from mmsenti.io import json_digest, save_npz_atomic, write_json_atomic

from .clip import DEFAULT_MAX_SECONDS, ClipResult, Extractors, extract_clip
from .csd_writer import MANIFEST, write_outputs
from .io import MEDIA_EXTENSIONS, MediaError
from .text import read_word_timestamps

__all__ = ["extract_dataset", "read_label_rows"]


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
    return json_digest(parts, algorithm="sha1")


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
        cache = cache_dir / f"{json_digest(row['key'], length=20, algorithm='sha1')}.npz"
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

    manifest = write_outputs(out, rows, clips, specs, dataset_dir)
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
    write_json_atomic(out / MANIFEST, manifest, indent=1)
    return manifest


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="extract", unit="clip", disable=not enabled or total == 0, dynamic_ncols=True)
