"""``mmsenti report <run_dir>``: test predictions written by training, the run report's pictures and page,
the attention probe, the one ``report`` dispatch (run folder | bench JSON), and a headless-browser render."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmsenti.cli import main
from mmsenti.report import write_run_report
from mmsenti.report.probes import CrossAttentionProbe, hide_modality, model_inputs
from mmsenti.training.callbacks import class_7, prediction_row, write_predictions

ROOT = Path(__file__).resolve().parents[1]
PREDICTION_PICTURES = {"scatter.png", "confusion.png", "error_by_label.png"}
MODEL_PICTURES = {"modality_contribution.png", "attention_1.png", "attention_2.png", "attention_3.png"}


class _References(HTMLParser):
    """Every ``src=`` / ``href=`` value of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


def page_references(page: Path) -> list[str]:
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


def assert_references_only_written_files(result: dict) -> None:
    """The page names only files in its own folder that this report wrote, and shows each picture it wrote."""
    page = Path(result["html"])
    refs = page_references(page)
    written = {Path(f).name for f in result["files"]} - {page.name}
    for ref in refs:
        assert "/" not in ref and ":" not in ref, f"{ref}: outside the report folder"
        assert (page.parent / ref).is_file(), f"{ref}: referenced but absent"
    assert set(refs) == written


def fake_run(folder: Path, *, predictions: bool = True, n: int = 40, task: str = "regression") -> Path:
    """A run folder as train.py leaves it, without a checkpoint: metrics.json, resolved_config.yaml, predictions.csv."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    labels = rng.uniform(-3, 3, n) if task == "regression" else rng.choice([-1.0, 1.0], n)
    scores = np.clip(labels * 0.6 + rng.normal(0, 0.5, n), -3, 3)
    metrics = {"test": {"MAE": float(np.abs(scores - labels).mean()), "Corr": 0.5}, "val": {"MAE": 1.0},
               "best_ckpt": str(folder / "checkpoints" / "epoch_003.ckpt"), "seed": 1, "task_name": "fake_run"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "resolved_config.yaml").write_text(f"task_name: fake_run\nmodel:\n  net:\n    task: {task}\n"
                                                 "    modalities: [text, audio, vision]\n    fusion:\n      name: mult\n")
    if predictions:
        write_predictions(folder / "predictions.csv", [prediction_row(f"vid$_${i}", float(y), float(s), task)
                                                       for i, (y, s) in enumerate(zip(labels, scores))])
    return folder


# ----------------------------------------------------------------------------- predictions
def test_prediction_classes_round_as_acc7_does():
    """-3..3 classes as MOSI's Acc-7 counts them: clip, then round half to even (np.round, as MMSA)."""
    assert [class_7(x) for x in (0.5, 1.5, -2.5, 2.49, 3.7, -9.0, -0.4)] == [0, 2, -2, 2, 3, -3, 0]
    row = prediction_row("a", 1.5, -0.5, "regression")
    assert row == {"id": "a", "label": 1.5, "score": -0.5, "pred_class_7": 0, "label_class_7": 2}
    row = prediction_row("b", -1.0, 2.0, "classification")
    assert row["pred_label"] == 1 and row["prob_positive"] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert "pred_class_7" not in row  # a logit has no 7 classes


