"""Compression of :class:`~mmsenti.models.SentimentModel`: pruning while fine-tuning, and reports.

* :mod:`.unstructured` — L1 magnitude pruning (``torch.nn.utils.prune``, Lightning ``ModelPruning``
  on a schedule), made permanent before export; buys size, not dense speed.
* :mod:`.structured` — FFN neurons and attention heads masked while fine-tuning, then physically
  removed (smaller matrices, faster dense kernels).
* :mod:`.lowrank` — ``nn.Linear`` layers replaced by two thin layers from a truncated SVD (rank by
  retained spectral energy or a global parameter budget), then fine-tuned; composes with both
  (prune, then factorise; INT8 at export).

Hydra: ``compression=none | prune_l1 | prune_structured | lowrank`` (``configs/compression/``).
"""

from mmsenti.compression.lowrank import LowRankFactorisation, factorise, low_rank_report
from mmsenti.compression.structured import StructuredPruning, prune_structured, shrink, structure_report
from mmsenti.compression.unstructured import ScheduledL1Pruning, l1_prune, make_permanent, sparsity_report

__all__ = ["LowRankFactorisation", "StructuredPruning", "ScheduledL1Pruning", "factorise", "l1_prune", "low_rank_report",
           "make_permanent", "prune_structured", "shrink", "sparsity_report", "structure_report"]
