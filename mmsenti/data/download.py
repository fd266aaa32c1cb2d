"""Download CMU-MOSI / CMU-MOSEI computational sequences with the CMU Multimodal SDK's recipe URLs.

The URLs come from the installed SDK copy (``cmu-multimodal-sdk``:
``mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi.py``, the ``raw``, ``highlevel`` and
``labels`` dicts; ``.../CMU_MOSEI/cmu_mosei.py`` for CMU-MOSEI). That file is parsed as Python
literals rather than imported, because importing anything under ``mmsdk`` loads the whole SDK;
:data:`FALLBACK_URLS` (:data:`MOSEI_FALLBACK_URLS`) holds the same URLs for when the SDK is missing
or its layout changes. One :class:`Recipe` per data set (:data:`RECIPES`) names its features; one
engine (:func:`download_dataset`) fetches any of them.

CMU-MOSEI's label file is the upstream SDK's ``labels["All Labels"]``, ``CMU_MOSEI_Labels.csd``:
7 values per segment (sentiment in [-3, 3], then happiness, sadness, anger, surprise, disgust,
fear in [0, 3]). The installed SDK copy (0.0.6) lists only the older split files
(``labels_sentiment``: ``CMU_MOSEI_LabelsSentiment.csd``, ``labels_emotions``:
``CMU_MOSEI_LabelsEmotions.csd``), so ``labels`` comes from :data:`MOSEI_FALLBACK_URLS`.

Each file is fetched into ``<dest>/<name>.part`` and resumed with an HTTP ``Range`` request after
an interrupted transfer; transient failures (connection reset, timeouts, HTTP 5xx) are retried
with exponential backoff. A finished download is checked as HDF5 + computational sequence (every
entry read once, one at a time, with :class:`~mmsenti.data.csd.CSDReader`) before it is renamed into
place, so ``<dest>/<name>`` is always either absent or a valid file. Files already present and
valid are skipped. A host that cannot be reached at all (no DNS, connection refused, no route)
raises :class:`DownloadError` with one line that says where to get the files by hand.
"""

from __future__ import annotations

import ast
import http.client
import importlib.util
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

from mmsenti.errors import MmsentiError

__all__ = [
    "DEFAULT_FEATURES",
    "FALLBACK_URLS",
    "FEATURES",
    "MOSEI_DEFAULT_FEATURES",
    "MOSEI_FALLBACK_URLS",
    "MOSEI_FEATURES",
    "RECIPES",
    "DownloadError",
    "DownloadResult",
    "Recipe",
    "UnreachableError",
    "dataset_urls",
    "download_dataset",
    "download_file",
    "download_mosei",
    "download_mosi",
    "mosei_urls",
    "mosi_urls",
    "validate_csd_file",
]

#: Short feature names -> (SDK dict, key in it). The first four are what the CSD loader uses.
FEATURES: dict[str, tuple[str, str]] = {
    "words": ("raw", "words"),
    "covarep": ("highlevel", "COVAREP"),
    "facet": ("highlevel", "FACET 4.1"),
    "labels": ("labels", "Opinion Segment Labels"),
    "phonemes": ("raw", "phonemes"),
    "glove": ("highlevel", "glove_vectors"),
    "opensmile": ("highlevel", "OpenSMILE"),
    "opensmile_eb10": ("highlevel", "OpenSmile-emobase2010"),
    "openface": ("highlevel", "OpenFace"),
}
DEFAULT_FEATURES = ("words", "covarep", "facet", "labels")

_BASE = "http://immortal.multicomp.cs.cmu.edu/CMU-MOSI/"
#: The SDK 0.0.6 recipe, used when the installed SDK cannot be read.
FALLBACK_URLS: dict[str, dict[str, str]] = {
    "raw": {
        "words": _BASE + "language/CMU_MOSI_TimestampedWords.csd",
        "phonemes": _BASE + "language/CMU_MOSI_TimestampedPhones.csd",
    },
    "highlevel": {
        "glove_vectors": _BASE + "language/CMU_MOSI_TimestampedWordVectors_1.1.csd",
        "FACET 4.1": _BASE + "visual/CMU_MOSI_VisualFacet_4.1.csd",
        "OpenSmile-emobase2010": _BASE + "acoustic/CMU_MOSI_OpenSmile_EB10.csd",
        "OpenSMILE": _BASE + "acoustic/CMU_MOSI_openSMILE_IS09.csd",
        "OpenFace": _BASE + "visual/CMU_MOSI_OpenFace2.csd",
        "COVAREP": _BASE + "acoustic/CMU_MOSI_COVAREP.csd",
    },
    "labels": {"Opinion Segment Labels": _BASE + "labels/CMU_MOSI_Opinion_Labels.csd"},
}
SDK_PAGE = "https://github.com/CMU-MultiComp-Lab/CMU-MultimodalSDK"
README_HINT = "see datasets/mosi/README.md"
_SDK_RECIPE = ("mmdatasdk", "dataset", "standard_datasets", "CMU_MOSI", "cmu_mosi.py")

