"""Scoring inside the stream job: the runtime :class:`~mmsenti.runtime.Predictor`, hot-swapped.

:class:`HotPredictor` holds the Predictor of one export folder — fixed (``--model DIR``) or the
newest version of a watched repository (``--model-repo DIR --model-name NAME``, layout
``DIR/NAME/<version>/``, :mod:`mmsenti.runtime.repository`). With a repository, a background
thread looks for a newer version every ``poll_s`` seconds, loads it and scores one smoke batch
beside the running model, then swaps the reference: batches in flight finish on the old model, no
event waits for a load, and a version that fails to load is reported once and skipped (the old
model keeps scoring). Every scored event carries the version label that scored it (the version
folder's name; for a fixed ``--model`` the folder's name).

:func:`score_payloads` is the whole per-batch step of the job's vectorised UDF: admit each message
(:func:`mmsenti.stream.events.parse_comment`), flag late ones against the watermark the engine
passed in (:func:`mmsenti.stream.windows.is_late`), score the admitted texts in length-sorted
``Predictor.predict`` calls of at most 64 texts. Needs numpy + onnxruntime + tokenizers only
(no Flink, no torch).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.runtime.manifest import MANIFEST_NAME
from mmsenti.runtime.repository import latest_version, model_dir, version_key
from mmsenti.stream.events import parse_comment
from mmsenti.stream.windows import is_late, window_start

SCORE_CHUNK = 64  # texts per engine call, taken in length order
SMOKE_TEXTS = ["a fine, moving film", "dull and far too long"]
STATUSES = ("ok", "late", "malformed")
# one output row per input message, in this column order (the job's UDF result type mirrors it)
COLUMNS = ("status", "reason", "comment_id", "product_id", "user_id", "ts_ms", "event_window", "watermark_ms", "score",
           "polarity", "class_7", "model_version")


@dataclass(frozen=True)
class ModelSource:
    """Which export to score with: a fixed folder, or the newest version under ``repo/name``."""

    folder: Path | None = None
    repo: Path | None = None
    name: str | None = None

    @classmethod
    def from_args(cls, model: str | None, repo: str | None, name: str | None) -> "ModelSource":
        if bool(model) == bool(repo):
            raise MmsentiError("give exactly one of --model EXPORT_DIR or --model-repo DIR (with --model-name NAME)")
        if model:
            folder = Path(model)
            if not (folder / MANIFEST_NAME).is_file():
                raise MmsentiError(f"--model {folder}: no {MANIFEST_NAME} there; give an export folder (mmsenti export ... --out DIR)")
            return cls(folder=folder)
        if not name:
            raise MmsentiError("--model-repo needs --model-name NAME (the folder under the repository)")
        model_dir(repo, name)  # the repository must exist
        return cls(repo=Path(repo), name=name)

    @property
    def watched(self) -> bool:
        return self.repo is not None

    def latest(self) -> tuple[str, Path] | None:
        """``(version label, folder)`` of the export to use now (None: the repository has no version yet)."""
        if self.folder is not None:
            return self.folder.resolve().name, self.folder
        version = latest_version(self.repo / self.name)
        return None if version is None else (version, self.repo / self.name / version)


def _load(folder: Path, threads: int):
    from mmsenti.runtime.predictor import Predictor

    predictor = Predictor.load(folder, threads=threads)
    score = predictor.predict(SMOKE_TEXTS)["score"]  # a version that cannot score never goes live
    if score.shape != (len(SMOKE_TEXTS),) or not np.all(np.isfinite(score)):
        raise MmsentiError(f"{folder}: smoke batch gave {score!r}; not a usable export")
    return predictor


class HotPredictor:
    """The current ``(version, Predictor)``; see the module docstring for the swap rule."""

    def __init__(self, source: ModelSource, threads: int = 1, poll_s: float = 5.0, wait_s: float = 60.0,
                 log=None):
        self.source, self.threads, self.poll_s = source, int(threads), float(poll_s)
        self._log = log or (lambda msg: print(f"[mmsenti stream] {msg}", file=sys.stderr, flush=True))
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self.swaps: list[dict[str, Any]] = []  # {version, at (epoch s), load_s}
        deadline = time.monotonic() + wait_s
        while (found := source.latest()) is None:  # a repository may get its first version a moment later
            if time.monotonic() > deadline:
                raise MmsentiError(f"{source.repo / source.name}: no version folder (with {MANIFEST_NAME}) after {wait_s:.0f} s")
            time.sleep(min(self.poll_s, 1.0))
        version, folder = found
        self._current = (version, _load(folder, self.threads))  # one tuple, replaced whole: never a mix
        self._thread = None
        if source.watched:
            self._thread = threading.Thread(target=self._watch, name="mmsenti-model-watch", daemon=True)
            self._thread.start()

    @property
    def current(self) -> tuple[str, Any]:
        """``(version, Predictor)`` now; a batch reads it once and scores with that pair."""
        return self._current

    @property
    def version(self) -> str:
        return self._current[0]

    def check_now(self) -> bool:
        """Look for a newer version and swap to it; True when a swap happened."""
        found = self.source.latest()
        if found is None:
            return False
        version, folder = found
        if version in self._failed or version_key(version) <= version_key(self.version):
            return False
        t0 = time.perf_counter()
        try:
            predictor = _load(folder, self.threads)
        except Exception as err:  # noqa: BLE001  (a bad version must never stop the job)
            self._failed.add(version)
            self._log(f"model version {version} ({folder}) not loaded, still scoring with {self.version}: {err}")
            return False
        self._current = (version, predictor)
        self.swaps.append({"version": version, "at": time.time(), "load_s": round(time.perf_counter() - t0, 3)})
        self._log(f"model version {version} live (loaded in {self.swaps[-1]['load_s']} s)")
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_now()

    def close(self) -> None:
        self._stop.set()


def score_payloads(hot: HotPredictor, payloads: Sequence[Any], watermarks: Sequence[Any] | None,
                   window_ms: int, chunk: int = SCORE_CHUNK) -> dict[str, list]:
    """One output row per message (columns :data:`COLUMNS`); malformed rows carry only their reason.

    ``watermarks``: the engine's current watermark per message (epoch ms; None/NaN before the
    first watermark) — an admitted event whose window already fired is ``late`` (scored anyway:
    the late-events topic gets the score too).
    """
    n = len(payloads)
    out: dict[str, list] = {c: [None] * n for c in COLUMNS}
    admitted: list[int] = []
    texts: list[str] = []
    for i, payload in enumerate(payloads):
        comment, reason = parse_comment(payload)
        if comment is None:
            out["status"][i], out["reason"][i] = "malformed", reason
            continue
        wm = None if watermarks is None else watermarks[i]
        wm = None if wm is None or (isinstance(wm, float) and np.isnan(wm)) else int(wm)
        out["status"][i] = "late" if is_late(comment.ts, wm, window_ms) else "ok"
        out["comment_id"][i], out["product_id"][i], out["user_id"][i] = comment.comment_id, comment.product_id, comment.user_id
        out["ts_ms"][i], out["event_window"][i], out["watermark_ms"][i] = comment.ts, window_start(comment.ts, window_ms), wm
        admitted.append(i)
        texts.append(comment.text)
    if admitted:
        version, predictor = hot.current  # the whole batch on one version
        # similar lengths together: the engine pads a call to its longest text (about 2x faster on SST-2)
        order = sorted(range(len(texts)), key=lambda j: len(texts[j]))
        for lo in range(0, len(order), chunk):
            part = order[lo:lo + chunk]
            pred = predictor.predict([texts[j] for j in part])
            for k, j in enumerate(part):
                i = admitted[j]
                out["score"][i] = float(pred["score"][k])
                out["polarity"][i] = pred["polarity"][k]
                out["class_7"][i] = int(pred["class_7"][k])
                out["model_version"][i] = version
    return out
