"""Small callbacks of our own (everything else comes from Lightning)."""

from __future__ import annotations

import random
import time

import lightning as L
import numpy as np
import torch


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
