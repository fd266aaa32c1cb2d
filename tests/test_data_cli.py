"""``mmsenti data synth | inspect | download``, called in-process through ``mmsenti.cli.main``.

Downloads run against HTTP servers on 127.0.0.1 only (a tiny handler that serves ``Range``
requests, can cut a transfer short, or serves a corrupt file); the offline case uses a closed
local port. Nothing here touches the network beyond the loopback interface.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from mmsenti.cli import main
from mmsenti.data import download as dl
from mmsenti.data.csd import read_csd
from mmsenti.data.mmsa import load_mmsa_pickle
from mmsenti.data.synthetic import FILES, write_synthetic_mosi

LABELS = FILES["labels"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------------------------
# synth -> inspect -> load


@pytest.fixture(scope="module")
def small_csd(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_csd")
    assert main(["data", "synth", "--out", str(out), "--scale", "small", "--seed", "3"]) == 0
    return out


def test_synth_csd_writes_files_and_counts(small_csd, capsys):
    for name in [*FILES.values(), "folds.json"]:
        assert (small_csd / name).is_file()
    rc, out, _ = _run(capsys, "data", "synth", "--out", small_csd, "--scale", "small", "--seed", "3")
    assert rc == 0
    assert str(small_csd) in out
    assert "train 6 videos / 60 segments, valid 3 videos / 30 segments, test 3 videos / 30 segments" in out


def test_inspect_csd_folder_json(small_csd, capsys):
    rc, out, _ = _run(capsys, "data", "inspect", small_csd, "--json")
    assert rc == 0
    assert len(out.strip().splitlines()) == 1
    info = json.loads(out)
    assert info["kind"] == "csd_folder" and info["mode"] == "aligned"
    assert {s: info["splits"][s]["segments"] for s in ("train", "valid", "test", "all")} == {
        "train": 60, "valid": 30, "test": 30, "all": 120}
    assert {s: info["splits"][s]["videos"] for s in ("train", "valid", "test")} == {"train": 6, "valid": 3, "test": 3}
    labels = info["labels"]
    assert labels["bins"] == [-3, -2, -1, 0, 1, 2, 3]
    assert sum(labels["all"]["histogram"]) == 120
    assert [a + b + c for a, b, c in zip(labels["train"]["histogram"], labels["valid"]["histogram"],
                                         labels["test"]["histogram"])] == labels["all"]["histogram"]
    audio, vision = info["features"]["audio"], info["features"]["vision"]
    assert audio["dim"] == 74 and len(audio["per_dim"]["mean"]) == 74 and len(audio["per_dim"]["std"]) == 74
    assert vision["dim"] == 47 and len(vision["per_dim"]["max"]) == 47
    # the synthetic set plants -inf in COVAREP silences and a few NaN: the loader's counts are reported
    assert audio["nonfinite"]["neginf"] > 0
    # aligned: one row per spoken word
    assert audio["frames"] == pytest.approx(info["text"]["words_per_segment"]["mean"] * 120, rel=1e-6)
    assert info["problems"]["missing_files"] == []
    assert info["folds_source"].endswith("folds.json")


def test_inspect_text_view_and_plot(small_csd, tmp_path, capsys):
    png = tmp_path / "figs" / "labels.png"
    rc, out, _ = _run(capsys, "data", "inspect", small_csd, "--plot", png, "--mode", "unaligned")
    assert rc == 0
    for needle in ("Splits and labels", "Label histogram", "Frame features", "words per segment", "problems"):
        assert needle in out
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # a folder as --plot target gets <name>_labels.png
    rc, out, _ = _run(capsys, "data", "inspect", small_csd / LABELS, "--plot", tmp_path, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["kind"] == "label_csd" and Path(info["plot"]) == tmp_path / "CMU_MOSI_Opinion_Labels_labels.png"
    assert Path(info["plot"]).stat().st_size > 10_000


def test_inspect_single_feature_file(small_csd, capsys):
    rc, out, _ = _run(capsys, "data", "inspect", small_csd / FILES["audio"], "--json")
    info = json.loads(out)
    assert rc == 0 and info["kind"] == "feature_csd"
    assert info["videos"] == 12 and info["features"]["dim"] == 74
    assert info["features"]["nonfinite"]["neginf"] > 0
    assert info["rows_per_second"] == pytest.approx(100, rel=0.01)
    rc, out, _ = _run(capsys, "data", "inspect", small_csd / FILES["words"])
    assert rc == 0 and "'sp' silences" in out
    rc, _, err = _run(capsys, "data", "inspect", small_csd / FILES["audio"], "--plot", "x.png")
    assert rc == 2 and "no labels" in err


def test_synth_mmsa_roundtrip_and_inspect(tmp_path, capsys):
    rc, out, _ = _run(capsys, "data", "synth", "--out", tmp_path / "mmsa", "--scale", "small", "--format", "mmsa")
    assert rc == 0
    pkl = tmp_path / "mmsa" / "unaligned_50.pkl"
    assert str(pkl) in out and "train 6 videos / 60 segments" in out
    data = load_mmsa_pickle(pkl)
    assert {s: len(v) for s, v in data.splits.items()} == {"train": 60, "valid": 30, "test": 30}
    assert (data.audio_dim, data.vision_dim) == (74, 47)
    sample = data.splits["train"][0]
    assert "$_$" in sample["id"] and sample["text"] and 0 < len(sample["audio"]) <= 50
    assert all(np.isfinite(s["audio"]).all() for s in data.splits["train"])

    # same segments and labels as the CSD set of the same seed
    from mmsenti.data.mosi import load_mosi_csd

    csd = load_mosi_csd(write_synthetic_mosi(tmp_path / "csd", "small", seed=0), mode="unaligned", max_frames=50,
                        cache_dir=False)
    np.testing.assert_allclose([s["label"] for s in data.splits["test"]],
                               [s["label"] for s in csd.splits["test"]], rtol=1e-6)
    np.testing.assert_array_equal(data.splits["valid"][4]["vision"], csd.splits["valid"][4]["vision"])
    for split in ("train", "valid", "test"):  # one id convention: predictions from either format join
        assert [s["id"] for s in data.splits[split]] == [s["id"] for s in csd.splits[split]]

    rc, out, _ = _run(capsys, "data", "inspect", pkl, "--json")
    info = json.loads(out)
    assert rc == 0 and info["kind"] == "mmsa_pickle"
    assert info["splits"]["all"] == {"segments": 120, "videos": 12}
    assert info["features"]["audio"]["frames_per_segment"]["max"] <= 50
    # a folder holding only the pickle is inspected as that pickle
    rc, out, _ = _run(capsys, "data", "inspect", tmp_path / "mmsa", "--json")
    assert rc == 0 and json.loads(out)["kind"] == "mmsa_pickle"


def test_inspect_official_label_file(mosi_label_file, capsys):
    rc, out, _ = _run(capsys, "data", "inspect", mosi_label_file, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["kind"] == "label_csd" and info["folds_source"] == "sdk"
    assert {s: (info["splits"][s]["videos"], info["splits"][s]["segments"]) for s in info["splits"]} == {
        "train": (52, 1284), "valid": (10, 229), "test": (31, 686), "all": (93, 2199)}
    assert sum(info["labels"]["all"]["histogram"]) == 2199
    assert -3 <= info["labels"]["all"]["min"] and info["labels"]["all"]["max"] <= 3
    rc, out, _ = _run(capsys, "data", "inspect", mosi_label_file)
    assert rc == 0 and "label file only" in out and "2,199" in out


def _sdk_folder_with_official_labels(root: Path, label_file: Path, video: str = "2WGyTLYerpo") -> Path:
    """The official label file plus words/audio/vision entries (made up here) for one of its videos."""
    import shutil

    from mmsenti.data.csd import ComputationalSequence, encode_words, write_csd

    root.mkdir(parents=True)
    shutil.copy(label_file, root / LABELS)
    segments = read_csd(label_file).data[video][1]
    spans = [np.linspace(s, e, 4) for s, e in segments if e > s]
    word_iv = np.concatenate([np.stack([x[:-1], x[1:]], 1) for x in spans])
    end = float(segments.max()) + 1.0
    seqs = {"words": (encode_words(["word"] * len(word_iv)), word_iv)}
    for key, rate, dim in (("audio", 100, 3), ("vision", 30, 2)):
        t = np.arange(0, end, 1 / rate)
        seqs[key] = (np.ones((len(t), dim), np.float32), np.stack([t, t + 1 / rate], 1))
    for key, entry in seqs.items():
        write_csd(ComputationalSequence(key, {video: entry}), root / FILES[key])
    return root


@pytest.mark.parametrize("mode", ["aligned", "unaligned"])
def test_inspect_sdk_folder_with_the_official_zero_length_segment(mosi_label_file, tmp_path, capsys, mode):
    """The official label file's 2WGyTLYerpo[43] spans 127.21338-127.21338 s: no words, no frames.
    Inspect used to crash on its empty features; it counts it instead."""
    root = _sdk_folder_with_official_labels(tmp_path / "sdk", mosi_label_file)
    rc, out, err = _run(capsys, "data", "inspect", root, "--json", "--mode", mode)
    assert rc == 0, err
    info = json.loads(out)
    assert info["splits"]["all"]["segments"] == 2199
    assert info["problems"]["zero_length_segments"] == 1
    assert info["problems"]["zero_length_examples"] == ["2WGyTLYerpo$_$44"]
    assert info["features"]["audio"]["dim"] == 3 and info["features"]["vision"]["dim"] == 2
    assert info["features"]["audio"]["segments_with_frames"] == 62  # the video's 63 segments but the empty one
    rc, out, _ = _run(capsys, "data", "inspect", root, "--mode", mode)
    assert rc == 0 and "1 zero-length segment(s)" in out and "2WGyTLYerpo$_$44" in out


def test_inspect_lists_csd_files_it_did_not_read(small_csd, tmp_path, capsys):
    import shutil

    root = tmp_path / "renamed"
    shutil.copytree(small_csd, root, ignore=shutil.ignore_patterns(".cache"))
    (root / FILES["vision"]).rename(root / "facet_v2.csd")
    rc, out, _ = _run(capsys, "data", "inspect", root, "--json")
    info = json.loads(out)
    assert rc == 0 and info["problems"]["missing_files"] == ["vision"] and info["problems"]["unused_files"] == ["facet_v2.csd"]
    rc, out, _ = _run(capsys, "data", "inspect", root)
    assert ".csd files not read: facet_v2.csd" in out


def test_inspect_label_csv_encoding_option(tmp_path, capsys):
    path = tmp_path / "label.csv"
    path.write_bytes("video_id,clip_id,text,label,mode\nvA,1,très bien,2.0,train\nvB,1,déçu,-1.0,valid\n"
                     .encode("latin-1"))
    rc, out, err = _run(capsys, "data", "inspect", path, "--json")
    assert rc == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {path}: line 2: not utf-8 text") and "--encoding latin-1" in line
    rc, out, _ = _run(capsys, "data", "inspect", path, "--json", "--encoding", "latin-1")
    assert rc == 0 and json.loads(out)["text"]["vocabulary"] == 3


def test_inspect_label_csv(shared_data, capsys):
    path = shared_data / "mosi" / "label_trainvalid.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    rc, out, _ = _run(capsys, "data", "inspect", path, "--json")
    info = json.loads(out)
    assert rc == 0 and info["kind"] == "label_csv"
    assert info["splits"]["train"]["segments"] == 1284 and info["splits"]["valid"]["segments"] == 229
    assert info["text"]["segments_with_text"] == 1513


def test_inspect_corrupt_csd_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "broken.csd"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00garbage" * 100)
    rc, out, err = _run(capsys, "data", "inspect", bad)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    rc, _, err = _run(capsys, "data", "inspect", tmp_path / "nope")
    assert rc == 2 and "no such file" in err
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    rc, _, err = _run(capsys, "data", "inspect", empty)
    assert rc == 2 and "CMU_MOSI_Opinion_Labels.csd" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# download against local servers


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (URL path -> bytes) with single-range ``Range`` support.

    ``server.cut[path] = n``: the next response for ``path`` stops after ``n`` body bytes and the
    connection is dropped (an interrupted transfer). ``server.requests`` logs (path, Range header).
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.ranges:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "BACKOFF_SECONDS", 0.0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.cut, httpd.requests, httpd.ranges = {}, {}, [], True
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def label_bytes(small_csd) -> bytes:
    return (small_csd / LABELS).read_bytes()


def _download(capsys, server, dest: Path, *extra: str) -> tuple[int, str, str]:
    return _run(capsys, "data", "download", "mosi", "--dest", dest, "--features", "labels",
                "--mirror", server.url + "/mosi/", "--no-progress", *extra)


def test_download_success_then_skip(server, label_bytes, tmp_path, capsys):
    server.files["/mosi/" + LABELS] = label_bytes
    rc, out, err = _download(capsys, server, tmp_path / "mosi")
    assert rc == 0, err
    target = tmp_path / "mosi" / LABELS
    assert target.read_bytes() == label_bytes and not (tmp_path / "mosi" / (LABELS + ".part")).exists()
    assert read_csd(target).name == "Opinion Segment Labels"
    assert "1 downloaded" in out
    rc, out, _ = _download(capsys, server, tmp_path / "mosi")
    assert rc == 0 and "already present" in out
    assert len(server.requests) == 1


def test_download_resumes_partial_file(server, label_bytes, tmp_path, capsys):
    server.files["/mosi/" + LABELS] = label_bytes
    dest = tmp_path / "mosi"
    dest.mkdir()
    half = len(label_bytes) // 2
    (dest / (LABELS + ".part")).write_bytes(label_bytes[:half])
    rc, out, err = _download(capsys, server, dest)
    assert rc == 0, err
    assert (dest / LABELS).read_bytes() == label_bytes
    assert server.requests == [("/mosi/" + LABELS, f"bytes={half}-")]
    assert "resumed" in out


def test_download_retries_interrupted_transfer_with_range(server, label_bytes, tmp_path, capsys):
    path = "/mosi/" + LABELS
    server.files[path] = label_bytes
    server.cut[path] = 10_000  # the first response drops the connection after 10 kB
    rc, out, err = _download(capsys, server, tmp_path / "mosi")
    assert rc == 0, err
    assert (tmp_path / "mosi" / LABELS).read_bytes() == label_bytes
    assert server.requests == [(path, None), (path, "bytes=10000-")]


def test_download_server_without_range_support_restarts(server, label_bytes, tmp_path, capsys):
    server.files["/mosi/" + LABELS] = label_bytes
    server.ranges = False
    dest = tmp_path / "mosi"
    dest.mkdir()
    (dest / (LABELS + ".part")).write_bytes(b"stale bytes from another file")
    rc, _, err = _download(capsys, server, dest)
    assert rc == 0, err
    assert (dest / LABELS).read_bytes() == label_bytes


def test_download_rejects_corrupt_file(server, label_bytes, tmp_path, capsys):
    server.files["/mosi/" + LABELS] = label_bytes[: len(label_bytes) * 2 // 3]  # truncated HDF5, served as whole
    dest = tmp_path / "mosi"
    rc, out, err = _download(capsys, server, dest)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a valid computational sequence" in lines[0] and LABELS in lines[0]
    assert not (dest / LABELS).exists() and not (dest / (LABELS + ".part")).exists()
    # an invalid file already in place is replaced by a good download
    server.files["/mosi/" + LABELS] = label_bytes
    (dest / LABELS).write_bytes(b"junk")
    rc, _, err = _download(capsys, server, dest)
    assert rc == 0, err
    assert (dest / LABELS).read_bytes() == label_bytes


def test_download_http_404(server, tmp_path, capsys):
    rc, _, err = _download(capsys, server, tmp_path / "mosi")
    assert rc == 2 and "HTTP 404" in err and len(err.strip().splitlines()) == 1


def test_download_offline_message(server, tmp_path, capsys):
    with socket.socket() as sock:  # a local port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "mosi"
    rc, out, err = _run(capsys, "data", "download", "mosi", "--dest", dest, "--mirror", f"http://127.0.0.1:{port}",
                        "--no-progress", "--retries", "1")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"error: could not reach 127.0.0.1:{port} (connection refused); download the files by hand")
    for name in ("CMU_MOSI_TimestampedWords.csd", "CMU_MOSI_COVAREP.csd", "CMU_MOSI_VisualFacet_4.1.csd", LABELS):
        assert name in line
    assert f"put them in {dest}" in line and "datasets/mosi/README.md" in line
    assert not dest.exists() or not any(dest.iterdir())


def test_sdk_recipe_urls():
    urls = dl.mosi_urls()
    assert list(urls) == ["words", "covarep", "facet", "labels"]
    assert urls["labels"] == "http://immortal.multicomp.cs.cmu.edu/CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd"
    assert all(u.endswith(".csd") for u in urls.values())
    # the loader accepts every default file name
    from mmsenti.data.mosi import DEFAULT_FILES

    accepted = {n for names in DEFAULT_FILES.values() for n in names}
    assert {dl.file_name(u) for u in urls.values()} <= accepted
    with pytest.raises(dl.DownloadError, match="unknown CMU-MOSI feature"):
        dl.mosi_urls(["mfcc"])
