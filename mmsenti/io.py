"""File writing and hashing, once: atomic writes (bytes, text, JSON, npz, torch) and file digests.

Every file mmsenti writes that another process may read while it is being written (caches,
manifests, metrics, CSD files, configs) goes through :func:`atomic_writer`: the bytes go to a
temporary file in the same folder, are flushed and fsync'ed, and the temporary file is renamed
over the target with ``os.replace`` — a reader sees the old file or the whole new one, never half,
and an interrupted write leaves no temporary file behind. The file gets the mode a plain ``open``
would give it (``mkstemp`` makes 0600 files).

Lowest layer: standard library only (numpy / torch are imported by the helpers that need them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_DIGESTS: dict[tuple[str, str, int, int], str] = {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """``with atomic_writer(p, "w") as f: f.write(...)`` — all of it lands at ``p`` on success, nothing on error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode {mode!r}: 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_writer(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> Path:
    """JSON (``default=str`` for paths and the like), newline-terminated."""
    with atomic_writer(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=indent, default=str)
        fh.write("\n")
    return Path(path)


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any], compressed: bool = False) -> Path:
    """An ``.npz`` with no pickled objects (object arrays are refused by numpy at load time)."""
    import numpy as np

    with atomic_writer(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return Path(path)


def torch_save_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` (tensors, lists, dicts, strings only, so it loads with ``weights_only=True``)."""
    import torch

    with atomic_writer(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib.file_digest``), memoised per path, size and mtime."""
    path = Path(path)
    stat = path.stat()
    memo = (algorithm, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        with path.open("rb") as fh:
            _DIGESTS[memo] = hashlib.file_digest(fh, algorithm).hexdigest()
    return _DIGESTS[memo]


def json_digest(payload: Any, length: int | None = None, algorithm: str = "sha256") -> str:
    """Digest of a JSON-serialisable value (keys sorted): the cache-key rule."""
    digest = hashlib.new(algorithm, json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:length] if length else digest


def replace_with(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """For writers that insist on a file name (h5py, ...): ``write(tmp)`` then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
