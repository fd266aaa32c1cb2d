"""``self_mm``: Self-Supervised Multi-task Multimodal sentiment analysis.

Yu, Xu, Yuan, Wu. *Learning Modality-Specific Representations with Self-Supervised Multi-Task Learning
for Multimodal Sentiment Analysis.* AAAI 2021 (https://arxiv.org/abs/2102.04830); the authors' code is
thuiar/Self-MM (also MMSA's ``SELF_MM`` model and trainer).

The unimodal labels are generated during training, per sample, from the multimodal label and the class
centres of the fused and unimodal features (the paper's Unimodal Label Generation Module):

* centres ``C_p^m`` / ``C_n^m``: the mean stored feature of the samples whose label (the modality's own:
  ``y_m`` for the fused features, ``y_s`` for a unimodal one) is positive / negative;
* relative distance ``α = (D_n - D_p) / (D_p + ε)`` with ``D_p = ||F - C_p||_2``, ``D_n = ||F - C_n||_2``;
* new label ``ŷ_s = ½ · y_m · α_s / α_m + ½ · (y_m + α_s - α_m)``, clipped to ``[-H, H]``;
* momentum over the epochs, from epoch 2 on: ``y_s ← (n - 1)/(n + 1) · y_s + 2/(n + 1) · ŷ_s`` (epoch ``n``).

Human unimodal labels (CH-SIMS's ``label_T/A/V``, ``SentimentBatch.text_labels`` ...) are **not** used: the
model's point is to generate them where a dataset has none, and the authors' code and MMSA's ``SELF_MM``
trainer ignore SIMS's too (they serve multi-task models such as MTFN/MLF-DNN), so Self-MM's published SIMS
figures come from generated labels. Training on the human ones would be another model, not this one.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.zoo.subnets import ORDER, UnimodalSubnets, masked_pool
from mmsenti.registry import register

EPS = 1e-8  # the authors' MIN
FIRST_UPDATE_EPOCH = 2  # the unimodal labels stay y_m in epoch 1 and move from epoch 2 on


def relative_distance(features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``α = (||F - C_n|| - ||F - C_p||) / (||F - C_p|| + ε)`` per row of ``features [N, d]``: large and positive
    near the positive centre, negative nearer the negative one."""
    d_p = torch.linalg.vector_norm(features - positive, dim=-1)
    d_n = torch.linalg.vector_norm(features - negative, dim=-1)
    return (d_n - d_p) / (d_p + EPS)


def generated_labels(y_m: torch.Tensor, alpha_m: torch.Tensor, alpha_s: torch.Tensor, bound: float) -> torch.Tensor:
    """The paper's new unimodal label: the mean of the ratio rule ``y_m · α_s / α_m`` and the difference rule
    ``y_m + α_s - α_m``, clipped to ``[-bound, bound]`` (the authors' code: ``H`` = 3 on MOSI)."""
    new = 0.5 * y_m * alpha_s / (alpha_m + EPS) + 0.5 * (y_m + alpha_s - alpha_m)
    return new.clamp(-bound, bound)


def momentum_update(previous: torch.Tensor, new: torch.Tensor, epoch: int) -> torch.Tensor:
    """``(n - 1)/(n + 1) · previous + 2/(n + 1) · new`` at epoch ``n`` (counted from 1)."""
    return (epoch - 1) / (epoch + 1) * previous + 2 / (epoch + 1) * new