# ----------------------------------------------------------------------------- reports without a model
def test_report_from_predictions_only_draws_them_and_says_what_it_skipped(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    result = write_run_report(run, progress=False)
    assert {p.name for p in result["files"]} == {"report.html", *PREDICTION_PICTURES}
    assert all(Path(p).stat().st_size > 1000 for p in result["files"])
    assert set(result["skipped"]) == {"Modality contribution", "Cross-modal attention"}
    assert all("no checkpoint" in reason for reason in result["skipped"].values())
    printed = capsys.readouterr().out
    assert "skipped modality contribution: no checkpoint" in printed and "skipped cross-modal attention" in printed
    assert_references_only_written_files(result)
    assert "skipped: no checkpoint" in Path(result["html"]).read_text()


def test_report_without_predictions_keeps_metrics_and_removes_stale_pictures(tmp_path):
    run = fake_run(tmp_path / "run")
    write_run_report(run, progress=False, verbose=False)
    (run / "predictions.csv").unlink()
    result = write_run_report(run, progress=False, verbose=False)
    assert [p.name for p in result["files"]] == ["report.html"]
    assert not list((run / "report").glob("*.png"))  # last report's pictures are not left beside the new page
    assert "predictions.csv" in result["skipped"]["Predicted vs true"]
    page = Path(result["html"]).read_text()
    assert "<td>test</td>" in page and "MAE" in page
    assert_references_only_written_files(result)


def test_classification_report_draws_probabilities_not_seven_classes(tmp_path):
    run = fake_run(tmp_path / "run", task="classification")
    result = write_run_report(run, tmp_path / "elsewhere", progress=False, verbose=False)
    assert {p.name for p in result["files"]} == {"report.html", "scatter.png", "confusion.png"}
    assert Path(result["html"]).parent == tmp_path / "elsewhere"
    assert "classification" in result["skipped"]["Error by label bin"]


# ----------------------------------------------------------------------------- the probes
def _tiny_batch(model):
    from mmsenti.data.batch import SentimentCollator
    from mmsenti.pretrained import load_pretrained

    rng = np.random.default_rng(0)
    samples = [{"id": "a", "text": "what a great film", "audio": rng.normal(size=(6, 74)), "vision": rng.normal(size=(3, 47)),
                "label": 2.0},
               {"id": "b", "text": "dull", "audio": rng.normal(size=(2, 74)), "vision": None, "label": -1.0}]
    return SentimentCollator(load_pretrained("minilm_l6", "tokenizer"), 74, 47)(samples)


def test_attention_probe_recovers_the_layer_weights(tiny_model):
    batch = _tiny_batch(tiny_model)
    probe = CrossAttentionProbe(tiny_model.fusion)
    assert set(probe.captures) == {"audio", "vision"}
    with torch.no_grad(), probe:
        hooked = tiny_model(**model_inputs(batch)).score
    assert probe.faithful() == {}, probe.faithful()  # the weights rebuild each layer's output
    assert torch.equal(hooked, tiny_model(**model_inputs(batch)).score)  # the hooks change nothing, and are removed
    weights = probe.captures["audio"].weights  # [B, T_text, T_audio]
    assert weights.shape[:2] == batch.input_ids.shape and weights.shape[2] == batch.audio.shape[1]
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-5)
    assert float(weights[1, :, 2:].abs().max()) == 0.0  # sample b's padded audio frames get no attention

    # a layer whose output is not softmax(q kᵀ/√d) v is reported, never drawn
    _, _, attention = probe.layers["vision"]
    original = attention.forward
    attention.forward = lambda *args, **kwargs: 2 * original(*args, **kwargs)
    try:
        with torch.no_grad(), probe:
            tiny_model(**model_inputs(batch))
    finally:
        del attention.forward
    assert set(probe.faithful()) == {"vision"}


@pytest.mark.parametrize("fusion, layers", [
    ({"name": "mult_paper", "d_model": 32, "num_layers": 2, "num_heads": 4, "self_layers": 1},
     {"audio": "cross.audio_to_text.layers.1.self_attn", "vision": "cross.vision_to_text.layers.1.self_attn"}),
    ({"name": "tfn"}, {}),  # no cross-modal attention: the report skips the picture
])
def test_attention_probe_finds_each_fusions_last_cross_modal_layer(fusion, layers):
    from mmsenti.models import SentimentModel, SentimentModelConfig

    torch.manual_seed(0)
    frames = {"name": "conv_transformer", "d_model": 32, "num_heads": 4}
    model = SentimentModel(SentimentModelConfig(fusion=fusion, audio_encoder={**frames, "input_dim": 74},
                                                vision_encoder={**frames, "input_dim": 47}), pretrained_weights=False).eval()
    probe = CrossAttentionProbe(model.fusion)
    assert {s: name for s, (_, name, _) in probe.layers.items()} == layers
    with torch.no_grad(), probe:
        model(**model_inputs(_tiny_batch(model)))
    assert probe.faithful() == {}


def test_hidden_modality_is_the_models_missing_modality(tiny_model):
    batch = _tiny_batch(tiny_model)
    with torch.no_grad():
        hidden = tiny_model(**model_inputs(hide_modality(batch, "audio"))).score
        absent = tiny_model(**{**model_inputs(batch), "audio": None, "audio_mask": None}).score
        text = hide_modality(batch, "text").attention_mask
    assert torch.allclose(hidden, absent, atol=1e-6)
    assert text.sum(1).tolist() == [2, 2]  # [CLS] and [SEP] stay: "dull" is [CLS] dull [SEP] + padding
    assert text[1, :3].tolist() == [1, 0, 1] and text[0, 0] == 1 and text[0, int(batch.attention_mask[0].sum()) - 1] == 1


