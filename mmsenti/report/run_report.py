"""``mmsenti report <run_dir>``: one HTML page with pictures of a training run, rendered from its files.

Reads a ``train.py`` run folder — ``metrics.json``, ``resolved_config.yaml``, ``predictions.csv``
(:class:`~mmsenti.training.callbacks.TestPredictionsWriter`) and the checkpoint under
``checkpoints/`` — and writes ``<run_dir>/report/report.html`` beside its PNGs:

* from the predictions: predicted-vs-true scatter, 7-class confusion matrix, MAE by label bin
  (classification runs: p(positive) by true class and the 2-class confusion matrix);
* from the checkpoint and the run's own data config (the test split rebuilt as export and the
  benchmarks rebuild it): the score change when each modality is hidden, and, for a MulT-style fusion,
  the text → audio / vision attention maps of a few test segments (:mod:`mmsenti.report.probes`).

Whatever a run lacks (no predictions, no checkpoint, data no longer where the run read it, a fusion
without cross-modal attention) is left out with a printed ``skipped <what>: <why>`` line, and the page
says so too. The page is self-contained: it links nothing but the PNGs written beside it.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.io import write_text_atomic

PREDICTIONS_FILE = "predictions.csv"  # what configs/callbacks/default.yaml's test_predictions writes
REPORT_FOLDER = "report"
HTML_NAME = "report.html"
PICTURES = ("scatter.png", "confusion.png", "error_by_label.png", "modality_contribution.png")
ATTENTION_PICTURE = "attention_{index}.png"
METRIC_ORDER = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")
DEFAULT_SEGMENTS = 3


# ----------------------------------------------------------------------------- the run folder
@dataclasses.dataclass
class RunFolder:
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    predictions: Any | None  # pandas DataFrame
    predictions_note: str | None  # why there are none
    checkpoint: Path | None
    checkpoint_note: str | None
    task: str


def is_run_folder(path: str | Path) -> bool:
    return (Path(path) / "metrics.json").is_file()


def _find_checkpoint(run: Path, metrics: dict[str, Any]) -> tuple[Path | None, str | None]:
    """The run's best checkpoint (``best_ckpt``, or the same file name under ``<run>/checkpoints`` when the
    folder moved), else its newest ``epoch_*.ckpt``, else ``last.ckpt``."""
    folder = run / "checkpoints"
    recorded = metrics.get("best_ckpt") or metrics.get("ckpt")
    candidates = [Path(recorded), folder / Path(recorded).name] if recorded else []
    candidates += sorted(folder.glob("epoch_*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates.append(folder / "last.ckpt")
    for path in candidates:
        if path.is_file():
            return path, None
    return None, f"no checkpoint (metrics.json best_ckpt={recorded}, nothing under {folder})"


def _read_predictions(path: Path):
    import pandas as pd

    if not path.is_file():
        return None, (f"no {PREDICTIONS_FILE} in the run folder (runs trained before the test_predictions callback, "
                      f"or with callbacks=none / test=false, have none)")
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except (ValueError, OSError, UnicodeDecodeError) as err:
        return None, f"{path} is not a readable CSV ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    missing = [c for c in ("id", "label", "score") if c not in frame.columns]
    if missing:
        return None, f"{path} has no {', '.join(missing)} column(s); it was not written by TestPredictionsWriter"
    frame = frame[np.isfinite(frame["label"].astype(float)) & np.isfinite(frame["score"].astype(float))]
    if frame.empty:
        return None, f"{path} holds no labelled test sample"
    return frame.reset_index(drop=True), None


def read_run(path: str | Path) -> RunFolder:
    """Everything a run report draws from; a folder without ``metrics.json`` is one clear error."""
    path = Path(path)
    if not path.is_dir():
        raise MmsentiError(f"{path}: no such run folder; pass a train.py run folder (logs/<task>/runs/<time>/)")
    if not is_run_folder(path):
        raise MmsentiError(f"{path}: not a run folder (no metrics.json); pass a train.py run folder "
                           f"(logs/<task>/runs/<time>/), or bench JSON with `mmsenti report --pareto {path}`")
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MmsentiError(f"{path / 'metrics.json'}: not JSON ({err}); the run did not finish writing it") from err
    config: dict[str, Any] = {}
    if (path / "resolved_config.yaml").is_file():
        from omegaconf import OmegaConf

        config = dict(OmegaConf.to_container(OmegaConf.load(path / "resolved_config.yaml"), resolve=False) or {})
    else:
        config = dict(metrics.get("config") or {})
    predictions, predictions_note = _read_predictions(path / PREDICTIONS_FILE)
    checkpoint, checkpoint_note = _find_checkpoint(path, metrics)
    task = ((config.get("model") or {}).get("net") or {}).get("task")
    if task is None and predictions is not None:
        task = "classification" if "prob_positive" in predictions.columns else "regression"
    return RunFolder(path=path, metrics=metrics, config=config, predictions=predictions, predictions_note=predictions_note,
                     checkpoint=checkpoint, checkpoint_note=checkpoint_note, task=task or "regression")


# ----------------------------------------------------------------------------- page sections
@dataclasses.dataclass
class Section:
    title: str
    caption: str = ""
    images: list[str] = dataclasses.field(default_factory=list)  # file names inside the report folder
    table: str = ""  # HTML
    skipped: str | None = None


def _prediction_sections(run: RunFolder, out: Path) -> list[Section]:
    from mmsenti.report import figures

    name = run.metrics.get("task_name") or run.path.name
    titles = ("Predicted vs true", "Confusion matrix", "Error by label bin")
    if run.predictions is None:
        return [Section(t, skipped=run.predictions_note) for t in titles]
    frame = run.predictions
    label, score = frame["label"].to_numpy(float), frame["score"].to_numpy(float)
    if run.task == "classification":
        prob = frame["prob_positive"].to_numpy(float) if "prob_positive" in frame else 1 / (1 + np.exp(-score))
        true_class, pred_class = np.where(label > 0, 1, -1), np.where(score > 0, 1, -1)
        return [
            Section("Predicted vs true", "p(positive) of the test samples, by their true class.",
                    [figures.probability_by_class(label, prob, out / "scatter.png", name).name]),
            Section("Confusion matrix", "True class (rows) against the predicted class (score > 0), test split.",
                    [figures.confusion_matrix(true_class, pred_class, np.array([-1, 1]), out / "confusion.png", name).name]),
            Section("Error by label bin", skipped="a classification run: its score is a logit, not a -3..3 "
                                                  "sentiment, so it has no MAE by label bin"),
        ]
    return [
        Section("Predicted vs true", "Each test segment's predicted score against its label; colour is the absolute error.",
                [figures.scatter_pred_true(label, score, out / "scatter.png", name).name]),
        Section("Confusion matrix", "MOSI's 7 classes (Acc-7: round(clip(·, -3, 3))), true (rows) against predicted.",
                [figures.confusion_matrix(figures.classes_7(label), figures.classes_7(score), figures.CLASSES_7,
                                          out / "confusion.png", f"{name}: 7-class").name]),
        Section("Error by label bin", "Mean absolute error of the test segments in each true-label bin.",
                [figures.error_by_label_bin(label, score, out / "error_by_label.png", name).name]),
    ]


def choose_segments(run: RunFolder, test_ids: list[str], requested: list[str] | None, n: int) -> list[str]:
    """The test segments whose attention is drawn: ``requested``, else the most positive label, the most
    negative one and the largest error (from the predictions), else the first test segments."""
    if requested:
        unknown = [s for s in requested if s not in set(test_ids)]
        if unknown:
            raise MmsentiError(f"--segment {unknown[0]}: not a test segment of this run (ids look like "
                               f"{', '.join(test_ids[:3])})")
        return list(requested)
    if run.predictions is None:
        return test_ids[:n]
    frame = run.predictions[run.predictions["id"].isin(set(test_ids))]
    if frame.empty:
        return test_ids[:n]
    error = (frame["score"] - frame["label"]).abs()
    picks = [frame.loc[frame["label"].idxmax(), "id"], frame.loc[frame["label"].idxmin(), "id"], frame.loc[error.idxmax(), "id"]]
    picks += list(frame["id"])
    return list(dict.fromkeys(picks))[:n]


def _tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    return list(convert(ids)) if convert else [str(i) for i in ids]


def _attention_section(loaded: Any, dm: Any, out: Path, chosen: list[str]) -> Section:
    import torch

    from mmsenti.report import figures
    from mmsenti.report.probes import CrossAttentionProbe, model_inputs

    title = "Cross-modal attention"
    model = loaded.model
    fusion_name = loaded.model_config.fusion.get("name", "mult")
    probe = CrossAttentionProbe(model.fusion)
    if not probe.layers:
        return Section(title, skipped=f"fusion '{fusion_name}' has no <audio|vision>_to_text cross-modal attention "
                                      "(only MulT-style fusions have one)")
    by_id = {str(s["id"]): s for s in dm.splits["test"]}
    batch = dm.collator([by_id[i] for i in chosen])
    with torch.no_grad(), probe:
        scores = model(**model_inputs(batch)).score.float()
    problems = probe.faithful()
    if problems:
        return Section(title, skipped="the attention weights could not be recovered by hooks: " + "; ".join(problems.values()))
    images, notes = [], []
    for i, sample_id in enumerate(chosen):
        words = batch.attention_mask[i].bool()
        tokens = _tokens(dm.collator.tokenizer, batch.input_ids[i][words].tolist())
        maps = {}
        for source, capture in probe.captures.items():
            frames = getattr(batch, f"{source}_mask")[i].bool()
            if not bool(frames.any()):
                notes.append(f"{sample_id}: no {source} frames")
                continue
            maps[source] = {"weights": capture.weights[i][words][:, frames].numpy(), "layer": capture.layer}
        if not maps:
            continue
        label = float(batch.labels[i])
        name = ATTENTION_PICTURE.format(index=len(images) + 1)
        figures.attention_maps(tokens, maps, out / name, f"{sample_id}: label {label:+.2f}, predicted {float(scores[i]):+.2f}")
        images.append(name)
    if not images:
        return Section(title, skipped="none of the chosen segments has audio or vision frames (" + "; ".join(notes) + ")")
    layers = ", ".join(f"{c.name}" for c in probe.captures.values())
    caption = (f"Which audio / vision frames each word attended to in the last cross-modal block of each stream "
               f"({html.escape(layers)}; heads averaged; weights recomputed from the layer's inputs by a forward hook "
               f"and checked against its output). Segments: {html.escape(', '.join(chosen))}"
               + (f". Left out: {html.escape('; '.join(notes))}" if notes else "") + ".")
    return Section(title, caption, images)


def _model_sections(run: RunFolder, out: Path, data_root: str | None, segments: list[str] | None, n: int,
                    progress: bool) -> list[Section]:
    titles = ("Modality contribution", "Cross-modal attention")
    if run.checkpoint is None:
        return [Section(t, skipped=run.checkpoint_note) for t in titles]
    from mmsenti.export.commands import datamodule_from_checkpoint
    from mmsenti.models.checkpoint import load_sentiment_checkpoint
    from mmsenti.report import figures
    from mmsenti.report.probes import modality_contribution

    loaded = load_sentiment_checkpoint(run.checkpoint, what="the run's checkpoint")
    try:
        dm = datamodule_from_checkpoint(loaded.data_config, data_root)
    except MmsentiError as err:
        reason = f"the run's test data could not be rebuilt ({err}); pass --data-root"
        return [Section(t, skipped=reason) for t in titles]
    if not dm.splits.get("test"):
        return [Section(t, skipped=f"{dm.location} has no test split") for t in titles]
    chosen = choose_segments(run, [str(s["id"]) for s in dm.splits["test"]], segments, n)  # a bad --segment fails first
    loader = dm.test_dataloader()
    contribution = modality_contribution(loaded.model, loader, loaded.task, progress=progress, total=len(loader))
    metric = "MAE" if loaded.task == "regression" else "accuracy"
    rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{c['present']}</td><td>{c['mean_change']:+.4f}</td>"
                   f"<td>{c['mean_abs_change']:.4f}</td><td>{c['metric_full']:.4f}</td><td>{c['metric_hidden']:.4f}</td></tr>"
                   for m, c in contribution.items())
    table = (f"<table><tr><th>hidden</th><th>segments with it</th><th>mean change</th><th>mean |change|</th>"
             f"<th>{metric}, all shown</th><th>{metric}, hidden</th></tr>{rows}</table>")
    image = figures.modality_bars(contribution, loaded.task, out / "modality_contribution.png",
                                  f"{run.metrics.get('task_name') or run.path.name}: hiding one modality")
    sections = [Section("Modality contribution",
                        f"Score change over the {len(dm.splits['test'])} test segments when one modality is hidden through "
                        "the batch's masks (audio / vision: no frame; text: only [CLS] and [SEP] kept), checkpoint "
                        f"{html.escape(run.checkpoint.name)}.", [image.name], table)]
    sections.append(_attention_section(loaded, dm, out, chosen))
    return sections


# ----------------------------------------------------------------------------- HTML
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child, .facts td { text-align: left; }
img { max-width: 100%; display: block; margin: .5em 0; }
.skipped { color: #8a5a00; background: #fff7e6; padding: .4em .7em; border-left: 3px solid #e0a000; }
.caption { color: #555; font-size: .92em; }
"""


