"""Student text backbones that are not Hugging Face transformers.

The other students need no code of their own:

* a **shallower transformer initialised from the teacher's layers** (DistilBERT-style) is
  ``model.net.text_encoder.keep_layers=[0,2,4]`` (``model/text_encoder=minilm_l3``), optionally
  re-initialised from a fine-tuned teacher checkpoint with ``distill.student_init=teacher``;
* **any HF model** is ``model.net.text_encoder.pretrained=<alias | folder | hub id>``.

A backbone here is built by :class:`~mmsenti.models.encoders.TextEncoder` when
``model.net.text_encoder.architecture`` names it, and behaves like an HF encoder where the model needs
it: ``config.hidden_size``, ``get_input_embeddings()`` and ``forward(input_ids, attention_mask)``
returning an object with ``last_hidden_state``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.encoders import bidirectional_lstm
from mmsenti.pretrained import load_pretrained
from mmsenti.registry import register


@register("text_backbone", "bilstm")
class BiLSTMTextBackbone(nn.Module):
    """A bidirectional LSTM over the word embeddings of a pretrained (teacher) encoder.

    The embedding table is copied from ``pretrained`` (so the student shares the teacher's
    tokenizer and starts from its lexical knowledge); ``model.net.text_encoder.finetune`` says whether
    it is trained (``full``) or not (``frozen`` freezes the whole backbone).
    Padding never reaches a valid step (:func:`~mmsenti.models.encoders.bidirectional_lstm`), so it never
    changes a prediction, and the student exports to ONNX.
    """

    def __init__(self, pretrained: str = "minilm_l6", hidden_size: int = 300, num_layers: int = 1,
                 dropout: float = 0.1, pretrained_weights: bool = True):
        super().__init__()
        if hidden_size % 2:
            raise MmsentiError(f"bilstm hidden_size must be even (two directions), got {hidden_size}")
        if pretrained_weights:
            source = load_pretrained(pretrained, "model")
            table = source.get_input_embeddings().weight.detach().clone()
            pad = getattr(source.config, "pad_token_id", None)
            del source
        else:  # shapes only: a checkpoint brings the trained table
            config = load_pretrained(pretrained, "config")
            table = torch.zeros(config.vocab_size, config.hidden_size)
            pad = getattr(config, "pad_token_id", None)
        self.embeddings = nn.Embedding.from_pretrained(table, freeze=False, padding_idx=pad)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(table.shape[1], hidden_size // 2, num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        # what TextEncoder and the distillation module read from an HF backbone
        self.config = SimpleNamespace(hidden_size=hidden_size, num_hidden_layers=num_layers, vocab_size=table.shape[0],
                                      model_type="bilstm")

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> SimpleNamespace:
        x = self.dropout(self.embeddings(input_ids))
        h = bidirectional_lstm(self.lstm, x, attention_mask.sum(1).clamp(min=1))
        return SimpleNamespace(last_hidden_state=h * attention_mask.unsqueeze(-1).to(h.dtype))