#: CMU-MOSEI short feature names -> (SDK dict, key in it). The first four are what the MOSEI loader uses.
MOSEI_FEATURES: dict[str, tuple[str, str]] = {
    "words": ("raw", "words"),
    "covarep": ("highlevel", "COVAREP"),
    "facet": ("highlevel", "FACET 4.2"),
    "labels": ("labels", "All Labels"),
    "glove": ("highlevel", "glove_vectors"),
    "phonemes": ("raw", "phones"),
    "opensmile": ("highlevel", "OpenSMILE"),
    "openface": ("highlevel", "OpenFace2.0"),
    "labels_sentiment": ("labels", "Sentiment Labels"),
    "labels_emotions": ("labels", "Emotion Labels"),
}
MOSEI_DEFAULT_FEATURES = ("words", "covarep", "facet", "labels")
_MOSEI_BASE = "http://immortal.multicomp.cs.cmu.edu/CMU-MOSEI/"
#: The SDK 0.0.6 CMU-MOSEI recipe plus the upstream SDK's 7-value label file (``All Labels``).
MOSEI_FALLBACK_URLS: dict[str, dict[str, str]] = {
    "raw": {
        "words": _MOSEI_BASE + "language/CMU_MOSEI_TimestampedWords.csd",
        "phones": _MOSEI_BASE + "language/CMU_MOSEI_TimestampedPhones.csd",
    },
    "highlevel": {
        "glove_vectors": _MOSEI_BASE + "language/CMU_MOSEI_TimestampedGloveVectors.csd",
        "COVAREP": _MOSEI_BASE + "acoustic/CMU_MOSEI_COVAREP.csd",
        "OpenFace2.0": _MOSEI_BASE + "visual/CMU_MOSEI_VisualOpenFace2.csd",
        "OpenSMILE": _MOSEI_BASE + "acoustic/CMU_MOSEI_openSMILE_IS09.csd",
        "FACET 4.2": _MOSEI_BASE + "visual/CMU_MOSEI_VisualFacet42.csd",
    },
    "labels": {
        "All Labels": _MOSEI_BASE + "labels/CMU_MOSEI_Labels.csd",
        "Sentiment Labels": _MOSEI_BASE + "labels/CMU_MOSEI_LabelsSentiment.csd",
        "Emotion Labels": _MOSEI_BASE + "labels/CMU_MOSEI_LabelsEmotions.csd",
    },
}

CHUNK = 1 << 16
#: Seconds before the first retry; doubled after each failed attempt (tests set it to 0).
BACKOFF_SECONDS = 1.0


class DownloadError(MmsentiError):
    """A download failed for good (HTTP error, corrupt file, retries exhausted)."""


class UnreachableError(DownloadError):
    """The server could not be reached at all (offline, DNS failure, connection refused)."""


@dataclass
class DownloadResult:
    name: str
    path: Path
    status: str  # "downloaded" | "resumed" | "present"
    size: int


@dataclass(frozen=True)
class Recipe:
    """One data set's SDK download recipe: where the SDK lists its URLs and our short feature names."""

    title: str  # "CMU-MOSI"
    sdk_file: tuple[str, ...]  # path of the SDK's recipe module under the mmsdk package
    features: dict[str, tuple[str, str]]  # short name -> (SDK dict, key)
    defaults: tuple[str, ...]
    fallback: dict[str, dict[str, str]]  # the same dicts, for when the SDK copy cannot be read
    dest: str  # default destination folder
    hint: str  # where the by-hand instructions are


RECIPES: dict[str, Recipe] = {
    "mosi": Recipe("CMU-MOSI", _SDK_RECIPE, FEATURES, DEFAULT_FEATURES, FALLBACK_URLS, "datasets/mosi", README_HINT),
    "mosei": Recipe("CMU-MOSEI", ("mmdatasdk", "dataset", "standard_datasets", "CMU_MOSEI", "cmu_mosei.py"),
                    MOSEI_FEATURES, MOSEI_DEFAULT_FEATURES, MOSEI_FALLBACK_URLS, "datasets/mosei",
                    "see docs/datasets.md"),
}


def _recipe(dataset: str) -> Recipe:
    if dataset not in RECIPES:
        raise DownloadError(f"no download recipe for data set '{dataset}'; choose from {', '.join(RECIPES)}")
    return RECIPES[dataset]


