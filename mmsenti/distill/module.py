"""The distillation LightningModule: a :class:`SentimentLitModule` plus a frozen teacher's loss terms.

``DistillSentimentLitModule`` trains the same :class:`~mmsenti.models.SentimentModel` (``self.net``,
the student) as the ordinary module — same task (``model.net.task``: MOSI regression or SST-2
classification), hard loss, logging and metrics, all the base module's — and adds only, through the
base module's hooks (:meth:`~SentimentLitModule.extra_losses`, ``hard_targets``, ``hard_weight``,
``training_forward_context``), the terms of

* ``distill`` (a dict from the ``distill`` config group, or ``None`` for no teacher): a frozen
  teacher loaded from any mmsenti checkpoint (``distill.teacher_ckpt``) — text-only or fused
  text+audio+vision, any text encoder — whose outputs on the training set are computed once and
  cached (:mod:`mmsenti.distill.cache`); optional hidden-state / attention-map distillation runs
  the teacher online (it needs the student's tokenizer).

Cross-modal distillation (a fused teacher, a text-only student): ``distill.marginalize=[audio, vision]``
averages those modalities out of the teacher's soft targets
(:func:`~mmsenti.distill.outputs.marginal_teacher_outputs`: the teacher's prediction from the text
alone), and ``distill.corrected_labels`` trains the hard loss on
``label - (joint - marginal teacher score)``, the label without the part the teacher credits to
audio/vision. Plain KD on the joint outputs hands the student that audio/vision part as a target it
cannot predict from text; ``experiments/distillation.md`` measures both.

With ``distill.teacher_ckpt=null`` the module trains the student on the hard labels only: the
no-teacher baseline of the same experiment (same student, data and seeds).

Beside this module, knowing nothing of Lightning: :mod:`~mmsenti.distill.teacher` (loading the teacher,
``student_init=teacher``), :mod:`~mmsenti.distill.recording` (layer states / attention maps through
hooks), :mod:`~mmsenti.distill.outputs` (the teacher's joint and marginal outputs on the training set).

The teacher is deliberately *not* a registered submodule: it is never in the optimiser, never in
the student's checkpoint, never moved by Lightning, and it runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Iterator

import torch
from torch import nn

from mmsenti.data.batch import SentimentBatch, SentimentCollator
from mmsenti.distill import losses as L_
from mmsenti.distill.cache import SoftTargets, load_or_compute, samples_fingerprint, soft_target_key
from mmsenti.distill.outputs import marginal_teacher_outputs, teacher_outputs
from mmsenti.distill.recording import LayerRecorder, use_eager_attention
from mmsenti.distill.teacher import init_student_from_teacher, load_teacher
from mmsenti.errors import MmsentiError
from mmsenti.io import file_digest
from mmsenti.models import SentimentModelConfig
from mmsenti.pretrained import load_pretrained
from mmsenti.training.lit_module import SentimentLitModule

log = logging.getLogger(__name__)

MARGINAL_MODALITIES = ("audio", "vision")


@dataclass
class DistillConfig:
    """Every distillation setting (the ``distill`` config group); see :mod:`mmsenti.distill.losses`."""

    teacher_ckpt: str | None = None
    hard_weight: float = 1.0  # weight of the loss on the true labels
    alpha: float = 0.5  # weight of T^2 * KL on soft targets (binary logits, or the 7-class head)
    temperature: float = 2.0
    score_weight: float = 1.0  # regression: weight of MSE(student score, teacher score)
    hidden_weight: float = 0.0  # > 0: token hidden-state MSE (online teacher, same tokenizer)
    attention_weight: float = 0.0  # > 0: attention-map MSE (online teacher, same tokenizer)
    layer_map: list[int] | None = None  # teacher layer for each student layer; None = uniform
    student_init: str = "pretrained"  # pretrained | teacher (DistilBERT-style: copy the teacher's weights)
    cache_dir: str | None = None  # soft-target cache; None = recompute every run
    teacher_batch_size: int = 64
    marginalize: list[str] | None = None  # teacher modalities the student lacks, averaged out of its soft targets
    marginal_draws: int = 8  # draws of those modalities (from other training samples) per sample
    # with marginalize: the hard loss's target is the label minus what the teacher credits to the
    # marginalised modalities (joint - marginal score): the same expectation given the text, less noise
    corrected_labels: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DistillConfig":
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise MmsentiError(f"unknown distill setting(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        cfg = cls(**d)
        if cfg.student_init not in {"pretrained", "teacher"}:
            raise MmsentiError(f"distill.student_init={cfg.student_init!r}; choose pretrained or teacher")
        if cfg.temperature <= 0:
            raise MmsentiError(f"distill.temperature must be > 0 (got {cfg.temperature})")
        cfg.marginalize = [str(m) for m in cfg.marginalize or []]
        bad = set(cfg.marginalize) - set(MARGINAL_MODALITIES)
        if bad:
            raise MmsentiError(f"distill.marginalize={cfg.marginalize}: only {list(MARGINAL_MODALITIES)} can be averaged out")
        if cfg.marginalize and cfg.marginal_draws < 1:
            raise MmsentiError(f"distill.marginal_draws must be >= 1 (got {cfg.marginal_draws})")
        if cfg.corrected_labels and not cfg.marginalize:
            raise MmsentiError("distill.corrected_labels needs distill.marginalize (the modalities whose part of the label "
                               "the teacher removes), e.g. distill.marginalize=[audio,vision]")
        return cfg

    @property
    def online(self) -> bool:
        """Whether the teacher must run every step (its token states/attention are not cached)."""
        return self.hidden_weight > 0 or self.attention_weight > 0


# ---------------------------------------------------------------------------- the module
class DistillSentimentLitModule(SentimentLitModule):
    """:class:`SentimentLitModule` + an optional frozen teacher's loss terms (see the module docstring)."""

    def __init__(self, *args: Any, distill: dict | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.distill = DistillConfig.from_dict(distill)
        self.hidden_projection: nn.Module | None = None
        self.soft_targets: SoftTargets | None = None
        self.teacher_hparams: dict[str, Any] = {}
        self.__dict__["teacher"] = None  # not a submodule: never optimised, saved or moved by Lightning
        if self.distill.teacher_ckpt:
            self._attach_teacher()
        elif distill is not None:
            log.warning("distill.teacher_ckpt is null: training the student on hard labels only (the no-teacher baseline)")

    def _attach_teacher(self) -> None:
        cfg = self.distill
        teacher, self.teacher_hparams = load_teacher(cfg.teacher_ckpt)
        self.__dict__["teacher"] = teacher
        self.hard_weight = cfg.hard_weight
        log.info("teacher %s: %s, %.1f M parameters, modalities %s", cfg.teacher_ckpt, self._tokenizer_name(teacher.config),
                 sum(p.numel() for p in teacher.parameters()) / 1e6, list(teacher.config.modalities))
        if cfg.student_init == "teacher":
            copied = init_student_from_teacher(self.net, teacher, self.model_config.text_encoder.get("keep_layers"))
            log.info("student initialised from the teacher: %d tensors copied", len(copied))
        if cfg.online:
            teacher_tokenizer, student_tokenizer = self._tokenizer_name(teacher.config), self._tokenizer_name(self.model_config)
            if teacher_tokenizer != student_tokenizer:
                raise MmsentiError("hidden-state/attention distillation compares token by token: the teacher "
                                   f"({teacher_tokenizer}) and the student ({student_tokenizer}) must share a tokenizer")
            if cfg.attention_weight > 0:
                use_eager_attention(self.net.text_encoder.backbone)
                use_eager_attention(teacher.text_encoder.backbone)
            self.student_recorder = LayerRecorder(self.net.text_encoder.backbone, cfg.hidden_weight > 0, cfg.attention_weight > 0)
            self.teacher_recorder = LayerRecorder(teacher.text_encoder.backbone, cfg.hidden_weight > 0, cfg.attention_weight > 0)
            n_s, n_t = len(self.student_recorder.layers), len(self.teacher_recorder.layers)
            self.layer_map = list(cfg.layer_map) if cfg.layer_map is not None else L_.uniform_layer_map(n_s, n_t)
            if len(self.layer_map) != n_s or any(not 0 <= i < n_t for i in self.layer_map):
                raise MmsentiError(f"distill.layer_map={self.layer_map}: need {n_s} teacher layer indices in [0, {n_t - 1}]")
            s_width, t_width = self.net.text_encoder.hidden_size, teacher.text_encoder.hidden_size
            if cfg.hidden_weight > 0 and s_width != t_width:
                # TinyBERT's W_h, trained with the student (a submodule: the base optimiser picks it up)
                self.hidden_projection = nn.Linear(s_width, t_width)

    @staticmethod
    def _tokenizer_name(config: SentimentModelConfig) -> str:
        return str(dict(config.text_encoder).get("pretrained"))

    @property
    def online(self) -> bool:
        """Whether the teacher runs every training step (token states / attention maps)."""
        return self.teacher is not None and self.distill.online

    # ---------------------------------------------------------------- soft targets
    def on_fit_start(self) -> None:
        teacher = self.teacher
        datamodule = getattr(self.trainer, "datamodule", None)
        unlabeled = sum(1 for s in getattr(datamodule, "splits", {}).get("train", []) if s["label"] != s["label"])
        if unlabeled and (teacher is None or (self.distill.alpha <= 0 and self.distill.score_weight <= 0)):
            raise MmsentiError(f"{unlabeled} training samples have no label (a transfer set, e.g. data.source_options."
                               "transfer_size): they are learnt from a teacher's soft targets only; set distill.teacher_ckpt "
                               "(with alpha or score_weight > 0) or drop the transfer set")
        if unlabeled:
            log.info("transfer set: %d of the training samples are unlabelled (soft targets only)", unlabeled)
        if teacher is None:
            return
        teacher.to(self.device)
        cfg = self.distill
        if cfg.alpha > 0 or cfg.score_weight > 0 or cfg.corrected_labels:
            self.soft_targets = self.compute_soft_targets(self.trainer.datamodule)

    def compute_soft_targets(self, datamodule: Any) -> SoftTargets:
        """The teacher's outputs on every training sample, from the cache when the key matches."""
        cfg, teacher = self.distill, self.teacher
        samples = datamodule.splits["train"]
        hp = datamodule.hparams
        tokenizer_name = self._tokenizer_name(teacher.config)
        settings = {"tokenizer": tokenizer_name, "max_text_len": hp.get("max_text_len"), "max_frames": hp.get("max_frames"),
                    "audio_dim": hp.get("audio_dim"), "vision_dim": hp.get("vision_dim")}
        # only modalities the teacher reads and the data has can be averaged out
        marginalize = [m for m in cfg.marginalize or [] if m in teacher.config.modalities
                       and any(s.get(m) is not None and len(s[m]) for s in samples)]
        if cfg.marginalize and marginalize != cfg.marginalize:
            log.info("distill.marginalize: the teacher or the data lacks %s; nothing to average out there",
                     sorted(set(cfg.marginalize) - set(marginalize)))
        if marginalize:  # part of the key: marginal targets are not the joint ones
            settings.update(marginalize=marginalize, marginal_draws=cfg.marginal_draws, temperature=cfg.temperature)
        key = soft_target_key(file_digest(cfg.teacher_ckpt), samples_fingerprint(samples), settings)

        def run_teacher() -> tuple[torch.Tensor, ...]:  # (score, logits_7[, joint score])
            collator = SentimentCollator(load_pretrained(tokenizer_name, "tokenizer"), hp.get("audio_dim") or 0,
                                         hp.get("vision_dim") or 0, hp.get("max_text_len") or 64, hp.get("max_frames"))
            joint = teacher_outputs(teacher, samples, collator, cfg.teacher_batch_size, self.device)
            if not marginalize:
                return joint
            score, logits_7 = marginal_teacher_outputs(teacher, samples, collator, cfg.teacher_batch_size, self.device,
                                                       marginalize, cfg.marginal_draws, cfg.temperature)
            return score, logits_7, joint[0]

        targets = load_or_compute(cfg.cache_dir, key, [s["id"] for s in samples], run_teacher)
        log.info("teacher soft targets for %d training samples (%s%s)", len(samples), "cached" if targets.from_cache else "computed",
                 f"; {', '.join(marginalize)} averaged out over {cfg.marginal_draws} draws" if marginalize else "")
        return targets

    # ---------------------------------------------------------------- the teacher's terms (hooks of the base module)
    def hard_targets(self, batch: SentimentBatch) -> torch.Tensor:
        """The labels, or with ``distill.corrected_labels`` the labels minus the teacher's joint - marginal score."""
        if not (self.distill.corrected_labels and self.soft_targets is not None and self.task == "regression"):
            return batch.labels
        joint = self.soft_targets.lookup_joint(batch.ids, batch.labels.device)
        if joint is None:  # the teacher or the data had nothing to average out
            return batch.labels
        marginal, _ = self.soft_targets.lookup(batch.ids, batch.labels.device)
        return batch.labels - (joint - marginal)  # NaN (transfer-set) labels stay NaN

    @contextmanager
    def training_forward_context(self) -> Iterator[None]:
        """Online distillation: record the student's layer states/attention maps during its forward pass."""
        if not self.online:
            yield
            return
        with self.student_recorder.record():
            yield

    def extra_losses(self, out, batch: SentimentBatch) -> dict[str, tuple[float, torch.Tensor]]:
        """The teacher's terms, ``name -> (weight, value)``; online terms read what the student recorder holds."""
        cfg, terms = self.distill, {}
        if self.soft_targets is not None:
            t_score, t_logits_7 = self.soft_targets.lookup(batch.ids, out.score.device)
            if self.task == "classification":
                if cfg.alpha > 0:
                    terms["loss_kd"] = (cfg.alpha, L_.kd_kl(L_.binary_logits(out.score), L_.binary_logits(t_score), cfg.temperature))
            else:
                if cfg.score_weight > 0:
                    terms["loss_score"] = (cfg.score_weight, torch.nn.functional.mse_loss(out.score.float(), t_score))
                if cfg.alpha > 0 and t_logits_7 is not None and out.logits_7 is not None:
                    terms["loss_kd7"] = (cfg.alpha, L_.kd_kl(out.logits_7, t_logits_7, cfg.temperature))
        if self.online:
            student = self.student_recorder
            with torch.no_grad(), self.teacher_recorder.record() as teacher:
                self.teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask, audio=batch.audio,
                             audio_mask=batch.audio_mask, vision=batch.vision, vision_mask=batch.vision_mask)
            if cfg.hidden_weight > 0:
                terms["loss_hidden"] = (cfg.hidden_weight, L_.hidden_state_loss(
                    student.hidden, [teacher.hidden[i] for i in self.layer_map], batch.attention_mask, self.hidden_projection))
            if cfg.attention_weight > 0:
                terms["loss_attention"] = (cfg.attention_weight, L_.attention_loss(
                    student.attention, [teacher.attention[i] for i in self.layer_map], batch.attention_mask))
        return terms
