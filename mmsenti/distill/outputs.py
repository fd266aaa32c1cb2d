"""The teacher's outputs on the training set: joint (:func:`teacher_outputs`) and with modalities
averaged out (:func:`marginal_teacher_outputs`), the soft targets :mod:`mmsenti.distill.cache` stores.
Knows nothing of Lightning.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from mmsenti.data.batch import SentimentCollator
from mmsenti.models import SentimentModel

log = logging.getLogger(__name__)

__all__ = ["marginal_teacher_outputs", "teacher_outputs"]


@torch.no_grad()
def teacher_outputs(teacher: SentimentModel, samples: list[dict], collator: SentimentCollator, batch_size: int,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the teacher over samples (longest-first batches, to waste little on padding), in sample order."""
    was_training = teacher.training
    teacher.eval()
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i].get("text") or ""))
    scores = torch.empty(len(samples))
    logits: torch.Tensor | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = collator([samples[i] for i in rows]).to(device)
        out = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask, audio=batch.audio,
                      audio_mask=batch.audio_mask, vision=batch.vision, vision_mask=batch.vision_mask)
        index = torch.tensor(rows)
        scores[index] = out.score.float().cpu()
        if out.logits_7 is not None:
            if logits is None:
                logits = torch.empty(len(samples), out.logits_7.shape[-1])
            logits[index] = out.logits_7.float().cpu()
    teacher.train(was_training)
    return scores, logits


def marginal_teacher_outputs(teacher: SentimentModel, samples: list[dict], collator: SentimentCollator, batch_size: int,
                             device: torch.device | str, modalities: list[str], draws: int, temperature: float,
                             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's outputs with ``modalities`` averaged out: what it predicts from the rest alone.

    For each sample *i* the teacher sees *i*'s text (and any modality not listed) with the listed
    modalities of another training sample, drawn ``draws`` times (a seeded permutation per draw);
    scores are averaged, the 7-class head's distributions at ``temperature`` are averaged and
    returned as logits whose ``softmax(. / temperature)`` is that mean. This is the teacher's
    partial dependence on the student's inputs, ``E_{a,v}[f(t, a, v)]``: for a student that sees
    text only it keeps what the fused teacher learnt about text and drops the part of the label
    that audio and video explain, which the student cannot predict and would only fit as noise.
    (Where modalities are correlated, the hard-label loss still carries ``E[y | t]``.)
    """
    rng = np.random.default_rng(seed)
    score_sum = torch.zeros(len(samples))
    prob_sum: torch.Tensor | None = None
    for draw in range(draws):
        donors = rng.permutation(len(samples))
        mixed = [{**s, **{m: samples[int(j)].get(m) for m in modalities}} for s, j in zip(samples, donors)]
        score, logits_7 = teacher_outputs(teacher, mixed, collator, batch_size, device)
        score_sum += score
        if logits_7 is not None:
            probs = torch.softmax(logits_7 / temperature, dim=-1)
            prob_sum = probs if prob_sum is None else prob_sum + probs
        log.info("teacher soft targets: %s averaged out, draw %d/%d", "+".join(modalities), draw + 1, draws)
    logits = None if prob_sum is None else temperature * torch.log((prob_sum / draws).clamp_min(1e-12))
    return score_sum / draws, logits
