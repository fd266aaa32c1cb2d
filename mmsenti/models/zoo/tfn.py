"""``tfn``: Tensor Fusion Network.

Zadeh, Chen, Poria, Cambria, Morency. *Tensor Fusion Network for Multimodal Sentiment Analysis.*
EMNLP 2017 (https://aclanthology.org/D17-1115/).
"""

from __future__ import annotations

import torch
from torch import nn

from mmsenti.models.zoo.subnets import UnimodalSubnets, with_one
from mmsenti.registry import register


def outer_product(hs: list[torch.Tensor]) -> torch.Tensor:
    """Flattened outer product of ``[h_1; 1] ⊗ [h_2; 1] ⊗ ...`` over the batch: ``[B, Π (d_m + 1)]``.

    Row-major order, the first modality outermost and the last fastest: for text, audio, vision the entry
    of ``([h_t;1])_i ([h_a;1])_j ([h_v;1])_k`` is at ``(i·(da+1) + j)·(dv+1) + k``. With ``dt = da = dv = 1``
    and scalars ``t, a, v`` the vector is ``[t·a·v, t·a, t·v, t, a·v, a, v, 1]``: the trimodal term first, the
    constant 1 last, the unimodal and bimodal terms between."""
    z = with_one(hs[0])
    for h in hs[1:]:
        h1 = with_one(h)
        # [B, n, 1] * [B, 1, d+1], flattened to a fixed width (a batched MatMul chain here made ONNX Runtime's
        # buffer planner reuse one output's shape for the next, wider one)
        z = (z.unsqueeze(2) * h1.unsqueeze(1)).reshape(-1, z.shape[1] * h1.shape[1])
    return z


@register("fusion", "tfn")
class TensorFusion(nn.Module):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017): outer product [h_t;1] x [h_a;1] x [h_v;1], then an MLP.

    Per modality a subnetwork gives ``h_m`` (``text_hidden`` / ``audio_hidden`` / ``vision_hidden`` wide);
    the fusion vector is the flattened outer product of the ``[h_m; 1]`` (:func:`outer_product`, size
    ``(dt+1)(da+1)(dv+1)``), which holds every unimodal, bimodal and trimodal product term; then dropout and
    a post-fusion MLP of two ``d_model``-wide Linear→ReLU layers (``out_dim = d_model``).

    A missing modality (an all-false mask row) gives ``h_m = 0``, so its ``[h_m; 1]`` is ``[0, ..., 0, 1]``:
    every term with it vanishes, and the other modalities' unimodal and bimodal terms stay (the constant 1
    is what keeps them). What masked frames hold never reaches the output.

    Deviations from the paper:

    * The modality embedding subnetworks: the paper's text subnetwork is an LSTM over word vectors
      followed by fully connected layers, and its audio / visual subnetworks are 3-layer DNNs over the
      features averaged over the utterance. Here the model's modality encoders already give sequences,
      so each subnetwork is the masked mean of its encoder's states over the valid steps followed by
      ``num_layers`` Linear→ReLU→Dropout layers (default 2).
    * Widths: the paper uses 128 for text and 32 for audio / visual and 128 in the post-fusion layers;
      the defaults here are the smaller MMSA-style 32 / 8 / 8 and 64 (``configs/model/fusion/tfn.yaml``).
    * Order and position of the constant: ``[h; 1]`` appends the 1 last (the authors' code prepends it)
      and the product runs text ⊗ audio ⊗ vision (their code: audio ⊗ video ⊗ text). Both only permute
      the entries of the fusion vector, which the next Linear layer absorbs.
    * The output: the paper's post-fusion network ends in its own sentiment output layer; here the
      post-fusion MLP's ``d_model`` vector goes to :class:`~mmsenti.models.SentimentModel`'s shared heads
      (the same for every fusion).
    * Modalities: any subset the model was built with, always including text (a text-only model fuses
      ``[h_t; 1]`` alone); the paper has exactly three.
    * One ``dropout`` rate for the subnetworks and the fusion vector (the authors' code has one per
      subnetwork and a post-fusion one).
    """

    def __init__(self, input_dims: dict[str, int], text_hidden: int = 32, audio_hidden: int = 8, vision_hidden: int = 8,
                 d_model: int = 64, num_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.subnets = UnimodalSubnets(input_dims, {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden},
                                       num_layers, dropout)
        self.modalities = self.subnets.modalities
        self.fusion_dim = 1
        for m in self.modalities:
            self.fusion_dim *= self.subnets.dims[m] + 1
        self.dropout = nn.Dropout(dropout)
        self.post_fusion = nn.Sequential(nn.Linear(self.fusion_dim, d_model), nn.ReLU(), nn.Dropout(dropout),
                                         nn.Linear(d_model, d_model), nn.ReLU())
        self.out_dim = d_model

    def fuse(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flattened fusion tensor ``[B, (dt+1)(da+1)(dv+1)]``, before dropout and the post-fusion MLP."""
        hs = self.subnets(states, masks)
        return outer_product([hs[m] for m in self.modalities])

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.post_fusion(self.dropout(self.fuse(states, masks)))
