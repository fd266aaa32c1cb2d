"""The fusion zoo: published fusion models as drop-in ``model/fusion=<name>`` choices.

Each model lives in its own module and registers itself (``@register("fusion", name)``); the registry
imports these modules for the ``fusion`` kind (:data:`mmsenti.registry.PROVIDERS`). Every model takes the
interface of :mod:`mmsenti.models.fusion` — ``states: dict[modality, [B, T, d]]``, ``masks: dict[modality,
[B, T] bool]`` → ``[B, out_dim]`` — and its docstring cites the paper and lists every deviation from it.

* ``tfn`` — Tensor Fusion Network (Zadeh et al., EMNLP 2017): :mod:`mmsenti.models.zoo.tfn`.
* ``lmf`` — Low-rank Multimodal Fusion (Liu et al., ACL 2018): :mod:`mmsenti.models.zoo.lmf`.
"""
