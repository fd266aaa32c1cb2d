r"""A synthetic CMU-MOSI in the real SDK file format, with a planted multimodal signal.

Why: the real CMU-MOSI features cannot be shipped or downloaded here, yet loaders, alignment,
models and training must be tested on data with the real layout and sizes, and a model should
be able to show that fusing modalities helps. This module writes such a set in seconds.

Files (the SDK's CMU-MOSI names; each a real computational sequence, see :mod:`mmsenti.data.csd`):

* ``CMU_MOSI_TimestampedWords.csd`` - words as bytes ``(n, 1)`` with intervals on a 10 ms grid,
  including ``"sp"`` silence tokens between clauses and between segments;
* ``CMU_MOSI_COVAREP.csd`` - 74-d acoustic frames at 100 Hz covering the whole video; dim 5 is
  ``-inf`` on part of the non-speech frames (COVAREP's log-domain columns are) and a few values are NaN;
* ``CMU_MOSI_Visual_Facet_41.csd`` - 47-d FACET-like frames at 30 Hz, with a few dropped runs
  (face lost) and a few NaN values;
* ``CMU_MOSI_Opinion_Labels.csd`` - one row per opinion segment, sentiment in [-3, 3];
* ``folds.json`` - ``{"train": [...], "valid": [...], "test": [...]}`` video ids.

Scales: ``"mosi"`` = the 93 standard-fold video ids (52/10/31), 2,199 segments, ~26k words,
~1.1 M COVAREP and ~0.33 M FACET frames; ``"small"`` = 12 videos (6/3/3) x 10 segments.

The same generator writes a synthetic **CMU-MOSEI** (:func:`write_synthetic_mosei`: the SDK's MOSEI
file names and fold ids, 35-d FACET 4.2-like vision, a 7-value label per segment: sentiment, then six
emotions) and a synthetic **CH-SIMS** (:func:`write_synthetic_sims`: MMSA-FET's ``label.csv`` with
Chinese text and unimodal labels ``label_T/label_A/label_V``, per-clip features in the layout
``mmsenti extract`` writes); ``mmsenti data synth --format mosei|sims``.

Planted signal (per opinion segment *k*; all latents independent)::

    s_text[k], s_audio[k], s_vision[k] ~ N(0, 1),    eta[k] ~ N(0, 0.4^2)
    label[k] = clip(1.0 * s_text[k] + 0.8 * s_audio[k] + 0.7 * s_vision[k] + eta[k], -3, 3)

* text: each segment has 1-2 opinion clauses ("i think the movie was really {adj}") whose
  adjective comes from :data:`LEXICON` at polarity level
  ``clip(round(1.5 * s_text + 0.5 * N(0, 1)), -3, 3)``, mixed with 0-2 neutral clauses;
* audio: COVAREP dims :data:`AUDIO_SIGNAL_DIMS` get ``+0.6 * s_audio`` on every frame whose centre
  lies inside a spoken (non-"sp") word of the segment - silences carry nothing;
* vision: FACET dims :data:`VISION_SIGNAL_DIMS` (a smile-like action unit) get ``+0.8 * s_vision``
  on every frame whose centre lies inside the segment.

Frame features are otherwise N(0, 1) plus a per-video offset N(0, 0.3^2) per dim (a speaker
effect). The text weight explains ~44% of label variance, so a text-only model reaches a
correlation of roughly 0.6 and fusing all three clearly more. Everything derives from one
``numpy.random.Generator(seed)``; the same seed gives byte-identical files.

:func:`write_synthetic_mmsa` writes the same set as an MMSA-style ``unaligned_50.pkl`` (frames
subsampled to 50 per segment, zero padded), for the MMSA-pickle data path.
"""

from __future__ import annotations

import csv
import json
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mmsenti.io import atomic_writer, write_json_atomic

from .csd import ComputationalSequence, encode_words, write_csd
from .folds import FOLDS_FILENAME, SPLITS, FoldError, sdk_standard_folds

__all__ = [
    "AUDIO_DIM",
    "AUDIO_RATE",
    "FILES",
    "LEXICON",
    "SCALES",
    "VISION_DIM",
    "VISION_RATE",
    "MMSA_PICKLE_NAME",
    "MOSEI_FILES",
    "MOSEI_SCALES",
    "SIMS_FEATURES_DIR",
    "SIMS_SCALES",
    "ScaleSpec",
    "write_synthetic",
    "write_synthetic_mmsa",
    "write_synthetic_mosei",
    "write_synthetic_mosi",
    "write_synthetic_sims",
]

