"""experiments/zoo_report.py: its steps (every zoo model × seed, then seed 1's INT8 export and latency), where a
--smoke run writes, and the report rendered from hand-made step outputs (mean ± std, partial seeds, "not run")."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_report():
    spec = importlib.util.spec_from_file_location("zoo_report", ROOT / "experiments" / "zoo_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


zoo = _load_report()

TFN_MAE = (0.90, 0.80, 1.00)  # mean 0.90, sample std 0.10
TFN_ACC = (0.70, 0.72, 0.74)  # 72.00 ± 2.00 %


def metrics(mae: float, acc: float, corr: float = 0.5, epochs: tuple[float, ...] = (10.0, 12.0, 30.0)) -> dict:
    split = {"Has0_acc_2": acc, "Has0_F1_score": acc, "Non0_acc_2": acc + 0.01, "Non0_F1_score": acc,
             "Mult_acc_5": 0.3, "Mult_acc_7": 0.25, "MAE": mae, "Corr": corr}
    return {"val": dict(split), "test": split, "best_ckpt": "/nowhere/best.ckpt", "seed": 1, "epochs_trained": len(epochs),
            "train_seconds": sum(epochs), "epoch_seconds": list(epochs), "data_report": {"segments": {"train": 60, "valid": 30, "test": 30}}}


def bench(p50: float) -> dict:
    return {"hardware": {"cpu": "Test CPU", "cores_available": 2, "threads": 1}, "versions": {"onnxruntime": "9.9"},
            "results": [{"variant": "export_tfn", "batch": 1, "p50_ms": p50, "p99_ms": p50 * 2}]}


@pytest.fixture()
def layout(tmp_path):
    """Hand-made outputs: tfn with 3 seeds, its export and benchmark (collected copies); lmf seed 1 in its run
    folder only; every other model nothing."""
    lay = zoo.Layout(out=tmp_path / "runs", archive=tmp_path / "zoo_runs", report=tmp_path / "zoo.md")
    lay.archive.mkdir(parents=True)
    for s, mae, acc in zip(zoo.SEEDS, TFN_MAE, TFN_ACC):
        epochs = (100.0, 120.0, 300.0) if s == 2 else (10.0, 12.0, 30.0)  # seed 2 trained beside another job
        lay.archived(f"tfn_s{s}").write_text(json.dumps(metrics(mae, acc, epochs=epochs)))
    lay.archived("export_tfn").write_text(json.dumps({"precision": "int8", "params": 23_456_789, "size_bytes": 30e6,
                                                      "parity": {"max_abs_diff": 0.3161, "tolerance": 0.35}}))
    lay.archived("bench_tfn").write_text(json.dumps(bench(3.25)))
    run = lay.output_of("lmf_s1")
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps(metrics(0.95, 0.66)))
    return lay


MODELS = ["lmf", "misa", "tfn"]


def row(text: str, model: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{model}` |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_steps_cover_every_model_and_seed_and_export_seed_one():
    steps = zoo.steps(["a", "b"])
    names = [n for n, _, _ in steps]
    assert len(names) == len(set(names)) == 2 * 3 + 2 * 2
    assert {n for n, k, _ in steps if k == "train"} == {f"{m}_s{s}" for m in "ab" for s in (1, 2, 3)}
    # seed 1 of every model first, then exports and benchmarks, then the other seeds
    assert names[:2] == ["a_s1", "b_s1"] and names[-1] == "b_s3"
    step = {n: (k, args) for n, k, args in steps}
    assert step["b_s2"] == ("train", ["model/fusion=b", "seed=2"])
    assert step["export_a"] == ("export", ["{ckpt:a_s1}", "--precision", "int8"])
    assert step["bench_a"][1][0] == "{export:export_a}" and "--batch" in step["bench_a"][1]
    assert names.index("export_a") < names.index("bench_a") < names.index("a_s2")
    # a model with export settings of its own gets them on its export step only
    misa = {n: args for n, _, args in zoo.steps(["misa"])}
    assert misa["export_misa"] == ["{ckpt:misa_s1}", "--precision", "int8", *zoo.EXPORT_OVERRIDES["misa"]]
    assert "--tolerance" not in misa["misa_s1"] and "--tolerance" not in misa["bench_misa"]


def test_models_are_the_registry_fusions_each_with_a_config():
    from mmsenti import registry

    models = zoo.zoo_models()
    assert models == registry.available("fusion")
    assert {"tfn", "lmf", "misa", "self_mm", "mult", "mult_paper"} <= set(models)
    for m in models:
        assert (ROOT / "configs" / "model" / "fusion" / f"{m}.yaml").is_file(), m


def test_command_lines_full_and_smoke(tmp_path):
    full = zoo.Layout()
    cmd = zoo.command_line("tfn_s2", "train", ["model/fusion=tfn", "seed=2"], full)
    assert cmd[:4] == ["train.py", "experiment=mosi_fusion", "model/fusion=tfn", "seed=2"]
    assert cmd[-1] == "hydra.run.dir=logs/zoo_report/tfn_s2"
    assert not any(a.startswith("trainer.") or a.startswith("data.") for a in cmd)  # the study runs the recipe as shipped
    smoke = zoo.Layout.for_out(tmp_path / "smoke", smoke=True)
    cmd = zoo.command_line("tfn_s1", "train", ["model/fusion=tfn", "seed=1"], smoke)
    assert "trainer.max_epochs=1" in cmd and "data.scale=small" in cmd and f"data.root={tmp_path / 'smoke' / 'data'}" in cmd
    bench = zoo.command_line("bench_tfn", "bench", ["export/x", *zoo.BENCH], smoke)
    assert bench[:3] == ["-m", "mmsenti.cli", "bench"] and "--runs" in bench and bench[-1] == str(tmp_path / "smoke" / "bench_tfn.json")


def test_resolve_placeholders_and_an_unrun_step(layout):
    run = layout.output_of("lmf_s1")
    assert zoo.resolve(["{ckpt:lmf_s1}"], layout) == ["/nowhere/best.ckpt"]
    manifest = layout.output_of("export_lmf")
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    assert zoo.resolve(["{export:export_lmf}"], layout) == [str(manifest.parent)]
    with pytest.raises(SystemExit, match="misa_s1 has not run"):
        zoo.resolve(["{ckpt:misa_s1}"], layout)
    assert run.is_file()


def test_smoke_never_writes_into_the_repository(tmp_path):
    with pytest.raises(SystemExit, match="--smoke must not"):
        zoo.Layout.for_out(zoo.OUT, smoke=True)
    assert zoo.Layout.for_out(None) == zoo.Layout(zoo.OUT, zoo.ARCHIVE, zoo.REPORT, False)
    lay = zoo.Layout.for_out(None, smoke=True)
    assert lay.out == zoo.SMOKE_OUT.resolve() and lay.report == lay.out / "zoo.md" and lay.archive == lay.out / "zoo_runs"
    other = zoo.Layout.for_out(tmp_path)
    assert other.archive == tmp_path.resolve() / "zoo_runs" and other.figure == tmp_path.resolve() / "zoo.png"


def test_render_table_mean_std_partial_and_not_run(layout):
    text = zoo.render(layout, MODELS)
    tfn = row(text, "tfn")
    header = next(ln for ln in text.splitlines() if ln.startswith("| model |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    cell = dict(zip(cols, tfn))
    mae = statistics.mean(TFN_MAE), statistics.stdev(TFN_MAE)
    assert cell["MAE ↓"] == f"{mae[0]:.4f} ± {mae[1]:.4f}" == "0.9000 ± 0.1000"
    assert cell["Has0 Acc-2 (%)"] == "72.00 ± 2.00" and cell["Non0 Acc-2 (%)"] == "73.00 ± 2.00"
    assert cell["Acc-7 (%)"] == "25.00 ± 0.00"
    assert cell["params"] == "23.46 M"
    assert cell["train s / epoch (fastest seed)"] == "12.0"  # per seed the median epoch (12, 120, 12), then the fastest seed
    assert cell["INT8 p50 / p99 (ms)"] == "3.25 / 6.50"
    assert cell["INT8 max Δ score"] == "0.316 (tol 0.35)"  # the export's parity check, beside its tolerance
    lmf = dict(zip(cols, row(text, "lmf")))  # one seed, from its run folder; no export yet
    assert cell["seeds"] == "3 of 3" and lmf["seeds"] == "1 of 3"
    assert lmf["MAE ↓"] == "0.9500" and lmf["params"] == "not run" and lmf["INT8 p50 / p99 (ms)"] == "not run"
    assert lmf["INT8 max Δ score"] == "not run"
    assert set(row(text, "misa")) == {"`misa`", "not run"}
    intro = text.split("## Our runs")[0]
    assert "synthetic" in intro and "SMOKE" not in text
    assert "`trainer.max_epochs=8`" in intro  # configs/experiment/mosi_fusion.yaml's, as the runs' configs do not say
    # the step list says which ran
    assert ("- `misa_s1` — *not run*: `python train.py experiment=mosi_fusion model/fusion=misa seed=1 "
            "model.optimizer.lr=1e-4`") in text  # MISA leaves the recipe (MMSA's learning rate), and the report says so
    assert "Leaving the recipe: `misa` with `model.optimizer.lr=1e-4`" in intro
    assert "Export settings off the default: `misa` with `--tolerance 0.6`" in intro
    assert "- `export_misa` — *not run*: `mmsenti export {ckpt:misa_s1} --precision int8 --tolerance 0.6 --out" in text
    assert "- `tfn_s2` — 3 epochs, 520 s training:" in text and "- `tfn_s3` — 3 epochs, 52 s training:" in text
    assert (f"- `bench_tfn` — p50 3.25 ms: `mmsenti bench {layout.out / 'export_tfn'} --batch 1 --threads 1 "
            f"--out {layout.out / 'bench_tfn.json'}`") in text
    assert zoo.shown("export_tfn", "export", ["{ckpt:tfn_s1}", "--precision", "int8"], zoo.Layout()) == \
        "mmsenti export {ckpt:tfn_s1} --precision int8 --out logs/zoo_report/export_tfn"
    # the figure sits beside its command
    assert (layout.figure).is_file() and f"![test MAE and Corr vs INT8 batch-1 latency]({layout.figure.name})" in text
    assert "Latency machine: Test CPU" in text


def test_published_figures_are_quoted_with_their_source(layout):
    text = zoo.render(layout, MODELS)
    published = text.split("## Published figures")[1].split("## Commands")[0]
    assert zoo.PUBLISHED_SOURCE[0] in published and "not comparable" in published
    rows = [ln for ln in published.splitlines() if ln.startswith("| ") and not ln.startswith("| MMSA model")]
    assert [r.split("|")[1].strip() for r in rows] == ["tfn", "lmf", "mult", "misa", "self_mm"]
    assert "| tfn | `tfn` | 77.99 | 77.95 | 79.08 | 79.11 | 34.46 | 94.73 | 67.33 | Unaligned |" in rows


def test_render_of_a_smoke_folder_says_so_and_nothing_ran(tmp_path):
    lay = zoo.Layout.for_out(tmp_path)
    lay.out.mkdir(parents=True, exist_ok=True)
    (lay.out / zoo.SMOKE_MARK).write_text("smoke")
    text = zoo.render(lay, ["tfn"])
    assert "SMOKE RUN" in text and "trainer.max_epochs=1" in text and set(row(text, "tfn")) == {"`tfn`", "not run"}
    assert "![" not in text and not lay.figure.exists()


def test_collect_keeps_small_outputs_and_summarises_the_manifest(layout):
    manifest = layout.output_of("export_tfn")
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"precision": "int8", "size_bytes": 5, "files": {"model.onnx": "sha"},
                                    "compression": {"structured": {"params_after": 42}},
                                    "metrics": {"source_run": {"val": {"MAE": 0.7}}, "engine": {"val": {"MAE": 0.71}}}}))
    copied = zoo.collect(layout, ["tfn", "lmf"])
    assert copied == ["lmf_s1", "export_tfn"]
    kept = json.loads(layout.archived("export_tfn").read_text())
    assert kept == {"precision": "int8", "size_bytes": 5, "params": 42, "engine_metrics": {"val": {"MAE": 0.71}}}
    assert json.loads(layout.archived("lmf_s1").read_text())["test"]["MAE"] == 0.95


@pytest.mark.slow
def test_smoke_pipeline_one_model(tmp_path):
    """run → collect → render of one model, one seed, tiny settings (about a minute and a half on 2 cores)."""
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    script = [sys.executable, "experiments/zoo_report.py", "--smoke", "--out", str(tmp_path)]
    result = subprocess.run([*script, "run", "--models", "late", "--seeds", "1"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in ("late_s1", "export_late", "bench_late"):
        assert (tmp_path / "zoo_runs" / f"{name}.json").is_file(), name
    result = subprocess.run([*script, "render"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "zoo.md").read_text()
    cells = row(text, "late")
    assert cells[1] == "1 of 3" and "not run" not in cells
    assert set(row(text, "tfn")) == {"`tfn`", "not run"}
    assert "SMOKE RUN" in text and (tmp_path / "zoo.png").is_file()