# ----------------------------------------------------------------------------------------------
# the recipe


@lru_cache(maxsize=4)
def _sdk_recipe(dataset: str = "mosi") -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...] | None:
    spec = importlib.util.find_spec("mmsdk")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_recipe(dataset).sdk_file)
    found: dict[str, dict[str, str]] = {"raw": {}, "highlevel": {}, "labels": {}}
    try:
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target = node.targets[0]
            if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                    and target.value.id in found):
                key, url = ast.literal_eval(target.slice), ast.literal_eval(node.value)
                if isinstance(key, str) and isinstance(url, str):
                    found[target.value.id][key] = url
    except (OSError, SyntaxError, ValueError):
        return None
    if not all(found.values()):
        return None
    return tuple((group, tuple(d.items())) for group, d in found.items())


def dataset_urls(dataset: str, features: Iterable[str] | None = None) -> dict[str, str]:
    """Feature short name -> URL for ``dataset`` (``"mosi"`` | ``"mosei"``): from the installed SDK's
    recipe, else the recipe's fallback URLs; ``features=None``: the recipe's defaults."""
    recipe = _recipe(dataset)
    sdk = _sdk_recipe(dataset)
    groups = {g: dict(items) for g, items in sdk} if sdk else recipe.fallback
    out = {}
    for name in recipe.defaults if features is None else features:
        if name not in recipe.features:
            raise DownloadError(f"unknown {recipe.title} feature '{name}'; choose from {', '.join(recipe.features)}")
        group, key = recipe.features[name]
        out[name] = groups.get(group, {}).get(key) or recipe.fallback[group][key]
    return out


def mosi_urls(features: Iterable[str] = DEFAULT_FEATURES) -> dict[str, str]:
    """Feature short name -> URL (from the installed SDK's recipe, else :data:`FALLBACK_URLS`)."""
    return dataset_urls("mosi", features)


def mosei_urls(features: Iterable[str] = MOSEI_DEFAULT_FEATURES) -> dict[str, str]:
    """CMU-MOSEI feature short name -> URL (the SDK's recipe, else :data:`MOSEI_FALLBACK_URLS`)."""
    return dataset_urls("mosei", features)


def file_name(url: str) -> str:
    return Path(urllib.parse.urlsplit(url).path).name


# ----------------------------------------------------------------------------------------------
# validation


def validate_csd_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a valid computational sequence, or ``None`` when it is.

    Opens it as HDF5, checks the root/``data`` groups and reads every entry once (one video at a
    time, so multi-GB frame files are fine); an empty ``data`` group is invalid too.
    """
    from .csd import CSDError, CSDReader

    try:
        with CSDReader(path, strict=True) as reader:
            if not reader.videos:
                return "no entries under 'data'"
            for vid in reader.videos:
                reader.read(vid)
    except CSDError as err:
        return err.problem
    return None


# ----------------------------------------------------------------------------------------------
# transfer


def _reason(exc: BaseException) -> str:
    """A short human reason for a network failure."""
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, socket.gaierror):
        return "name resolution failed: no DNS / offline"
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror.lower()
    return " ".join(str(inner).split())[:120] or type(inner).__name__


def _connect_failure(exc: BaseException) -> bool:
    """True when no connection to the server could be made at all (nothing was transferred)."""
    return isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError) and isinstance(
        exc.reason, OSError)


def _no_retry(exc: BaseException) -> bool:
    """Failures that retrying cannot fix: DNS failure, HTTP 4xx (except 408/429)."""
    if isinstance(exc, urllib.error.HTTPError):
        return 400 <= exc.code < 500 and exc.code not in (408, 429)
    return isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, socket.gaierror)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "mmsenti-download/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _transfer_once(url: str, part: Path, timeout: float, progress: bool, label: str) -> bool:
    """One attempt: (resume and) stream ``url`` into ``part``. True if a resume was used."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left past our offset: the part is complete (or bogus)
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total is not None and total == offset:
                return True
            part.unlink(missing_ok=True)  # the part is longer than the file: start over
        raise
    with response:
        resumed = False
        total: int | None = None
        length = response.headers.get("Content-Length")
        if response.status == 206 and offset:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)  # a range we did not ask for: start over next attempt
                raise DownloadError(f"{url}: server answered a resume with a different range; retrying from scratch")
            resumed = True
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        else:  # 200: the server ignored Range (or there was nothing to resume)
            offset = 0
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        from tqdm.auto import tqdm

        with part.open(mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=label, disable=not progress, leave=False) as bar:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"transfer ended early at {size} of {total} bytes")
    return resumed


