"""Latency-aware search (issue 15, item 2): the search space, engine objectives, the stored study read back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest

from mmsenti.errors import MmsentiError
from mmsenti.export.hooks import engine_objectives
from mmsenti.search.space import draw, override_value, parse_space
from mmsenti.search.study import dominates, pareto

from test_train import SMALL, compose_train, run_cli

TINY_SPACE = ("{width:{param:model.net.fusion.d_model,choices:[16,32]},layers:{param:model.net.text_encoder.keep_layers,"
              "choices:[[0,1],[0]]},compression:{choices:[none,lowrank]},budget:{param:compression.budget,low:0.3,high:0.6,"
              "when:{compression:lowrank}},precision:{param:export.precisions,choices:[[int8],[fp32]]}}")


def _trial(seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return study, study.ask()


def test_space_draws_conditional_knobs_only_when_their_condition_holds():
    knobs = parse_space({"compression": {"choices": ["none", "lowrank"]},
                         "budget": {"param": "compression.budget", "low": 0.3, "high": 0.6, "when": {"compression": "lowrank"}},
                         "layers": {"param": "model.net.text_encoder.keep_layers", "choices": [[0, 1, 2], [0]]},
                         "width": {"param": "model.net.fusion.d_model", "low": 16, "high": 64, "step": 16, "int": True}})
    seen = set()
    for seed in range(20):
        _, trial = _trial(seed)
        drawn = draw(knobs, trial)
        # the trial's Optuna parameters are the overrides of its run: param=value
        assert set(trial.params) == {k.param for k in knobs if k.name in drawn}
        assert ("budget" in drawn) == (drawn["compression"] == "lowrank")
        assert drawn["layers"] in {"[0,1,2]", "[0]"}  # list choices in Hydra's override syntax
        assert drawn["width"] in {16, 32, 48, 64}
        if "budget" in drawn:
            assert 0.3 <= drawn["budget"] <= 0.6
        seen.add(drawn["compression"])
    assert seen == {"none", "lowrank"}


def test_override_value_formats_lists_for_hydra():
    assert override_value([0, 2, 4]) == "[0,2,4]"
    assert override_value(["int8"]) == "[int8]"
    assert override_value(None) == "null"
    assert override_value(0.5) == 0.5


@pytest.mark.parametrize("space, message", [
    ({}, "search.space is empty"),
    ({"a": {"param": "x", "choices": [1], "low": 0, "high": 1}}, "either choices"),
    ({"a": {"param": "x", "low": 1, "high": 1}}, "low (1) must be below high (1)"),
    ({"a": {"param": "x", "low": 0, "high": 1, "log": True}}, "log: true needs low > 0"),
    ({"a": {"param": "x", "choices": []}}, "choices is empty"),
    ({"a": {"param": "x", "choices": [1], "typo": 1}}, "unknown key(s) ['typo']"),
    ({"a": {"param": "x", "choices": [1]}, "b": {"param": "x", "choices": [2]}}, "already searched by search.space.a"),
    ({"a": {"param": "x", "choices": [1], "when": {"b": 1}}, "b": {"param": "y", "choices": [1]}}, "must name an earlier entry"),
    ({"a": {"param": "x", "low": "big", "high": 2}}, "must be numbers"),
])
def test_space_errors_name_the_entry(space, message):
    with pytest.raises(MmsentiError, match=None) as err:
        parse_space(space)
    assert message in str(err.value)


def test_engine_objectives_flatten_the_first_engine_without_its_name():
    summary = {"fused_int8": {"metrics": {"val": {"MAE": 0.9}, "test": {"MAE": 1.0}}, "latency": {"p50_ms": 2.0, "p99_ms": 3.0}},
               "fused_fp32": {"metrics": {"val": {"MAE": 0.8}}, "latency": {"p50_ms": 4.0, "p99_ms": 5.0}},
               "text_only_int8": {"error": "export failed"}}
    flat = engine_objectives(summary)
    assert flat["engine/val/MAE"] == 0.9 and flat["engine/p50_ms"] == 2.0  # the first engine
    assert flat["engine/fused_fp32/val/MAE"] == 0.8 and flat["engine/fused_fp32/p99_ms"] == 5.0
    assert not any(k.startswith("engine/text_only_int8") for k in flat)


def test_pareto_and_dominance():
    dirs = ["minimize", "minimize"]
    pts = {0: [1.0, 5.0], 1: [0.9, 6.0], 2: [1.1, 6.0], 3: [1.0, 4.0]}
    assert pareto(pts, dirs) == [1, 3]  # 0 is beaten by 3 (same MAE, faster), 2 by everything
    assert dominates([1.0, 4.0], [1.0, 5.0], dirs) and not dominates([1.0, 5.0], [1.0, 5.0], dirs)
    # a maximised first objective: higher is better
    assert dominates([0.9, 1.0], [0.8, 1.0], ["maximize", "minimize"])
    assert not dominates([0.8, 1.0], [0.9, 1.0], ["maximize", "minimize"])


def test_search_config_composes(tmp_path, synthetic_small):
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_train(["hparams_search=mosi_nas", "experiment=mosi_fusion"], tmp_path, synthetic_small)
    hc = HydraConfig.get()
    assert list(hc.sweeper.direction) == ["minimize", "minimize"]
    assert hc.sweeper.custom_search_space == "mmsenti.search.space.suggest"
    assert list(cfg.optimized_metric) == ["engine/val/MAE", "engine/p50_ms"]
    assert cfg.export.benchmark.batch == 1 and list(cfg.export.precisions) == ["int8"]
    knobs = parse_space(dict(cfg.search.space))
    # every knob's param is an override the composed config accepts
    overrides = []
    for knob in knobs:
        value = override_value(knob.choices[-1]) if knob.choices else knob.low
        if not knob.when:
            overrides.append(f"{knob.param}={value}")
    compose_train(["hparams_search=mosi_nas", "experiment=mosi_fusion", *overrides], tmp_path, synthetic_small)


def test_optimized_value_takes_a_list_and_records_it(tmp_path, synthetic_small):
    from mmsenti.training.tasks import optimized_value

    cfg = compose_train(["hparams_search=mosi_nas", "experiment=mosi_fusion"], tmp_path, synthetic_small)
    (tmp_path / "metrics.json").write_text(json.dumps({"val": {}}))
    assert optimized_value(cfg, {"engine/val/MAE": 0.9, "engine/p50_ms": 2.5}) == [0.9, 2.5]
    assert json.loads((tmp_path / "metrics.json").read_text())["objectives"] == {
        "names": ["engine/val/MAE", "engine/p50_ms"], "values": [0.9, 2.5]}
    with pytest.raises(MmsentiError, match="engine/p50_ms was not computed .*export.benchmark"):
        optimized_value(cfg, {"engine/val/MAE": 0.9})


@pytest.mark.slow
def test_two_trial_search_resumes_to_four_and_reads_back(tmp_path, synthetic_small):
    """A 2-trial multi-objective study, re-run: 4 trials in one study; the front, the reference, export by trial."""
    logs = tmp_path / "logs"
    # late fusion: the study's machinery is what is tested; each trial's ONNX export dominates its time, and
    # MulT's graph took the dynamo exporter ~2.4x longer than late fusion's (45 vs 19 s a trial here)
    args = ["train.py", "-m", "hparams_search=mosi_nas", "experiment=mosi_fusion", "model/fusion=late", "debug=limit", "trainer.max_epochs=1",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.population_size=2", f"data.root={synthetic_small}", "data.scale=small",
            f"paths.log_dir={logs}", *[a for a in SMALL if "fusion.d_model" not in a],
            "export.benchmark.runs=20", "export.benchmark.warmup=2", "~search.space", f"+search.space={TINY_SPACE}"]
    for _ in range(2):  # the second run continues the stored study
        result = run_cli(args, timeout=1200)
        assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(logs / "mosi_nas.db") as db:
        states = [row[0] for row in db.execute("SELECT state FROM trials")]
    assert states == ["COMPLETE"] * 4

    reference = run_cli(["train.py", "hparams_search=mosi_nas", "experiment=mosi_fusion", "model/fusion=late", "hydra.mode=RUN", "debug=limit",
                         "trainer.max_epochs=1", "task_name=mosi_nas_reference", f"data.root={synthetic_small}", "data.scale=small",
                         f"paths.log_dir={logs}", *SMALL, "model.net.text_encoder.keep_layers=[0,1]",  # as the trials' largest
                         "export.benchmark.runs=20", "export.benchmark.warmup=2"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_dir = next((logs / "mosi_nas_reference" / "runs").iterdir())
    storage = f"sqlite:///{logs / 'mosi_nas.db'}"
    common = ["--storage", storage, "--runs", str(logs / "mosi_nas")]

    trials = run_cli(["-m", "mmsenti.cli", "search", "trials", *common])
    assert trials.returncode == 0, trials.stderr[-2000:]
    assert "(no run folder found)" not in trials.stdout and trials.stdout.count("COMPLETE") == 4

    out = tmp_path / "front"
    front = run_cli(["-m", "mmsenti.cli", "search", "front", *common, "--reference", str(ref_dir), "--remeasure",
                     "--out", str(out)])
    assert front.returncode == 0, front.stderr[-2000:]
    doc = json.loads((out / "front.json").read_text())
    assert doc["completed"] == 4 and doc["front"] and (out / "front.png").stat().st_size > 10_000
    assert all(t["run_dir"] and Path(t["engine"], "manifest.json").is_file() for t in doc["trials"])
    bench = json.loads((out / "bench.json").read_text())  # the front and the reference, timed side by side
    assert {v["name"] for v in bench["variants"]} == {"reference", *(f"trial_{n}" for n in doc["front"])}
    assert "beats_reference" in doc and "reference [" in front.stdout

    number = doc["front"][0]
    exported = run_cli(["-m", "mmsenti.cli", "search", "export", str(number), *common, "--precision", "fp32",
                        "--out", str(tmp_path / "engine")])
    assert exported.returncode == 0, exported.stderr[-2000:]
    manifest = json.loads((tmp_path / "engine" / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["parity"]["max_abs_diff"] <= manifest["parity"]["tolerance"]

    missing = run_cli(["-m", "mmsenti.cli", "search", "export", "99", *common])
    assert missing.returncode == 2 and "trial 99: not in study mosi_nas" in missing.stderr
