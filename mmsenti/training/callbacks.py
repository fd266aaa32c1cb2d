"""Small callbacks of our own (everything else comes from Lightning)."""

from __future__ import annotations

import csv
import os
import random
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from mmsenti.io import atomic_writer


class EpochTimer(L.Callback):
    """Records wall-clock seconds of each training epoch (written to metrics.json)."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_seconds.append(round(time.perf_counter() - self._start, 3))

    def state_dict(self) -> dict:
        return {"epoch_seconds": list(self.epoch_seconds)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))


class RngStateCheckpoint(L.Callback):
    """Saves and restores the global RNG states with each checkpoint.

    Dropout and modality dropout draw from the global generators; restoring them on resume makes a
    run resumed from ``last.ckpt`` finish exactly as an uninterrupted run would.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # numpy's state held as a tensor + numbers so the checkpoint loads with weights_only=True
        numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
        state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


PREDICTIONS_FILE = "predictions.csv"


class TestPredictionsWriter(L.Callback):
    """Writes every test-set prediction of ``trainer.test`` to ``path`` (``<run>/predictions.csv``).

    What ``mmsenti report <run_dir>`` draws its scatter, confusion matrix and error bins from. One
    row per test sample, columns by the model's task:

    * ``regression``: ``id, label, score, pred_class_7, label_class_7`` (classes -3..3 as MOSI's
      Acc-7 counts them: round(clip(·, -3, 3)), half to even);
    * ``classification``: ``id, label, score, prob_positive, pred_label`` (score is the logit;
      labels and predictions -1 / +1).

    The scores are the ones ``test_step`` computed: a forward hook on the module's ``net`` catches
    its output, so nothing runs twice and the LightningModule is untouched (a module whose test step
    does not call ``net`` falls back to one extra forward pass). Under DDP the rows of every rank are
    gathered and rank 0 writes them (a padded sampler's repeats dropped by id).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._rows: list[dict] = []
        self._caught = None
        self._handle = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []
        net = getattr(pl_module, "net", None)
        if isinstance(net, torch.nn.Module):
            self._handle = net.register_forward_hook(self._catch)

    def _catch(self, module: torch.nn.Module, args: tuple, output) -> None:
        self._caught = output

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._caught = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self._caught
        if out is None:  # the test step did not run ``net``: score the batch once more
            with torch.no_grad():
                out = pl_module(batch)
        score = out.score.detach().float().cpu().numpy()
        labels = batch.labels.detach().float().cpu().numpy()
        ids = list(batch.ids) or [f"{batch_idx}:{i}" for i in range(len(score))]
        task = getattr(pl_module, "task", "regression")
        for sample_id, y, s in zip(ids, labels, score):
            self._rows.append(prediction_row(str(sample_id), float(y), float(s), task))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        rows = self._rows
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[dict]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, rows)
            seen: set[str] = set()
            rows = [r for part in gathered for r in part if not (r["id"] in seen or seen.add(r["id"]))]
        if trainer.is_global_zero and rows:
            write_predictions(self.path, rows)
        self._rows = []


def prediction_row(sample_id: str, label: float, score: float, task: str) -> dict:
    """One predictions.csv row (see :class:`TestPredictionsWriter` for the columns of each task)."""
    if task == "classification":
        prob = 1.0 / (1.0 + float(np.exp(-score)))
        return {"id": sample_id, "label": label, "score": score, "prob_positive": prob, "pred_label": 1 if score > 0 else -1}
    return {"id": sample_id, "label": label, "score": score,
            "pred_class_7": class_7(score), "label_class_7": class_7(label) if np.isfinite(label) else ""}


def class_7(value: float) -> int:
    """MOSI's Acc-7 class of a score or label, -3..3: ``np.round(np.clip(x, -3, 3))`` (half to even, as MMSA)."""
    return int(np.round(np.clip(value, -3.0, 3.0)))


def write_predictions(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write the rows as CSV, atomically (a report never reads half a file)."""
    with atomic_writer(path, "w", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
