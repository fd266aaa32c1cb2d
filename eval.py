"""Evaluate a checkpoint: ``python eval.py ckpt_path=<file.ckpt> experiment=mosi_fusion``."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import mmsenti.training  # noqa: F401  (registers the config resolvers)

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from mmsenti.training.tasks import evaluate, run_safely

    run_safely(evaluate, cfg)


if __name__ == "__main__":
    main()
