"""Served models: load, verify, warm up, activate, hot-swap and unload export folders.

A served model is one export folder (``mmsenti export``) scored through the one runtime
:class:`~mmsenti.runtime.predictor.Predictor`, with its own :class:`~mmsenti.serve.batcher.MicroBatcher`
(one engine worker thread). Its **version** is the manifest's ``version`` key if it has one, else
the folder name for a model-repository layout (``DIR/<name>/<version>/``, or any all-digit folder
name), else the first 12 hex digits of the engine file's sha256.

**Hot swap, zero downtime.** :meth:`ModelRegistry.load` builds the new version beside the serving
one, on a loader thread at low CPU priority (nice +10, so serving keeps the cores; not with
``--threads`` > 1, whose engine threads would inherit it; the first model of an empty server loads at
normal priority):

1. the manifest (schema; every listed file present at its recorded size, the engine's sha256) and
   ``Predictor.load`` (engine session, tokenizer);
2. a parity smoke batch (:data:`SMOKE_TEXTS`, plus frames for each frame modality): the scores must
   be finite and one per item; if the new version has the same engine file (sha256) as the one it
   replaces, its scores must equal the serving one's (``SAME_FILES_TOL``);
3. warm-up calls at batch 1 and at ``max_batch`` (short texts).

Only then, in one step on the event loop, the name points at the new model (requests that arrive
after it go there); requests already queued on the old one finish on it, and the old batcher is
closed once empty. A load that fails at any step leaves the serving model untouched and raises
:class:`LoadFailed` with the reason (``POST /v1/models`` returns it; ``mmsenti_model_loads_total
{outcome="failed"}`` counts it).

**Reloads.** :meth:`ModelRegistry.reload` (SIGHUP) reloads every model from its folder and rescans
the model repository; :meth:`ModelRegistry.watch` polls ``--model-repo`` and loads a name's
highest version folder when it changes (:mod:`mmsenti.runtime.repository`: numeric names by value,
so 10 is above 9, other names by text, above every number). Folders without ``manifest.json``, or
whose name starts with ``.`` or ``_``, are skipped (an export appears atomically).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.io import file_digest
from mmsenti.runtime.manifest import MANIFEST_NAME, read_manifest
from mmsenti.runtime.repository import latest_version
from mmsenti.serve.batcher import MicroBatcher
from mmsenti.serve.config import ServeSettings, _valid_name
from mmsenti.serve.metrics import ModelMetrics, ServeMetrics

log = logging.getLogger("mmsenti.serve")

# fixed sentences of the parity smoke batch: short, long (truncated), empty, punctuation/case
SMOKE_TEXTS = ("great phone, battery lasts", "Screen DIED after a week!!", "", "it was fine, i guess. " * 40)
SAME_FILES_TOL = 1e-5
SMOKE_FRAMES = 6


class LoadFailed(MmsentiError):
    """A model could not be loaded or verified; whatever served before still serves."""


class UnknownModel(MmsentiError):
    pass


@dataclass
class ScoreItem:
    """One validated request item, as the batcher carries it."""

    text: str
    audio: list[list[float]] | None = None
    vision: list[list[float]] | None = None


@dataclass
class ServedModel:
    name: str
    version: str
    path: Path
    predictor: Any  # mmsenti.runtime.predictor.Predictor
    engine_sha256: str
    smoke_scores: np.ndarray
    from_repo: bool = False
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    batcher: MicroBatcher | None = None
    metrics: ModelMetrics | None = None
    namespaces: dict[str, str] = field(default_factory=dict)  # hybrid mode -> answer-cache namespace (serve.answers)

    # ------------------------------------------------------------------ scoring (worker thread)
    @property
    def frame_modalities(self) -> list[str]:
        return self.predictor.frame_modalities

    @property
    def feature_dims(self) -> dict[str, int]:
        return self.predictor.feature_dims

    def run_batch(self, items: list[ScoreItem]) -> list[dict[str, Any]]:
        """Score validated items in one engine call (called by the batcher's worker thread)."""
        frames = {}
        for m in self.frame_modalities:
            rows = [getattr(it, m) for it in items]
            frames[m] = [np.asarray(r, np.float32) if r else None for r in rows] if any(rows) else None
        out = self.predictor.predict([it.text for it in items], audio=frames.get("audio"), vision=frames.get("vision"))
        scores = out["score"]
        if scores.shape != (len(items),) or not np.isfinite(scores).all():
            raise FloatingPointError(f"the engine returned {scores.shape} scores, finite: {bool(np.isfinite(scores).all())}")
        return [{"score": float(s), "polarity": p, "class_7": int(c)}
                for s, p, c in zip(scores.tolist(), out["polarity"], out["class_7"].tolist())]

    def describe(self) -> dict[str, Any]:
        m = self.predictor.manifest
        return {"name": self.name, "version": self.version, "path": str(self.path), "variant": m["variant"],
                "precision": m["precision"], "format": m["format"], "modalities": list(m["modalities"]),
                "features": {k: {"dim": v} for k, v in self.feature_dims.items()},
                "text_normalization": self.predictor.text_normalization,
                "max_tokens": int(m["tokenizer"]["max_length"]), "engine_sha256": self.engine_sha256,
                "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3),
                "from_repo": self.from_repo, "queued": self.batcher.queued if self.batcher else 0}


# ----------------------------------------------------------------------------- loading (loader thread)
def model_version(folder: Path, manifest: dict[str, Any], engine_sha256: str, from_repo: bool = False) -> str:
    """The version string (see the module docstring)."""
    if manifest.get("version") not in (None, ""):
        return str(manifest["version"])
    if from_repo or folder.name.isdigit():
        return folder.name
    return engine_sha256[:12]


def verify_files(folder: Path, manifest: dict[str, Any]) -> str:
    """Every file the manifest lists has its recorded size, the engine its sha256 (a partial or
    corrupted copy fails here, in one line). Returns the engine's sha256."""
    files = manifest.get("files") or {}
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file():
            raise LoadFailed(f"{folder}: {rel} is listed in the manifest but missing (an incomplete copy?)")
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise LoadFailed(f"{folder}: {rel} has {path.stat().st_size} bytes, the manifest says {entry['bytes']} "
                             "(a partial copy?)")
    sha = file_digest(folder / manifest["engine"])
    recorded = (files.get(manifest["engine"]) or {}).get("sha256")
    if recorded and recorded != sha:
        raise LoadFailed(f"{folder}: engine {manifest['engine']} does not match the sha256 in its manifest "
                         "(modified or corrupted after export)")
    return sha


def smoke_batch(predictor) -> dict[str, Any]:
    """The fixed parity smoke inputs for this engine's modalities (deterministic frames)."""
    n = len(SMOKE_TEXTS)
    frames = {}
    for j, m in enumerate(predictor.frame_modalities):
        dim = predictor.feature_dims[m]
        x = np.linspace(-1.0, 1.0, SMOKE_FRAMES * dim, dtype=np.float32).reshape(SMOKE_FRAMES, dim)
        frames[m] = [x * (1 + j), None] + [x[: 2 + i] for i in range(n - 2)]
    return {"texts": list(SMOKE_TEXTS), **frames}


def _smoke(predictor) -> np.ndarray:
    batch = smoke_batch(predictor)
    out = predictor.predict(batch["texts"], audio=batch.get("audio"), vision=batch.get("vision"))
    scores = np.asarray(out["score"])
    if scores.shape != (len(SMOKE_TEXTS),):
        raise LoadFailed(f"parity smoke: {scores.shape} scores for {len(SMOKE_TEXTS)} items")
    if not np.isfinite(scores).all():
        raise LoadFailed(f"parity smoke: non-finite scores {scores.tolist()}")
    return scores


def prepare_model(name: str, path: str | Path, settings: ServeSettings, current: ServedModel | None = None,
                  from_repo: bool = False) -> ServedModel:
    """Load, verify and warm one export folder (blocking; see the module docstring). Raises :class:`LoadFailed`."""
    from mmsenti.runtime.predictor import Predictor

    start = time.perf_counter()
    folder = Path(path)
    try:
        sha = verify_files(folder, read_manifest(folder))
        predictor = Predictor.load(folder, threads=settings.threads)
    except LoadFailed:
        raise
    except MmsentiError as err:
        raise LoadFailed(str(err)) from None
    manifest = predictor.manifest
    missing = [m for m in predictor.frame_modalities if m not in predictor.feature_dims]
    if missing:
        raise LoadFailed(f"{folder}: manifest has no features.{missing[0]}.dim for the engine's {missing[0]} input")
    try:
        scores = _smoke(predictor)
        if current is not None and current.engine_sha256 == sha:
            diff = float(np.max(np.abs(scores - current.smoke_scores)))
            if diff > SAME_FILES_TOL:
                raise LoadFailed(f"parity smoke: same engine file as the serving version {current.version} but scores "
                                 f"differ by {diff:.3g} (> {SAME_FILES_TOL})")
        # ORT sizes its buffers on the first calls: once more at batch 1, once at a full batch of short texts
        predictor.predict(list(SMOKE_TEXTS[:1]))
        if settings.max_batch > 1:
            predictor.predict(list(SMOKE_TEXTS[:2]) * (settings.max_batch // 2) + list(SMOKE_TEXTS[:settings.max_batch % 2]))
    except LoadFailed:
        raise
    except Exception as err:  # the engine itself failed on valid input
        raise LoadFailed(f"{folder}: the engine failed on the smoke batch ({type(err).__name__}: {err})") from None
    return ServedModel(name=name, version=model_version(folder, manifest, sha, from_repo), path=folder,
                       predictor=predictor, engine_sha256=sha, smoke_scores=scores, from_repo=from_repo,
                       load_seconds=time.perf_counter() - start)


def _lower_priority() -> None:
    """Loader thread initializer: nice +10 for this thread only (Linux threads have their own nice value)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # pragma: no cover (not Linux, or not permitted)
        pass


def repo_versions(repo: Path) -> dict[str, tuple[str, Path]]:
    """``{name: (highest version, folder)}`` of a model repository ``repo/<name>/<version>/`` (the layout and
    the version order are :mod:`mmsenti.runtime.repository`'s)."""
    out: dict[str, tuple[str, Path]] = {}
    if not repo.is_dir():
        return out
    for model_dir in sorted(repo.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith((".", "_")) or not _valid_name(model_dir.name):
            continue
        best = latest_version(model_dir)
        if best is not None:
            out[model_dir.name] = (best, model_dir / best)
    return out


# ----------------------------------------------------------------------------- the registry (event loop)
class ModelRegistry:
    """The served models by name, the active (default) one, and the load/swap/unload operations."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics):
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.active: str | None = None
        self.last_error: dict[str, str] = {}  # name -> why its last load failed
        self._lock = asyncio.Lock()
        # ORT's intra-op threads (--threads > 1) are created by the loading thread and would inherit its nice value
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader",
                                          initializer=_lower_priority if settings.threads == 1 else None)
        self._retiring: set[asyncio.Task] = set()
        self._repo_seen: dict[str, str] = {}  # name -> version the watcher last tried
        self._repo_failed: set[tuple[str, str, float]] = set()
        self._started = False
        # called with (retired model, models still served) once a replaced or unloaded model's queue is empty
        self.on_retire: Callable[[ServedModel, list[ServedModel]], None] | None = None

    # ------------------------------------------------------------------ lookup
    def get(self, name: str | None = None) -> ServedModel:
        key = name if name is not None else self.active
        model = self.models.get(key) if key is not None else None
        if model is None:
            loaded = ", ".join(sorted(self.models)) or "none"
            what = f"model {name!r} is not loaded" if name is not None else "no model is active"
            raise UnknownModel(f"{what}; loaded: {loaded} (GET /v1/models lists them, POST /v1/models loads one)")
        return model

    @property
    def ready(self) -> bool:
        return self._started and self.active in self.models

    def describe(self) -> dict[str, Any]:
        return {"active": self.active, "models": [m.describe() for m in self.models.values()],
                "last_errors": dict(self.last_error)}

    # ------------------------------------------------------------------ load / swap
    def preload(self, name: str, path: str | Path, from_repo: bool = False) -> ServedModel:
        """Load before the event loop runs (``mmsenti serve`` does this so a bad export fails in one line)."""
        model = prepare_model(name, path, self.settings, from_repo=from_repo)
        self._install(model, activate=self.active is None)
        return model

    async def load(self, name: str, path: str | Path, activate: bool = False, from_repo: bool = False) -> ServedModel:
        """Load ``path`` as ``name`` (a new version of it if already loaded); see the module docstring."""
        if not _valid_name(name):
            raise LoadFailed(f"name {name!r}: use letters, digits, '-', '_' or '.'")
        async with self._lock:
            current = self.models.get(name)
            loop = asyncio.get_running_loop()
            # while something serves, load at low priority; the first model loads at full speed (start-up time)
            executor = self._loader if self.models else None
            try:
                model = await loop.run_in_executor(executor, prepare_model, name, path, self.settings, current,
                                                   from_repo)
            except LoadFailed as err:
                self._failed(name, str(err))
                raise
            except Exception as err:  # anything else is still a failed load, never a dead server
                self._failed(name, f"{type(err).__name__}: {err}")
                raise LoadFailed(f"{path}: {type(err).__name__}: {err}") from None
            self._install(model, activate=activate or self.active is None or self.active == name)
            if self._started:
                model.batcher.start()
            if current is not None:
                self._retire(current)
            log.info("serving %s version %s from %s (loaded in %.2f s)%s", name, model.version, path,
                        model.load_seconds, f", replacing version {current.version}" if current else "")
            return model

    def _install(self, model: ServedModel, activate: bool) -> None:
        s = self.settings
        model.metrics = ModelMetrics(self.metrics, model.name)
        model.batcher = MicroBatcher(model.run_batch, max_batch=s.max_batch, max_wait_s=s.max_wait_s,
                                     queue_size=s.queue_size, metrics=model.metrics, name=model.name,
                                     max_queue_s=s.max_queue_ms / 1000 if s.max_queue_ms else None)
        old = self.models.get(model.name)
        self.models[model.name] = model  # the swap: one assignment; requests resolved after it go to `model`
        if activate:
            self.active = model.name
        if old is not None and old.version != model.version:
            self._forget_info(old)
        self.metrics.model_info.labels(model.name, model.version).set(1)
        self.metrics.model_loads.labels(model.name, "ok").inc()
        self.last_error.pop(model.name, None)

    def _failed(self, name: str, reason: str) -> None:
        self.last_error[name] = reason
        self.metrics.model_loads.labels(name, "failed").inc()
        log.error("loading %s failed: %s", name, reason)

    def _forget_info(self, model: ServedModel) -> None:
        try:
            self.metrics.model_info.remove(model.name, model.version)
        except KeyError:
            pass

    def _retire(self, model: ServedModel) -> None:
        """Let ``model`` finish its queued items in the background, then stop its worker."""
        async def retire() -> None:
            await model.batcher.close()
            if self.on_retire is not None:
                try:
                    self.on_retire(model, list(self.models.values()))
                except Exception as err:  # a cache clean-up never takes the server down
                    log.error("after retiring %s version %s: %s: %s", model.name, model.version, type(err).__name__, err)

        task = asyncio.get_running_loop().create_task(retire(), name=f"retire-{model.name}-{model.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def unload(self, name: str) -> ServedModel:
        async with self._lock:
            model = self.get(name)
            if name == self.active and len(self.models) > 1:
                raise LoadFailed(f"model {name!r} is the active model; activate another first "
                                 f"(POST /v1/models {{\"name\": ..., \"action\": \"activate\"}})")
            if name == self.active:
                raise LoadFailed(f"model {name!r} is the only model loaded; load another before unloading it")
            del self.models[name]
            self._forget_info(model)
            self._retire(model)
            return model

    async def activate(self, name: str) -> ServedModel:
        async with self._lock:
            model = self.get(name)
            self.active = name
            return model

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """On the event loop: start every preloaded model's batcher."""
        self._started = True
        for model in self.models.values():
            model.batcher.start()

    async def close(self) -> None:
        """Finish every queued item of every model, then stop the workers (graceful shutdown)."""
        self._started = False
        await asyncio.gather(*(m.batcher.close() for m in self.models.values()), *list(self._retiring),
                             return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def reload(self) -> list[str]:
        """SIGHUP: reload every model from its folder (verified swaps) and rescan the model repository."""
        done = []
        for name, model in list(self.models.items()):
            if model.from_repo:
                continue
            try:
                await self.load(name, model.path)
                done.append(name)
            except LoadFailed:
                pass  # logged and counted; the old version keeps serving
        self._repo_failed.clear()
        self._repo_seen.clear()
        done += await self.scan_repo()
        return done

    async def scan_repo(self) -> list[str]:
        """Load each repository model whose highest version folder is not the one loaded (or tried) last."""
        repo = self.settings.model_repo
        if not repo:
            return []
        found = await asyncio.to_thread(repo_versions, Path(repo))
        loaded = []
        for name, (version, folder) in found.items():
            if self._repo_seen.get(name) == version:
                continue
            try:
                stamp = (folder / MANIFEST_NAME).stat().st_mtime
            except OSError:
                continue
            if (name, version, stamp) in self._repo_failed:
                continue
            self._repo_seen[name] = version
            try:
                await self.load(name, folder, from_repo=True)
                loaded.append(name)
            except LoadFailed:
                self._repo_failed.add((name, version, stamp))
                self._repo_seen.pop(name, None)
        return loaded

    async def watch(self) -> None:
        """Poll the model repository every ``poll_s`` seconds (runs until cancelled)."""
        while True:
            try:
                await self.scan_repo()
            except Exception as err:  # a vanished folder mid-scan and the like: try again next time
                log.error("model repository scan failed: %s: %s", type(err).__name__, err)
            await asyncio.sleep(self.settings.poll_s)
