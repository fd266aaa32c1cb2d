"""Read and write CMU Multimodal SDK *computational sequences* (``.csd`` files, HDF5).

CMU-MOSI features (timestamped words, COVAREP, FACET, opinion labels) are distributed as
computational sequences. We read them ourselves instead of through ``mmsdk`` because the SDK
keeps HDF5 handles open, prints coloured logs, returns metadata as raw bytes and treats every
problem either as a silent warning or as a bare ``RuntimeError``. Here the whole file is read into
memory, every problem raises a :class:`CSDError` whose single-line message names the file and
says what to do, and a non-strict mode lets the loader count and skip bad entries instead.

Layout (checked against the official ``CMU_MOSI_Opinion_Labels.csd``)::

    <root name>/                         one root group; the SDK uses the first root key
        data/<video_id>/features         (n, d) float features; words are bytes, shape (n, 1)
        data/<video_id>/intervals        (n, 2) float seconds, [start, end]
        metadata/<key>                   (1,) variable-length string holding a JSON value

A file without the ``metadata`` group (hand-made or trimmed files) is read all the same, with one
warning per file. Metadata values are JSON in official files (``"CMU-MOSI"`` with quotes, ``1.0``,
``null``). The SDK's own writer stores ``str(value)`` instead, so :func:`read_csd` decodes JSON
where it parses and keeps the raw text otherwise. :func:`write_csd` writes JSON, fills the
metadata keys the SDK asks for, and writes atomically (:func:`mmsenti.io.replace_with`) so an interrupted run never
leaves a truncated file behind. :class:`CSDReader` reads one video entry at a time, for frame
files too large to hold whole (COVAREP). Files we write load in ``mmsdk.mmdatasdk.computational_sequence``
and files the SDK writes load here (both directions are tested).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.io import replace_with

__all__ = [
    "CSDError",
    "CSDReader",
    "ComputationalSequence",
    "SDK_METADATA_KEYS",
    "decode_words",
    "encode_words",
    "read_csd",
    "validate_entry",
    "write_csd",
]

#: Metadata keys the SDK (``featuresetMetadataTemplate``) expects in every computational sequence.
SDK_METADATA_KEYS = (
    "root name",
    "computational sequence description",
    "computational sequence version",
    "alignment compatible",
    "dataset name",
    "dataset version",
    "creator",
    "contact",
    "featureset bib citation",
    "dataset bib citation",
)

log = logging.getLogger(__name__)

#: What a user should do about a broken file; appended to every file-level error.
FIX_HINT = "re-download it with `mmsenti data download mosi` (or regenerate a synthetic set)"


class CSDError(MmsentiError):
    """A computational sequence file is unreadable or malformed (message names the file)."""

    def __init__(self, path: str | os.PathLike | None, problem: str, hint: str = FIX_HINT):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}; {hint}".replace("\n", " "))


@dataclass
class ComputationalSequence:
    """One computational sequence held in memory.

    ``data`` maps a video id to ``(features, intervals)``: features ``(n, d)`` (bytes ``(n, 1)`` for
    words), intervals ``(n, 2)`` seconds. ``invalid`` lists entries a non-strict read dropped, with
    the reason, so callers can count them.
    """

    name: str
    data: dict[str, tuple[np.ndarray, np.ndarray]]
    metadata: dict[str, Any] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, vid: object) -> bool:
        return vid in self.data

    @property
    def videos(self) -> list[str]:
        return list(self.data)

    @property
    def feature_dim(self) -> int | None:
        """Width of the feature rows (``None`` for an empty sequence)."""
        for feats, _ in self.data.values():
            return int(feats.shape[1]) if feats.ndim > 1 else 1
        return None

    @property
    def num_rows(self) -> int:
        return int(sum(f.shape[0] for f, _ in self.data.values()))


def validate_entry(features: np.ndarray, intervals: np.ndarray) -> str | None:
    """Return why a ``(features, intervals)`` entry is unusable, or ``None`` if it is fine."""
    if features.ndim != 2:
        return f"features must be 2-D (n, d), got shape {features.shape}"
    if intervals.ndim != 2 or intervals.shape[1] != 2:
        return f"intervals must have shape (n, 2), got {intervals.shape}"
    if features.shape[0] != intervals.shape[0]:
        return f"features/intervals length mismatch ({features.shape[0]} vs {intervals.shape[0]} rows)"
    if features.shape[0] == 0:
        return "zero-length sequence (no rows)"
    if not np.issubdtype(intervals.dtype, np.number):
        return f"intervals must be numeric, got dtype {intervals.dtype}"
    if not np.all(np.isfinite(intervals)):
        return "non-finite interval times"
    bad = int(np.count_nonzero(intervals[:, 1] < intervals[:, 0]))
    if bad:
        return f"{bad} interval(s) end before they start"
    return None


def encode_words(words: Iterable[str]) -> np.ndarray:
    """Words -> the SDK's storage form: a bytes array of shape ``(n, 1)``."""
    enc = [w.encode("utf-8") for w in words]
    width = max((len(w) for w in enc), default=1) or 1
    return np.array(enc, dtype=f"S{width}").reshape(-1, 1)


