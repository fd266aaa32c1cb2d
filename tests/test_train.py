"""The Hydra + Lightning training pipeline, end to end, on the project's small synthetic CSD set."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmsenti.errors import MmsentiError
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.training.lit_module import SentimentLitModule, hard_loss
from mmsenti.training.tasks import evaluate, optimized_value, run_safely, train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
METRIC_KEYS = {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"}
# keep each test run small: tiny fusion, one frozen-encoder layer fine-tuned, few batches
SMALL = ["++model.net.fusion.d_model=32", "model.net.text_encoder.top_k=1", "data.batch_size=16", "extras.print_config=false"]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    from mmsenti.data.synthetic import write_synthetic_mosi

    return write_synthetic_mosi(tmp_path_factory.mktemp("synthetic_small"), scale="small", seed=0)


def compose_train(overrides: list[str], output_dir: Path, data_root: Path, config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` (train or eval) as the entry point would, writing under output_dir."""
    GlobalHydra.instance().clear()
    os.environ["PROJECT_ROOT"] = str(ROOT)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name, return_hydra_config=True,
                      overrides=[f"data.root={data_root}", "data.scale=small", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a task sees the config without the hydra node, as under @hydra.main
    return cfg


def skip_without_shared_data(cfg: DictConfig) -> None:
    """Experiments on the real data in ../shared/data (SST-2, MOSI transcripts) skip on clones without it."""
    location = str(cfg.data.get("path") or cfg.data.get("root") or "")
    if "shared/data" in location and not Path(location).exists():
        pytest.skip(f"{location} is absent (real data lives in ../shared/data)")


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("entry", ["train", "eval"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, entry, tmp_path, small_data):
    """Every experiment composes under train.yaml and eval.yaml, and eval builds the model it describes."""
    import hydra

    cfg = compose_train([f"experiment={experiment}", *(["ckpt_path=unused.ckpt"] if entry == "eval" else [])],
                        tmp_path, small_data, config_name=entry)
    assert cfg.task_name == (experiment if entry == "train" else "eval")
    assert cfg.model._target_.endswith("SentimentLitModule")
    assert "text" in cfg.model.net.modalities
    assert cfg.model.net.fusion.name in {"mult", "late", "text_only"}
    # the task is the model config's: SST-2 classifies, and only distillation needs the distillation module
    assert cfg.model.net.task == ("classification" if experiment.startswith("sst2") else "regression")
    assert cfg.model._target_.endswith("DistillSentimentLitModule") == ("distill" in experiment)
    if entry == "eval":
        with open_dict(cfg):
            if "distill" in cfg.model:
                cfg.model.distill.teacher_ckpt = None  # eval reads the student only
        module = hydra.utils.instantiate(cfg.model, _convert_="all")
        assert module.model_config.task == cfg.model.net.task
        assert module.hparams["model_config"] == module.model_config.to_dict()


def test_optuna_search_composes(tmp_path, small_data):
    compose_train(["hparams_search=mosi_optuna", "experiment=mosi_fusion"], tmp_path, small_data)
    cfg = HydraConfig.get()
    assert cfg.sweeper.storage.startswith("sqlite:///")
    assert cfg.mode.name == "MULTIRUN"


# experiments whose recipe needs a teacher checkpoint: their transfer set (labels withheld) is refused without one
NEEDS_TEACHER = {"sst2_distill_l6_transfer": ["data.source_options.transfer_size=0"],
                 "mosi_real_distill_l6_transfer": ["data.source_options.transfer_size=0"]}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_every_experiment(experiment, tmp_path, small_data):
    cfg = compose_train([f"experiment={experiment}", "debug=fdr", *SMALL, *NEEDS_TEACHER.get(experiment, [])], tmp_path, small_data)
    skip_without_shared_data(cfg)
    metrics, objects = train(cfg)
    assert METRIC_KEYS <= {k.split("/", 1)[1] for k in metrics if k.startswith("val/")}
    built = {n.split(".")[1] for n, _ in objects["model"].net.named_modules() if n.startswith("frame_encoders.")}
    assert built == set(cfg.model.net.modalities) - {"text"}


def test_tiny_training_run_learns_and_writes_results(tmp_path, small_data):
    out = tmp_path / "run"
    cfg = compose_train(["experiment=mosi_fusion", "trainer.max_epochs=4", "logger=csv", "callbacks.early_stopping.patience=10",
                         "model.optimizer.lr=3e-3", *SMALL], out, small_data)
    train(cfg)
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["val"]) >= METRIC_KEYS and set(report["test"]) >= METRIC_KEYS
    assert Path(report["best_ckpt"]).is_file()
    assert report["seed"] == 42 and report["config"]["task_name"] == "mosi_fusion"
    assert len(report["epoch_seconds"]) == 4
    assert (out / "resolved_config.yaml").is_file()
    epochs = pd.read_csv(out / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    losses = epochs["train/loss"].tolist()
    assert losses[-1] < losses[0], losses
    # the checkpoint keeps the network's whole config under one key, and rebuilds the network it holds
    ckpt = torch.load(report["best_ckpt"], weights_only=True)
    stored = ckpt["hyper_parameters"]["model_config"]
    assert stored == SentimentModelConfig.from_dict(stored).to_dict()
    assert stored["fusion"]["d_model"] == 32 and stored["modalities"] == ["text", "audio", "vision"]
    assert not set(SentimentModelConfig.__dataclass_fields__) & set(ckpt["hyper_parameters"])  # no flat copies
    net = SentimentModel(SentimentModelConfig.from_dict(stored))
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})


