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

import json
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mmsenti.io import atomic_writer

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
    "ScaleSpec",
    "write_synthetic_mmsa",
    "write_synthetic_mosi",
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


def _video_ids(spec: ScaleSpec) -> dict[str, list[str]]:
    try:
        std = sdk_standard_folds()
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


def _metadata(name: str, description: str, dims: list[str], seed: int) -> dict:
    return {
        "root name": name,
        "computational sequence description": description,
        "computational sequence version": 1.0,
        "alignment compatible": True,
        "dataset name": "CMU-MOSI (synthetic)",
        "dataset version": 1.0,
        "creator": "mmsenti.data.synthetic",
        "contact": "none",
        "featureset bib citation": "synthetic, see mmsenti.data.synthetic",
        "dataset bib citation": "@article{zadeh2016multimodal, title={Multimodal sentiment intensity analysis in videos}}",
        "dimension names": dims,
        "md5": None,
        "uuid": f"mmsenti-synthetic-{name}-seed{seed}",
    }


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
    if spec.total_segments is None:
        seg_counts = np.full(len(vids), spec.segments_per_video)
    else:
        base = 5
        seg_counts = base + rng.multinomial(spec.total_segments - base * len(vids), rng.dirichlet(np.full(len(vids), 3.0)))

    words_data, audio_data, vision_data, label_data = {}, {}, {}, {}
    for vid, n_seg in zip(vids, seg_counts):
        n_seg = int(n_seg)
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
        vision = rng.standard_normal((n_v, VISION_DIM), dtype=np.float32)
        vision += (SPEAKER_OFFSET * rng.standard_normal(VISION_DIM)).astype(np.float32)
        sidx = _centre_index(seg_iv, v_iv.mean(axis=1))
        rows = np.flatnonzero(sidx >= 0)
        shift = (VISION_GAIN * lat[sidx[rows], 2]).astype(np.float32)
        vision[np.ix_(rows, VISION_SIGNAL_DIMS)] += shift[:, None]
        n_nan = int(rng.poisson(n_v * VISION_DIM * 2e-5))
        vision[rng.integers(0, n_v, n_nan), rng.integers(0, VISION_DIM, n_nan)] = np.nan
        keep = np.ones(n_v, dtype=bool)
        for _ in range(int(rng.integers(0, 3))):
            start, length = int(rng.integers(0, n_v)), int(rng.integers(10, 60))
            keep[start:start + length] = False

        words_data[vid] = (encode_words(tokens), word_iv)
        audio_data[vid] = (audio, a_iv)
        vision_data[vid] = (vision[keep], v_iv[keep])
        label_data[vid] = (labels.astype(np.float32)[:, None], seg_iv)

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
