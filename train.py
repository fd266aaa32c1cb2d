"""Train a model: ``python train.py experiment=mosi_fusion`` (Hydra; see configs/train.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
(Path(os.environ["PROJECT_ROOT"]) / "logs").mkdir(exist_ok=True)  # sqlite stores (Optuna, MLflow) live here


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from mmsenti.training.tasks import optimized_value, run_safely, train

    metrics, _ = run_safely(train, cfg)
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