def _metrics_table(metrics: dict[str, Any]) -> str:
    splits = [s for s in ("val", "test") if isinstance(metrics.get(s), dict)]
    if not splits:
        return "<p class='skipped'>metrics.json holds no val/test metrics</p>"
    keys = [k for k in METRIC_ORDER if any(k in metrics[s] for s in splits)]
    keys += sorted({k for s in splits for k in metrics[s]} - set(keys))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr><td>" + s + "</td>" + "".join(
        f"<td>{metrics[s][k]:.4f}</td>" if isinstance(metrics[s].get(k), (int, float)) else "<td>–</td>" for k in keys)
        + "</tr>" for s in splits)
    return f"<table><tr><th>split</th>{head}</tr>{body}</table>"


def _facts(run: RunFolder) -> str:
    net = (run.config.get("model") or {}).get("net") or {}
    data = run.config.get("data") or {}
    m = run.metrics
    facts = {
        "run folder": str(run.path), "task name": m.get("task_name"), "task": run.task,
        "fusion": (net.get("fusion") or {}).get("name"), "modalities": ", ".join(net.get("modalities") or []),
        "data": f"{data.get('source')}: {data.get('path') or data.get('root')}" if data else None,
        "seed": m.get("seed"), "epochs trained": m.get("epochs_trained"), "train seconds": m.get("train_seconds"),
        "checkpoint": str(run.checkpoint) if run.checkpoint else None,
        "test predictions": f"{len(run.predictions)} rows" if run.predictions is not None else None,
    }
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items() if v not in (None, ""))
    return f"<table class='facts'>{rows}</table>"


