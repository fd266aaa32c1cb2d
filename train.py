"""Train a model: ``python train.py experiment=mosi_fusion`` (Hydra; see configs/train.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import mmsenti.training  # noqa: F401  (registers the config resolvers)

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | list[float] | None:
    from mmsenti.training.tasks import optimized_value, run_safely, train

    metrics, _ = run_safely(train, cfg)
    return run_safely(optimized_value, cfg, metrics)


if __name__ == "__main__":
    main()
