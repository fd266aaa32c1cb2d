"""Errors meant for the user: printed as one line by the entry points, never as a traceback wall.

The policy of every entry point (``mmsenti`` in :mod:`mmsenti.cli`, ``train.py`` / ``eval.py`` through
:func:`mmsenti.training.tasks.run_safely`):

* :class:`MmsentiError` (raised where the problem is known) prints ``error: <message>``, exit 2;
* a well-known *input* failure that escaped from anywhere (a file missing, unreadable, a folder where
  a file was expected, not UTF-8, not JSON, a truncated pickle/zip/protobuf/HDF5 file) prints one line
  ``error: <what> (<path>): <fix>`` (:func:`describe_input_error`), exit 2;
* anything else is a bug in mmsenti: its traceback is shown, with a line saying so;
* ``--debug`` (``mmsenti``), ``+extras.debug=true`` (Hydra) or ``MMSENTI_DEBUG=1`` re-raise every
  error, so the full traceback prints.

This module imports nothing heavy (every other module imports it).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEBUG_ENV", "MmsentiError", "debug_requested", "describe_input_error", "internal_error_line"]

DEBUG_ENV = "MMSENTI_DEBUG"


class MmsentiError(ValueError):
    """A problem the user can fix (bad path, bad file, mismatched checkpoint); the message says how."""


def debug_requested(flag: Any = False) -> bool:
    """True when ``flag`` is set or the environment has ``MMSENTI_DEBUG`` set to anything but 0/false/no/off."""
    if flag:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


# third-party exceptions meaning "this file is damaged or not the format it claims", matched by
# qualified class name along the MRO (so nothing is imported to recognise them)
_DAMAGED = {
    "builtins.EOFError",  # an empty or truncated pickle / torch file
    "_pickle.UnpicklingError",
    "pickle.UnpicklingError",
    "zipfile.BadZipFile",  # a truncated torch checkpoint (zip container)
    "google.protobuf.message.DecodeError",  # a truncated .onnx
    "_csv.Error",
    "yaml.error.YAMLError",
    "tarfile.TarError",
    "gzip.BadGzipFile",
}
_MAX_SCAN_BYTES = 16 * 2**20  # files larger than this are not searched for the undecodable bytes


def _qualnames(err: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}


def _first_line(text: str, limit: int = 200) -> str:
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _culprit(err: BaseException, inputs: Mapping[str, Any]) -> tuple[str | None, bool]:
    """Which input an exception that names no file came from: ``(label or path, is_argument)``.

    ``inputs`` maps a label (``--profile``, ``data.root``) to the value given. The argument whose
    value is the text that failed to parse wins; then the one given file holding the undecodable
    bytes; then the files and folders given (all of them, when it cannot tell which).
    """
    values: list[tuple[str, str]] = []
    for label, value in inputs.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and str(v):
                values.append((label, str(v)))
    doc = getattr(err, "doc", None)  # json.JSONDecodeError: the text it parsed
    if isinstance(doc, str):
        for label, v in values:
            if v == doc and label.startswith("-"):
                return label, True
    paths = []
    for _, v in values:
        try:
            p = Path(v)
            if p.exists() and p not in paths:
                paths.append(p)
        except (OSError, ValueError):  # a value that is no path at all
            continue
    chunk = getattr(err, "object", None)  # UnicodeDecodeError: the bytes it could not decode
    needle = doc.encode("utf-8", "surrogateescape") if isinstance(doc, str) else chunk
    if isinstance(needle, (bytes, bytearray)) and needle:
        for p in paths:
            try:
                if p.is_file() and p.stat().st_size <= _MAX_SCAN_BYTES and bytes(needle[:4096]) in p.read_bytes():
                    return str(p), False
            except OSError:
                continue
    if len(paths) == 1:
        return str(paths[0]), False
    if paths:
        return "one of " + ", ".join(str(p) for p in paths), False
    return None, False


def describe_input_error(err: BaseException, inputs: Mapping[str, Any] | None = None) -> str | None:
    """``<what> (<path>): <fix>`` for a well-known input failure, ``None`` for anything else (a bug).

    ``inputs`` (label -> value given: the command's arguments, the config's paths) names the input
    when the exception itself does not (a ``UnicodeDecodeError`` or ``JSONDecodeError`` knows no file).
    """
    inputs = inputs or {}
    cause = err.__cause__
    if type(err).__name__ == "InstantiationException" and cause is not None:  # Hydra's instantiate() wraps what the target raised
        return str(cause) if isinstance(cause, MmsentiError) else describe_input_error(cause, inputs)
    names = _qualnames(err)
    if isinstance(err, OSError):
        path = err.filename
        if path is not None and err.filename2 is not None:  # a rename or copy: the user's path is the target
            hidden_temp = Path(str(path)).name.startswith(".")  # our atomic writes go through hidden temp files
            path = str(err.filename2) if hidden_temp else f"{err.filename} -> {err.filename2}"
        if isinstance(err, FileNotFoundError):
            what, fix = "no such file or folder", "check the path"
        elif isinstance(err, PermissionError):
            what, fix = "permission denied", "check its permissions, or use a path you may read (or write)"
        elif isinstance(err, IsADirectoryError):
            what, fix = "a folder where a file was expected", "give the path of a file"
        elif isinstance(err, NotADirectoryError):
            what, fix = "a file where a folder was expected", "check the path (a part of it is a file)"
        elif isinstance(err, (ConnectionError, TimeoutError)):
            what, fix = f"network failure ({_first_line(str(err)) or type(err).__name__})", "check the address and the connection"
        elif isinstance(err, FileExistsError):
            is_file = path is not None and Path(str(path)).is_file()
            what, fix = ("already exists as a file" if is_file else "already exists"), "remove it or choose another path"
        elif err.errno == errno.ENOSPC:
            what, fix = "no space left on the device", "free some space or write elsewhere"
        elif err.errno == errno.EROFS:
            what, fix = "read-only file system", "write somewhere else"
        else:  # h5py, PyAV and friends: "unable to open file (file signature not found)", ...
            what = _first_line(err.strerror or str(err)) or type(err).__name__
            fix = "the file may be damaged or not of the expected format; re-create or re-download it"
        if path is None and not isinstance(err, (ConnectionError, TimeoutError)):
            path, _ = _culprit(err, inputs)
        return f"{what} ({path}): {fix}" if path else f"{what}: {fix}"
    if isinstance(err, UnicodeDecodeError):
        bad = err.object[err.start:err.start + 1].hex() if isinstance(err.object, (bytes, bytearray)) else "?"
        what = f"not {err.encoding} text (byte 0x{bad} at offset {err.start})"
        fix = "re-save it as UTF-8, or pass its encoding where the command takes one (e.g. --encoding latin-1)"
    elif isinstance(err, json.JSONDecodeError):
        what = f"not valid JSON ({err.msg}: line {err.lineno} column {err.colno})"
        fix = "fix the JSON"
    elif names & _DAMAGED:
        what = f"damaged or truncated file ({type(err).__name__}: {_first_line(str(err)) or 'no details'})"
        fix = "re-create or re-download it"
    else:
        return None
    where, is_argument = _culprit(err, inputs)
    if is_argument:
        return f"{what} (the value of {where}): {fix}"
    return f"{what} ({where}): {fix}" if where else f"{what}: {fix}"


def internal_error_line(err: BaseException, hint: str = "") -> str:
    """The line under a bug's traceback (not an input problem: there is no file to fix)."""
    return (f"internal error: {type(err).__name__}: {_first_line(str(err)) or 'no message'} -- a bug in mmsenti, not in "
            f"your input; please report it with its traceback{hint}")
