"""Load MMSA's processed MOSI inputs (feature pickles, ``label.csv``) without running their code.

MMSA (thuiar/MMSA) distributes CMU-MOSI/MOSEI/SIMS features as Python pickles
(``aligned_50.pkl``, ``unaligned_50.pkl``). ``pickle.load`` on a downloaded file runs whatever
the file says (``os.system``, ``subprocess.Popen`` ...): a pickle is a program, not data. These
files only ever need numpy arrays inside dicts and lists, so :func:`load_mmsa_pickle` uses an
unpickler whose ``find_class`` admits exactly the globals numpy arrays and scalars are rebuilt
from (plus ``set``/``frozenset``/``bytearray``/``complex``/``OrderedDict`` for plain containers)
and refuses anything else with :class:`UnsafePickleError` *before* it can be called.

Pickle layout (MMSA ``data/load_data.py``)::

    {"train" | "valid" | "test": {
        "raw_text": [N] str            "text": [N, L, 300] GloVe (unused here)
        "text_bert": [N, 3, L] (unused) "audio": [N, Ta, Da]   "vision": [N, Tv, Dv]
        "audio_lengths": [N] (optional, unaligned files)   "vision_lengths": [N] (optional)
        "regression_labels": [N] in [-3, 3]   "classification_labels": [N] (optional, unused)
        "regression_labels_T" | "_A" | "_V": [N] (optional: CH-SIMS's unimodal labels)
        "id": [N] "videoid$_$clipid"}}

Each entry becomes a *sample dict* (see :mod:`mmsenti.data.batch`): text is ``raw_text`` (our
models tokenise it themselves), audio/vision are trimmed to their lengths when the file gives
them. Aligned files carry no lengths, so their zero padding is kept as frames (MMSA does the
same for aligned data). Non-finite feature values (COVAREP has ``-inf``) become 0 and are
counted in the report.

:func:`read_label_csv` is the one reader of the MMSA-FET ``label.csv`` layout (``video_id,
clip_id, text, label, mode``, and CH-SIMS's unimodal ``label_T, label_A, label_V`` when the file has
them): :func:`load_label_csv` turns its rows into a text-only data set, :mod:`mmsenti.data.sims` into
CH-SIMS samples and ``mmsenti extract`` into the clips to extract. Unimodal labels travel in a sample
under the keys :data:`UNIMODAL_LABEL_COLUMNS` (the collator puts them in the batch). A file that is not in the given ``encoding``
(UTF-8 by default) is one error naming the line; pass ``encoding="latin-1"`` (``data.encoding``,
``--encoding``) for such files.

Both return :class:`MmsaData`, with the attribute names of the CSD loader's ``MosiData``
(``splits``, ``audio_dim``, ``vision_dim``, ``report``) so callers can take either.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import csv
import io
import math
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from mmsenti.errors import MmsentiError

from .ids import sample_id

__all__ = [
    "LABEL_CSV_COLUMNS",
    "LabelRow",
    "MmsaData",
    "MmsaFormatError",
    "MmsaReport",
    "SPLITS",
    "UNIMODAL_LABEL_COLUMNS",
    "UnsafePickleError",
    "load_label_csv",
    "load_mmsa_pickle",
    "read_label_csv",
]

SPLITS: tuple[str, ...] = ("train", "valid", "test")
LABEL_CSV_COLUMNS: tuple[str, ...] = ("video_id", "clip_id", "text", "label", "mode")
#: CH-SIMS's unimodal label columns (text, audio, vision): also the sample keys that carry them.
UNIMODAL_LABEL_COLUMNS: tuple[str, ...] = ("label_T", "label_A", "label_V")
LABEL_RANGE = (-3.0, 3.0)
UNSAFE_FIX = (
    "this file is not a plain MMSA feature pickle; only numpy arrays, lists, dicts, strings and numbers are loaded"
)


class UnsafePickleError(MmsentiError):
    """A pickle asked for a global outside the numpy-array allow-list; nothing of it was run."""

    def __init__(self, path: str | os.PathLike, global_name: str):
        self.path = str(path)
        self.global_name = global_name
        super().__init__(f"{self.path}: refused to load global '{global_name}' from pickle; {UNSAFE_FIX}")


class MmsaFormatError(MmsentiError):
    """An MMSA file is readable but not in the expected layout (message names file and key/line)."""


@dataclass
class MmsaReport:
    """What a load found: samples kept per split and everything replaced, clipped or skipped."""

    source: str
    samples: dict[str, int] = field(default_factory=dict)
    nonfinite_audio: int = 0  # audio values (not frames) that were NaN/inf and became 0
    nonfinite_vision: int = 0
    lengths_clipped: int = 0  # *_lengths entries longer than the padded array (clipped to it)
    empty_text: int = 0  # pickle: samples kept although raw_text is empty
    skipped_empty_text: int = 0  # label.csv: rows skipped because text is empty
    skipped_other_folds: int = 0  # label.csv: rows whose mode is not among the requested folds
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> rows left out
    transfer: dict[str, Any] | None = None  # label.csv: the unlabelled transfer set added to train (mmsenti.data.transfer)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.samples.items())
        extras = {k: v for k, v in self.as_dict().items() if k not in ("source", "samples", "dropped") and v}
        tail = "".join(f", {k}={v}" for k, v in extras.items())
        return f"{self.source}: {counts}{tail}"


@dataclass
class MmsaData:
    """Sample dicts per split plus feature widths (0 = modality absent, as for label.csv)."""

    splits: dict[str, list[dict]]
    audio_dim: int
    vision_dim: int
    report: MmsaReport


# --------------------------------------------------------------------------- safe unpickling


def _latin1_encode_only(path: str) -> Callable[..., bytes]:
    """Python 3 writes ``bytes`` in protocol 0-2 pickles as ``_codecs.encode(text, 'latin1')``."""

    def encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        if codecs.lookup(encoding).name != "iso8859-1":
            raise UnsafePickleError(path, f"_codecs.encode(..., {encoding!r})")
        return codecs.encode(text, "latin1", errors)

    return encode


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _np_multiarray._reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _np_multiarray.scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _np_numeric._frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("builtins", t.__name__): t for t in (set, frozenset, bytearray, complex)},
}


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 names (``__builtin__.eval``) as the stdlib unpickler does for protocol < 3."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy-array globals; everything else raises before use."""

    def __init__(self, file: Any, path: str):
        # latin1: Python 2 pickles store numpy buffers as str; numpy's documented setting.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode_only(self._path)
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(self._path, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._path, f"persistent id {str(pid)[:40]!r}")


