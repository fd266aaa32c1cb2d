"""CMU-MOSI / CMU-MOSEI train/valid/test folds by video id.

Results on CMU-MOSI are only comparable on the standard folds (52 / 10 / 31 videos,
1,284 / 229 / 686 segments), which ship with the CMU SDK in
``mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi_std_folds.py``; CMU-MOSEI's
(2,250 / 300 / 678 videos) in ``.../CMU_MOSEI/cmu_mosei_std_folds.py`` (``dataset="mosei"``). We
parse those files as Python literals instead of importing them: importing anything under ``mmsdk``
loads the whole SDK (~1 s), which would dominate a cached dataset load.

Precedence: an explicit ``folds`` dict, then ``folds.json`` in the data folder (the synthetic set
writes one), then the SDK's standard folds. Fold ids missing from the data are an error by
default (a wrong data folder or fold file), or counted and skipped with ``on_error="skip"``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Literal, Mapping

from mmsenti.errors import MmsentiError

__all__ = [
    "FOLDS_FILENAME",
    "SDK_FOLDS_FILES",
    "SPLITS",
    "FoldAssignment",
    "FoldError",
    "ResolvedFolds",
    "assign_folds",
    "resolve_folds",
    "sdk_standard_folds",
]

SPLITS = ("train", "valid", "test")
FOLDS_FILENAME = "folds.json"
OnError = Literal["raise", "skip"]

_SDK_FOLDS_FILE = ("mmdatasdk", "dataset", "standard_datasets", "CMU_MOSI", "cmu_mosi_std_folds.py")
#: Data set -> the SDK file holding its standard folds (under the installed ``mmsdk`` package).
SDK_FOLDS_FILES: dict[str, tuple[str, ...]] = {
    "mosi": _SDK_FOLDS_FILE,
    "mosei": ("mmdatasdk", "dataset", "standard_datasets", "CMU_MOSEI", "cmu_mosei_std_folds.py"),
}
_SDK_NAMES = {"train": "standard_train_fold", "valid": "standard_valid_fold", "test": "standard_test_fold"}


class FoldError(MmsentiError):
    """Folds are malformed or name videos the data does not have."""


@dataclass
class ResolvedFolds:
    """Fold lists plus where they came from (``"explicit"``, a ``folds.json`` path, or ``"sdk"``)."""

    folds: dict[str, list[str]]
    source: str

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.folds.items()}


@dataclass
class FoldAssignment:
    """Which split each available video goes to, and what did not match."""

    split_of: dict[str, str]
    unknown: dict[str, list[str]] = field(default_factory=dict)  # fold ids absent from the data
    unassigned: list[str] = field(default_factory=list)  # data videos in no fold

    @property
    def num_unknown(self) -> int:
        return sum(len(v) for v in self.unknown.values())


@lru_cache(maxsize=4)
def _sdk_folds_cached(dataset: str = "mosi") -> tuple[tuple[str, ...], ...]:
    if dataset not in SDK_FOLDS_FILES:
        raise FoldError(f"no SDK standard folds for data set '{dataset}'; choose from {', '.join(SDK_FOLDS_FILES)}")
    spec = importlib.util.find_spec("mmsdk")
    if spec is None or not spec.submodule_search_locations:
        raise FoldError("the CMU SDK package is not installed (pip install cmu-multimodal-sdk==0.0.6); "
                        "pass folds= explicitly or put a folds.json in the data folder")
    parts = SDK_FOLDS_FILES[dataset]
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    found: dict[str, list[str]] = {}
    try:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id] = ast.literal_eval(node.value)
        lists = [found[_SDK_NAMES[s]] for s in SPLITS]
    except (OSError, SyntaxError, ValueError, KeyError):  # layout changed: fall back to importing it
        try:
            mod = importlib.import_module("mmsdk." + ".".join(parts)[: -len(".py")])
            lists = [getattr(mod, _SDK_NAMES[s]) for s in SPLITS]
        except (ImportError, AttributeError) as exc:
            raise FoldError(f"cannot read the SDK's standard {dataset} folds from {path} ({exc}); "
                            "pass folds= explicitly or put a folds.json in the data folder") from exc
    return tuple(tuple(str(v) for v in lst) for lst in lists)


def sdk_standard_folds(dataset: str = "mosi") -> dict[str, list[str]]:
    """The SDK's standard folds: CMU-MOSI ``{"train": 52 ids, "valid": 10, "test": 31}``;
    ``dataset="mosei"``: CMU-MOSEI's 2,250 / 300 / 678 video ids."""
    return {s: list(ids) for s, ids in zip(SPLITS, _sdk_folds_cached(dataset))}


def _validate(folds: Mapping[str, Iterable[str]], source: str) -> dict[str, list[str]]:
    if not isinstance(folds, Mapping):
        raise FoldError(f"folds from {source} must be a dict of split -> video ids, got {type(folds).__name__}")
    extra = set(folds) - set(SPLITS)
    if extra:
        raise FoldError(f"folds from {source} have unknown split names {sorted(extra)}; expected {list(SPLITS)}")
    out = {s: [str(v) for v in folds.get(s, [])] for s in SPLITS}
    seen: dict[str, str] = {}
    for split, ids in out.items():
        for vid in ids:
            if vid in seen and seen[vid] != split:
                raise FoldError(f"folds from {source}: video '{vid}' is in both '{seen[vid]}' and '{split}'")
            seen[vid] = split
    return out


def resolve_folds(root: str | Path | None = None, folds: Mapping[str, Iterable[str]] | None = None,
                  dataset: str = "mosi") -> ResolvedFolds:
    """Pick the folds: explicit ``folds`` > ``<root>/folds.json`` > the SDK's standard folds of ``dataset``."""
    if folds is not None:
        return ResolvedFolds(_validate(folds, "the folds argument"), "explicit")
    if root is not None:
        path = Path(root) / FOLDS_FILENAME
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except ValueError as exc:
                raise FoldError(f"{path}: not valid JSON ({exc}); fix or delete it to use the SDK folds") from exc
            return ResolvedFolds(_validate(raw, str(path)), str(path))
    if dataset == "mosi":
        return ResolvedFolds(sdk_standard_folds(), "sdk")
    return ResolvedFolds(sdk_standard_folds(dataset), f"sdk ({dataset})")


def assign_folds(resolved: ResolvedFolds, available: Iterable[str], on_error: OnError = "raise") -> FoldAssignment:
    """Map available video ids to splits; unknown fold ids raise (default) or are counted (``"skip"``)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    available = list(available)
    have = set(available)
    split_of: dict[str, str] = {}
    unknown: dict[str, list[str]] = {}
    for split, ids in resolved.folds.items():
        missing = [v for v in ids if v not in have]
        if missing:
            unknown[split] = missing
        for vid in ids:
            if vid in have:
                split_of[vid] = split
    total = sum(len(v) for v in unknown.values())
    if total and on_error == "raise":
        sample = [v for ids in unknown.values() for v in ids][:5]
        raise FoldError(
            f"{total} video id(s) in the folds ({resolved.source}) are not in the data, e.g. {', '.join(sample)}; "
            "check the data folder / folds, or pass on_error='skip' to drop them"
        )
    unassigned = [v for v in available if v not in split_of]
    return FoldAssignment(split_of=split_of, unknown=unknown, unassigned=unassigned)
