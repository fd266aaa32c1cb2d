"""``lmf``: Low-rank Multimodal Fusion.

Liu, Shen, Lakshminarasimhan, Liang, Zadeh, Morency. *Efficient Low-rank Multimodal Fusion with
Modality-Specific Factors.* ACL 2018 (https://aclanthology.org/P18-1209/).
"""

from __future__ import annotations

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.zoo.subnets import UnimodalSubnets, with_one
from mmsenti.registry import register


@register("fusion", "lmf")
class LowRankFusion(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al., ACL 2018): sum_r prod_m ([h_m;1] W_m^(r)) + b, modality-specific factors.

    The same unimodal subnetworks as ``tfn`` give ``h_m``; each modality has factors ``W_m`` of shape
    ``[rank, d_m + 1, d_model]``, and the fused vector is ``Σ_r (Π_m [h_m; 1] · W_m^(r)) + b`` (the product
    elementwise over the modalities), ``out_dim = d_model``. This equals a Linear layer on TFN's outer product
    whose weight tensor has CP rank ``rank`` — at full rank ``(dt+1)(da+1)(dv+1)`` any Linear layer — without
    ever building the outer product. A missing modality (all-false mask) gives ``h_m = 0``, so its factor
    contributes only its constant row ``W_m^(r)[d_m]``, as in TFN.

    Deviations from the paper:

    * The unimodal subnetworks: the paper's (TFN's) LSTM for text and DNNs for audio / visual are replaced
      by the masked mean of each modality encoder's states followed by ``num_layers`` Linear→ReLU→Dropout
      layers (the model's encoders already give sequences); widths default to 32 / 8 / 8.
    * No per-rank fusion weights: the authors' code also scales each rank-1 term by a learnt weight
      ``w_r`` before the sum; it is redundant (absorbed into any one modality's factor) and left out.
    * The constant 1 is appended (``[h; 1]``, the authors' code prepends it): a permutation of the
      factors' rows.
    * The output: in the paper the fused vector is the prediction (``d_model`` = the output size);
      here the ``d_model`` vector goes to :class:`~mmsenti.models.SentimentModel`'s shared heads.
    * Modalities: any subset the model was built with, always including text; the paper has three.
    * Initialisation: factors Xavier-normal as in the authors' code, the bias zero (theirs is 0 too).
    """

    def __init__(self, input_dims: dict[str, int], text_hidden: int = 32, audio_hidden: int = 8, vision_hidden: int = 8,
                 rank: int = 4, d_model: int = 64, num_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        if rank < 1:
            raise MmsentiError(f"model.net.fusion.rank={rank}: must be at least 1")
        self.subnets = UnimodalSubnets(input_dims, {"text": text_hidden, "audio": audio_hidden, "vision": vision_hidden},
                                       num_layers, dropout)
        self.modalities = self.subnets.modalities
        self.rank = rank
        self.factors = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, self.subnets.dims[m] + 1, d_model)))
            for m in self.modalities
        })
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.out_dim = d_model

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        hs = self.subnets(states, masks)
        fused = None
        for m in self.modalities:
            term = torch.matmul(with_one(hs[m]), self.factors[m])  # [B, d+1] @ [r, d+1, out] -> [r, B, out]
            fused = term if fused is None else fused * term
        return fused.sum(0) + self.bias