AUDIO_DIM, AUDIO_RATE = 74, 100
VISION_DIM, VISION_RATE = 47, 30
AUDIO_SIGNAL_DIMS = (0, 1, 2, 3)
AUDIO_NEGINF_DIM = 5
VISION_SIGNAL_DIMS = (12, 13)
W_TEXT, W_AUDIO, W_VISION, LABEL_NOISE = 1.0, 0.8, 0.7, 0.4
AUDIO_GAIN, VISION_GAIN, SPEAKER_OFFSET = 0.6, 0.8, 0.3
TEXT_LEVEL_SCALE, TEXT_LEVEL_NOISE = 1.5, 0.5

#: File names per modality (the SDK's CMU-MOSI names).
FILES = {
    "words": "CMU_MOSI_TimestampedWords.csd",
    "audio": "CMU_MOSI_COVAREP.csd",
    "vision": "CMU_MOSI_Visual_Facet_41.csd",
    "labels": "CMU_MOSI_Opinion_Labels.csd",
}

#: Opinion adjectives by polarity level (-3 .. 3): real English words a sentence encoder knows.
LEXICON: dict[int, tuple[str, ...]] = {
    -3: ("terrible", "awful", "horrible", "dreadful"),
    -2: ("bad", "boring", "disappointing", "annoying"),
    -1: ("mediocre", "dull", "weak", "forgettable"),
    0: ("okay", "average", "ordinary", "standard"),
    1: ("decent", "nice", "pleasant", "solid"),
    2: ("good", "enjoyable", "fun", "funny"),
    3: ("great", "amazing", "excellent", "wonderful"),
}

OPINION_CLAUSES = (
    "i think the movie was really {}",
    "the acting was {}",
    "honestly the story was {}",
    "overall it was a {} film",
    "the ending was pretty {}",
    "i thought the characters were {}",
    "the music was {}",
    "it was just {}",
)
NEUTRAL_CLAUSES = (
    "so i went to see it last weekend",
    "um it is about a family in a small town",
    "you know",
    "and then the main character goes back home",
    "i saw it with my friends",
    "it came out a few weeks ago",
    "so yeah",
    "the director also made another movie",
    "uh",
)


@dataclass(frozen=True)
class ScaleSpec:
    """Videos per split and segment count (``total_segments`` spread over videos, or fixed per video)."""

    videos: tuple[int, int, int]
    total_segments: int | None = None
    segments_per_video: int = 10


SCALES = {
    "small": ScaleSpec(videos=(6, 3, 3), segments_per_video=10),
    "mosi": ScaleSpec(videos=(52, 10, 31), total_segments=2199),
}


def _video_ids(spec: ScaleSpec, dataset: str = "mosi") -> dict[str, list[str]]:
    try:
        std = sdk_standard_folds(dataset)
    except (FoldError, ImportError):
        std = {s: [] for s in SPLITS}
    out, serial = {}, 0
    for split, n in zip(SPLITS, spec.videos):
        ids = list(std[split][:n])
        while len(ids) < n:
            ids.append(f"synth{serial:04d}")
            serial += 1
        out[split] = ids
    return out


def _segment_tokens(rng: np.random.Generator, s_text: float) -> list[str]:
    """Tokens of one opinion segment (opinion + neutral clauses, optional "sp" between clauses)."""
    clauses = []
    for _ in range(1 + int(rng.random() < 0.5)):
        level = int(np.clip(np.rint(TEXT_LEVEL_SCALE * s_text + TEXT_LEVEL_NOISE * rng.standard_normal()), -3, 3))
        words = LEXICON[level]
        template = OPINION_CLAUSES[rng.integers(len(OPINION_CLAUSES))]
        clauses.append(template.format(words[rng.integers(len(words))]))
    for _ in range(int(rng.choice(3, p=(0.45, 0.45, 0.10)))):
        clauses.append(NEUTRAL_CLAUSES[rng.integers(len(NEUTRAL_CLAUSES))])
    order = rng.permutation(len(clauses))
    tokens: list[str] = []
    for i, c in enumerate(order):
        if i and rng.random() < 0.4:
            tokens.append("sp")
        tokens.extend(clauses[c].split())
    return tokens


def _grid(n: int, rate: int) -> np.ndarray:
    k = np.arange(n + 1, dtype=np.float64)
    edges = k / rate
    return np.stack([edges[:-1], edges[1:]], axis=1)