def class_centres(features: torch.Tensor, labels: torch.Tensor, exclude_zero: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Mean of ``features [N, d]`` over the samples with a positive label and over those with a negative one
    (``exclude_zero=False``: a zero label counts as positive, the authors' code's option); ``None`` for an empty class."""
    positive = labels > 0 if exclude_zero else labels >= 0
    negative = labels < 0
    return (features[positive].mean(0) if bool(positive.any()) else None,
            features[negative].mean(0) if bool(negative.any()) else None)


class UnimodalLabelStore:
    """Per training sample, by its id: the multimodal label, the generated unimodal labels, the last features; and the centres.

    Plain tensors on the features' device, grown as new ids arrive (a sample's unimodal labels start as its
    multimodal label, the authors' ``init_labels``). Not module state: it is not saved in checkpoints (a
    resumed run starts the labels from ``y_m`` again) and it is per process (each DDP rank keeps the
    samples it sees)."""

    def __init__(self, modalities: list[str], exclude_zero: bool = True, bound: float = 3.0):
        self.modalities = list(modalities)
        self.exclude_zero, self.bound = exclude_zero, float(bound)
        self.index: dict[str, int] = {}
        self.labels: dict[str, torch.Tensor] = {}  # "fusion" (y_m) and each modality: [N]
        self.features: dict[str, torch.Tensor] = {}  # "fusion" and each modality: [N, d]
        self.seen: dict[str, torch.Tensor] = {}  # [N] bool: a feature is stored
        self.centres: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    def slots(self, ids: list[str], labels: torch.Tensor, widths: dict[str, int]) -> torch.Tensor:
        """The rows of ``ids`` (new ids appended, their unimodal labels set to their multimodal label)."""
        new = [i for i in dict.fromkeys(ids) if i not in self.index]
        if new:
            for i in new:
                self.index[i] = len(self.index)
            n = len(new)
            first = {i: k for k, i in reversed(list(enumerate(ids)))}
            y_new = labels.detach().float()[[first[i] for i in new]]
            for key in ("fusion", *self.modalities):
                self.labels[key] = torch.cat([self.labels.get(key, y_new[:0]), y_new])
                old = self.features.get(key, y_new.new_zeros(0, widths[key]))
                self.features[key] = torch.cat([old, y_new.new_zeros(n, widths[key])])
                self.seen[key] = torch.cat([self.seen.get(key, torch.zeros(0, dtype=torch.bool, device=y_new.device)),
                                            torch.zeros(n, dtype=torch.bool, device=y_new.device)])
        return torch.tensor([self.index[i] for i in ids], dtype=torch.long, device=labels.device)

    def update(self, slots: torch.Tensor, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor], epoch: int) -> None:
        """One training step, in the authors' order: from epoch 2 on the unimodal labels of ``slots`` move toward
        the labels generated with the current centres, then the features are stored and the centres recomputed.
        Rows where a modality is absent (``present`` False) keep its label and stored feature."""
        features = {k: v.detach().float() for k, v in features.items()}
        if epoch >= FIRST_UPDATE_EPOCH and all(c is not None for c in self.centres.get("fusion", (None,))):
            y_m = self.labels["fusion"][slots]
            alpha_m = relative_distance(features["fusion"], *self.centres["fusion"])
            for m in self.modalities:
                centres = self.centres.get(m, (None, None))
                if centres[0] is None or centres[1] is None:
                    continue
                alpha_s = relative_distance(features[m], *centres)
                moved = momentum_update(self.labels[m][slots], generated_labels(y_m, alpha_m, alpha_s, self.bound), epoch)
                self.labels[m][slots] = torch.where(present[m], moved, self.labels[m][slots])
        for key, f in features.items():
            keep = present[key]
            self.features[key][slots[keep]] = f[keep]
            self.seen[key][slots[keep]] = True
            seen = self.seen[key]
            self.centres[key] = class_centres(self.features[key][seen], self.labels[key][seen], self.exclude_zero)


@register("fusion", "self_mm")
class SelfMMFusion(nn.Module):
    """Self-MM (Yu et al., AAAI 2021): unimodal heads trained jointly on self-supervised labels from class centres.

    The fused vector: the masked means of the three encoders, concatenated, then Dropout and ``num_layers``
    Linear→ReLU layers (``d_model`` wide: the paper's ``Feature_f``); the model's shared heads predict the
    multimodal score from it (the multimodal task: the ordinary L1 loss on ``y_m``). In training only, per
    modality a feature network (the zoo's :class:`~mmsenti.models.zoo.subnets.UnimodalSubnets`,
    ``text_hidden`` / ``audio_hidden`` / ``vision_hidden`` wide: ``Feature_s``) and a head (Linear→ReLU→Linear)
    predict the unimodal score; :meth:`auxiliary_losses` returns, weighted by ``{text,audio,vision}_weight``,
    the paper's weighted L1 ``mean(tanh(|y_s - y_m|) · |ŷ_s - y_s|)`` per modality, and then updates the
    per-sample unimodal labels :class:`UnimodalLabelStore` (the rule in the module docstring). The unimodal
    branches are not in the exported graph: eval mode computes the fused vector only.

    Design: the label store and the centres live in this module (a plain attribute, not module state: see
    :class:`UnimodalLabelStore`); the LightningModule's loss hook hands it the batch's labels, sample ids
    (``SentimentBatch.ids``, the stable per-sample index) and the epoch (from 1). Samples with a NaN label
    (a distillation transfer set) are left out.

    Deviations from the paper:

    * Encoders: the paper's text feature is BERT's [CLS] state and its audio / visual features the final
      states of an LSTM; here they are the masked means of the model's encoders (whichever they are).
    * Widths and depth: the authors' MOSI setting has a 128-wide fused feature and 32 / 16 / 32 unimodal
      ones with one Linear→ReLU each; the defaults here are ``d_model`` 64 and 32 / 16 / 32, and
      ``num_layers`` (the paper's 1; ``experiment=mosi_fusion`` sets 2) for the fused and unimodal networks.
    * The multimodal head is :class:`~mmsenti.models.SentimentModel`'s shared head (its bounded score), the
      paper's is Linear→ReLU→Linear; the unimodal heads are the paper's.
    * Modalities: any subset the model was built with (text always); a sample without a modality leaves
      that modality's loss and its label / stored feature out.
    * The label store is not checkpointed (the paper trains in one run).
    """

    def __init__(self, input_dims: dict[str, int], d_model: int = 64, text_hidden: int = 32, audio_hidden: int = 16,
                 vision_hidden: int = 32, num_layers: int = 1, dropout: float = 0.1, text_weight: float = 1.0,
                 audio_weight: float = 1.0, vision_weight: float = 1.0, label_bound: float = 3.0, exclude_zero: bool = True):
        super().__init__()
        if num_layers < 1:
            raise MmsentiError(f"model.net.fusion.num_layers={num_layers}: Self-MM's feature networks need at least 1 layer")
        if label_bound <= 0:
            raise MmsentiError(f"model.net.fusion.label_bound={label_bound}: must be > 0 (the label range, 3 on MOSI)")
        self.subnets = UnimodalSubnets(input_dims, {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden},
                                       num_layers, dropout)
        self.modalities = self.subnets.modalities
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = sum(input_dims[m] for m in self.modalities)
        for _ in range(num_layers):
            layers += [nn.Linear(width, d_model), nn.ReLU()]
            width = d_model
        self.post_fusion = nn.Sequential(*layers)
        self.unimodal_heads = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(self.subnets.dims[m], self.subnets.dims[m]), nn.ReLU(), nn.Linear(self.subnets.dims[m], 1))
            for m in self.modalities})
        self.weights = {"text": float(text_weight), "audio": float(audio_weight), "vision": float(vision_weight)}
        self.store = UnimodalLabelStore(self.modalities, exclude_zero, label_bound)
        self.out_dim = d_model
        self._kept: dict[str, object] | None = None  # the last training forward's features, for auxiliary_losses

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        fused = self.post_fusion(torch.cat([masked_pool(states[m], masks[m].bool()) for m in self.modalities], dim=-1))
        if self.training and torch.is_grad_enabled():
            self._kept = {"fusion": fused, "unimodal": self.subnets(states, masks),
                          "present": {m: masks[m].bool().any(dim=1) for m in self.modalities}}
        return fused

    def auxiliary_losses(self, labels: torch.Tensor, ids: list[str] | None = None, epoch: int = 1) -> dict[str, tuple[float, torch.Tensor]]:
        """``loss_selfmm_<modality> -> (weight, value)`` of the last training forward; then the label store steps."""
        kept, self._kept = self._kept, None  # used once: the graph is not held past the step
        if kept is None:
            return {}
        if not ids or len(ids) != len(labels):
            raise MmsentiError("self_mm needs a stable id per sample (SentimentBatch.ids) to keep its unimodal labels; "
                               "the batch has none: build it with SentimentCollator")
        known = ~torch.isnan(labels)
        rows = known.nonzero().flatten()
        fused = kept["fusion"][rows]
        unimodal = {m: h[rows] for m, h in kept["unimodal"].items()}
        present = {"fusion": torch.ones(len(rows), dtype=torch.bool, device=labels.device),
                   **{m: p[rows] for m, p in kept["present"].items()}}
        zero = kept["fusion"].sum() * 0.0
        if len(rows) == 0:
            return {f"loss_selfmm_{m}": (self.weights[m], zero) for m in self.modalities}
        y_m = labels[rows].float()
        widths = {"fusion": fused.shape[1], **{m: h.shape[1] for m, h in unimodal.items()}}
        slots = self.store.slots([ids[i] for i in rows.tolist()], y_m, widths)
        terms = {}
        for m in self.modalities:
            y_s = self.store.labels[m][slots]
            weight = torch.tanh((y_s - self.store.labels["fusion"][slots]).abs())
            predicted = self.unimodal_heads[m](unimodal[m]).squeeze(-1)
            error = weight * (predicted - y_s).abs() * present[m].to(predicted.dtype)
            terms[f"loss_selfmm_{m}"] = (self.weights[m], error.sum() / present[m].sum().clamp(min=1) + zero)
        self.store.update(slots, {"fusion": fused, **unimodal}, present, epoch)
        return terms
