"""mmsenti.io: atomic writes leave the old file or the whole new one, never a torn file or a temp file."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from mmsenti.io import atomic_writer, file_digest, json_digest, save_npz_atomic, write_json_atomic, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_writer(path, "w") as fh:
            fh.write('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_files_get_the_ordinary_mode_and_parents_are_created(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a" / "b.txt", "héllo")
    finally:
        os.umask(old)
    assert path.read_text(encoding="utf-8") == "héllo" and (path.stat().st_mode & 0o777) == 0o644


def test_npz_round_trip_without_pickle(tmp_path):
    path = save_npz_atomic(tmp_path / "c.npz", {"x": np.arange(3), "ids": np.array(["a$_$1"])})
    with np.load(path, allow_pickle=False) as z:
        assert z["x"].tolist() == [0, 1, 2] and z["ids"].tolist() == ["a$_$1"]


def test_digests(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_digest(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    path.write_bytes(b"changed, longer content")  # size changes: the memo is not reused
    assert file_digest(path) == hashlib.sha256(b"changed, longer content").hexdigest()
    assert json_digest({"b": 1, "a": 2}, 12) == json_digest({"a": 2, "b": 1}, 12) and len(json_digest({}, 12)) == 12
