"""Learning-rate schedules, built from ``_partial_`` configs.

Every factory takes ``(optimizer, num_training_steps)`` and returns a Lightning scheduler dict, so
the LightningModule treats them alike whatever the config picks.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


def warmup_cosine(optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.1, min_lr_ratio: float = 0.0) -> dict:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` of the peak, stepped every batch."""
    warmup = max(1, int(warmup_ratio * num_training_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, num_training_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def plateau(optimizer: Optimizer, num_training_steps: int, monitor: str = "val/MAE", factor: float = 0.5, patience: int = 2) -> dict:
    """Halve the learning rate when the monitored validation metric stops improving."""
    del num_training_steps
    return {"scheduler": ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience),
            "monitor": monitor, "interval": "epoch"}


def constant(optimizer: Optimizer, num_training_steps: int) -> dict:
    del num_training_steps
    return {"scheduler": LambdaLR(optimizer, lambda _: 1.0), "interval": "step"}
