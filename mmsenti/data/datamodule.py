"""One LightningDataModule for every data source, yielding :class:`SentimentBatch`.

Sources (``data.source``):

* ``synthetic`` — the project's CMU-MOSI-shaped set, written in real CSD format on first use
  (``data.root``), so the default run needs no download;
* ``csd`` — a folder of CMU Multimodal SDK computational sequences (real CMU-MOSI, or features
  from ``mmsenti extract``);
* ``mosei`` / ``synthetic_mosei`` — CMU-MOSEI's SDK files (:mod:`mmsenti.data.mosei`), or the
  project's synthetic set in that layout (written on first use);
* ``sims`` / ``synthetic_sims`` — CH-SIMS: MMSA-FET's ``label.csv`` with unimodal labels plus features
  extracted by ``mmsenti extract`` (:mod:`mmsenti.data.sims`; ``data.source_options.features``), or
  the synthetic set in that layout;
* ``mmsa`` — an MMSA processed pickle (read with a restricted unpickler);
* ``label_csv`` — an MMSA-FET ``label.csv`` (text only);
* ``sst2`` — GLUE SST-2 ``train.tsv``/``dev.tsv`` (text only; labels -1/+1, see :mod:`mmsenti.data.sst2`).

``data.source_options`` passes source-specific settings (e.g. SST-2's ``train_size``);
``data.files`` names a CSD folder's files when they do not carry the SDK's names
(``data.files.audio=my_covarep.csd``; ``null`` = the SDK name); ``data.encoding`` is a
``label.csv``'s text encoding.

Feature widths come from the data: after :meth:`SentimentDataModule.setup`, ``feature_dims`` (and
``hparams.audio_dim`` / ``vision_dim``) hold the widths the source's frames have, whatever the
config said; the config's width stays only for a modality the data does not carry. Build the model
from ``feature_dims``. Segments a loader dropped (empty text, ``on_error=skip``, non-finite labels)
are printed as one warning line per split; an empty train or valid split is an error, an empty
test split a warning (the run then reports valid only).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from mmsenti.data.batch import SentimentCollator
from mmsenti.errors import MmsentiError
from mmsenti.pretrained import load_pretrained
from mmsenti.registry import check, lookup, register

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# ---------------------------------------------------------------------------- data sources (data.source)
# each reader takes the path and the data settings it uses (the rest are ignored), and returns an object
# with ``splits``, ``audio_dim``, ``vision_dim`` and ``report``
@register("data_source", "csd")
def _read_csd(path: Path, *, mode: str, folds: dict | None, on_error: str, max_frames: int | None, collapse: str,
              files: dict | None, **_: Any):
    """CMU Multimodal SDK computational sequences (.csd): words, COVAREP/FACET-style features, labels."""
    from mmsenti.data.mosi import load_mosi_csd

    named = {str(k): str(v) for k, v in (files or {}).items() if v is not None}
    return load_mosi_csd(path, mode=mode, folds=folds, on_error=on_error, max_frames=max_frames, collapse=collapse,
                         files=named or None)


@register("data_source", "synthetic")
def _read_synthetic(path: Path, *, scale: str, seed: int, **settings: Any):
    """The project's CMU-MOSI-shaped synthetic set in CSD format (written on first use)."""
    ensure_synthetic(path, scale, seed)
    return _read_csd(path, **settings)


@register("data_source", "mosei")
def _read_mosei(path: Path, *, mode: str, folds: dict | None, on_error: str, max_frames: int | None, collapse: str,
                files: dict | None, **_: Any):
    """CMU-MOSEI computational sequences (the SDK's files; 7-value labels, sentiment first; SDK standard folds)."""
    from mmsenti.data.mosei import load_mosei_csd

    named = {str(k): str(v) for k, v in (files or {}).items() if v is not None}
    return load_mosei_csd(path, mode=mode, folds=folds, on_error=on_error, max_frames=max_frames, collapse=collapse,
                          files=named or None)


@register("data_source", "synthetic_mosei")
def _read_synthetic_mosei(path: Path, *, scale: str, seed: int, **settings: Any):
    """The project's synthetic set in CMU-MOSEI's SDK layout (written on first use)."""
    ensure_synthetic(path, scale, seed, dataset="mosei")
    return _read_mosei(path, **settings)


