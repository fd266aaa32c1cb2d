"""LightningModule that trains :class:`~mmsenti.models.SentimentModel` on :class:`SentimentBatch`.

Optimiser and scheduler arrive as ``_partial_`` configs; the pretrained text encoder gets its own
(smaller) learning rate. Validation and test report the MOSI metrics exactly as MMSA computes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from mmsenti.data.batch import SentimentBatch
from mmsenti.metrics import MosiMetrics
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.models.sentiment_model import NUM_CLASSES_7

log = logging.getLogger(__name__)


def sentiment_classes_7(labels: torch.Tensor) -> torch.Tensor:
    """Acc-7 classes: round(clip(y, -3, 3)) shifted to 0..6."""
    return torch.round(labels.clamp(-3, 3)).long() + NUM_CLASSES_7 // 2


class SentimentLitModule(L.LightningModule):
    def __init__(
        self,
        modalities: list[str],
        text_encoder: dict,
        audio_encoder: dict,
        vision_encoder: dict,
        fusion: dict,
        head_dropout: float = 0.1,
        aux_7class: bool = False,
        modality_dropout: float = 0.0,
        loss: str = "l1",
        aux_7class_weight: float = 0.0,
        encoder_lr: float = 5e-5,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., dict] | None = None,
    ):
        super().__init__()
        # optimiser/scheduler partials are code, not data: keep them out of the checkpoint so it
        # loads with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.model_config = SentimentModelConfig(
            modalities=list(modalities), text_encoder=dict(text_encoder), audio_encoder=dict(audio_encoder),
            vision_encoder=dict(vision_encoder), fusion=dict(fusion), head_dropout=head_dropout,
            aux_7class=aux_7class or aux_7class_weight > 0, modality_dropout=modality_dropout,
        )
        self.net = SentimentModel(self.model_config)
        if loss not in {"l1", "mse"}:
            raise ValueError(f"model.loss={loss!r}; choose l1 or mse")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = MosiMetrics()
        self.test_metrics = MosiMetrics()
        # for the one-line epoch summary in the run log (rank 0 only, so never synced across processes)
        self.train_loss_mean = MeanMetric(sync_on_compute=False)

    # ---------------------------------------------------------------- forward and losses
    def forward(self, batch: SentimentBatch):
        return self.net(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            audio=batch.audio, audio_mask=batch.audio_mask, vision=batch.vision, vision_mask=batch.vision_mask,
        )

    def compute_loss(self, out, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        score = out.score.float()
        main = F.l1_loss(score, labels) if self.hparams.loss == "l1" else F.mse_loss(score, labels)
        losses = {"loss": main, "loss_main": main}
        if out.logits_7 is not None and self.hparams.aux_7class_weight > 0:
            aux = F.cross_entropy(out.logits_7.float(), sentiment_classes_7(labels))
            losses["loss_aux7"] = aux
            losses["loss"] = main + self.hparams.aux_7class_weight * aux
        return losses

    # ---------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str) -> None:
        # feature standardisation is part of the model (and of every export of it)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        stats = getattr(dm, "feature_stats", None) if stage == "fit" else None
        for m, normalizer in self.net.normalizers.items():
            if stats and m in stats:
                normalizer.fit(*stats[m])

    def training_step(self, batch: SentimentBatch, batch_idx: int) -> torch.Tensor:
        losses = self.compute_loss(self(batch), batch.labels)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True,
                      prog_bar=False, batch_size=len(batch), sync_dist=True)
        self.log("train/loss_step", losses["loss"], on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch))
        self.train_loss_mean.update(losses["loss"].detach(), len(batch))
        return losses["loss"]

    def _eval_step(self, batch: SentimentBatch, split: str, metrics: MosiMetrics) -> None:
        out = self(batch)
        losses = self.compute_loss(out, batch.labels)
        self.log(f"{split}/loss", losses["loss"], on_epoch=True, batch_size=len(batch), sync_dist=True)
        metrics.update(out.score.float(), batch.labels)

    def validation_step(self, batch: SentimentBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: SentimentBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def _log_metrics(self, split: str, metrics: MosiMetrics) -> dict[str, float]:
        values = metrics.compute()
        metrics.reset()
        # already gathered across processes by torchmetrics: no sync_dist here
        self.log_dict({f"{split}/{k}": float(v) for k, v in values.items()}, prog_bar=False, sync_dist=False)
        self.log(f"{split}/MAE_prog", float(values["MAE"]), prog_bar=True)
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._log_metrics("val", self.val_metrics)
        if not self.trainer.sanity_checking and self.trainer.is_global_zero and self.trainer.state.fn == "fit":
            train_loss = float(self.train_loss_mean.compute()) if self.train_loss_mean.update_count else float("nan")
            self.train_loss_mean.reset()
            log.info("epoch %d: train loss %.4f | val MAE %.4f Corr %.4f Non0_acc_2 %.4f Acc-7 %.4f",
                     self.current_epoch, train_loss, values["MAE"], values["Corr"], values["Non0_acc_2"], values["Mult_acc_7"])

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def predict_step(self, batch: SentimentBatch, batch_idx: int) -> dict[str, Any]:
        return {"ids": batch.ids, "score": self(batch).score.float().cpu(), "label": batch.labels.cpu()}

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured (model.optimizer)")
        encoder = [p for p in self.net.text_encoder.parameters() if p.requires_grad]
        encoder_ids = {id(p) for p in encoder}
        rest = [p for p in self.net.parameters() if p.requires_grad and id(p) not in encoder_ids]
        groups = [{"params": rest, "name": "fusion"}]
        if encoder:
            groups.append({"params": encoder, "lr": self.hparams.encoder_lr, "name": "text_encoder"})
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer, num_training_steps=steps)}