def render_html(run: RunFolder, sections: list[Section]) -> str:
    title = f"Run report: {run.metrics.get('task_name') or run.path.name}"
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p class='caption'>Written by <code>mmsenti report " + html.escape(str(run.path)) + "</code> from the run's "
             "metrics.json, resolved_config.yaml, predictions.csv and checkpoint.</p>",
             _facts(run), "<h2>Metrics</h2>", _metrics_table(run.metrics)]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.skipped:
            parts.append(f"<p class='skipped'>skipped: {html.escape(s.skipped)}</p>")
            continue
        if s.caption:
            parts.append(f"<p class='caption'>{s.caption}</p>")
        parts += [f"<img src='{html.escape(name)}' alt='{html.escape(s.title)}'>" for name in s.images]
        if s.table:
            parts.append(s.table)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- entry point
def write_run_report(run_dir: str | Path, out: str | Path | None = None, *, data_root: str | None = None,
                     segments: list[str] | None = None, n_segments: int = DEFAULT_SEGMENTS, progress: bool = True,
                     verbose: bool = True) -> dict[str, Any]:
    """Write ``report.html`` and its PNGs into ``out`` (default ``<run_dir>/report``).

    Returns ``{"html": path, "files": [every file written], "skipped": {section: reason}}``; with
    ``verbose`` each skipped section is also printed as ``skipped <section>: <reason>``.
    """
    run = read_run(run_dir)
    out = Path(out) if out else run.path / REPORT_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*(out / p for p in PICTURES), *out.glob(ATTENTION_PICTURE.format(index="*"))]:
        stale.unlink(missing_ok=True)  # a picture this report does not redraw must not linger beside it
    sections = _prediction_sections(run, out) + _model_sections(run, out, data_root, segments, n_segments, progress)
    page = write_text_atomic(out / HTML_NAME, render_html(run, sections))
    skipped = {s.title: s.skipped for s in sections if s.skipped}
    if verbose:
        for title, reason in skipped.items():
            print(f"skipped {title.lower()}: {reason}")
    files = [page, *(out / name for s in sections for name in s.images)]
    return {"html": page, "files": files, "skipped": skipped}