class StopAfterFirstEpoch(L.Callback):
    """Ends fit after epoch 0, as a killed job would (last.ckpt is already written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _short_run(out: Path, data: Path, *extra: str) -> dict:
    cfg = compose_train(["experiment=mosi_fusion", "logger=none", "trainer.limit_train_batches=3",
                         "callbacks.early_stopping.patience=10", *SMALL, *extra], out, data)
    train(cfg)
    return json.loads((out / "metrics.json").read_text())


def test_same_seed_same_result_and_resume_matches_uninterrupted(tmp_path, small_data):
    full = _short_run(tmp_path / "full", small_data, "trainer.max_epochs=2")
    again = _short_run(tmp_path / "again", small_data, "trainer.max_epochs=2")
    assert full["val"] == again["val"] and full["test"] == again["test"]

    # same config as `full`, interrupted after its first epoch, then resumed from last.ckpt
    _short_run(tmp_path / "first", small_data, "trainer.max_epochs=2", f"+callbacks.stop._target_={__name__}.StopAfterFirstEpoch")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = _short_run(tmp_path / "resumed", small_data, "trainer.max_epochs=2", f"ckpt_path={last}")
    assert resumed["epochs_trained"] == full["epochs_trained"] == 2
    for split in ("val", "test"):
        for key, value in full[split].items():
            assert resumed[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_mismatched_checkpoint_gives_one_line(tmp_path, small_data):
    _short_run(tmp_path / "a", small_data, "trainer.max_epochs=1")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    result = run_cli(["eval.py", f"ckpt_path={last}", "experiment=mosi_text_fast", f"data.root={small_data}",
                      "data.scale=small", f"paths.log_dir={tmp_path}/logs", "extras.print_config=false"])
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "does not match the configured model" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_eval_reproduces_training_metrics(tmp_path, small_data):
    report = _short_run(tmp_path / "t", small_data, "trainer.max_epochs=1")
    result = run_cli(["eval.py", f"ckpt_path={report['best_ckpt']}", "experiment=mosi_fusion", f"data.root={small_data}",
                      "data.scale=small", "++model.net.fusion.d_model=32", "model.net.text_encoder.top_k=1",
                      f"paths.log_dir={tmp_path}/logs", "extras.print_config=false", "logger=none"])
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = json.loads(next((tmp_path / "logs" / "eval" / "runs").glob("*/metrics.json")).read_text())
    for key in METRIC_KEYS:
        assert evaluated["test"][key] == pytest.approx(report["test"][key], abs=1e-5)
    # eval writes the test predictions too (mmsenti report <run_dir>): their MAE is the metric's
    import csv

    eval_dir = next((tmp_path / "logs" / "eval" / "runs").glob("*/metrics.json")).parent
    rows = list(csv.DictReader((eval_dir / "predictions.csv").open()))
    mae = sum(abs(float(r["score"]) - float(r["label"])) for r in rows) / len(rows)
    assert mae == pytest.approx(evaluated["test"]["MAE"], abs=1e-4)
    # eval composes the experiments that override training-only groups too (mosi_prune: compression);
    # its network is mosi_fusion's, so the same checkpoint gives the same numbers
    cfg = compose_train(["experiment=mosi_prune", f"ckpt_path={report['best_ckpt']}", "logger=none", *SMALL],
                        tmp_path / "eval_prune", small_data, config_name="eval")
    pruned_metrics, _ = evaluate(cfg)
    for key in METRIC_KEYS:
        assert pruned_metrics[f"test/{key}"] == pytest.approx(report["test"][key], abs=1e-5)


def test_missing_data_path_is_one_clear_line(tmp_path):
    result = run_cli(["train.py", "data=mosi", f"data.root={tmp_path}/nowhere", f"paths.log_dir={tmp_path}/logs",
                      "extras.print_config=false"])
    assert result.returncode == 2
    assert "error:" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_csd_is_one_clear_line(tmp_path, small_data):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in small_data.glob("*.csd"):
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "folds.json").write_text((small_data / "folds.json").read_text())
    labels = broken / "CMU_MOSI_Opinion_Labels.csd"
    labels.write_bytes(labels.read_bytes()[:2000])  # truncated download
    result = run_cli(["train.py", "data=mosi", f"data.root={broken}", f"paths.log_dir={tmp_path}/logs",
                      "extras.print_config=false"])
    assert result.returncode == 2
    assert "CMU_MOSI_Opinion_Labels.csd" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["experiment=no_such_experiment"], "no_such_experiment"),
    (["trainer.max_epochs=[1,"], "no viable alternative"),
])
def test_unknown_experiment_and_malformed_override(args, expected, tmp_path):
    result = run_cli(["train.py", *args, f"paths.log_dir={tmp_path}/logs"])
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_two_jobs(tmp_path, small_data):
    result = run_cli(["train.py", "-m", "experiment=mosi_fusion", "seed=1,2", "debug=fdr", f"data.root={small_data}",
                      "data.scale=small", f"paths.log_dir={tmp_path}/logs", *SMALL])
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "logs" / "mosi_fusion" / "multiruns").glob("*/*/metrics.json"))
    assert len(jobs) == 2
    assert {json.loads(j.read_text())["seed"] for j in jobs} == {1, 2}


@pytest.mark.slow
def test_optuna_sweep_resumes_from_sqlite(tmp_path, small_data):
    args = ["train.py", "-m", "hparams_search=mosi_optuna", "experiment=mosi_fusion", "debug=limit",
            "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=test_study", "trainer.max_epochs=1",
            f"data.root={small_data}", "data.scale=small", f"paths.log_dir={tmp_path}/logs", *SMALL]
    first = run_cli(args)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(args)  # a re-run (e.g. after a kill) continues the stored study
    assert second.returncode == 0, second.stderr[-3000:]
    with sqlite3.connect(tmp_path / "logs" / "optuna.db") as db:
        states = [row[0] for row in db.execute("SELECT state FROM trials")]
    assert len(states) == 2 and all(s == "COMPLETE" for s in states)  # one trial per run: CI time


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, small_data):
    result = run_cli(["train.py", "experiment=mosi_fusion", "trainer=ddp_sim", "debug=limit", f"data.root={small_data}",
                      "data.scale=small", f"paths.log_dir={tmp_path}/logs", *SMALL])
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "logs" / "mosi_fusion" / "runs").iterdir())
    assert len(runs) == 1  # rank 1 was relaunched into the same run folder
    report = json.loads((runs[0] / "metrics.json").read_text())
    assert report["world_size"] == 2
    assert METRIC_KEYS <= set(report["test"])


class HeadDtypeProbe(L.Callback):
    """Records the dtype the model's head computes in during training steps (autocast's, under bf16-mixed)."""

    dtypes: list[torch.dtype] = []

    def on_fit_start(self, trainer, pl_module):
        type(self).dtypes = []
        self.handle = pl_module.net.head.register_forward_hook(
            lambda m, args, out: type(self).dtypes.append(out.dtype) if m.training else None)

    def on_fit_end(self, trainer, pl_module):
        self.handle.remove()


def test_bf16_mixed_precision_on_cpu(tmp_path, small_data):
    probe = [f"+callbacks.probe._target_={__name__}.HeadDtypeProbe", "trainer.limit_train_batches=2", "trainer.max_epochs=1",
             "logger=none", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    fp32, _ = train(compose_train(["experiment=mosi_fusion", *probe, *SMALL], tmp_path / "fp32", small_data))
    assert set(HeadDtypeProbe.dtypes) == {torch.float32}
    cfg = compose_train(["experiment=mosi_fusion", "trainer.precision=bf16-mixed", *probe, *SMALL], tmp_path / "bf16", small_data)
    bf16, objects = train(cfg)
    assert objects["trainer"].precision == "bf16-mixed"
    assert set(HeadDtypeProbe.dtypes) == {torch.bfloat16}  # the training forward really ran under bf16 autocast
    # same seed, same batches: bf16 rounding moves the metrics a little, not a lot
    assert bf16["val/MAE"] != fp32["val/MAE"]
    assert bf16["val/MAE"] == pytest.approx(fp32["val/MAE"], abs=0.05)
    assert bf16["val/Corr"] == pytest.approx(fp32["val/Corr"], abs=0.1)


def test_ckpt_path_last_picks_newest_run(tmp_path, small_data):
    from mmsenti.errors import MmsentiError
    from mmsenti.training.tasks import find_last_checkpoint

    logs = tmp_path / "logs"
    with pytest.raises(MmsentiError, match="no last.ckpt"):
        find_last_checkpoint(logs, "mosi_fusion")
    older = logs / "mosi_fusion" / "runs" / "2026-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    newer = logs / "mosi_fusion" / "multiruns" / "2026-01-02_00-00-00" / "1" / "checkpoints" / "last.ckpt"
    for i, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert find_last_checkpoint(logs, "mosi_fusion") == newer
    assert find_last_checkpoint(logs, "mosi_fusion", exclude=newer.parents[1]) == older


def test_mmsa_pickle_source_trains(tmp_path, small_data):
    """`data=mosi_mmsa data.path=...pkl` trains from an MMSA-layout pickle (read without code execution)."""
    from mmsenti.cli import main as cli

    assert cli(["data", "synth", "--out", str(tmp_path / "mmsa"), "--scale", "small", "--format", "mmsa"]) == 0
    pickle_path = tmp_path / "mmsa" / "unaligned_50.pkl"
    cfg = compose_train(["experiment=mosi_fusion", "data=mosi_mmsa", f"data.path={pickle_path}", "data.audio_dim=74",
                         "data.vision_dim=47", "debug=fdr", *SMALL], tmp_path / "run", small_data)
    metrics, objects = train(cfg)
    assert METRIC_KEYS <= {k.split("/", 1)[1] for k in metrics if k.startswith("test/")}
    assert objects["datamodule"].location == str(pickle_path)


def test_feature_widths_come_from_the_data(tmp_path, small_data):
    """data.audio_dim=5 on 74-d audio: the model is built with the data's widths; only resuming (or
    evaluating) a checkpoint of other widths is an error."""
    import pickle

    import numpy as np

    from mmsenti.errors import MmsentiError

    cfg = compose_train(["experiment=mosi_fusion", "data.audio_dim=5", "debug=fdr", *SMALL], tmp_path / "run", small_data)
    _, objects = train(cfg)
    assert objects["datamodule"].feature_dims == {"audio": 74, "vision": 47}
    assert objects["model"].net.config.audio_encoder["input_dim"] == 74
    assert "audio_dim: 74" in (tmp_path / "run" / "resolved_config.yaml").read_text()
    ckpt = tmp_path / "run" / "trained.ckpt"
    objects["trainer"].save_checkpoint(ckpt)  # fast_dev_run writes none
    rng = np.random.default_rng(0)
    pkl = tmp_path / "other_widths.pkl"  # an MMSA pickle with 73-d audio, 35-d vision
    pkl.write_bytes(pickle.dumps({s: {"raw_text": np.array(["a fine film"] * 2, dtype=object),
                                      "id": np.array([f"v{s}$_$1", f"v{s}$_$2"], dtype=object),
                                      "audio": rng.standard_normal((2, 3, 73)).astype(np.float32),
                                      "vision": rng.standard_normal((2, 3, 35)).astype(np.float32),
                                      "regression_labels": np.array([1.0, -1.0], np.float32)}
                                  for s in ("train", "valid", "test")}))
    cfg = compose_train(["experiment=mosi_fusion", "data=mosi_mmsa", f"data.path={pkl}", f"ckpt_path={ckpt}",
                         "debug=fdr", *SMALL], tmp_path / "resume", small_data)
    with pytest.raises(MmsentiError, match="does not match the configured model"):
        train(cfg)


@pytest.mark.slow
def test_mlflow_logger_with_sqlite_backend(tmp_path, small_data):
    mlflow = pytest.importorskip("mlflow", reason="optional extra: pip install -e '.[mlflow]'")
    cfg = compose_train(["experiment=mosi_fusion", "logger=mlflow", "debug=limit", "trainer.max_epochs=1", *SMALL],
                        tmp_path / "run", small_data)
    train(cfg)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["mosi_fusion"])
    assert len(runs) == 1 and "metrics.val/MAE" in runs.columns


# ---------------------------------------------------------------------------- the LightningModule
TEXT_NET = {"modalities": ["text"], "fusion": {"name": "text_only"},
            "text_encoder": {"pretrained": "minilm_l6", "keep_layers": [0], "finetune": "frozen"}}


def test_module_takes_the_model_config_as_one_node():
    """Every SentimentModelConfig field travels in ``net``; the checkpoint keeps it whole as ``model_config``."""
    # every field, whatever the model config grows to, with non-default values where we can
    fields = {**SentimentModelConfig().to_dict(), **TEXT_NET, "task": "classification", "head_dropout": 0.3,
              "modality_dropout": 0.2, "audio_encoder": {"name": "lstm", "input_dim": 5}, "vision_encoder": {"name": "lstm", "input_dim": 6}}
    assert set(fields) == set(SentimentModelConfig.__dataclass_fields__)
    module = SentimentLitModule(net=fields)
    assert module.model_config == SentimentModelConfig(**fields) and module.task == "classification"
    assert module.hparams["model_config"] == SentimentModelConfig(**fields).to_dict()
    assert "net" not in module.hparams and not set(fields) & set(module.hparams)
    # the one 7-class-head rule: a weighted 7-class loss builds the head, and the stored config says so
    weighted = SentimentLitModule(net=TEXT_NET, aux_7class_weight=0.5)
    assert weighted.net.head_7 is not None and weighted.hparams["model_config"]["aux_7class"] is True
    with pytest.raises(MmsentiError, match=r"unknown field\(s\) \['modalitys'\]"):
        SentimentLitModule(net={**TEXT_NET, "modalitys": ["text"]})
    with pytest.raises(MmsentiError, match="needs model.net.task=regression"):
        SentimentLitModule(net={**TEXT_NET, "task": "classification"}, aux_7class_weight=0.5)


def test_classification_is_bce_on_the_unbounded_logit_and_regression_l1():
    z = torch.tensor([4.5, -0.5, 2.0])
    y = torch.tensor([1.0, 1.0, -1.0])  # SST-2's labels
    by_hand = (math.log(1 + math.exp(-4.5)) + math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(2.0))) / 3
    assert hard_loss(z, y, "classification").item() == pytest.approx(by_hand, rel=1e-6)
    assert hard_loss(z, torch.tensor([3.0, 0.5, float("nan")]), "regression", "l1").item() == pytest.approx((1.5 + 1.0) / 2)
    assert hard_loss(z, torch.tensor([3.0, 0.5, 1.0]), "regression", "mse").item() == pytest.approx((2.25 + 1.0 + 1.0) / 3)
    module = SentimentLitModule(net={**TEXT_NET, "task": "classification"}).eval()
    from types import SimpleNamespace

    losses = module.compute_loss(SimpleNamespace(score=z, logits_7=None), y)
    assert losses["loss"].item() == pytest.approx(by_hand, rel=1e-6)
    # the network's score is the logit itself (not squashed into [-3, 3]) and the module trains on it
    ids, mask = torch.tensor([[101, 2307, 102]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        module.net.head[-1].bias.fill_(10.0)
        assert module.net(ids, mask).score.item() > 3.0


def test_test_false_finishes_without_an_optimized_value(tmp_path, small_data):
    cfg = compose_train(["experiment=mosi_text_fast", "debug=fdr", "test=false", *SMALL], tmp_path, small_data)
    metrics, _ = train(cfg)
    assert metrics == {} and json.loads((tmp_path / "metrics.json").read_text()).get("val") is None
    assert optimized_value(cfg, metrics) is None  # raised "optimized_metric=val/MAE was not computed" before
    with open_dict(cfg):
        cfg.test = True
        cfg.optimized_metric = "val/nothing"
    with pytest.raises(SystemExit) as stop:  # a metric that is never logged: one error line, exit 2
        run_safely(optimized_value, cfg, {"val/MAE": 1.0})
    assert stop.value.code == 2


def test_fused_model_on_text_only_data_is_refused_before_training(tmp_path, small_data):
    labels = tmp_path / "label.csv"
    rows = [f"vid{i},{j},{'a good film' if i % 2 else 'dull and long'},{1.5 if i % 2 else -1.5},{'train' if i < 4 else 'valid'}"
            for i in range(6) for j in range(1, 3)]
    labels.write_text("video_id,clip_id,text,label,mode\n" + "\n".join(rows) + "\n")
    cfg = compose_train(["experiment=mosi_fusion", "data=mosi_text", f"data.path={labels}", "logger=none", *SMALL],
                        tmp_path / "run", small_data)

    with open_dict(cfg):
        cfg.callbacks["no_step"] = {"_target_": f"{__name__}.NoStepCallback"}
    with pytest.raises(MmsentiError, match=r"reads audio\+vision but .* has no audio or vision features.*"
                                           r"model.net.modalities=\[text\].*experiment=mosi_text"):
        train(cfg)
    result = run_cli(["train.py", "experiment=mosi_fusion", "data=mosi_text", f"data.path={labels}",
                      f"paths.log_dir={tmp_path}/logs", "extras.print_config=false", "logger=none"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        line for line in result.stderr.splitlines() if "model.net.modalities=[text]" in line]
    assert "Traceback" not in result.stderr and "size of tensor" not in result.stderr


class NoStepCallback(L.Callback):
    """Fails a run that gets as far as a training step."""

    def on_train_batch_start(self, *args):
        raise AssertionError("a training step ran")


@pytest.mark.parametrize("overrides, expected", [
    (["experiment=mosi_prune"], 1),                                                  # epochs [0, 1]
    (["experiment=mosi_prune", "compression.epochs=[0,2,3]"], 3),
    (["experiment=mosi_prune", "compression=prune_l1"], 2),                          # schedule {0: .2, 1: .35, 2: .5}
    (["experiment=mosi_prune", "compression=prune_l1", "+compression.schedule.4=0.6"], 4),
])
def test_checkpoint_start_epoch_follows_the_pruning_schedule(overrides, expected, tmp_path, small_data):
    import hydra

    cfg = compose_train(overrides, tmp_path, small_data)
    checkpoint = hydra.utils.instantiate(cfg.callbacks.model_checkpoint)
    assert checkpoint.start_epoch == expected


def test_module_refuses_data_without_its_modalities_or_widths():
    from types import SimpleNamespace

    module = SentimentLitModule(net={**TEXT_NET, "modalities": ["text", "audio", "vision"], "fusion": {"name": "late", "d_model": 8},
                                     "audio_encoder": {"name": "lstm", "input_dim": 74, "d_model": 8},
                                     "vision_encoder": {"name": "lstm", "input_dim": 47, "d_model": 8}})
    module.check_data_modalities(SimpleNamespace(hparams={"audio_dim": 74, "vision_dim": 47}, location="here"))
    with pytest.raises(MmsentiError, match=r"reads vision but here has no vision features \(data.vision_dim=0"):
        module.check_data_modalities(SimpleNamespace(hparams={"audio_dim": 74, "vision_dim": 0}, location="here"))
    with pytest.raises(MmsentiError, match="audio input is 74-d but here has 73-d audio features; set model.net.audio_encoder.input_dim=73"):
        module.check_data_modalities(SimpleNamespace(hparams={"audio_dim": 73, "vision_dim": 47}, location="here"))