#: CH-SIMS ``data.source_options`` and their defaults.
SIMS_OPTIONS = {"features": "features"}


@register("data_source", "sims")
def _read_sims(path: Path, *, mode: str, folds: dict | None, on_error: str, max_frames: int | None, collapse: str,
               files: dict | None, encoding: str = "utf-8", source_options: dict | None = None, **_: Any):
    """CH-SIMS: MMSA-FET label.csv (unimodal labels, mode = folds) + features from `mmsenti extract`."""
    from mmsenti.data.sims import load_sims

    options = {**SIMS_OPTIONS, **(source_options or {})}
    unknown = sorted(set(options) - set(SIMS_OPTIONS))
    if unknown:
        raise MmsentiError(f"data.source_options {unknown} are not CH-SIMS options; valid: {sorted(SIMS_OPTIONS)}")
    named = {str(k): str(v) for k, v in (files or {}).items() if v is not None}
    return load_sims(path, mode=mode, folds=folds, on_error=on_error, max_frames=max_frames, collapse=collapse,
                     files=named or None, features=options["features"], encoding=encoding)


@register("data_source", "synthetic_sims")
def _read_synthetic_sims(path: Path, *, scale: str, seed: int, **settings: Any):
    """The project's synthetic CH-SIMS (Chinese text, unimodal labels, extracted-feature layout), written on first use."""
    ensure_synthetic(path, scale, seed, dataset="sims")
    return _read_sims(path, **settings)


@register("data_source", "mmsa")
def _read_mmsa(path: Path, **_: Any):
    """An MMSA aligned/unaligned feature pickle (read with a safe unpickler)."""
    from mmsenti.data.mmsa import load_mmsa_pickle

    return load_mmsa_pickle(path)


@register("data_source", "label_csv")
def _read_label_csv(path: Path, *, encoding: str = "utf-8", source_options: dict | None = None, **_: Any):
    """An MMSA-style label.csv (video_id, clip_id, text, label, mode): the text-only path; ``source_options``
    may add an unlabelled transfer set to train (``transfer: movie_reviews``, ``transfer_size``: :mod:`.transfer`)."""
    from mmsenti.data.mmsa import load_label_csv
    from mmsenti.data.transfer import add_transfer_set

    data = load_label_csv(path, encoding=encoding)
    transfer = add_transfer_set(data.splits, source_options)
    if transfer:
        data.report.transfer = transfer
        data.report.samples = {**{s: len(v) for s, v in data.splits.items()}, "train_unlabeled": transfer["added"]}
        log.info("data: transfer set: %d unlabelled %s sentences added to train (%d drawn, %d already in the data)",
                 transfer["added"], transfer["corpus"], transfer["drawn"], transfer["overlap_with_data"])
    return data


@register("data_source", "sst2")
def _read_sst2(path: Path, *, source_options: dict | None = None, **_: Any):
    """GLUE SST-2 train/dev TSV files (binary labels as -1/+1)."""
    from mmsenti.data.sst2 import load_sst2

    return load_sst2(path, **(source_options or {}))


def load_source(source: str, path: str | Path, *, mode: str = "aligned", scale: str = "mosi", seed: int = 0,
                on_error: str = "raise", max_frames: int | None = None, collapse: str = "mean",
                folds: dict | None = None, source_options: dict | None = None, files: dict | None = None,
                encoding: str = "utf-8"):
    """Load a registered data source (``data_source``) into ``splits``, ``audio_dim``, ``vision_dim``, ``report``.

    ``files``: CSD sources only, ``{"words"|"audio"|"vision"|"labels": file}``; a ``None`` value
    keeps the SDK's name for that input. ``encoding``: ``label_csv`` only."""
    reader = lookup("data_source", check("data_source", source, "data.source"))
    path = Path(path).expanduser()
    if source not in SYNTHETIC_SOURCES and not path.exists():
        raise MmsentiError(f"data path {path} does not exist; set data.root / data.path (see datasets/README.md)")
    return reader(path, mode=mode, scale=scale, seed=seed, on_error=on_error, max_frames=max_frames, collapse=collapse,
                  folds=folds, source_options=source_options, files=files, encoding=encoding)


