"""Knowledge distillation: a teacher's soft targets (and optionally its hidden states and attention
maps) train a smaller or text-only student.

* :mod:`~mmsenti.distill.losses` — the loss terms, each a plain function of tensors;
* :mod:`~mmsenti.distill.cache` — teacher soft targets computed once per dataset and cached on disk;
* student text backbones live with the other models (:mod:`mmsenti.models.students`: a BiLSTM over
  the teacher's word embeddings); the shallower layer-initialised transformer is ``model.net.text_encoder.keep_layers``;
* :mod:`~mmsenti.distill.teacher` — the frozen teacher loaded from a checkpoint, and ``student_init=teacher``;
* :mod:`~mmsenti.distill.recording` — per-layer token states and attention maps recorded with hooks;
* :mod:`~mmsenti.distill.outputs` — the teacher's outputs on the training set, joint or with modalities averaged out;
* :mod:`~mmsenti.distill.module` — the LightningModule (``DistillSentimentLitModule``): the
  ordinary :class:`~mmsenti.training.lit_module.SentimentLitModule` (whose task, regression |
  classification, is ``model.net.task``) plus an optional frozen teacher's loss terms; for a fused teacher and a
  text-only student, the teacher's audio/vision can be averaged out of its soft targets
  (``distill.marginalize``, ``marginal_teacher_outputs``) and out of the labels (``distill.corrected_labels``).

Importing this package is cheap; the LightningModule is imported from its module.
"""