def _total_from_content_range(value: str | None) -> int | None:
    match = re.search(r"/(\d+)$", value or "")
    return int(match.group(1)) if match else None


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    validate: Callable[[Path], str | None] | None = validate_csd_file,
    sleep: Callable[[float], None] = time.sleep,
    hint: str = README_HINT,
) -> DownloadResult:
    """Fetch ``url`` to ``dest`` via ``dest.part`` (resumable), validate, then rename into place.

    Raises :class:`UnreachableError` when no connection could be made on any attempt,
    :class:`DownloadError` for HTTP errors, exhausted retries or a file that fails ``validate``
    (the bad ``.part`` is deleted so the next run starts clean).
    """
    dest = Path(dest)
    name = dest.name
    if dest.is_file():
        problem = validate(dest) if validate else None
        if problem is None:
            return DownloadResult(name, dest, "present", dest.stat().st_size)
        dest.unlink()  # a broken file in place: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    resumed_any = part.is_file() and part.stat().st_size > 0
    host = urllib.parse.urlsplit(url).netloc or url
    connected = False
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
        try:
            resumed_any |= _transfer_once(url, part, timeout, progress, name)
            last = None
            break
        except urllib.error.HTTPError as exc:
            connected = True
            last = exc
            if _no_retry(exc):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; {hint}") from exc
        except DownloadError as exc:  # bad resume range: retried from scratch
            connected = True
            last = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, short read
            connected |= not _connect_failure(exc)
            last = exc
            if _no_retry(exc):
                break
    if last is not None:
        if not connected:
            raise UnreachableError(f"could not reach {host} ({_reason(last)})") from last
        raise DownloadError(f"{url}: download failed after {retries + 1} attempt(s) ({_reason(last)}); "
                            f"run the command again to resume from {part}") from last
    problem = validate(part) if validate else None
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the downloaded file is not a valid computational sequence ({problem}); "
                            "it was deleted, run the command again or fetch it by hand, " + hint)
    os.replace(part, dest)
    return DownloadResult(name, dest, "resumed" if resumed_any else "downloaded", dest.stat().st_size)


def download_mosi(
    dest: str | os.PathLike = "datasets/mosi",
    features: Sequence[str] = DEFAULT_FEATURES,
    *,
    mirror: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[DownloadResult]:
    """Download the given CMU-MOSI features into ``dest``; skip files already present and valid.

    ``mirror``: a base URL holding the files flat (``<mirror>/<file name>``) instead of the SDK's server.
    An unreachable server raises :class:`UnreachableError` with the full by-hand instructions.
    """
    return download_dataset("mosi", dest, features, mirror=mirror, retries=retries, timeout=timeout,
                            progress=progress, log=log)


def download_mosei(
    dest: str | os.PathLike = "datasets/mosei",
    features: Sequence[str] = MOSEI_DEFAULT_FEATURES,
    **options,
) -> list[DownloadResult]:
    """Download CMU-MOSEI features (words, COVAREP, FACET 4.2, the 7-value labels by default) into ``dest``;
    the same resume / retry / validation as :func:`download_mosi` (options: ``mirror``, ``retries`` ...)."""
    return download_dataset("mosei", dest, features, **options)


def download_dataset(
    dataset: str,
    dest: str | os.PathLike | None = None,
    features: Sequence[str] | None = None,
    *,
    mirror: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[DownloadResult]:
    """Download ``dataset``'s features (``None``: the recipe's defaults) into ``dest`` (``None``:
    ``datasets/<dataset>``); skip files already present and valid. See :func:`download_mosi`."""
    recipe = _recipe(dataset)
    dest = Path(recipe.dest if dest is None else dest)
    urls = dataset_urls(dataset, features)
    if mirror:
        urls = {k: mirror.rstrip("/") + "/" + file_name(u) for k, u in urls.items()}
    results = []
    for feature, url in urls.items():
        target = dest / file_name(url)
        try:
            result = download_file(url, target, retries=retries, timeout=timeout, progress=progress, hint=recipe.hint)
        except UnreachableError as err:
            todo = {k: u for k, u in urls.items() if not (dest / file_name(u)).is_file()}
            raise UnreachableError(
                f"{err}; download the files by hand from {', '.join(todo.values())} (or the SDK: {SDK_PAGE}) "
                f"and put them in {dest} as {', '.join(file_name(u) for u in todo.values())}, {recipe.hint}"
            ) from err
        results.append(result)
        verb = {"present": "already present, valid", "resumed": "downloaded (resumed)", "downloaded": "downloaded"}
        log(f"{feature:>8}: {result.path} ({_size(result.size)}, {verb[result.status]})")
    return results


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
