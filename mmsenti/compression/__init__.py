"""Compression of :class:`~mmsenti.models.SentimentModel`: pruning while fine-tuning, and reports.

* :mod:`.unstructured` — L1 magnitude pruning (``torch.nn.utils.prune``, Lightning ``ModelPruning``
  on a schedule), made permanent before export; buys size, not dense speed.
* :mod:`.structured` — FFN neurons and attention heads masked while fine-tuning, then physically
  removed (smaller matrices, faster dense kernels).

Hydra: ``compression=none | prune_l1 | prune_structured`` (``configs/compression/``).
"""

from mmsenti.compression.structured import StructuredPruning, prune_structured, shrink, structure_report
from mmsenti.compression.unstructured import ScheduledL1Pruning, l1_prune, make_permanent, sparsity_report

__all__ = ["StructuredPruning", "ScheduledL1Pruning", "l1_prune", "make_permanent", "prune_structured", "shrink",
           "sparsity_report", "structure_report"]