# ----------------------------------------------------------------------------- one trained run
# (slow: ~25 s of training and report on an idle 2-core machine; the fast tests above cover the page without a model)
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch MulT run on the small synthetic set (default callbacks: checkpoints and predictions.csv),
    and its report."""
    from test_train import SMALL, compose_train

    from mmsenti.data.synthetic import write_synthetic_mosi
    from mmsenti.training.tasks import train

    root = tmp_path_factory.mktemp("run_report")
    data = write_synthetic_mosi(root / "data", scale="small", seed=0)
    cfg = compose_train(["experiment=mosi_fusion", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                         *SMALL], root / "run", data)
    _, objects = train(cfg)
    result = write_run_report(root / "run", progress=False)
    return {"run": root / "run", "test": objects["datamodule"].splits["test"], "report": result}


@pytest.mark.slow
def test_training_writes_one_prediction_per_test_sample(trained_run):
    frame = pd.read_csv(trained_run["run"] / "predictions.csv", dtype={"id": str})
    assert list(frame.columns) == ["id", "label", "score", "pred_class_7", "label_class_7"]
    assert len(frame) == len(trained_run["test"]) and set(frame["id"]) == {s["id"] for s in trained_run["test"]}
    metrics = json.loads((trained_run["run"] / "metrics.json").read_text())["test"]
    # the scores are the evaluated checkpoint's: they give the test metrics metrics.json holds
    assert np.abs(frame["score"] - frame["label"]).mean() == pytest.approx(metrics["MAE"], abs=1e-5)
    assert (frame["pred_class_7"] == np.round(np.clip(frame["score"], -3, 3))).all()
    assert (frame["pred_class_7"] == frame["label_class_7"]).mean() == pytest.approx(metrics["Mult_acc_7"], abs=1e-6)


@pytest.mark.slow
def test_run_report_writes_every_picture_and_references_only_them(trained_run):
    result = trained_run["report"]
    assert result["skipped"] == {}
    assert {p.name for p in result["files"]} == {"report.html", *PREDICTION_PICTURES, *MODEL_PICTURES}
    assert_references_only_written_files(result)
    page = Path(result["html"]).read_text()
    assert "cross.audio_to_text.1.attn" in page  # the last cross-modal block of each stream
    modalities = re.findall(r"<tr><td>(text|audio|vision)</td><td>(\d+)</td>", page)
    assert [m for m, _ in modalities] == ["text", "audio", "vision"]
    assert all(int(n) == len(trained_run["test"]) for _, n in modalities)


@pytest.mark.slow
def test_cli_report_of_a_run_folder_with_chosen_segments(trained_run, tmp_path, capsys):
    chosen = trained_run["test"][5]["id"]
    assert main(["report", str(trained_run["run"]), "--out", str(tmp_path), "--segment", chosen, "--no-progress"]) == 0
    assert f"wrote {tmp_path / 'report.html'} (5 pictures)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("attention_*.png")) == ["attention_1.png"]
    assert chosen in (tmp_path / "report.html").read_text()
    assert main(["report", str(trained_run["run"]), "--out", str(tmp_path), "--segment", "nope"]) == 2
    assert "--segment nope: not a test segment" in capsys.readouterr().err


CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0));
  broken.forEach(i => console.error('broken image ' + i.getAttribute('src')));
  console.log('mmsenti-check images ' + (images.length - broken.length) + '/' + images.length);
});</script>"""


def render_in_chromium(page: Path, screenshot: Path) -> list[str]:
    """Open ``page`` (plus a load-time image check) in headless chromium; returns its console lines."""
    check = page.with_name("_check_" + page.name)
    check.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    command = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--window-size=1200,3200",
               f"--screenshot={screenshot}", check.as_uri()]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("chromium did not finish rendering within 180 s")
    finally:
        check.unlink(missing_ok=True)
    assert proc.returncode == 0, err[-2000:]
    return [line.split("CONSOLE", 1)[1] for line in err.splitlines() if ":CONSOLE" in line]


def skip_without_chromium() -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")


def assert_renders_cleanly(page: Path, screenshot: Path) -> None:
    """Every image of the page loads and the console shows nothing else (no error, no broken image)."""
    n_images = len(page_references(page))
    console = render_in_chromium(page, screenshot)
    assert any(f"mmsenti-check images {n_images}/{n_images}" in line for line in console), console
    assert [line for line in console if "mmsenti-check" not in line] == []
    assert screenshot.stat().st_size > 20_000


def test_report_renders_in_headless_chromium(tmp_path):
    skip_without_chromium()
    result = write_run_report(fake_run(tmp_path / "run"), progress=False, verbose=False)
    assert_renders_cleanly(Path(result["html"]), tmp_path / "report.png")
    # the check itself sees a broken page
    broken = tmp_path / "broken" / "report.html"
    broken.parent.mkdir()
    broken.write_text("<html><body><img src='missing.png'></body></html>")
    assert any("broken image missing.png" in line for line in render_in_chromium(broken, tmp_path / "broken.png"))


@pytest.mark.slow
def test_full_run_report_renders_in_headless_chromium(trained_run, tmp_path):
    skip_without_chromium()
    assert_renders_cleanly(Path(trained_run["report"]["html"]), tmp_path / "report.png")


# ----------------------------------------------------------------------------- one `report` dispatch
def test_report_dispatch_bench_json_and_clear_errors(tmp_path, capsys):
    bench = tmp_path / "bench" / "bench.json"
    bench.parent.mkdir()
    shutil.copy(ROOT / "experiments" / "engines" / "bench.json", bench)
    assert main(["report", str(bench)]) == 0  # a .json file alone: the Pareto report, as before
    assert (bench.parent / "pareto.md").is_file()
    assert main(["report", "--pareto", str(bench.parent), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "pareto.md").is_file() and (tmp_path / "p" / "pareto.png").is_file()
    capsys.readouterr()

    (tmp_path / "notes.txt").write_text("hello")
    for bad, says in ((tmp_path / "bench", "a folder without metrics.json"), (tmp_path / "notes.txt", "not a .json file"),
                      (tmp_path / "absent", "no such file or folder")):
        assert main(["report", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "run folder" in err and "--pareto" in err, err
