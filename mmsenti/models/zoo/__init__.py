"""The fusion zoo: published fusion models as drop-in ``model/fusion=<name>`` choices.

Each model lives in its own module and registers itself (``@register("fusion", name)``); the registry
imports these modules for the ``fusion`` kind (:data:`mmsenti.registry.PROVIDERS`). Every model takes the
interface of :mod:`mmsenti.models.fusion` — ``states: dict[modality, [B, T, d]]``, ``masks: dict[modality,
[B, T] bool]`` → ``[B, out_dim]`` — and its docstring cites the paper and lists every deviation from it.

* ``tfn`` — Tensor Fusion Network (Zadeh et al., EMNLP 2017): :mod:`mmsenti.models.zoo.tfn`.
* ``lmf`` — Low-rank Multimodal Fusion (Liu et al., ACL 2018): :mod:`mmsenti.models.zoo.lmf`.
* ``misa`` — MISA, modality-invariant and -specific subspaces (Hazarika et al., ACM MM 2020):
  :mod:`mmsenti.models.zoo.misa`.
* ``self_mm`` — Self-MM, self-supervised unimodal labels (Yu et al., AAAI 2021): :mod:`mmsenti.models.zoo.self_mm`.
* ``mult_paper`` — the Multimodal Transformer as published (Tsai et al., ACL 2019), beside the project's masked
  ``mult``: :mod:`mmsenti.models.zoo.mult_paper`.

A model with training-only loss terms (``misa``, ``self_mm``) has ``auxiliary_losses(labels, ids, epoch)``,
returning ``name -> (weight, value)`` from what its last training forward pass kept (in training mode with
gradients on only, so the exported eval-mode graph is the prediction path alone); the LightningModule's
loss hook (:meth:`mmsenti.training.lit_module.SentimentLitModule.fusion_losses`) adds them to the objective.
"""