def _centre_index(intervals: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the (sorted, disjoint) interval containing each centre, or -1."""
    idx = np.searchsorted(intervals[:, 0], centres, side="right") - 1
    ok = idx >= 0
    ok[ok] = centres[ok] < intervals[idx[ok], 1]
    return np.where(ok, idx, -1)


_MOSI_BIB = "@article{zadeh2016multimodal, title={Multimodal sentiment intensity analysis in videos}}"


def _metadata(name: str, description: str, dims: list[str], seed: int, dataset: str = "CMU-MOSI (synthetic)",
              bib: str = _MOSI_BIB) -> dict:
    return {
        "root name": name,
        "computational sequence description": description,
        "computational sequence version": 1.0,
        "alignment compatible": True,
        "dataset name": dataset,
        "dataset version": 1.0,
        "creator": "mmsenti.data.synthetic",
        "contact": "none",
        "featureset bib citation": "synthetic, see mmsenti.data.synthetic",
        "dataset bib citation": bib,
        "dimension names": dims,
        "md5": None,
        "uuid": f"mmsenti-synthetic-{name}-seed{seed}",
    }


def _synth_video(rng: np.random.Generator, n_seg: int, vision_dim: int = VISION_DIM):
    """One synthetic video (the generative model of the module docstring): its words, audio, vision and
    label entries ``(features, intervals)`` and the segments' latents ``[n_seg, 3]`` (text, audio, vision).

    Shared by the CMU-MOSI and CMU-MOSEI writers; draws from ``rng`` in a fixed order (same seed, same files).
    """
    vision_dim = int(vision_dim)
    lat = rng.standard_normal((n_seg, 3))  # s_text, s_audio, s_vision
    labels = np.clip(
        W_TEXT * lat[:, 0] + W_AUDIO * lat[:, 1] + W_VISION * lat[:, 2] + LABEL_NOISE * rng.standard_normal(n_seg),
        -3.0, 3.0,
    )

    # tokens of the whole video; segments are separated by a pause that is an "sp" token half the time
    tokens: list[str] = []
    seg_of: list[int] = []
    fixed: list[float] = []  # duration of inter-segment "sp" tokens (NaN: draw one)
    pause: list[float] = []  # silence (covered by no token) just before this token
    for k in range(n_seg):
        gap = float(rng.uniform(0.3, 1.2))
        gap_before = 0.0
        if k and rng.random() < 0.5:
            tokens.append("sp")
            seg_of.append(-1)
            fixed.append(gap)
            pause.append(0.0)
        elif k:
            gap_before = gap
        seg_tokens = _segment_tokens(rng, float(lat[k, 0]))
        tokens.extend(seg_tokens)
        seg_of.extend([k] * len(seg_tokens))
        fixed.extend([np.nan] * len(seg_tokens))
        pause.extend([gap_before] + [0.0] * (len(seg_tokens) - 1))
    seg_arr = np.asarray(seg_of)
    is_sp = np.array([t == "sp" for t in tokens])
    fixed_arr, pause_arr = np.asarray(fixed), np.asarray(pause)
    drawn = np.where(is_sp, rng.uniform(0.1, 0.5, len(tokens)), rng.uniform(0.18, 0.55, len(tokens)))
    dur = np.where(np.isnan(fixed_arr), drawn, fixed_arr)
    lead = float(rng.uniform(0.5, 2.0))
    # boundaries on the 10 ms grid (exactly k / 100 like the frame grid, so no overlap sits near eps)
    edges = lead + np.concatenate([[0.0], np.cumsum(pause_arr + dur)])
    starts = np.rint((edges[:-1] + pause_arr) * 100) / 100
    ends = np.rint(edges[1:] * 100) / 100
    word_iv = np.stack([starts, ends], axis=1)
    in_seg = seg_arr >= 0
    seg_iv = np.empty((n_seg, 2))
    first = np.searchsorted(seg_arr[in_seg], np.arange(n_seg), side="left")
    last = np.searchsorted(seg_arr[in_seg], np.arange(n_seg), side="right") - 1
    seg_iv[:, 0] = word_iv[in_seg][first, 0]
    seg_iv[:, 1] = word_iv[in_seg][last, 1]
    duration = float(ends[-1]) + float(rng.uniform(0.5, 2.0))

    # audio: noise + speaker offset; signal on frames inside spoken words of the segment
    n_a = int(np.ceil(duration * AUDIO_RATE))
    a_iv = _grid(n_a, AUDIO_RATE)
    audio = rng.standard_normal((n_a, AUDIO_DIM), dtype=np.float32)
    audio += (SPEAKER_OFFSET * rng.standard_normal(AUDIO_DIM)).astype(np.float32)
    widx = _centre_index(word_iv, a_iv.mean(axis=1))
    speech = widx >= 0
    speech[speech] = ~is_sp[widx[speech]] & (seg_arr[widx[speech]] >= 0)
    rows = np.flatnonzero(speech)
    shift = (AUDIO_GAIN * lat[seg_arr[widx[rows]], 1]).astype(np.float32)
    audio[np.ix_(rows, AUDIO_SIGNAL_DIMS)] += shift[:, None]
    silent = np.flatnonzero(~speech)
    audio[silent[rng.random(silent.size) < 0.3], AUDIO_NEGINF_DIM] = -np.inf
    n_nan = int(rng.poisson(n_a * AUDIO_DIM * 2e-5))
    audio[rng.integers(0, n_a, n_nan), rng.integers(0, AUDIO_DIM, n_nan)] = np.nan

    # vision: 30 Hz, signal on frames inside the segment, a few dropped runs (face lost)
    n_v = int(np.ceil(duration * VISION_RATE))
    v_iv = _grid(n_v, VISION_RATE)
    vision = rng.standard_normal((n_v, vision_dim), dtype=np.float32)
    vision += (SPEAKER_OFFSET * rng.standard_normal(vision_dim)).astype(np.float32)
    sidx = _centre_index(seg_iv, v_iv.mean(axis=1))
    rows = np.flatnonzero(sidx >= 0)
    shift = (VISION_GAIN * lat[sidx[rows], 2]).astype(np.float32)
    vision[np.ix_(rows, VISION_SIGNAL_DIMS)] += shift[:, None]
    n_nan = int(rng.poisson(n_v * vision_dim * 2e-5))
    vision[rng.integers(0, n_v, n_nan), rng.integers(0, vision_dim, n_nan)] = np.nan
    keep = np.ones(n_v, dtype=bool)
    for _ in range(int(rng.integers(0, 3))):
        start, length = int(rng.integers(0, n_v)), int(rng.integers(10, 60))
        keep[start:start + length] = False

    return ((encode_words(tokens), word_iv), (audio, a_iv), (vision[keep], v_iv[keep]),
            (labels.astype(np.float32)[:, None], seg_iv), lat)


#: Written beside a synthetic set once it is complete: which set it is (data set, scale, seed), so a
#: reader never takes one scale or seed for another (:func:`mmsenti.data.datamodule.ensure_synthetic`).
RECORD_FILENAME = "synthetic.json"


def record(dataset: str, scale: str, seed: int) -> dict:
    """What :data:`RECORD_FILENAME` holds for this set."""
    return {"dataset": dataset, "scale": str(scale), "seed": int(seed)}


def write_record(out: Path, dataset: str, scale: str, seed: int) -> None:
    write_json_atomic(Path(out) / RECORD_FILENAME, record(dataset, scale, seed))


def read_record(root: str | Path) -> dict | None:
    """The record of the synthetic set in ``root`` (None: none, or unreadable)."""
    try:
        record = json.loads((Path(root) / RECORD_FILENAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_synthetic_mosi(out_dir: str | Path, scale: Literal["mosi", "small"] = "mosi", seed: int = 0) -> Path:
    """Write a synthetic CMU-MOSI (4 ``.csd`` files + ``folds.json``) into ``out_dir``; return it.

    See the module docstring for the exact generative model. Deterministic in ``seed``.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    spec = SCALES[scale]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    folds = _video_ids(spec)
    vids = [v for s in SPLITS for v in folds[s]]
    seg_counts = _segment_counts(rng, spec, len(vids))

    words_data, audio_data, vision_data, label_data = {}, {}, {}, {}
    for vid, n_seg in zip(vids, seg_counts):
        words_data[vid], audio_data[vid], vision_data[vid], label_data[vid], _ = _synth_video(rng, int(n_seg))

    doc = f"synthetic CMU-MOSI ({scale}, seed {seed}); see mmsenti.data.synthetic"
    seqs = {
        "words": ComputationalSequence("CMU_MOSI_TimestampedWords", words_data,
                                       _metadata("CMU_MOSI_TimestampedWords", f"words, {doc}", ["word"], seed)),
        "audio": ComputationalSequence("CMU_MOSI_COVAREP", audio_data,
                                       _metadata("CMU_MOSI_COVAREP", f"COVAREP-like 74-d 100 Hz, {doc}",
                                                 [f"covarep_{i}" for i in range(AUDIO_DIM)], seed)),
        "vision": ComputationalSequence("CMU_MOSI_Visual_Facet_41", vision_data,
                                        _metadata("CMU_MOSI_Visual_Facet_41", f"FACET-like 47-d 30 Hz, {doc}",
                                                  [f"facet_{i}" for i in range(VISION_DIM)], seed)),
        "labels": ComputationalSequence("Opinion Segment Labels", label_data,
                                        _metadata("Opinion Segment Labels", f"sentiment labels, {doc}",
                                                  ["sentiment score"], seed)),
    }
    # the label file goes last: its presence marks a complete set (each file is written atomically)
    (out / FOLDS_FILENAME).write_text(json.dumps(folds, indent=1) + "\n")
    for key in ("words", "audio", "vision", "labels"):
        write_csd(seqs[key], out / FILES[key])
    write_record(out, "mosi", scale, seed)
    return out


#: File name of the MMSA-style pickle :func:`write_synthetic_mmsa` writes (MMSA's unaligned layout).
MMSA_PICKLE_NAME = "unaligned_50.pkl"


def write_synthetic_mmsa(out_dir: str | Path, scale: Literal["mosi", "small"] = "mosi", seed: int = 0,
                         max_frames: int = 50) -> Path:
    """Write the same synthetic CMU-MOSI as an MMSA-style processed pickle; return its path.

    The CSD set of :func:`write_synthetic_mosi` (same ``scale``/``seed``) is written to a temporary
    folder and loaded with ``load_mosi_csd(mode="unaligned", max_frames=50)``; each split becomes
    MMSA's ``unaligned_50.pkl`` layout::

        {"train" | "valid" | "test": {
            "raw_text": [N] str, "id": [N] "<video_id>$_$<clip>" (the CSD loader's ids),
            "audio": float32 [N, 50, 74], "vision": float32 [N, 50, 47] (zero padded),
            "audio_lengths": int64 [N], "vision_lengths": int64 [N],
            "regression_labels": float32 [N]}}

    Only numpy arrays and dicts are pickled (readable by :func:`mmsenti.data.mmsa.load_mmsa_pickle`).
    NaN/inf frame values were already replaced by 0 by the loader; a segment without frames of a
    modality has length 0.
    """
    from .mosi import load_mosi_csd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmsenti-synth-") as tmp:
        write_synthetic_mosi(tmp, scale=scale, seed=seed)
        data = load_mosi_csd(tmp, mode="unaligned", max_frames=max_frames, cache_dir=False)
    dims = {"audio": data.audio_dim, "vision": data.vision_dim}
    payload = {}
    for split in SPLITS:
        samples = data.splits[split]
        part: dict[str, np.ndarray] = {
            "raw_text": np.array([s["text"] or "" for s in samples], dtype=str),
            "id": np.array([s["id"] for s in samples], dtype=str),
            "regression_labels": np.array([s["label"] for s in samples], dtype=np.float32),
        }
        for m, dim in dims.items():
            padded = np.zeros((len(samples), max_frames, dim), dtype=np.float32)
            lengths = np.zeros(len(samples), dtype=np.int64)
            for i, s in enumerate(samples):
                frames = s[m]
                if frames is not None and len(frames):
                    padded[i, : len(frames)] = frames
                    lengths[i] = len(frames)
            part[m] = padded
            part[f"{m}_lengths"] = lengths
        payload[split] = part
    path = out / MMSA_PICKLE_NAME
    with atomic_writer(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=4)
    return path


# ----------------------------------------------------------------------------------------------
# CMU-MOSEI: the same generative model in the SDK's CMU-MOSEI layout

#: The SDK's CMU-MOSEI file names (what :mod:`mmsenti.data.mosei` looks for first).
MOSEI_FILES = {
    "words": "CMU_MOSEI_TimestampedWords.csd",
    "audio": "CMU_MOSEI_COVAREP.csd",
    "vision": "CMU_MOSEI_VisualFacet42.csd",
    "labels": "CMU_MOSEI_Labels.csd",
}
MOSEI_VISION_DIM = 35  # FACET 4.2
MOSEI_EMOTIONS = ("happiness", "sadness", "anger", "surprise", "disgust", "fear")
#: ``"small"``: 12 videos (6/3/3) x 10 segments; ``"medium"``: 215 videos (150/20/45), 1,500 segments
#: (the real set, 3,228 videos / ~23k segments, would take minutes and GBs to write).
MOSEI_SCALES = {
    "small": ScaleSpec(videos=(6, 3, 3), segments_per_video=10),
    "medium": ScaleSpec(videos=(150, 20, 45), total_segments=1500),
}
_MOSEI_BIB = "@inproceedings{zadeh2018multimodal, title={Multimodal language analysis in the wild: CMU-MOSEI dataset}}"


def _segment_counts(rng: np.random.Generator, spec: ScaleSpec, n_videos: int) -> np.ndarray:
    if spec.total_segments is None:
        return np.full(n_videos, spec.segments_per_video)
    base = 5
    return base + rng.multinomial(spec.total_segments - base * n_videos, rng.dirichlet(np.full(n_videos, 3.0)))


def _emotions(rng: np.random.Generator, sentiment: np.ndarray) -> np.ndarray:
    """Six emotion intensities in [0, 3] on the 1/3 grid (three annotators' mean, as in CMU-MOSEI):
    happiness follows positive sentiment, sadness/anger/disgust negative, surprise/fear are noise."""
    n = len(sentiment)
    pos, neg = np.maximum(sentiment, 0), np.maximum(-sentiment, 0)
    raw = np.stack([0.9 * pos, 0.7 * neg, 0.4 * neg, np.zeros(n), 0.3 * neg, np.zeros(n)], axis=1)
    raw = raw + 0.4 * np.abs(rng.standard_normal((n, 6))) * (rng.random((n, 6)) < 0.4)
    return np.clip(np.rint(raw * 3) / 3, 0.0, 3.0)


def write_synthetic_mosei(out_dir: str | Path, scale: Literal["small", "medium"] = "medium", seed: int = 0) -> Path:
    """Write a synthetic CMU-MOSEI (4 ``.csd`` files under the SDK's MOSEI names + ``folds.json``); return it.

    The generative model of the module docstring (the CMU-MOSI writer's), with CMU-MOSEI's layout:
    video ids are the first ones of each SDK standard MOSEI fold (YouTube and numeric ids alike),
    FACET 4.2-like vision is 35-d, and the label file (root ``All Labels``, like the upstream SDK's
    ``CMU_MOSEI_Labels.csd``) holds 7 values per segment: sentiment in [-3, 3] at index 0, then
    :data:`MOSEI_EMOTIONS` in [0, 3]. Deterministic in ``seed``.
    """
    if scale not in MOSEI_SCALES:
        raise ValueError(f"scale must be one of {sorted(MOSEI_SCALES)}, got {scale!r}")
    spec = MOSEI_SCALES[scale]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    folds = _video_ids(spec, dataset="mosei")
    vids = [v for s in SPLITS for v in folds[s]]
    data: dict[str, dict] = {k: {} for k in MOSEI_FILES}
    for vid, n_seg in zip(vids, _segment_counts(rng, spec, len(vids))):
        words, audio, vision, (sentiment, seg_iv), _ = _synth_video(rng, int(n_seg), vision_dim=MOSEI_VISION_DIM)
        labels = np.concatenate([sentiment, _emotions(rng, sentiment[:, 0])], axis=1).astype(np.float32)
        data["words"][vid], data["audio"][vid], data["vision"][vid] = words, audio, vision
        data["labels"][vid] = (labels, seg_iv)

    doc = f"synthetic CMU-MOSEI ({scale}, seed {seed}); see mmsenti.data.synthetic"
    described = {
        "words": ("CMU_MOSEI_TimestampedWords", f"words, {doc}", ["word"]),
        "audio": ("CMU_MOSEI_COVAREP", f"COVAREP-like 74-d 100 Hz, {doc}", [f"covarep_{i}" for i in range(AUDIO_DIM)]),
        "vision": ("CMU_MOSEI_VisualFacet42", f"FACET 4.2-like 35-d 30 Hz, {doc}",
                   [f"facet_{i}" for i in range(MOSEI_VISION_DIM)]),
        "labels": ("All Labels", f"sentiment and emotion labels, {doc}", ["sentiment", *MOSEI_EMOTIONS]),
    }
    (out / FOLDS_FILENAME).write_text(json.dumps(folds, indent=1) + "\n")
    for key in ("words", "audio", "vision", "labels"):  # the label file last: it marks a complete set
        name, description, dims = described[key]
        meta = _metadata(name, description, dims, seed, dataset="CMU-MOSEI (synthetic)", bib=_MOSEI_BIB)
        write_csd(ComputationalSequence(name, data[key], meta), out / MOSEI_FILES[key])
    write_record(out, "mosei", scale, seed)
    return out


# ----------------------------------------------------------------------------------------------
# CH-SIMS: MMSA-FET's label.csv with unimodal labels + per-clip features as `mmsenti extract` writes them

#: Sub-folder of a CH-SIMS root holding the per-clip features (``mmsenti extract ROOT --out ROOT/features``).
SIMS_FEATURES_DIR = "features"
#: Clips per mode (train/valid/test) and videos: ``"sims"`` = CH-SIMS's 1,368 / 456 / 457 clips of 60
#: videos; ``"small"`` = 24 / 8 / 8 clips of 4 videos.
SIMS_SCALES: dict[str, tuple[tuple[int, int, int], int]] = {
    "small": ((24, 8, 8), 4),
    "sims": ((1368, 456, 457), 60),
}
SIMS_AUDIO_DIM, SIMS_AUDIO_RATE = 33, 50
SIMS_VISION_DIM, SIMS_VISION_RATE = 35, 30
SIMS_LABEL_COLUMNS = ("video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode")
_SIMS_BIB = ("@inproceedings{yu2020ch, title={CH-SIMS: A Chinese Multimodal Sentiment Analysis Dataset with "
             "Fine-grained Annotations of Modality}}")

#: Chinese opinion words by polarity level (-3 .. 3).
SIMS_LEXICON: dict[int, tuple[str, ...]] = {
    -3: ("太糟糕了", "非常差劲", "特别恶心", "让人崩溃"),
    -2: ("很难看", "很无聊", "让人失望", "挺讨厌的"),
    -1: ("不太好", "有点无聊", "有点乏味", "不够好"),
    0: ("还行", "很普通", "挺正常", "一般"),
    1: ("不错", "还可以", "挺好的", "有点意思"),
    2: ("很好看", "很开心", "很喜欢", "很精彩"),
    3: ("太棒了", "非常完美", "非常精彩", "特别好"),
}
_SIMS_OPINION = ("我觉得这件事{}", "这部电影真的{}", "说实话他的表现{}", "今天的心情{}", "这个结果{}", "他说的话{}")
_SIMS_NEUTRAL = ("我们昨天去了那里", "然后他就回家了", "你知道吗", "嗯", "就是这样", "后来我们又聊了一会儿")


def _grid_labels(x: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] on CH-SIMS's 0.2 grid (five annotators' mean of -1 / 0 / 1)."""
    return np.clip(np.rint(np.asarray(x) * 5) / 5, -1.0, 1.0) + 0.0  # + 0.0: no -0.0 in the file


def write_synthetic_sims(out_dir: str | Path, scale: Literal["small", "sims"] = "sims", seed: int = 0) -> Path:
    """Write a synthetic CH-SIMS in the layout :func:`mmsenti.data.sims.load_sims` reads; return ``out_dir``.

    Layout (MMSA-FET's ``label.csv`` plus the features ``mmsenti extract`` writes from ``Raw/``)::

        label.csv                        video_id, clip_id, text, label, label_T, label_A, label_V,
                                         annotation, mode — Chinese text, labels in [-1, 1] (0.2 grid)
        features/CMU_MOSI_COVAREP.csd        33-d audio at 50 Hz, one entry per clip <video_id>$_$<clip_id>
        features/CMU_MOSI_Visual_Facet_41.csd 35-d vision at 30 Hz, same entries
        features/CMU_MOSI_Opinion_Labels.csd  one segment [0, duration] per clip (the multimodal label)
        features/folds.json              the mode column as train/valid/test clip lists

    Planted signal (per clip; ``c``, ``e_T``, ``e_A``, ``e_V`` ~ N(0, 1))::

        u_m = 0.6 c + 0.8 e_m  (m = T, A, V)      label_m = grid(tanh(0.8 u_m))
        label = grid(tanh(0.5 u_T + 0.35 u_A + 0.3 u_V + 0.2 N(0, 1)))

    The text's opinion word comes from :data:`SIMS_LEXICON` at level ``round(3 tanh(0.8 u_T) + 0.5 N)``;
    audio dims 0-3 get ``+0.6 u_A`` on every frame, vision dims 12-13 ``+0.8 u_V``; otherwise N(0, 1)
    plus a per-video offset. Modes are drawn per clip (as in CH-SIMS, clips of a video share folds
    unevenly). Deterministic in ``seed``.
    """
    if scale not in SIMS_SCALES:
        raise ValueError(f"scale must be one of {sorted(SIMS_SCALES)}, got {scale!r}")
    (n_train, n_valid, n_test), n_videos = SIMS_SCALES[scale]
    n = n_train + n_valid + n_test
    out = Path(out_dir)
    feats_dir = out / SIMS_FEATURES_DIR
    feats_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    video_of_clip = np.sort(rng.integers(0, n_videos, n))
    video_of_clip[:n_videos] = np.arange(n_videos)  # every video has a clip
    video_of_clip.sort()
    modes = np.array(["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test)[rng.permutation(n)]
    common = rng.standard_normal(n)
    u = 0.6 * common[:, None] + 0.8 * rng.standard_normal((n, 3))  # T, A, V
    uni = _grid_labels(np.tanh(0.8 * u))
    label = _grid_labels(np.tanh(0.5 * u[:, 0] + 0.35 * u[:, 1] + 0.3 * u[:, 2] + 0.2 * rng.standard_normal(n)))
    offsets = {"audio": SPEAKER_OFFSET * rng.standard_normal((n_videos, SIMS_AUDIO_DIM)),
               "vision": SPEAKER_OFFSET * rng.standard_normal((n_videos, SIMS_VISION_DIM))}

    rows, folds = [], {s: [] for s in SPLITS}
    audio_data, vision_data, label_data = {}, {}, {}
    clip_no = np.zeros(n_videos, dtype=np.int64)
    for i in range(n):
        v = int(video_of_clip[i])
        clip_no[v] += 1
        video_id, clip_id = f"video_{v + 1:04d}", f"{clip_no[v]:04d}"
        key = f"{video_id}$_${clip_id}"
        level = int(np.clip(np.rint(3 * np.tanh(0.8 * u[i, 0]) + 0.5 * rng.standard_normal()), -3, 3))
        words = SIMS_LEXICON[level]
        clauses = [_SIMS_OPINION[rng.integers(len(_SIMS_OPINION))].format(words[rng.integers(len(words))])]
        if rng.random() < 0.5:
            clauses.insert(int(rng.integers(0, 2)), _SIMS_NEUTRAL[rng.integers(len(_SIMS_NEUTRAL))])
        text = "，".join(clauses) + "。"
        duration = float(np.rint(rng.uniform(1.5, 4.0) * 100) / 100)
        for name, dim, rate, dims, gain, store in (
                ("audio", SIMS_AUDIO_DIM, SIMS_AUDIO_RATE, AUDIO_SIGNAL_DIMS, AUDIO_GAIN * u[i, 1], audio_data),
                ("vision", SIMS_VISION_DIM, SIMS_VISION_RATE, VISION_SIGNAL_DIMS, VISION_GAIN * u[i, 2], vision_data)):
            frames = int(np.ceil(duration * rate))
            x = rng.standard_normal((frames, dim), dtype=np.float32) + offsets[name][v].astype(np.float32)
            x[:, list(dims)] += np.float32(gain)
            store[key] = (x, _grid(frames, rate))
        label_data[key] = (np.array([[label[i]]], dtype=np.float32), np.array([[0.0, duration]]))
        folds[str(modes[i])].append(key)
        annotation = "Positive" if label[i] > 0 else "Negative" if label[i] < 0 else "Neutral"
        rows.append([video_id, clip_id, text, f"{label[i]:.1f}", *(f"{x:.1f}" for x in uni[i]), annotation, modes[i]])

    doc = f"synthetic CH-SIMS ({scale}, seed {seed}); see mmsenti.data.synthetic"
    seqs = {
        "audio": ("CMU_MOSI_COVAREP", audio_data, f"acoustic features 33-d 50 Hz, {doc}",
                  [f"audio_{i}" for i in range(SIMS_AUDIO_DIM)]),
        "vision": ("CMU_MOSI_Visual_Facet_41", vision_data, f"facial features 35-d 30 Hz, {doc}",
                   [f"vision_{i}" for i in range(SIMS_VISION_DIM)]),
        "labels": ("Opinion Segment Labels", label_data, f"multimodal sentiment labels in [-1, 1], {doc}",
                   ["sentiment score"]),
    }
    for key in ("audio", "vision", "labels"):
        name, entries, description, dims = seqs[key]
        meta = _metadata(name, description, dims, seed, dataset="CH-SIMS (synthetic)", bib=_SIMS_BIB)
        write_csd(ComputationalSequence(name, entries, meta), feats_dir / FILES[key])
    (feats_dir / FOLDS_FILENAME).write_text(json.dumps(folds, indent=1) + "\n")
    # label.csv last: its presence marks a complete set
    with atomic_writer(out / "label.csv", "w", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SIMS_LABEL_COLUMNS)
        writer.writerows(rows)
    write_record(out, "sims", scale, seed)
    return out


#: ``--format`` / data set -> (writer, its scales, default scale).
WRITERS = {
    "mosi": (write_synthetic_mosi, SCALES, "mosi"),
    "mosei": (write_synthetic_mosei, MOSEI_SCALES, "medium"),
    "sims": (write_synthetic_sims, SIMS_SCALES, "sims"),
}


def write_synthetic(dataset: str, out_dir: str | Path, scale: str | None = None, seed: int = 0) -> Path:
    """Write the synthetic set of ``dataset`` (``"mosi"`` | ``"mosei"`` | ``"sims"``); ``scale=None``: its default."""
    if dataset not in WRITERS:
        raise ValueError(f"no synthetic writer for data set {dataset!r}; choose from {sorted(WRITERS)}")
    writer, _, default = WRITERS[dataset]
    return writer(out_dir, scale=scale or default, seed=seed)
