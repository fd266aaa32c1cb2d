"""Distillation loss terms, each a plain function of tensors (hand-checkable in tests).

The total a :class:`~mmsenti.distill.module.DistillSentimentLitModule` minimises is::

    hard_weight * hard(student, labels)                     # the base module's loss (training.lit_module.hard_loss)
  + alpha * T^2 * KL(p_teacher^T || p_student^T)           # soft targets (classification, or the 7-class head)
  + score_weight * MSE(student score, teacher score)       # regression soft target
  + hidden_weight * mean_l MSE(W h_student[l], h_teacher[map(l)])     # optional, TinyBERT-style
  + attention_weight * mean_l MSE(A_student[l], A_teacher[map(l)])    # optional, TinyBERT-style

``p^T = softmax(logits / T)``. The ``T^2`` factor (Hinton et al., 2015) keeps the soft-target
gradients on the scale of the hard loss's when ``T`` changes. KL is ``batchmean`` (a sum over
classes, a mean over samples), the convention under which the ``T^2`` argument holds.

Binary classification uses the model's one (unbounded) score ``z`` as the logit of "positive": for
the soft targets the two-class logits are ``[0, z]``, so ``softmax`` gives ``sigmoid(z)`` — the
distribution the hard loss (binary cross-entropy with logits) fits — with ``z > 0`` meaning positive
as in MOSI's Acc-2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_logits(score: torch.Tensor) -> torch.Tensor:
    """Two-class logits ``[B, 2]`` (negative, positive) from a sentiment score ``[B]`` used as the logit."""
    return torch.stack([torch.zeros_like(score), score], dim=-1)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, summed over classes, mean over the batch."""
    t = float(temperature)
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {t}")
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * t * t


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` (broadcast to the tensors) is true."""
    weight = mask.to(student.dtype)
    while weight.dim() < student.dim():
        weight = weight.unsqueeze(-1)
    weight = weight.expand_as(student)
    return ((student.float() - teacher.float()) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def hidden_state_loss(student_states: list[torch.Tensor], teacher_states: list[torch.Tensor],
                      attention_mask: torch.Tensor, projection: torch.nn.Module | None = None) -> torch.Tensor:
    """Mean over layer pairs of the token-state MSE on real (unpadded) tokens.

    ``projection`` maps the student's width to the teacher's when they differ (TinyBERT's ``W_h``,
    learned with the student).
    """
    if len(student_states) != len(teacher_states) or not student_states:
        raise ValueError(f"{len(student_states)} student vs {len(teacher_states)} teacher layers to match")
    terms = []
    for s, t in zip(student_states, teacher_states):
        if projection is not None:
            s = projection(s)
        terms.append(masked_mse(s, t, attention_mask))
    return torch.stack(terms).mean()


def attention_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor],
                   attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over layer pairs of the MSE between attention maps ``[B, H, L, L]`` on real query/key pairs.

    Head counts may differ: then the maps are averaged over heads first.
    """
    if len(student_maps) != len(teacher_maps) or not student_maps:
        raise ValueError(f"{len(student_maps)} student vs {len(teacher_maps)} teacher attention maps to match")
    valid = attention_mask.bool()
    pair_mask = (valid[:, :, None] & valid[:, None, :]).unsqueeze(1)  # [B, 1, L, L]
    terms = []
    for s, t in zip(student_maps, teacher_maps):
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        terms.append(masked_mse(s, t, pair_mask.expand(-1, s.shape[1], -1, -1)))
    return torch.stack(terms).mean()


def uniform_layer_map(num_student: int, num_teacher: int) -> list[int]:
    """Student layer ``i`` (0-based) learns from teacher layer ``round((i+1) * n_t / n_s) - 1``.

    TinyBERT's uniform mapping: the last student layer always matches the last teacher layer
    (L3 from L6: ``[1, 3, 5]``; L6 from a 12-layer teacher: ``[1, 3, 5, 7, 9, 11]``).
    """
    if num_student <= 0 or num_teacher <= 0:
        raise ValueError("layer counts must be positive")
    return [max(0, round((i + 1) * num_teacher / num_student) - 1) for i in range(num_student)]
