"""``misa``: Modality-Invariant and -Specific Representations.

Hazarika, Zimmermann, Poria. *MISA: Modality-Invariant and -Specific Representations for Multimodal
Sentiment Analysis.* ACM MM 2020 (https://arxiv.org/abs/2005.03545); the authors' code is
declare-lab/MISA (``models.py``, ``solver.py``, ``utils/functions.py``).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.attention import TransformerEncoder, TransformerEncoderLayer
from mmsenti.models.zoo.subnets import ORDER, masked_pool
from mmsenti.registry import register


def cmd(x1: torch.Tensor, x2: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central Moment Discrepancy (Zellinger et al., ICLR 2017) of two samples ``[N, d]``, as MISA's code computes it.

    ``||E(x1) - E(x2)||_2 + Σ_{k=2..K} ||c_k(x1) - c_k(x2)||_2`` with ``c_k(x) = E((x - E(x))^k)`` taken per
    dimension over the rows. The paper's ``1 / |b - a|^k`` scaling is 1 here: MISA's invariant
    representations are sigmoid outputs, in ``[0, 1]``. Equal samples give 0; ``x2 = x1 + c`` gives ``||c||_2``."""
    m1, m2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - m1, x2 - m2
    total = torch.linalg.vector_norm(m1 - m2)
    for k in range(2, moments + 1):
        total = total + torch.linalg.vector_norm(c1.pow(k).mean(0) - c2.pow(k).mean(0))
    return total


def difference_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MISA's soft orthogonality ``||A^T B||_F^2`` between two representations ``[N, d]`` (its code's ``DiffLoss``).

    As in the authors' code, each matrix is first centred over the rows (zero mean per dimension) and
    each row scaled to unit L2 norm (the norm detached, +1e-6), and the squared Frobenius norm is
    averaged over the ``d_a · d_b`` entries of ``A^T B``: 0 when the columns of A and B are orthogonal
    over the batch; for ``A = B`` with one non-zero column of ``±1`` over ``N`` rows it is ``N² / d²``."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a = a / (torch.linalg.vector_norm(a, dim=1, keepdim=True).detach() + 1e-6)
    b = b / (torch.linalg.vector_norm(b, dim=1, keepdim=True).detach() + 1e-6)
    return (a.t() @ b).pow(2).mean()


