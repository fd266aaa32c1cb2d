"""GLUE SST-2 (binary sentence sentiment) as text-only samples in the project's one batch.

Labels: SST-2's ``0 / 1`` become sentiment scores ``-1.0 / +1.0``, so the batch keeps its one float
``labels`` field with MOSI's sign convention (``> 0`` is positive). Training it as
*classification* is the model's ``task: classification`` switch (the score is the logit of
"positive", cross-entropy; see :mod:`mmsenti.distill.losses`); accuracy is then MOSI's
``Non0_acc_2`` on these labels (logged as ``acc``).

Splits: GLUE's test labels are hidden, so

* ``test`` = the full GLUE dev set (872 sentences): what reports quote;
* ``valid`` = ``valid_size`` sentences held out of ``train.tsv`` (checkpoint selection, early stop);
* ``train`` = the next ``train_size`` sentences of a seeded shuffle of the rest (``None``: all
  66k). ``train.tsv`` holds phrases as well as sentences; ``min_words`` drops the shortest.
* ``transfer_size`` more sentences (the next ones of the same shuffle) join ``train`` **without
  their labels** (``label`` NaN): a distillation *transfer set* (Hinton et al., 2015; TinyBERT's
  augmented set) that the student learns from the teacher's soft targets alone. The hard-label
  loss skips them; training them without a teacher is refused (nothing to learn from).

The subset is a pure function of ``(seed, valid_size, train_size, min_words)``: a teacher and its
students trained with the same settings see the same sentences.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

FILES = {"train": "train.tsv", "dev": "dev.tsv"}


@dataclass
class Sst2Report:
    source: str
    samples: dict[str, int] = field(default_factory=dict)
    train_pool: int = 0  # train.tsv rows left after min_words, before the subset is drawn
    positive_share: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sst2Data:
    """Same attribute names as the other loaders (``splits``, ``audio_dim``, ``vision_dim``, ``report``)."""

    splits: dict[str, list[dict]]
    audio_dim: int
    vision_dim: int
    report: Sst2Report


def read_tsv(path: Path, split: str) -> list[dict]:
    """``sentence<TAB>label`` rows as sample dicts (label -1.0 / +1.0), with errors naming the line."""
    if not path.is_file():
        raise MmsentiError(f"{path}: not found; SST-2 needs train.tsv and dev.tsv (GLUE layout) in data.path")
    samples = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["sentence", "label"]:
            raise MmsentiError(f"{path}: header {header}; expected 'sentence<TAB>label'")
        for line, row in enumerate(reader, start=2):
            if len(row) < 2 or row[1].strip() not in {"0", "1"}:
                raise MmsentiError(f"{path}: line {line}: expected 'sentence<TAB>0|1', got {row!r}")
            samples.append({"id": f"sst2/{split}/{line}", "text": row[0].strip(), "audio": None, "vision": None,
                            "label": 1.0 if row[1].strip() == "1" else -1.0})
    return samples


def load_sst2(root: str | os.PathLike, train_size: int | None = 8000, valid_size: int = 1000, seed: int = 0,
              min_words: int = 0, transfer_size: int = 0) -> Sst2Data:
    root = Path(root)
    pool = [s for s in read_tsv(root / FILES["train"], "train") if len(s["text"].split()) >= min_words]
    dev = read_tsv(root / FILES["dev"], "dev")
    if transfer_size and train_size is None:
        raise MmsentiError("SST-2 transfer_size needs a train_size (the transfer set is drawn from the sentences after it)")
    if valid_size + (train_size or 0) + transfer_size > len(pool):
        raise MmsentiError(f"{root}: asked for valid_size={valid_size} + train_size={train_size} + transfer_size={transfer_size} "
                           f"of {len(pool)} sentences")
    order = np.random.default_rng(seed).permutation(len(pool))
    valid = [pool[i] for i in order[:valid_size]]
    rest = order[valid_size:]
    train = [pool[i] for i in (rest if train_size is None else rest[:train_size])]
    transfer = [{**pool[i], "label": float("nan")} for i in rest[len(train):len(train) + transfer_size]]
    splits = {"train": train + transfer, "valid": valid, "test": dev}
    samples = {k: len(v) for k, v in splits.items()}
    if transfer:
        samples["train_unlabeled"] = len(transfer)
    report = Sst2Report(
        source=str(root), samples=samples, train_pool=len(pool),
        positive_share={k: round(float(np.mean([s["label"] > 0 for s in v if s["label"] == s["label"]])), 4)
                        for k, v in splits.items() if v},
        settings={"train_size": train_size, "valid_size": valid_size, "seed": seed, "min_words": min_words,
                  "transfer_size": transfer_size},
    )
    return Sst2Data(splits, audio_dim=0, vision_dim=0, report=report)
