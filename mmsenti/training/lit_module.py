"""LightningModule that trains :class:`~mmsenti.models.SentimentModel` on :class:`SentimentBatch`.

The network arrives as ONE node, ``net`` (the fields of :class:`~mmsenti.models.SentimentModelConfig`,
Hydra's ``model.net``): a field added to the model config needs no edit here. The checkpoint keeps it
as ``hyper_parameters["model_config"]`` (``SentimentModelConfig.to_dict()``, 7-class head rule
applied), beside this module's own ``loss``, ``aux_7class_weight`` and ``encoder_lr``.

The task is the model config's ``task``:

* ``regression`` (MOSI): L1 or MSE between the score in [-3, 3] and the label, optionally plus a
  7-class cross-entropy head (``aux_7class_weight``);
* ``classification`` (SST-2: labels -1 / +1): binary cross-entropy with logits on the unbounded
  score; ``{split}/acc`` is logged too, and equals MOSI's ``Non0_acc_2`` on such labels.

Samples whose label is NaN (a distillation transfer set) are left out of the hard loss. A fusion with
training-only terms (the zoo's ``misa``, ``self_mm``) hands them over through its ``auxiliary_losses``
(:meth:`SentimentLitModule.fusion_losses`); subclasses add terms through
:meth:`SentimentLitModule.extra_losses` (and the few hooks beside it);
:class:`~mmsenti.distill.module.DistillSentimentLitModule` adds a teacher's.

Optimiser and scheduler arrive as ``_partial_`` configs; the pretrained text encoder gets its own
(smaller) learning rate. Validation and test report the metrics exactly as MMSA computes them: MOSI's, or
CH-SIMS's with ``metrics="sims"`` (``data.metrics``; :mod:`mmsenti.metrics`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from mmsenti.data.batch import SentimentBatch
from mmsenti.errors import MmsentiError
from mmsenti.metrics import METRIC_SETS, MosiMetrics
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.models.sentiment_model import NUM_CLASSES_7

log = logging.getLogger(__name__)

REGRESSION_LOSSES = ("l1", "mse")


def sentiment_classes_7(labels: torch.Tensor) -> torch.Tensor:
    """Acc-7 classes: round(clip(y, -3, 3)) shifted to 0..6."""
    return torch.round(labels.clamp(-3, 3)).long() + NUM_CLASSES_7 // 2


def hard_loss(score: torch.Tensor, labels: torch.Tensor, task: str, regression_loss: str = "l1") -> torch.Tensor:
    """The loss on the true labels: BCE with logits on ``label > 0`` (classification) or L1/MSE (regression).

    Samples whose label is NaN (a transfer set: no label, soft targets only) are left out; a batch
    with none labelled gives 0 (still attached to the graph).
    """
    score = score.float()
    known = ~torch.isnan(labels)
    if not bool(known.all()):
        if not bool(known.any()):
            return score.sum() * 0.0
        score, labels = score[known], labels[known]
    if task == "classification":
        return F.binary_cross_entropy_with_logits(score, (labels > 0).to(score.dtype))
    if regression_loss == "l1":
        return F.l1_loss(score, labels)
    if regression_loss == "mse":
        return F.mse_loss(score, labels)
    raise ValueError(f"regression loss {regression_loss!r}; choose one of {list(REGRESSION_LOSSES)}")


def build_model_config(net: Mapping[str, Any] | SentimentModelConfig, aux_7class_weight: float = 0.0) -> SentimentModelConfig:
    """``model.net`` → :class:`SentimentModelConfig`; unknown keys are an error, and a weighted 7-class loss needs the head."""
    if isinstance(net, SentimentModelConfig):
        config = net
    else:
        known = SentimentModelConfig.__dataclass_fields__
        unknown = sorted(set(net) - set(known))
        if unknown:
            raise MmsentiError(f"model.net: unknown field(s) {unknown}; SentimentModelConfig has {sorted(known)}")
        config = SentimentModelConfig.from_dict(dict(net))
    if aux_7class_weight > 0 and not config.aux_7class:
        config = dataclasses.replace(config, aux_7class=True)
    return config


class SentimentLitModule(L.LightningModule):
    def __init__(
        self,
        net: Mapping[str, Any] | SentimentModelConfig,
        loss: str = "l1",
        aux_7class_weight: float = 0.0,
        metrics: str = "mosi",
        encoder_lr: float = 5e-5,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., dict] | None = None,
    ):
        super().__init__()
        # optimiser/scheduler partials are code, not data: keep them out of the checkpoint so it
        # loads with torch.load(weights_only=True); the network's config is stored whole below
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        if loss not in REGRESSION_LOSSES:
            raise MmsentiError(f"model.loss={loss!r}; choose one of {list(REGRESSION_LOSSES)}")
        self.model_config = build_model_config(net, aux_7class_weight)
        if self.model_config.task == "classification" and aux_7class_weight > 0:
            raise MmsentiError("model.aux_7class_weight > 0 needs model.net.task=regression (7 classes of a -3..3 score)")
        # what mmsenti.models.checkpoint rebuilds the network from
        self.hparams["model_config"] = self.model_config.to_dict()
        self.net = SentimentModel(self.model_config)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if metrics not in METRIC_SETS:
            raise MmsentiError(f"model.metrics={metrics!r} (data.metrics); choose one of {', '.join(METRIC_SETS)}")
        if metrics != "mosi" and self.model_config.task == "classification":
            raise MmsentiError(f"model.metrics={metrics!r} is a regression metric set; classification is scored as binary "
                               "(data.metrics=mosi: Non0_acc_2 is the accuracy)")
        self.val_metrics = MosiMetrics(metric_set=metrics)
        self.test_metrics = MosiMetrics(metric_set=metrics)
        # for the one-line epoch summary in the run log (rank 0 only, so never synced across processes)
        self.train_loss_mean = MeanMetric(sync_on_compute=False)

    @property
    def task(self) -> str:
        """``regression`` | ``classification``: the model config's."""
        return self.model_config.task

    # ---------------------------------------------------------------- forward and losses
    def forward(self, batch: SentimentBatch):
        return self.net(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            audio=batch.audio, audio_mask=batch.audio_mask, vision=batch.vision, vision_mask=batch.vision_mask,
        )

    def compute_loss(self, out, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The hard-label loss (``loss``) and its parts: what validation and test report as ``{split}/loss``."""
        main = hard_loss(out.score, labels, self.task, self.hparams.loss)
        losses = {"loss": main, "loss_main": main}
        weight = self.hparams.aux_7class_weight
        if out.logits_7 is not None and weight > 0:
            known = ~torch.isnan(labels)
            aux = (F.cross_entropy(out.logits_7[known].float(), sentiment_classes_7(labels[known]))
                   if bool(known.any()) else out.logits_7.sum() * 0.0)
            losses["loss_aux7"] = aux
            losses["loss"] = main + weight * aux
        return losses

    # hooks for subclasses that add to the training objective (see DistillSentimentLitModule)
    hard_weight: float = 1.0  # weight of the hard-label loss in the training objective

    def hard_targets(self, batch: SentimentBatch) -> torch.Tensor:
        """The targets the hard loss fits while training (the labels)."""
        return batch.labels

    @contextlib.contextmanager
    def training_forward_context(self) -> Iterator[None]:
        """Entered around the training forward pass (e.g. to record the student's layer states)."""
        yield

    def extra_losses(self, out, batch: SentimentBatch) -> dict[str, tuple[float, torch.Tensor]]:
        """Further terms of the training objective: ``name -> (weight, unweighted value)``."""
        return {}

    def fusion_losses(self, out, batch: SentimentBatch) -> dict[str, tuple[float, torch.Tensor]]:
        """The fusion's own training terms (MISA's similarity / difference / reconstruction, Self-MM's unimodal
        heads): ``net.fusion.auxiliary_losses(labels, ids, epoch)`` when the fusion has one, else none.

        The fusion computes them from what its last training forward pass kept; ``epoch`` counts from 1."""
        auxiliary = getattr(self.net.fusion, "auxiliary_losses", None)
        if auxiliary is None:
            return {}
        return auxiliary(batch.labels, ids=batch.ids, epoch=self.current_epoch + 1)

    def training_losses(self, out, batch: SentimentBatch) -> dict[str, torch.Tensor]:
        """Every term of the training objective; ``loss`` = hard_weight · hard loss + Σ weight · extra term
        (the fusion's terms, :meth:`fusion_losses`, then a subclass's, :meth:`extra_losses`)."""
        losses = self.compute_loss(out, self.hard_targets(batch))
        total = self.hard_weight * losses["loss"]
        for name, (weight, value) in {**self.fusion_losses(out, batch), **self.extra_losses(out, batch)}.items():
            losses[name] = value
            total = total + weight * value
        losses["loss"] = total
        return losses

    # ---------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            self.check_data_modalities(dm)
        # feature standardisation is part of the model (and of every export of it)
        stats = getattr(dm, "feature_stats", None) if stage == "fit" else None
        for m, normalizer in self.net.normalizers.items():
            if stats and m in stats:
                normalizer.fit(*stats[m])

    def check_data_modalities(self, datamodule: Any) -> None:
        """Refuse (before any step) a model that reads audio/vision the data does not have."""
        hp = getattr(datamodule, "hparams", {}) or {}
        missing = [m for m in self.net.frame_encoders if not (hp.get(f"{m}_dim") and self.net.frame_dims.get(m))]
        where = getattr(datamodule, "location", "the data")
        if missing:
            raise MmsentiError(
                f"the model reads {'+'.join(missing)} but {where} has no {' or '.join(missing)} features "
                f"(data.{missing[0]}_dim=0: a text-only data set); train a text model on it: "
                f"model.net.modalities=[text] model/fusion=text_only (or experiment=mosi_text / mosi_text_fast)")
        for m, dim in self.net.frame_dims.items():
            if dim != int(hp.get(f"{m}_dim")):
                raise MmsentiError(f"the model's {m} input is {dim}-d but {where} has {hp.get(f'{m}_dim')}-d {m} features; "
                                   f"set model.net.{m}_encoder.input_dim={hp.get(f'{m}_dim')}")

    def training_step(self, batch: SentimentBatch, batch_idx: int) -> torch.Tensor:
        with self.training_forward_context():
            out = self(batch)
        losses = self.training_losses(out, batch)
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
        values = {k: float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        # already gathered across processes by torchmetrics: no sync_dist here
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=False, sync_dist=False)
        self.log(f"{split}/MAE_prog", values["MAE"], prog_bar=True)
        if self.task == "classification":  # labels are -1/+1: binary accuracy is MOSI's Non0_acc_2
            self.log(f"{split}/acc", values["Non0_acc_2"], prog_bar=True)
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._log_metrics("val", self.val_metrics)
        if not self.trainer.sanity_checking and self.trainer.is_global_zero and self.trainer.state.fn == "fit":
            train_loss = float(self.train_loss_mean.compute()) if self.train_loss_mean.update_count else float("nan")
            self.train_loss_mean.reset()
            if self.task == "classification":
                log.info("epoch %d: train loss %.4f | val acc %.4f F1 %.4f", self.current_epoch, train_loss,
                         values["Non0_acc_2"], values["Non0_F1_score"])
            elif self.hparams.metrics == "sims":
                log.info("epoch %d: train loss %.4f | val MAE %.4f Corr %.4f Acc-2 %.4f Acc-3 %.4f Acc-5 %.4f", self.current_epoch,
                         train_loss, values["MAE"], values["Corr"], values["Mult_acc_2"], values["Mult_acc_3"],
                         values["Mult_acc_5"])
            else:
                log.info("epoch %d: train loss %.4f | val MAE %.4f Corr %.4f Non0_acc_2 %.4f Acc-7 %.4f", self.current_epoch,
                         train_loss, values["MAE"], values["Corr"], values["Non0_acc_2"], values["Mult_acc_7"])

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def predict_step(self, batch: SentimentBatch, batch_idx: int) -> dict[str, Any]:
        return {"ids": batch.ids, "score": self(batch).score.float().cpu(), "label": batch.labels.cpu()}

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured (model.optimizer)")
        encoder = [p for p in self.net.text_encoder.parameters() if p.requires_grad]
        encoder_ids = {id(p) for p in encoder}
        # everything else the module trains: fusion, frame encoders, heads, and any module a subclass
        # adds (e.g. distillation's hidden-state projection)
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in encoder_ids]
        groups = [{"params": rest, "name": "fusion"}]
        if encoder:
            groups.append({"params": encoder, "lr": self.hparams.encoder_lr, "name": "text_encoder"})
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer, num_training_steps=steps)}