def decode_words(features: np.ndarray) -> list[str]:
    """The SDK's word storage (bytes or str, shape ``(n, 1)`` or ``(n,)``) -> list of str."""
    flat = np.asarray(features).reshape(len(features), -1)[:, 0] if len(features) else []
    return [w.decode("utf-8", "replace") if isinstance(w, (bytes, np.bytes_)) else str(w) for w in flat]


def _decode_metadata(raw: Any) -> Any:
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()
    if isinstance(raw, (bytes, np.bytes_)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


class CSDReader:
    """An open computational sequence that reads one video entry at a time.

    The loader uses it for the large frame files so that only the videos being processed are in
    memory (COVAREP for CMU-MOSI is ~330 MB as float32). File-level problems raise
    :class:`CSDError` on opening; entry problems raise on :meth:`read` (``strict``) or are recorded
    in ``invalid`` and ``None`` is returned. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, strict: bool = True):
        self.path = Path(path)
        self.strict = strict
        self.invalid: dict[str, str] = {}
        if not self.path.is_file():
            raise CSDError(self.path, "file not found")
        try:
            self._handle = h5py.File(self.path, "r")
        except OSError as exc:  # not HDF5, truncated superblock, permissions ...
            raise CSDError(self.path, f"not a readable HDF5 computational sequence ({_short(exc)})") from exc
        try:
            roots = list(self._handle.keys())
            if not roots:
                raise CSDError(self.path, "no root group (expected '<name>/data' and '<name>/metadata')")
            root = self._handle[roots[0]]
            if not isinstance(root, h5py.Group) or "data" not in root or not isinstance(root["data"], h5py.Group):
                raise CSDError(self.path, f"root group '{roots[0]}' has no 'data' group")
            self.name: str = roots[0]
            self.metadata: dict[str, Any] = {}
            if "metadata" in root and isinstance(root["metadata"], h5py.Group):
                for key, ds in root["metadata"].items():
                    value = ds[()] if ds.shape == () else (ds[0] if ds.shape[0] else None)
                    self.metadata[key] = _decode_metadata(value)
            else:
                _warn_no_metadata(self.path, roots[0])
            self._data = root["data"]
            self.videos: list[str] = list(self._data.keys())
        except CSDError:
            self._handle.close()
            raise
        except (OSError, KeyError, RuntimeError, ValueError) as exc:  # corrupt object headers
            self._handle.close()
            raise CSDError(self.path, f"corrupt HDF5 data ({_short(exc)})") from exc

    def __enter__(self) -> "CSDReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def __contains__(self, vid: object) -> bool:
        return vid in self._data

    @property
    def feature_dim(self) -> int | None:
        """Width of the feature rows, from the first entry's shape (no data read)."""
        for vid in self.videos:
            try:
                shape = self._data[vid]["features"].shape
            except (KeyError, TypeError):
                continue
            return int(shape[1]) if len(shape) > 1 else 1
        return None

    def read(self, vid: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(features, intervals)`` of one video; ``None`` if absent or (non-strict) invalid."""
        if vid not in self._data:
            return None
        try:
            entry = self._data[vid]
            if not isinstance(entry, h5py.Group) or "features" not in entry or "intervals" not in entry:
                features = intervals = None
                problem = "missing 'features' or 'intervals' dataset"
            else:
                features = entry["features"][()]
                intervals = entry["intervals"][()]
                problem = validate_entry(features, intervals)
        except (OSError, KeyError, RuntimeError, ValueError) as exc:  # truncated/corrupt data blocks
            raise CSDError(self.path, f"corrupt HDF5 data in entry '{vid}' ({_short(exc)})") from exc
        if problem is not None:
            if self.strict:
                raise CSDError(self.path, f"entry '{vid}': {problem}",
                               hint="fix or re-download the file, or load with on_error='skip'")
            self.invalid[vid] = problem
            return None
        return features, intervals


def read_csd(
    path: str | os.PathLike,
    strict: bool = True,
    videos: Iterable[str] | None = None,
) -> ComputationalSequence:
    """Read a whole computational sequence into memory.

    ``strict=True`` raises :class:`CSDError` on the first malformed entry (length mismatch,
    zero-length, end before start); ``strict=False`` drops such entries into ``.invalid``.
    Unreadable files (missing, not HDF5, truncated) and a missing root/``data`` group always raise.
    ``videos`` restricts the read to those ids (absent ids are simply not returned).
    """
    with CSDReader(path, strict=strict) as reader:
        wanted = reader.videos if videos is None else [v for v in videos if v in reader]
        data = {}
        for vid in wanted:
            entry = reader.read(vid)
            if entry is not None:
                data[vid] = entry
        return ComputationalSequence(name=reader.name, data=data, metadata=dict(reader.metadata),
                                     invalid=dict(reader.invalid), path=Path(path))


def write_csd(seq: ComputationalSequence, path: str | os.PathLike, compression: str | None = None) -> Path:
    """Write ``seq`` as an SDK-compatible computational sequence, atomically.

    Features given as ``str`` arrays (words) are stored as UTF-8 bytes like the SDK's files. Missing
    SDK metadata keys are filled with neutral values so the SDK's integrity check passes. Raises
    :class:`CSDError` (naming ``path``) on a malformed entry; nothing is written then.
    """
    path = Path(path)
    for vid, (features, intervals) in seq.data.items():
        problem = validate_entry(np.asarray(features), np.asarray(intervals))
        if problem is not None:
            raise CSDError(path, f"cannot write entry '{vid}': {problem}", hint="fix the data before writing")
    metadata = {key: None for key in SDK_METADATA_KEYS}
    metadata.update({"alignment compatible": True, "computational sequence version": 1.0})
    metadata.update(seq.metadata)
    metadata["root name"] = seq.name

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            root = handle.create_group(seq.name)
            data_group = root.create_group("data")
            for vid, (features, intervals) in seq.data.items():
                features = np.asarray(features)
                if features.dtype.kind == "U":
                    features = np.char.encode(features, "utf-8")
                g = data_group.create_group(vid)
                g.create_dataset("features", data=features, compression=compression, track_times=False)
                g.create_dataset("intervals", data=np.asarray(intervals), compression=compression, track_times=False)
            meta_group = root.create_group("metadata")
            for key, value in metadata.items():
                ds = meta_group.create_dataset(key, (1,), dtype=h5py.string_dtype(), track_times=False)
                ds[0] = json.dumps(value, default=str)

    replace_with(path, write)
    return path


_WARNED_NO_METADATA: set[str] = set()


def _warn_no_metadata(path: Path, root_name: str) -> None:
    """The SDK's writer always adds ``metadata``; a file without it still reads (once-per-file warning)."""
    key = str(path.resolve())
    if key not in _WARNED_NO_METADATA:
        _WARNED_NO_METADATA.add(key)
        log.warning("%s: root group '%s' has no 'metadata' group; reading the data without it "
                    "(extractor names and dataset facts are unknown)", path, root_name)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__