def _safe_unpickle(path: Path) -> Any:
    """Read a pickle holding only numpy arrays and plain containers."""
    if not path.is_file():
        raise MmsaFormatError(f"{path}: file not found; point to MMSA's aligned_50.pkl or unaligned_50.pkl")
    with path.open("rb") as fh:
        try:
            return _NumpyOnlyUnpickler(fh, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # truncated, not a pickle, corrupt array state ...
            raise MmsaFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------- MMSA pickles


def load_mmsa_pickle(path: str | os.PathLike, splits: Sequence[str] = SPLITS) -> MmsaData:
    """Load an MMSA processed feature pickle into sample dicts per split.

    Args:
        path: ``aligned_50.pkl`` / ``unaligned_50.pkl`` (or any pickle of that layout).
        splits: which top-level splits to read; each must be present.

    Raises:
        UnsafePickleError: the pickle references anything but numpy arrays/plain containers.
        MmsaFormatError: missing split/key, mismatched lengths, bad labels or feature widths.
    """
    path = Path(path)
    raw = _safe_unpickle(path)
    if not isinstance(raw, dict):
        raise MmsaFormatError(f"{path}: expected a dict of splits, found {type(raw).__name__}")
    report = MmsaReport(source=str(path))
    out: dict[str, list[dict]] = {}
    dims: dict[str, set[int]] = {"audio": set(), "vision": set()}
    for split in splits:
        if split not in raw:
            raise MmsaFormatError(f"{path}: missing split '{split}' (found {sorted(map(str, raw))})")
        out[split] = _split_samples(path, split, raw[split], report, dims)
        report.samples[split] = len(out[split])
    return MmsaData(out, _one_dim(path, "audio", dims), _one_dim(path, "vision", dims), report)


def _require(path: Path, split: str, part: Any, key: str) -> Any:
    if not isinstance(part, dict):
        raise MmsaFormatError(f"{path}: split '{split}' is a {type(part).__name__}, expected a dict of arrays")
    if key not in part:
        raise MmsaFormatError(f"{path}: split '{split}' has no key '{key}' (found {sorted(map(str, part))})")
    return part[key]


def _split_samples(path: Path, split: str, part: Any, report: MmsaReport, dims: dict[str, set[int]]) -> list[dict]:
    labels = np.asarray(_require(path, split, part, "regression_labels"), dtype=np.float64).reshape(-1)
    n = len(labels)
    texts = _column(path, split, _require(path, split, part, "raw_text"), "raw_text", n)
    ids = _column(path, split, _require(path, split, part, "id"), "id", n)
    audio = _frames(path, split, part, "audio", n, report, dims)
    vision = _frames(path, split, part, "vision", n, report, dims)
    unimodal = {}  # CH-SIMS pickles: regression_labels_T/A/V -> sample keys label_T/A/V
    for column in UNIMODAL_LABEL_COLUMNS:
        key = "regression_labels_" + column[-1]
        if key in part:
            values = np.asarray(part[key], dtype=np.float64).reshape(-1)
            if len(values) != n:
                raise MmsaFormatError(f"{path}: split '{split}' key '{key}' has {len(values)} entries, "
                                      f"regression_labels has {n}")
            unimodal[column] = values
    samples = []
    for i in range(n):
        text, sid = _as_str(texts[i]), _as_str(ids[i])
        _check_label(labels[i], f"{path}: split '{split}' sample {i} (id {sid})")
        report.empty_text += not text.strip()
        sample = {"id": sid, "text": text, "audio": audio[i], "vision": vision[i], "label": float(labels[i])}
        for column, values in unimodal.items():
            _check_label(values[i], f"{path}: split '{split}' sample {i} (id {sid}) regression_labels_{column[-1]}")
            sample[column] = float(values[i])
        samples.append(sample)
    return samples


def _column(path: Path, split: str, values: Any, key: str, n: int) -> list[Any]:
    values = list(np.asarray(values, dtype=object).reshape(-1)) if isinstance(values, np.ndarray) else list(values)
    if len(values) != n:
        raise MmsaFormatError(
            f"{path}: split '{split}' key '{key}' has {len(values)} entries, regression_labels has {n}"
        )
    return values


def _as_str(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    return str(value)


def _frames(
    path: Path, split: str, part: Any, key: str, n: int, report: MmsaReport, dims: dict[str, set[int]]
) -> list[np.ndarray]:
    """Per-sample ``float32 [T_i, D]`` arrays: trimmed to ``<key>_lengths``, non-finite -> 0."""
    value = _require(path, split, part, key)
    rows = _frame_rows(path, split, key, value, n)
    lengths = part.get(f"{key}_lengths")
    if lengths is not None:
        lengths = _column(path, split, lengths, f"{key}_lengths", n)
    out = []
    for i, frames in enumerate(rows):
        if lengths is not None:
            frames = _trim(path, split, key, i, frames, lengths[i], report)
        frames, bad = _finite(frames)
        setattr(report, f"nonfinite_{key}", getattr(report, f"nonfinite_{key}") + bad)
        dims[key].add(int(frames.shape[1]))
        out.append(frames)
    return out


def _frame_rows(path: Path, split: str, key: str, value: Any, n: int) -> list[np.ndarray]:
    """A padded ``[N, T, D]`` array or a sequence of ``[T_i, D]`` arrays -> list of float32 2-D."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        if value.ndim != 3:
            raise MmsaFormatError(f"{path}: split '{split}' key '{key}' must be [N, T, D], got shape {value.shape}")
        value = value.astype(np.float32, copy=False)
    rows = [np.asarray(v, dtype=np.float32) for v in value]
    if len(rows) != n:
        raise MmsaFormatError(f"{path}: split '{split}' key '{key}' has {len(rows)} entries, regression_labels has {n}")
    for i, r in enumerate(rows):
        if r.ndim != 2:
            raise MmsaFormatError(f"{path}: split '{split}' key '{key}' sample {i} must be [T, D], got shape {r.shape}")
    return rows


def _trim(path: Path, split: str, key: str, i: int, frames: np.ndarray, length: Any, report: MmsaReport) -> np.ndarray:
    n = int(length)
    if n < 0:
        raise MmsaFormatError(f"{path}: split '{split}' key '{key}_lengths' sample {i} is negative ({n})")
    if n > len(frames):
        report.lengths_clipped += 1
    return frames[:n]


def _finite(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN/inf by 0 (copying only when needed) and return how many values changed."""
    ok = np.isfinite(frames)
    bad = int(ok.size - np.count_nonzero(ok))
    if bad:
        frames = np.where(ok, frames, np.float32(0))
    return frames, bad


def _one_dim(path: Path, key: str, dims: dict[str, set[int]]) -> int:
    found = dims[key]
    if len(found) > 1:
        raise MmsaFormatError(f"{path}: '{key}' feature width differs between samples/splits: {sorted(found)}")
    return found.pop() if found else 0


def _check_label(value: float, where: str) -> None:
    lo, hi = LABEL_RANGE
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise MmsaFormatError(f"{where}: label {value!r} is not a number in [{lo:g}, {hi:g}]")


# --------------------------------------------------------------------------- MMSA-FET label.csv


@dataclass(frozen=True)
class LabelRow:
    """One validated ``label.csv`` row (``line`` is its line number in the file)."""

    line: int
    video_id: str
    clip_id: str
    text: str
    label: float
    mode: str
    unimodal: tuple[float, float, float] | None = None  # CH-SIMS: label_T, label_A, label_V (None: no such columns)

    @property
    def id(self) -> str:
        return sample_id(self.video_id, self.clip_id)

    def unimodal_labels(self) -> dict[str, float]:
        """``{"label_T": .., "label_A": .., "label_V": ..}`` (the sample keys), empty without those columns."""
        return dict(zip(UNIMODAL_LABEL_COLUMNS, self.unimodal)) if self.unimodal is not None else {}


def read_label_csv(path: str | os.PathLike, encoding: str = "utf-8") -> list[LabelRow]:
    """Every row of an MMSA-FET ``label.csv``, validated; the one reader of that layout.

    Raises :class:`MmsaFormatError` naming the file and line for: a file that is not ``encoding``
    text (the fix: ``encoding=``, e.g. ``"latin-1"``), a missing column, an empty ``video_id`` or
    ``clip_id``, a mode other than train/valid/test, a label that is not a finite number in
    [-3, 3], an id (``video_id$_$clip_id``) seen before. Rows with empty text are returned (the
    callers decide what to do with them). A UTF-8 byte-order mark is dropped. A file with all of
    :data:`UNIMODAL_LABEL_COLUMNS` (CH-SIMS) gives each row its ``unimodal`` labels, checked like ``label``.
    """
    path = Path(path)
    if not path.is_file():
        raise MmsaFormatError(f"{path}: file not found; expected an MMSA-FET label.csv "
                              f"(columns {', '.join(LABEL_CSV_COLUMNS)})")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise MmsaFormatError(f"{path}: unknown text encoding {encoding!r}; use e.g. utf-8, latin-1, cp1252") from None
    raw = path.read_bytes()
    if codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):  # Excel's "CSV UTF-8"
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise MmsaFormatError(
            f"{path}: line {line}: not {encoding} text (byte 0x{raw[err.start]:02x} on that line); "
            f"if the file is in another encoding, pass it: --encoding latin-1 / data.encoding=latin-1 (or cp1252 ...)"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    _check_columns(path, reader.fieldnames)
    unimodal = all(c in (reader.fieldnames or []) for c in UNIMODAL_LABEL_COLUMNS)
    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    for cells in reader:
        row = _label_row(path, reader.line_num, cells, unimodal=unimodal)
        if row.id in seen:
            raise MmsaFormatError(f"{path}: line {row.line}: id {row.id} already on line {seen[row.id]}")
        seen[row.id] = row.line
        rows.append(row)
    return rows


def load_label_csv(path: str | os.PathLike, folds: Iterable[str] = SPLITS, encoding: str = "utf-8") -> MmsaData:
    """Read an MMSA-FET ``label.csv`` (``video_id, clip_id, text, label, mode``) as text-only data.

    * ``id`` is MMSA's ``f"{video_id}$_${clip_id}"``; ``audio``/``vision`` are ``None`` and
      ``audio_dim``/``vision_dim`` are ``0`` (ints like every loader; the collator then gives
      all-false masks of width 0).
    * Rows with empty text are **skipped** and counted (``report.skipped_empty_text``, and per
      split in ``report.dropped``): a text-only model would learn only its bias from them.
    * Every requested fold is a key of ``.splits`` even when no row has that mode (the shared
      ``label_trainvalid.csv`` has no test rows); rows of other folds are counted as skipped.
    * Bad rows and a file not in ``encoding`` raise :class:`MmsaFormatError` naming the file and
      line (see :func:`read_label_csv`).
    """
    path = Path(path)
    folds = tuple(folds)
    unknown = [f for f in folds if f not in SPLITS]
    if unknown:
        raise ValueError(f"unknown fold(s) {unknown}; label.csv modes are {list(SPLITS)}")
    report = MmsaReport(source=str(path))
    splits: dict[str, list[dict]] = {f: [] for f in folds}
    dropped: dict[str, collections.Counter] = {f: collections.Counter() for f in folds}
    for row in read_label_csv(path, encoding=encoding):
        if row.mode not in splits:
            report.skipped_other_folds += 1
        elif not row.text:
            report.skipped_empty_text += 1
            dropped[row.mode]["empty text"] += 1
        else:
            splits[row.mode].append({"id": row.id, "text": row.text, "audio": None, "vision": None, "label": row.label,
                                     **row.unimodal_labels()})
    report.samples = {f: len(s) for f, s in splits.items()}
    report.dropped = {f: dict(c) for f, c in dropped.items()}
    return MmsaData(splits, audio_dim=0, vision_dim=0, report=report)


def _check_columns(path: Path, fieldnames: Sequence[str] | None) -> None:
    missing = [c for c in LABEL_CSV_COLUMNS if c not in (fieldnames or [])]
    if missing:
        header, want = list(fieldnames or []), list(LABEL_CSV_COLUMNS)
        raise MmsaFormatError(f"{path}: missing column(s) {missing}; header is {header}, expected {want}")


def _label_row(path: Path, line: int, row: dict[str, str | None], unimodal: bool = False) -> LabelRow:
    where = f"{path}: line {line}"
    cells = {c: (row.get(c) or "").strip() for c in LABEL_CSV_COLUMNS}
    mode = cells["mode"]
    if mode not in SPLITS:
        raise MmsaFormatError(f"{where}: mode {mode!r} is not one of {list(SPLITS)}")
    if not cells["video_id"] or not cells["clip_id"]:
        raise MmsaFormatError(f"{where}: video_id and clip_id must not be empty")
    try:
        label = float(cells["label"])
    except ValueError:
        raise MmsaFormatError(f"{where}: label {cells['label']!r} is not a number in [-3, 3]") from None
    _check_label(label, where)
    values = None
    if unimodal:
        values = []
        for column in UNIMODAL_LABEL_COLUMNS:
            cell = (row.get(column) or "").strip()
            try:
                value = float(cell)
            except ValueError:
                raise MmsaFormatError(f"{where}: {column} {cell!r} is not a number in [-3, 3]") from None
            _check_label(value, f"{where}: {column}")
            values.append(value)
        values = tuple(values)
    return LabelRow(line=line, video_id=cells["video_id"], clip_id=cells["clip_id"], text=cells["text"],
                    label=label, mode=mode, unimodal=values)
