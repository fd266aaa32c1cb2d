"""The frozen-prefix cache, measured: one ``mosi_fusion`` training epoch (train + validation) with the cache
off and on, side by side in one run. Prints JSON (and writes it with --out).

The real measurement (a quiet machine, 2 cores, the full synthetic MOSI set: 2,199 segments)::

    python benchmarks/bench_prefix_cache.py --threads 2 --repeats 2 --out experiments/prefix_cache_bench.json

A smoke run (seconds)::

    python benchmarks/bench_prefix_cache.py --threads 2 trainer.limit_train_batches=3 trainer.limit_val_batches=2 \
        data.scale=small data.root=/tmp/bench_prefix_small

Arms, each a fresh ``experiment=mosi_fusion`` training of ``--epochs`` epochs (default 2) from the same seed,
the same initial weights and the same data order (any extra ``key=value`` argument is a Hydra override of
that experiment):

* ``uncached`` — the cache switched off at run time (``PrefixCache.enabled = False``): the whole MiniLM
  encoder runs every step, its frozen part (embeddings + bottom 4 layers) in eval mode — the semantics the
  cache reproduces (:mod:`mmsenti.models.prefix_cache`);
* ``cached`` — the configs' default: epoch 1 fills the cache (every utterance a miss), epoch 2 is served
  from it (only the top 2 layers run);
* ``plain`` (``--with-plain``) — ``prefix_cache=false``, the forward of before: frozen bottom layers with
  dropout in training mode. Other numbers (another model), so only its seconds are comparable.

Reported per arm and epoch (medians over ``--repeats``; the arms' order alternates between repeats so
load changes hit both): wall seconds of training, of validation and their sum, the process CPU seconds
(less sensitive to other load on a shared machine), the validation metrics, and the cache's counters.
``speedup`` (wall) and ``speedup_cpu`` are uncached / cached per epoch (epoch 2 is the steady state the
issue's target, >= 1.6x, is about); ``val_max_abs_diff`` the largest difference of any validation metric
between uncached and cached per epoch (target <= 1e-4). Hardware, threads and versions beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from mmsenti.training.schema import check_config  # noqa: E402

ARMS = ("uncached", "cached")


class EpochClock(L.Callback):
    """Wall seconds of each epoch's training and validation phases, and the validation metrics after it."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self._marks: dict[str, float] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._marks = {"start": time.perf_counter(), "cpu_start": time.process_time()}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._marks["val_start"] = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val_start" not in self._marks:
            return
        now, marks = time.perf_counter(), self._marks
        val = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.epochs.append({"seconds": now - marks["start"], "train_seconds": marks["val_start"] - marks["start"],
                            "val_seconds": now - marks["val_start"], "cpu_seconds": time.process_time() - marks["cpu_start"],
                            "val": val})


def compose_config(overrides: list[str], output_dir: Path):
    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        return compose("train", overrides=["experiment=mosi_fusion", "logger=none", "callbacks=none",
                                           f"paths.output_dir={output_dir}", f"paths.work_dir={output_dir}",
                                           "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
                                           "+trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
                                           *overrides])


def run_arm(arm: str, overrides: list[str], epochs: int, output_dir: Path) -> dict[str, Any]:
    extra = ["model.net.text_encoder.prefix_cache=false"] if arm == "plain" else []
    cfg = compose_config([f"trainer.max_epochs={epochs}", f"trainer.min_epochs={epochs}", *overrides, *extra], output_dir)
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    cfg.data.audio_dim, cfg.data.vision_dim = datamodule.feature_dims["audio"], datamodule.feature_dims["vision"]
    module = instantiate(cfg.model, _convert_="all")
    cache = module.net.text_encoder.prefix_cache
    if arm == "uncached":
        cache.enabled = False
    clock = EpochClock()
    trainer = instantiate(cfg.trainer, callbacks=[clock], logger=False)
    trainer.fit(module, datamodule=datamodule)
    return {"epochs": clock.epochs, "cache": cache.stats() if cache is not None else None,
            "train_samples": len(datamodule.splits["train"]), "valid_samples": len(datamodule.splits["valid"])}


def median_epochs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, first in enumerate(runs[0]["epochs"]):
        times = {k: round(statistics.median(r["epochs"][i][k] for r in runs), 3) for k in ("seconds", "train_seconds", "val_seconds", "cpu_seconds")}
        out.append({"epoch": i + 1, **times, "seconds_each_repeat": [round(r["epochs"][i]["seconds"], 3) for r in runs],
                    "val": first["val"]})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of experiment=mosi_fusion (key=value)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--with-plain", action="store_true", help="also time prefix_cache=false (the old forward)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    arms = [*ARMS, *(["plain"] if args.with_plain else [])]
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="bench_prefix_cache_") as tmp:
        for r in range(args.repeats):
            for arm in (arms if r % 2 == 0 else arms[::-1]):  # interleaved: alternate the order
                runs[arm].append(run_arm(arm, args.overrides, args.epochs, Path(tmp) / f"{arm}_{r}"))
    result: dict[str, Any] = {
        "benchmark": "prefix_cache",
        "command": "python benchmarks/bench_prefix_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "experiment": "mosi_fusion", "overrides": args.overrides, "epochs": args.epochs, "repeats": args.repeats,
        "samples": {"train": runs["cached"][0]["train_samples"], "valid": runs["cached"][0]["valid_samples"]},
        "arms": {a: {"epochs": median_epochs(rs), "cache": rs[-1]["cache"]} for a, rs in runs.items()},
    }
    unc, cac = result["arms"]["uncached"]["epochs"], result["arms"]["cached"]["epochs"]
    result["speedup"] = {f"epoch_{u['epoch']}": round(u["seconds"] / c["seconds"], 3) for u, c in zip(unc, cac)}
    # process CPU time: less sensitive to other load on a shared machine than wall time
    result["speedup_cpu"] = {f"epoch_{u['epoch']}": round(u["cpu_seconds"] / c["cpu_seconds"], 3) for u, c in zip(unc, cac)}
    result["val_max_abs_diff"] = {
        f"epoch_{u['epoch']}": max((abs(u["val"][k] - c["val"][k]) for k in u["val"] if k in c["val"]), default=None)
        for u, c in zip(unc, cac)}
    result["targets"] = {"speedup_steady_epoch": 1.6, "val_max_abs_diff": 1e-4}
    result["environment"] = {"machine": platform.machine(), "processor": platform.processor() or None,
                             "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__,
                             "platform": platform.platform()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from mmsenti.io import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    return result


if __name__ == "__main__":
    main()
