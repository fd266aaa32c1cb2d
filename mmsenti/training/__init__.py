"""Training: the LightningModule, optimisers/schedulers and the Hydra-driven train/eval tasks."""

from mmsenti.training.resolvers import register_resolvers

register_resolvers()
