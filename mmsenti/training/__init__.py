"""Training: the LightningModule, optimisers/schedulers and the Hydra-driven train/eval tasks."""