@register("fusion", "misa")
class MISAFusion(nn.Module):
    """MISA (Hazarika et al., ACM MM 2020): invariant and specific subspaces; CMD, orthogonality, reconstruction losses.

    Per modality the utterance vector (the masked mean of its encoder's states) is projected to ``d_model``
    (Linear→ReLU→LayerNorm: ``u_m``); one *shared* encoder (Linear→Sigmoid, the same for every modality)
    gives the invariant ``s_m``, a *private* encoder per modality (Linear→Sigmoid) the specific ``p_m``. The
    fused vector: a transformer over the six vectors ``[p_t, p_a, p_v, s_t, s_a, s_v]`` (a sequence of 6),
    its outputs concatenated (``6·d_model``), then Linear(6d → 3d)→Dropout→ReLU (``out_dim = 3·d_model``).

    Training-only terms (:meth:`auxiliary_losses`, added by the LightningModule's loss hook with these
    weights; the paper's ``L = L_task + α L_sim + β L_diff + γ L_recon``):

    * ``loss_misa_sim`` (``sim_weight``, α): :func:`cmd` with ``cmd_moments`` (5, as in the authors' code)
      between the invariant vectors of each modality pair, averaged over the pairs;
    * ``loss_misa_diff`` (``diff_weight``, β): :func:`difference_loss` between ``s_m`` and ``p_m`` of each
      modality and between each pair of private vectors, summed;
    * ``loss_misa_recon`` (``recon_weight``, γ): MSE between ``u_m`` and a per-modality decoder (Linear) of
      ``s_m + p_m``, averaged over the modalities.

    The weights default to the authors' code (``config.py``: ``sim_weight`` 1.0, ``diff_weight`` 0.3,
    ``recon_weight`` 1.0). The decoders and the losses run only in training mode with gradients on, so
    the exported graph (eval mode) is the prediction path alone.

    Deviations from the paper:

    * Utterance vectors: the paper's text vector is BERT's masked mean of token states (the same here, over
      whichever text encoder the model has); its audio / visual vectors are the final states of a 2-layer
      bidirectional LSTM over the features. Here they are the masked mean of the model's frame encoders.
    * No adversarial discriminator (the paper's alternative to CMD, off in its reported setting) and no
      shared/private discriminator (``sp_weight`` 0 in the authors' code).
    * The output: the paper's fusion MLP ends in Linear(3d → 1); here the ``3·d_model`` vector goes to
      :class:`~mmsenti.models.SentimentModel`'s shared heads (the same for every fusion).
    * A missing modality (all-false mask) gives ``u_m = 0``, and the losses are computed over the samples
      that have every modality (the paper's data always has all three); a batch with none gives 0.
    * Modalities: any subset the model was built with, always including text; the paper has three.
    * ``num_layers`` transformer layers (the paper: 1; ``experiment=mosi_fusion`` sets 2), ``num_heads`` 2
      and post-norm layers as in the authors' code (``nn.TransformerEncoderLayer``'s defaults, feed-forward
      ``dim_feedforward`` = 2048 wide there and here).
    """

    def __init__(self, input_dims: dict[str, int], d_model: int = 64, num_layers: int = 1, num_heads: int = 2,
                 dim_feedforward: int = 2048, dropout: float = 0.1, sim_weight: float = 1.0, diff_weight: float = 0.3,
                 recon_weight: float = 1.0, cmd_moments: int = 5):
        super().__init__()
        unknown = [m for m in input_dims if m not in ORDER]
        if unknown:
            raise MmsentiError(f"fusion input modalities {unknown}: only {list(ORDER)} are known")
        if num_layers < 1:
            raise MmsentiError(f"model.net.fusion.num_layers={num_layers}: MISA's fusion transformer needs at least 1 layer")
        if d_model % num_heads:
            raise MmsentiError(f"model.net.fusion.d_model={d_model} is not divisible by num_heads={num_heads}")
        if cmd_moments < 1:
            raise MmsentiError(f"model.net.fusion.cmd_moments={cmd_moments}: must be at least 1")
        self.modalities = [m for m in ORDER if m in input_dims]
        self.weights = {"sim": float(sim_weight), "diff": float(diff_weight), "recon": float(recon_weight)}
        self.cmd_moments = cmd_moments
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(input_dims[m], d_model), nn.ReLU(), nn.LayerNorm(d_model))
                                      for m in self.modalities})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d_model, d_model), nn.Sigmoid()) for m in self.modalities})
        self.shared = nn.Sequential(nn.Linear(d_model, d_model), nn.Sigmoid())
        self.reconstruct = nn.ModuleDict({m: nn.Linear(d_model, d_model) for m in self.modalities})
        self.transformer = TransformerEncoder(
            TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout, norm_first=False), num_layers)
        n = 2 * len(self.modalities)
        self.fusion = nn.Sequential(nn.Linear(n * d_model, n * d_model // 2), nn.Dropout(dropout), nn.ReLU())
        self.out_dim = n * d_model // 2
        self._kept: dict[str, object] | None = None  # the last training forward's vectors, for auxiliary_losses

    def representations(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        """``(u, s, p, present)``: per modality the projected utterance ``[B, d]``, invariant and specific vectors,
        and whether it has any valid step ``[B]``."""
        u, s, p, present = {}, {}, {}, {}
        for m in self.modalities:
            mask = masks[m].bool()
            present[m] = mask.any(dim=1)
            u[m] = self.project[m](masked_pool(states[m], mask))  # an all-false row pools to 0
            s[m] = self.shared(u[m])
            p[m] = self.private[m](u[m])
        return u, s, p, present

    def forward(self, states: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        u, s, p, present = self.representations(states, masks)
        if self.training and torch.is_grad_enabled():
            self._kept = {"u": u, "s": s, "p": p, "present": present}
        h = torch.stack([p[m] for m in self.modalities] + [s[m] for m in self.modalities], dim=1)  # [B, 2M, d]
        h = self.transformer(h)
        return self.fusion(h.flatten(1))

    def losses(self, u: dict[str, torch.Tensor], s: dict[str, torch.Tensor], p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MISA's three loss terms (unweighted) from the vectors of :meth:`representations` (see the class docstring)."""
        pairs = list(itertools.combinations(self.modalities, 2))
        zero = u[self.modalities[0]].sum() * 0.0
        sim = sum((cmd(s[a], s[b], self.cmd_moments) for a, b in pairs), zero) / max(1, len(pairs))
        diff = sum((difference_loss(p[m], s[m]) for m in self.modalities), zero)
        diff = sum((difference_loss(p[a], p[b]) for a, b in pairs), diff)
        recon = sum(((self.reconstruct[m](s[m] + p[m]) - u[m]).pow(2).mean() for m in self.modalities), zero)
        return {"sim": sim, "diff": diff, "recon": recon / len(self.modalities)}

    def auxiliary_losses(self, labels: torch.Tensor, ids: list[str] | None = None, epoch: int = 1) -> dict[str, tuple[float, torch.Tensor]]:
        """``loss_misa_{sim,diff,recon} -> (weight, value)`` of the last training forward pass (none without one)."""
        kept, self._kept = self._kept, None  # used once: the graph is not held past the step
        if kept is None:
            return {}
        complete = torch.stack([kept["present"][m] for m in self.modalities]).all(0)
        u, s, p = ({m: v[m][complete] for m in self.modalities} for v in (kept["u"], kept["s"], kept["p"]))
        if int(complete.sum()) == 0:
            zero = kept["u"][self.modalities[0]].sum() * 0.0
            terms = {k: zero for k in self.weights}
        else:
            terms = self.losses(u, s, p)
        return {f"loss_misa_{k}": (self.weights[k], v) for k, v in terms.items()}
