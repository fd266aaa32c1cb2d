"""The frozen teacher of distillation: loaded from any mmsenti checkpoint, and copied into a student.

:func:`load_teacher` goes through the one checkpoint loader (:mod:`mmsenti.models.checkpoint`);
:func:`init_student_from_teacher` is the DistilBERT-style ``distill.student_init=teacher``.
Knows nothing of Lightning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.models import SentimentModel

__all__ = ["init_student_from_teacher", "load_teacher"]


def load_teacher(ckpt_path: str | Path) -> tuple[SentimentModel, dict[str, Any]]:
    """The teacher of any mmsenti Lightning checkpoint (the one loader), frozen, in eval mode."""
    from mmsenti.models.checkpoint import load_sentiment_checkpoint

    if not Path(ckpt_path).is_file():
        raise MmsentiError(f"distill.teacher_ckpt={ckpt_path}: no such file (train a teacher first, e.g. experiment=sst2_teacher)")
    loaded = load_sentiment_checkpoint(ckpt_path, what="distill.teacher_ckpt")
    net = loaded.model
    for p in net.parameters():
        p.requires_grad_(False)
    hparams = {**loaded.extras["hparams"], **loaded.model_config.to_dict()}
    return net, hparams


def init_student_from_teacher(student: SentimentModel, teacher: SentimentModel, keep_layers: list[int] | None) -> list[str]:
    """DistilBERT-style initialisation: copy the teacher's weights into the student where they fit.

    Student transformer layer ``i`` takes teacher layer ``keep_layers[i]`` (every layer ``i`` when
    ``keep_layers`` is None); embeddings and every other text-encoder tensor of the same name and
    shape are copied; the input embedding table is copied into any student with a table of the
    same shape (the BiLSTM student). The head is copied only when both models pool the same way.
    Returns the names of the copied student tensors.
    """
    s_state, t_state = student.state_dict(), teacher.state_dict()
    layer_re = re.compile(r"^(text_encoder\.backbone\.(?:encoder\.layer|transformer\.layer|layers)\.)(\d+)(\..+)$")
    heads = [n for n in s_state if n.startswith(("head.", "head_7."))]
    same_head = (teacher.config.fusion.get("name") == student.config.fusion.get("name")
                 and list(teacher.config.modalities) == list(student.config.modalities)
                 and all(n in t_state and t_state[n].shape == s_state[n].shape for n in heads))
    updated, copied = dict(s_state), []
    for name, tensor in s_state.items():
        if not (name.startswith("text_encoder.") or (same_head and name in heads)):
            continue
        source = name
        match = layer_re.match(name)
        if match and keep_layers is not None:
            source = f"{match[1]}{int(keep_layers[int(match[2])])}{match[3]}"
        if source in t_state and t_state[source].shape == tensor.shape:
            updated[name] = t_state[source].clone()
            copied.append(name)
    s_emb, t_emb = student.text_encoder.backbone.get_input_embeddings(), teacher.text_encoder.backbone.get_input_embeddings()
    s_emb_name = next(n for n, p in student.named_parameters() if p is s_emb.weight)
    if s_emb_name not in copied and s_emb.weight.shape == t_emb.weight.shape:
        updated[s_emb_name] = t_emb.weight.detach().clone()
        copied.append(s_emb_name)
    if not copied:
        raise MmsentiError("distill.student_init=teacher: no student tensor matches the teacher's (different architectures); "
                           "use student_init=pretrained")
    student.load_state_dict(updated)
    return copied