def drop_lines(report: dict[str, Any]) -> dict[str, str]:
    """One line per split saying what a loader left out (``report["dropped"]``) or kept without a
    modality (``report["modality_dropped"]``), by reason; splits with nothing dropped are absent."""
    lines = {}
    for split in SPLITS:
        dropped = (report.get("dropped") or {}).get(split) or {}
        partial = (report.get("modality_dropped") or {}).get(split) or {}
        parts = []
        if dropped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in dropped.items())
            parts.append(f"dropped {sum(dropped.values())} ({reasons})")
        if partial:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in partial.items())
            parts.append(f"kept {sum(partial.values())} without a modality ({reasons})")
        if parts:
            lines[split] = f"'{split}' split: " + "; ".join(parts)
    return lines


#: Synthetic sources -> the data set they imitate (:func:`mmsenti.data.synthetic.write_synthetic`).
SYNTHETIC_SOURCES = {"synthetic": "mosi", "synthetic_mosei": "mosei", "synthetic_sims": "sims"}
#: The file each synthetic writer writes last: its presence marks a complete set.
_SYNTHETIC_MARKERS = {"mosi": "CMU_MOSI_Opinion_Labels.csd", "mosei": "CMU_MOSEI_Labels.csd", "sims": "label.csv"}


def ensure_synthetic(root: Path, scale: str, seed: int, dataset: str = "mosi") -> None:
    """Write the synthetic CMU-MOSI-shaped set (``dataset="mosei"`` / ``"sims"``: the CMU-MOSEI / CH-SIMS
    one) into ``root`` unless that very set is already there (data set, scale and seed: the record
    ``synthetic.json`` every writer leaves beside its files).

    A folder holding another scale or seed (e.g. a ``data.scale=small`` run wrote the default root
    first), or a set written before the record existed, is rewritten with a warning saying what it
    held: a run never trains on another set than its config names.
    """
    from mmsenti.data.synthetic import WRITERS, read_record, record, write_synthetic

    root, scale = Path(root), scale or WRITERS[dataset][2]
    want = record(dataset, scale, seed)
    if (root / _SYNTHETIC_MARKERS[dataset]).is_file():
        have = read_record(root)
        if have == want:
            return
        held = ("a synthetic set written before its scale and seed were recorded" if have is None else
                f"the synthetic {str(have.get('dataset', '?')).upper()} set (scale={have.get('scale')}, seed={have.get('seed')})")
        log.warning("%s holds %s, not the requested %s set (scale=%s, seed=%s): rewriting it", root, held,
                    dataset.upper(), scale, seed)
    else:
        log.info("writing the synthetic %s-shaped set (scale=%s) to %s", dataset.upper(), scale, root)
    write_synthetic(dataset, root, scale=scale, seed=seed)


