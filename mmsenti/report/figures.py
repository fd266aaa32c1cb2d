"""The run report's pictures (matplotlib, Agg): each function draws one PNG and returns its path.

Inputs are plain arrays and dicts (what :mod:`mmsenti.report.run_report` read from the run folder), so
every figure can be drawn without a model. Classes are MOSI's Acc-7 classes, -3..3 (round(clip(·, -3, 3)),
half to even, as :mod:`mmsenti.metrics` counts them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CLASSES_7 = np.arange(-3, 4)
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def plain(text: str) -> str:
    """``text`` drawn as written: matplotlib reads ``$...$`` as math (MOSI segment ids hold ``$_$``)."""
    return str(text).replace("$", r"\$")


def classes_7(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -3.0, 3.0)).astype(int)


def scatter_pred_true(label: np.ndarray, score: np.ndarray, path: Path, title: str) -> Path:
    """Predicted score against the true label, with the identity line and Pearson's r."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    error = np.abs(score - label)
    points = ax.scatter(label, score, c=error, cmap="viridis", s=18, alpha=0.8, edgecolors="none")
    fig.colorbar(points, ax=ax, label="|error|")
    ax.plot([-3, 3], [-3, 3], color="grey", lw=1, ls="--", label="perfect")
    corr = float(np.corrcoef(label, score)[0, 1]) if len(label) > 1 and np.std(label) and np.std(score) else 0.0
    ax.set(xlim=(-3.2, 3.2), ylim=(-3.2, 3.2), xlabel="true label", ylabel="predicted score",
           title=f"{plain(title)}\n{len(label)} test segments, Pearson r = {corr:.3f}")
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    return _save(fig, path)


def probability_by_class(label: np.ndarray, prob: np.ndarray, path: Path, title: str) -> Path:
    """Classification: p(positive) histograms of the truly negative and the truly positive samples."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 21)
    ax.hist(prob[label <= 0], bins=bins, alpha=0.6, label=f"true negative ({int(np.sum(label <= 0))})")
    ax.hist(prob[label > 0], bins=bins, alpha=0.6, label=f"true positive ({int(np.sum(label > 0))})")
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set(xlabel="p(positive)", ylabel="samples", title=plain(title))
    ax.legend()
    return _save(fig, path)


def confusion_matrix(true_class: np.ndarray, pred_class: np.ndarray, classes: np.ndarray, path: Path, title: str) -> Path:
    """Counts of (true, predicted) classes; colour is the share of each true class (row-normalised)."""
    plt = _pyplot()
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(true_class, pred_class):
        counts[index[int(t)], index[int(p)]] += 1
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.7 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ticks = [f"{c:+d}" if c else "0" for c in classes]
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=ticks, yticklabels=ticks,
           xlabel="predicted class", ylabel="true class")
    accuracy = float(np.trace(counts)) / max(int(counts.sum()), 1)
    ax.set_title(f"{plain(title)}\naccuracy {accuracy:.3f} over {int(counts.sum())} segments")
    return _save(fig, path)


def error_by_label_bin(label: np.ndarray, score: np.ndarray, path: Path, title: str) -> Path:
    """Mean absolute error per true Acc-7 class (with each bin's sample count), beside the overall MAE."""
    plt = _pyplot()
    bins = classes_7(label)
    error = np.abs(score - label)
    mae = [float(error[bins == c].mean()) if np.any(bins == c) else 0.0 for c in CLASSES_7]
    counts = [int(np.sum(bins == c)) for c in CLASSES_7]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    bars = ax.bar([str(c) for c in CLASSES_7], mae, color="tab:orange")
    for bar, n in zip(bars, counts):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"n={n}", ha="center", va="bottom", fontsize=8)
    ax.axhline(float(error.mean()), color="grey", ls="--", lw=1, label=f"overall MAE {error.mean():.3f}")
    ax.set(xlabel="true label bin (round(clip(y, -3, 3)))", ylabel="MAE", title=plain(title))
    ax.legend()
    return _save(fig, path)


def modality_bars(contribution: dict[str, dict[str, float]], task: str, path: Path, title: str) -> Path:
    """Mean |score change| when each modality is hidden, with the metric with every modality and without it."""
    plt = _pyplot()
    names = list(contribution)
    change = [contribution[m]["mean_abs_change"] for m in names]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    bars = ax.bar(names, change, color="tab:blue")
    metric = "MAE" if task == "regression" else "accuracy"
    for bar, m in zip(bars, names):
        c = contribution[m]
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                f"{metric} {c['metric_full']:.3f}→{c['metric_hidden']:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="modality hidden", ylabel="mean |score change|", title=plain(title))
    ax.set_ylim(0, max(change + [1e-3]) * 1.25)
    return _save(fig, path)


def attention_maps(words: list[str], maps: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """One heat map per source modality: rows are the segment's words, columns its frames.

    ``maps[source] = {"weights": [n_words, n_frames] array, "layer": int}``.
    """
    plt = _pyplot()
    sources = list(maps)
    height = 1.4 + 0.28 * len(words)
    fig, axes = plt.subplots(1, len(sources), figsize=(4.8 * len(sources) + 0.8, height), squeeze=False)
    for ax, source in zip(axes[0], sources):
        weights = np.asarray(maps[source]["weights"])
        image = ax.imshow(weights, aspect="auto", cmap="magma", vmin=0, vmax=max(float(weights.max()), 1e-6))
        ax.set_yticks(range(len(words)))
        ax.set_yticklabels([plain(w) for w in words], fontsize=8)
        ax.set_xlabel(f"{source} frame")
        ax.set_title(f"text → {source} (layer {maps[source]['layer']}, heads averaged)", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(plain(title), fontsize=10)
    return _save(fig, path)
