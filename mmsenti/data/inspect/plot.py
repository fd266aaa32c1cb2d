"""Figure of ``mmsenti data inspect --plot``: the label histogram of every split (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

__all__ = ["plot_labels"]


def plot_labels(info: dict[str, Any], out: str | os.PathLike) -> Path:
    """Bar chart of the rounded labels, one panel per split, with counts on the bars."""
    if "labels" not in info:
        raise MmsentiError(f"{info['path']}: --plot draws label histograms, and this {info['kind']} has no labels")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.is_dir() or str(out).endswith(os.sep):
        out = out / f"{Path(info['name']).stem}_labels.png"
    if not out.suffix:
        out = out.with_suffix(".png")
    splits = [s for s in info["splits"] if s != "all" and info["splits"][s]["segments"]] or ["all"]
    bins = info["labels"]["bins"]
    colours = plt.get_cmap("RdYlGn")(np.linspace(0.08, 0.92, len(bins)))
    fig, axes = plt.subplots(1, len(splits), figsize=(max(4.2 * len(splits) + 0.6, 6.5), 4.6), squeeze=False)
    for ax, s in zip(axes[0], splits):
        lab = info["labels"][s]
        counts = lab["histogram"]
        bars = ax.bar(bins, counts, color=colours, edgecolor="#333333", linewidth=0.6, width=0.8)
        total = max(sum(counts), 1)
        ax.bar_label(bars, labels=[f"{c}\n{100 * c / total:.0f}%" if c else "0" for c in counts],
                     fontsize=8, padding=2)
        ax.set_ylim(0, max(max(counts), 1) * 1.25)
        ax.set_xticks(bins, [f"{b:+d}" if b else "0" for b in bins])
        ax.set_xlabel("sentiment label, rounded (-3 very negative ... +3 very positive)", fontsize=8.5)
        ax.set_ylabel("segments")
        videos = info["splits"][s]["videos"]
        moments = f"mean {lab['mean']:+.2f}, std {lab['std']:.2f}" if lab["n"] else "no labelled segments"
        ax.set_title(f"{s}: {lab['n']:,} segments, {videos:,} videos\n{moments}", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    src = info.get("folds_source")
    folds = "" if not src else ("(SDK standard folds)" if src == "sdk" else f"(folds: {Path(src).name})")
    folds = ("\n" if len(splits) == 1 else "  ") + folds if folds else ""
    fig.suptitle(f"{info['name']}: sentiment labels per split{folds}", fontsize=12, fontweight="bold")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