def frame_statistics(samples: list[dict], key: str, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-feature mean and std over every frame of the given samples (None if there are none)."""
    frames = [s[key] for s in samples if s.get(key) is not None and len(s[key])]
    if not frames or not dim:
        return None
    stacked = np.concatenate(frames).astype(np.float64)
    return stacked.mean(0).astype(np.float32), stacked.std(0).astype(np.float32)


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a permutation fixed by (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a checkpoint sees the
    same order in its remaining epochs as an uninterrupted run.
    """

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


class SentimentDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: str = "synthetic",
        root: str = "data/synthetic_mosi",
        path: str | None = None,
        tokenizer: str = "minilm_l6",
        mode: str = "aligned",
        scale: str = "mosi",
        synth_seed: int = 0,
        audio_dim: int = 74,
        vision_dim: int = 47,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        max_text_len: int = 64,
        max_frames: int | None = None,
        collapse: str = "mean",
        on_error: str = "raise",
        folds: dict | None = None,
        limit_per_split: int | None = None,
        source_options: dict | None = None,
        text_normalization: str = "none",
        files: dict | None = None,
        encoding: str = "utf-8",
        metrics: str = "mosi",
    ):
        # plain dicts: hyper-parameters go into checkpoints, which load with weights_only=True
        source_options = {str(k): v for k, v in source_options.items()} if source_options else None
        files = {str(k): (None if v is None else str(v)) for k, v in files.items()} if files else None
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.splits: dict[str, list[dict]] = {}
        self.report: dict[str, Any] = {}
        self.feature_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._collator: SentimentCollator | None = None

    def prepare_data(self) -> None:
        # runs on one process only: the place to write the synthetic set before anyone reads it
        if self.hparams.source in SYNTHETIC_SOURCES:
            ensure_synthetic(Path(self.hparams.root), self.hparams.scale, self.hparams.synth_seed,
                             dataset=SYNTHETIC_SOURCES[self.hparams.source])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        data = load_source(hp.source, self.location, mode=hp.mode, scale=hp.scale, seed=hp.synth_seed, on_error=hp.on_error,
                           max_frames=hp.max_frames, collapse=hp.collapse, folds=hp.folds,
                           source_options=dict(hp.source_options or {}), files=hp.get("files"),
                           encoding=hp.get("encoding") or "utf-8")
        splits = {s: list(data.splits.get(s, [])) for s in SPLITS}
        for name, dim in (("audio", data.audio_dim), ("vision", data.vision_dim)):
            carried = any(x.get(name) is not None for v in splits.values() for x in v)
            if carried and dim and dim != hp[f"{name}_dim"]:
                log.info("data: %s features are %d-d (data.%s_dim=%s); using the data's width", name, dim, name,
                         hp[f"{name}_dim"])
                hp[f"{name}_dim"] = int(dim)  # what the collator pads to and checkpoints record
        report = data.report
        self.report = dataclasses.asdict(report) if dataclasses.is_dataclass(report) else dict(report)
        for line in drop_lines(self.report).values():
            log.warning("data: %s: %s", self.location, line)
        self.splits = {s: v[: hp.limit_per_split] for s, v in splits.items()} if hp.limit_per_split else splits
        counts = ", ".join(f"{s} {len(v)}" for s, v in self.splits.items())
        for split in ("train", "valid"):
            if not self.splits[split]:
                dropped = drop_lines(self.report).get(split)
                raise MmsentiError(
                    f"{self.location}: the '{split}' split is empty ({counts}"
                    + (f"; {dropped}" if dropped else "")
                    + "): training needs train and valid samples; check the folds (folds.json / data.folds) "
                    "or the label.csv 'mode' column")
        if not self.splits["test"]:
            log.warning("data: %s: the 'test' split is empty (%s): testing is skipped, valid is reported", self.location,
                        counts)
        for key in ("audio", "vision"):
            stats = frame_statistics(self.splits["train"], key, getattr(hp, f"{key}_dim"))
            if stats is not None:
                self.feature_stats[key] = stats
        log.info("data: %s", {s: len(v) for s, v in self.splits.items()})

    @property
    def feature_dims(self) -> dict[str, int]:
        """Audio/vision feature widths: the data's after :meth:`setup` (the config's before, and for
        a modality the data does not carry). The model's ``input_dim`` must be these."""
        return {"audio": int(self.hparams.audio_dim), "vision": int(self.hparams.vision_dim)}

    @property
    def location(self) -> str:
        """Where the data lives: ``data.path`` (a file source) if given, else ``data.root``."""
        return self.hparams.path or self.hparams.root

    @property
    def collator(self) -> SentimentCollator:
        if self._collator is None:
            hp = self.hparams
            self._collator = SentimentCollator(load_pretrained(hp.tokenizer, "tokenizer"), hp.audio_dim, hp.vision_dim,
                                               hp.max_text_len, hp.max_frames, hp.get("text_normalization", "none"))
        return self._collator

    def _loader(self, split: str, train: bool) -> DataLoader:
        samples = self.splits.get(split) or []
        if not samples:
            raise MmsentiError(f"{self.location}: the '{split}' split is empty")
        return DataLoader(
            samples, batch_size=self.hparams.batch_size if train else self.hparams.eval_batch_size,
            sampler=EpochSeededSampler(len(samples), torch.initial_seed() % 2**31) if train else None,
            num_workers=self.hparams.num_workers, collate_fn=self.collator,
            persistent_workers=self.hparams.num_workers > 0, drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
