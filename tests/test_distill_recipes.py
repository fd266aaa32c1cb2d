"""experiments/distillation_report.py runs experiment configs: each of its training steps (experiment +
the overrides that vary per run) composes to the config that the step's full override list composed to
before its recipe became a ``configs/experiment/*.yaml`` (kept below, verbatim, as the reference)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _load_report():
    spec = importlib.util.spec_from_file_location("distillation_report", ROOT / "experiments" / "distillation_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report()

# ---------------------------------------------------------------------------- the reference: the report's step
# table as it was (full override lists), the 98.4% recipe (sst2_l6_kd_transfer20k_3ep) as before it became
# configs/experiment/sst2_distill_l6_transfer.yaml
SEEDS = (1, 2, 3)
SST2 = ["data.source_options.train_size=2000", "++trainer.val_check_interval=1.0"]
SST2_STUDENT = ["experiment=sst2_distill", *SST2]
L6 = ["model/text_encoder=minilm_l6", "model.net.text_encoder.finetune=full", "model.encoder_lr=5e-5", "trainer.max_epochs=2"]
L3 = ["model/text_encoder=minilm_l3", "trainer.max_epochs=2"]
BILSTM = ["model/text_encoder=bilstm", "model.encoder_lr=2e-3", "trainer.max_epochs=3"]
PLAIN = ["distill.marginalize=null", "distill.corrected_labels=false"]
XM = ["experiment=mosi_distill_crossmodal", "model.net.aux_7class=true", "trainer.max_epochs=3", *PLAIN]
XM8 = ["experiment=mosi_distill_crossmodal", "model.net.aux_7class=true", *PLAIN]
MARGINAL = ["distill.marginalize=[audio,vision]", "distill.corrected_labels=true"]
REAL_L3 = ["experiment=mosi_distill_crossmodal", "data=mosi_text", "model/text_encoder=minilm_l3", "task_name=mosi_real_distill",
           "trainer.max_epochs=4"]
MPNET_TEXT = ["experiment=mosi_text", "model/text_encoder=mpnet_base", "model.encoder_lr=3e-5", "trainer.max_epochs=4"]
REAL_L6 = ["experiment=mosi_distill_crossmodal", "data=mosi_text", "model/text_encoder=minilm_l6", "model.net.text_encoder.finetune=full",
           "model.encoder_lr=5e-5", "model.loss=l1", "trainer.max_epochs=6", "task_name=mosi_real_distill"]
REAL_TRANSFER = [*(a for a in REAL_L6 if a != "trainer.max_epochs=6"), "trainer.max_epochs=3",
                 "+data.source_options={transfer:movie_reviews,transfer_size:20000,transfer_seed:0}"]
TRANSFER = ["data.source_options.transfer_size=8000"]
TRANSFER20K_3EP = [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *L6, "data.source_options.transfer_size=20000",
                   "trainer.max_epochs=3"]

OLD_STEPS: list[tuple[str, list[str]]] = [
    ("sst2_teacher_mpnet", ["experiment=sst2_teacher", *SST2, "model/text_encoder=mpnet_base", "model.net.text_encoder.finetune=top_k",
                            "model.net.text_encoder.top_k=2", "trainer.max_epochs=1"]),
    ("sst2_l3_kd", [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *L3]),
    ("sst2_bilstm_kd", [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *BILSTM]),
    ("sst2_l6_kd", [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *L6]),
    ("bench_sst2", ["--texts", "sst2", "--variant", "teacher_mpnet={ckpt:sst2_teacher_mpnet}", "--variant", "minilm_l6={ckpt:sst2_l6_kd}",
                    "--variant", "minilm_l3={ckpt:sst2_l3_kd}", "--variant", "bilstm={ckpt:sst2_bilstm_kd}"]),
    ("mosi_text_s1", ["experiment=mosi_text", "seed=1"]),
    ("xm_fused_teacher", ["experiment=mosi_fusion", "model.aux_7class_weight=0.5", "trainer.max_epochs=3"]),
    ("xm_kd_s1", [*XM, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", "seed=1"]),
    ("xm_nokd_s1", [*XM, "distill.teacher_ckpt=null", "seed=1"]),
    ("sst2_l3_nokd", [*SST2_STUDENT, "distill.teacher_ckpt=null", *L3]),
    ("sst2_bilstm_nokd", [*SST2_STUDENT, "distill.teacher_ckpt=null", *BILSTM]),
    ("mosi_real_l3_kd_s1", [*REAL_L3, "distill.teacher_ckpt={ckpt:mosi_text_s1}", "seed=1"]),
    ("mosi_real_l3_nokd_s1", [*REAL_L3, "distill.teacher_ckpt=null", "seed=1"]),
    ("bench_crossmodal", ["--texts", "synthetic", "--variant", "fused_teacher={ckpt:xm_fused_teacher}",
                          "--variant", "text_only_student={ckpt:xm_kd_s1}"]),
    ("sst2_l6_kd_transfer", [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *L6, *TRANSFER]),
    ("mosi_text_mpnet_s1", [*MPNET_TEXT, "seed=1"]),
    ("mosi_real_l6_kd_s1", [*REAL_L6, "distill.teacher_ckpt={ckpt:mosi_text_mpnet_s1}", "seed=1"]),
    ("sst2_l3_kd_transfer", [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *L3, *TRANSFER]),
    ("sst2_l6_kd_transfer20k", [*SST2_STUDENT, "distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}", *L6,
                                "data.source_options.transfer_size=20000"]),
    ("sst2_l6_kd_transfer20k_3ep", TRANSFER20K_3EP),
    *[(f"sst2_l6_kd_transfer20k_3ep_seed{s}", [*TRANSFER20K_3EP, f"seed={s}"]) for s in (1, 2)],
    ("bench_sst2_transfer", ["--texts", "sst2", "--variant", "teacher_mpnet={ckpt:sst2_teacher_mpnet}",
                             "--variant", "minilm_l6={ckpt:sst2_l6_kd_transfer}", "--variant", "minilm_l3={ckpt:sst2_l3_kd_transfer}"]),
    *[step for s in SEEDS[1:] for step in (
        (f"mosi_text_mpnet_s{s}", [*MPNET_TEXT, f"seed={s}"]),
        (f"mosi_real_l6_kd_s{s}", [*REAL_L6, f"distill.teacher_ckpt={{ckpt:mosi_text_mpnet_s{s}}}", f"seed={s}"]))],
    *[step for s in SEEDS[1:] for step in (
        (f"xm_kd_s{s}", [*XM, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", f"seed={s}"]),
        (f"xm_nokd_s{s}", [*XM, "distill.teacher_ckpt=null", f"seed={s}"]),
        (f"mosi_text_s{s}", ["experiment=mosi_text", f"seed={s}"]),
        (f"mosi_real_l3_kd_s{s}", [*REAL_L3, f"distill.teacher_ckpt={{ckpt:mosi_text_s{s}}}", f"seed={s}"]),
        (f"mosi_real_l3_nokd_s{s}", [*REAL_L3, "distill.teacher_ckpt=null", f"seed={s}"]))],
    ("sst2_l6_nokd", [*SST2_STUDENT, "distill.teacher_ckpt=null", *L6]),
    *[step for s in SEEDS for step in (
        (f"xm8_kd_s{s}", [*XM8, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", f"seed={s}"]),
        (f"xm8_nokd_s{s}", [*XM8, "distill.teacher_ckpt=null", f"seed={s}"]))],
    *[step for s in SEEDS for step in (
        (f"xmc_kd_s{s}", [*XM, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", *MARGINAL, f"seed={s}"]),
        (f"xmc8_kd_s{s}", [*XM8, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", *MARGINAL, f"seed={s}"]))],
    ("xm_fused_teacher8", ["experiment=mosi_fusion", "model.aux_7class_weight=0.5"]),
    *[step for s in SEEDS for step in (
        (f"xmt8_kd_s{s}", [*XM8, "distill.teacher_ckpt={ckpt:xm_fused_teacher8}", f"seed={s}"]),
        (f"xmct8_kd_s{s}", [*XM8, "distill.teacher_ckpt={ckpt:xm_fused_teacher8}", *MARGINAL, f"seed={s}"]))],
    *[step for s in SEEDS for step in (
        (f"xmm8_kd_s{s}", [*XM8, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", "distill.marginalize=[audio,vision]", f"seed={s}"]),
        (f"xml8_kd_s{s}", [*XM8, "distill.teacher_ckpt={ckpt:xm_fused_teacher}", *MARGINAL, "distill.score_weight=0",
                           "distill.alpha=0", f"seed={s}"]))],
    ("bench_mosi_real", ["--texts", "mosi", "--variant", "mosi_text_mpnet={ckpt:mosi_text_mpnet_s1}",
                         "--variant", "student_minilm_l6={ckpt:mosi_real_l6_kd_s1}"]),
    # issue 15 item 5 (new steps, written out as override lists of the base recipe): the in-domain transfer set
    *[step for s in (1, 2, 3) for step in (
        (f"mosi_real_l6_transfer_s{s}", [*REAL_TRANSFER, f"distill.teacher_ckpt={{ckpt:mosi_text_mpnet_s{s}}}", f"seed={s}"]),
        (f"mosi_real_l3_transfer_s{s}", [*[a.replace("minilm_l6", "minilm_l3") for a in REAL_TRANSFER],
                                         f"distill.teacher_ckpt={{ckpt:mosi_text_mpnet_s{s}}}", f"seed={s}"]))],
    ("bench_mosi_real_transfer", ["--texts", "mosi", "--variant", "mosi_text_mpnet={ckpt:mosi_text_mpnet_s1}",
                                  "--variant", "student_minilm_l6={ckpt:mosi_real_l6_transfer_s1}",
                                  "--variant", "student_minilm_l3={ckpt:mosi_real_l3_transfer_s1}"]),
]
OLD = dict(OLD_STEPS)
TRAINING = [name for name, _ in OLD_STEPS if not report.is_bench(name)]


def placeholders(args: list[str]) -> list[str]:
    """``{ckpt:STEP}`` → a fixed stand-in path (the same on both sides of a comparison)."""
    out = []
    for a in args:
        while "{ckpt:" in a:
            start, end = a.index("{ckpt:"), a.index("}", a.index("{ckpt:"))
            a = a[:start] + f"/ckpts/{a[start + 6:end]}.ckpt" + a[end + 1:]
        out.append(a)
    return out


def composed(overrides: list[str]) -> dict:
    """configs/train.yaml with these overrides, unresolved (interpolations kept as written), without the hydra node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose("train", overrides=placeholders(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.setenv("PROJECT_ROOT", str(ROOT))


def test_same_steps_in_the_same_order_benchmarks_unchanged():
    assert [name for name, _, _ in report.STEPS] == [name for name, _ in OLD_STEPS]
    for name, experiment, args in report.STEPS:
        assert (experiment is None) == report.is_bench(name), name
        if experiment is None:
            assert args == OLD[name], name
            assert report.shown(name) == "python " + " ".join(["benchmarks/bench_distill.py", *OLD[name]])
        else:
            assert (CONFIGS / "experiment" / f"{experiment}.yaml").is_file(), (name, experiment)
            assert not any(a.startswith(("experiment=", "task_name=")) for a in args), (name, args)
            assert report.shown(name) == "python " + " ".join(["train.py", f"experiment={experiment}", *args])


@pytest.mark.parametrize("step", TRAINING)
def test_step_composes_to_its_old_override_list(step):
    """The same config, except task_name: a recipe's runs are named after its experiment (as every experiment's
    are, tests/test_train.py), and task_name only names the run (its default log folder; the report sets
    hydra.run.dir), it does not change what is trained."""
    experiment, args = report.STEP[step]
    new, old = composed([f"experiment={experiment}", *args]), composed(OLD[step])
    assert new.pop("task_name") == experiment
    old.pop("task_name")
    assert new == old


def test_every_report_recipe_is_used():
    """Each recipe yaml written for the report names a step that runs it (none left over)."""
    used = {experiment for _, experiment, _ in report.STEPS if experiment}
    recipes = {"sst2_teacher_mpnet", "sst2_distill_l3", "sst2_distill_l6", "sst2_distill_bilstm", "sst2_distill_l6_transfer",
               "mosi_fusion_7class", "mosi_distill_crossmodal_7class", "mosi_distill_crossmodal_plain", "mosi_text_mpnet",
               "mosi_real_distill_l3", "mosi_real_distill_l6", "mosi_text", "mosi_real_distill_l6_transfer"}
    assert used == recipes


def test_l6_transfer_recipe_is_the_l6_recipe_with_a_transfer_set():
    base = composed(["experiment=sst2_distill_l6", "data.source_options.transfer_size=20000", "trainer.max_epochs=3"])
    transfer = composed(["experiment=sst2_distill_l6_transfer"])
    assert base.pop("task_name") == "sst2_distill_l6" and transfer.pop("task_name") == "sst2_distill_l6_transfer"
    assert base == transfer


# ---------------------------------------------------------------------------- rendering
METRICS = {k: 0.5 for k in ("MAE", "Corr", "Non0_acc_2", "Has0_acc_2", "Mult_acc_7", "acc")}


def _write_run(out: Path, step: str, **extra) -> None:
    (out / step).mkdir(parents=True, exist_ok=True)
    record = {"val": METRICS, "test": METRICS, "best_ckpt": f"/ckpts/{step}.ckpt", "train_seconds": 12.0, **extra}
    (out / step / "metrics.json").write_text(json.dumps(record))


def test_render_counts_come_from_the_runs_and_commands_name_the_experiments(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "OUT", tmp_path / "runs")
    monkeypatch.setattr(report, "FIGURE", tmp_path / "distillation.png")
    monkeypatch.setattr(report, "REPORT", tmp_path / "distillation.md")  # no earlier render to keep sections from
    monkeypatch.setattr(report, "ARCHIVE", tmp_path / "archive")  # nor outputs kept in the repository
    empty = report.render()  # nothing has run: every section renders, no count is stated
    assert "872" not in empty and "1,284" not in empty and "2,199" not in empty and "not run" in empty

    _write_run(tmp_path / "runs", "sst2_teacher_mpnet", data_report={"samples": {"train": 2000, "valid": 1000, "test": 872}})
    _write_run(tmp_path / "runs", "mosi_text_s1", data_report={"samples": {"train": 1284, "valid": 229, "test": 0}})
    _write_run(tmp_path / "runs", "xm_nokd_s1", data_report={"segments": {"train": 1235, "valid": 241, "test": 723}})
    text = report.render()
    runs = tmp_path / "runs"
    assert "**full GLUE SST-2 dev set (872 sentences)**" in text and "selected on 1,000 sentences" in text
    assert f"sentences per split: `data_report` in `{runs}/sst2_teacher_mpnet/metrics.json`" in text
    assert f"train 1,284 / valid 229 segments (`data_report` in `{runs}/mosi_text_s1/metrics.json`)" in text
    assert f"2,199 segments: train 1,235 / valid 241 / test 723, `data_report` in `{runs}/xm_nokd_s1/metrics.json`" in text
    assert "text explains 44% of the label's variance" in text  # from mmsenti.data.synthetic's weights
    assert "0.841" not in text and "≈" not in text  # the hand-typed reference figures are gone
    for name, _, _ in report.STEPS:
        assert f"`{report.shown(name)}`" in text
    assert "- `sst2_teacher_mpnet` — 12 s training: `python train.py experiment=sst2_teacher_mpnet`" in text
    assert "- `sst2_l3_kd` — *not run*: `python train.py experiment=sst2_distill_l3 distill.teacher_ckpt={ckpt:sst2_teacher_mpnet}`" in text


def test_partial_rerun_keeps_the_other_sections_and_shows_before_after(tmp_path, monkeypatch):
    """Re-running only the SST-2 steps: the SST-2 section is new (with the before/after-fix table),
    the MOSI and cross-modal sections and their commands' times are kept from the earlier render."""
    monkeypatch.setattr(report, "OUT", tmp_path / "runs")
    monkeypatch.setattr(report, "FIGURE", tmp_path / "distillation.png")
    monkeypatch.setattr(report, "REPORT", tmp_path / "distillation.md")
    monkeypatch.setattr(report, "ARCHIVE", tmp_path / "archive")
    before = tmp_path / "before.json"
    before.write_text(json.dumps({"source": "an earlier commit", "test_acc": {"sst2_teacher_mpnet": 0.8830, "sst2_l3_kd": 0.8016}}))
    monkeypatch.setattr(report, "BEFORE_FIX", before)
    for step in report.STEPS:  # a complete earlier run: every step with its own metrics
        _write_run(tmp_path / "runs", step[0])
    old = report.render()
    report.REPORT.write_text(old.replace("## Real CMU-MOSI transcripts (text only, valid fold)\n",
                                         "## Real CMU-MOSI transcripts (text only, valid fold)\n\nMARKER-MOSI\n"))
    import shutil

    shutil.rmtree(tmp_path / "runs")
    _write_run(tmp_path / "runs", "sst2_teacher_mpnet", test={**METRICS, "acc": 0.9000})
    text = report.render()
    assert "MARKER-MOSI" in text  # kept verbatim
    assert text.count("*This section is kept from the previous render") == 2  # MOSI real + cross-modal
    assert "| `sst2_teacher_mpnet` | 0.8830 | 0.9000 | +1.7 |" in text
    assert "| `sst2_l3_kd` | 0.8016 | not run | — |" in text
    assert "- `mosi_text_s1` — 12 s training (previous render): " in text
    assert "- `sst2_l3_kd` — *not run*: " in text


def test_collect_keeps_outputs_that_render_without_the_run_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "OUT", tmp_path / "runs")
    monkeypatch.setattr(report, "ARCHIVE", tmp_path / "archive")
    _write_run(tmp_path / "runs", "sst2_l3_kd", test={**METRICS, "acc": 0.8123})
    assert report.collect() == ["sst2_l3_kd"]
    import shutil

    shutil.rmtree(tmp_path / "runs")  # a fresh clone: no run folders
    assert report.test_acc("sst2_l3_kd") == 0.8123 and report.load("sst2_l6_kd") is None


def test_seed_mean_row_names_only_the_seeds_that_ran(tmp_path, monkeypatch):
    """The 3-epoch recipe's mean row lists the seeds behind it (seed 1 not run here: 42 and 2, not '42, 1, 2')."""
    monkeypatch.setattr(report, "OUT", tmp_path / "runs")
    monkeypatch.setattr(report, "FIGURE", tmp_path / "distillation.png")
    monkeypatch.setattr(report, "REPORT", tmp_path / "distillation.md")
    monkeypatch.setattr(report, "ARCHIVE", tmp_path / "archive")
    for step, acc in (("sst2_teacher_mpnet", 0.88), ("sst2_l6_kd", 0.83), ("sst2_l6_kd_transfer20k_3ep", 0.86),
                      ("sst2_l6_kd_transfer20k_3ep_seed2", 0.87)):
        _write_run(tmp_path / "runs", step, test={**METRICS, "acc": acc})
    assert report.transfer20k_3ep_seeds() == [("42", 0.86), ("2", 0.87)]
    text = report.render()
    assert "| MiniLM-L6, 3 epochs, **mean of seeds 42, 2** (0.8600, 0.8700) | 0.8300 | 20,000 sentences | 0.8650 ± 0.0071 |" in text
