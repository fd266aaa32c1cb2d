"""No user-facing failure prints a traceback (issue 11): one ``error: <what> (<path>): <fix>`` line, exit 2.

A table of bad invocations of ``mmsenti`` (in-process, ``mmsenti.cli.main``), every input made in
``tmp_path`` (the export folders by :mod:`fake_export`, without torch). Cases already covered
elsewhere are not repeated here: a non-UTF-8 label.csv for ``data inspect`` and a corrupt .csd
(tests/test_data_cli.py), a checkpoint that does not fit the model (tests/test_train.py), a missing
TensorRT (tests/test_export.py). Then: a bug keeps its traceback, ``--debug`` / ``MMSENTI_DEBUG=1``
re-raise, and the same policy in ``run_safely`` (train.py / eval.py).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fake_export import audio_spec, make_export, write_feature_folder
from mmsenti.cli import main
from mmsenti.errors import MmsentiError, describe_input_error

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(w: int = 8, h: int = 8) -> bytes:
    """A real (tiny) PNG image: what a still image renamed .mp4 holds."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _dataset(root: Path, label_bytes: bytes, clip: bytes | None = None) -> Path:
    (root / "Raw" / "vid").mkdir(parents=True)
    (root / "label.csv").write_bytes(label_bytes)
    if clip is not None:
        (root / "Raw" / "vid" / "1.mp4").write_bytes(clip)
    return root


# ------------------------------------------------------------------------------ the table
# each case: tmp_path -> (argv, what the error line must name)

def _missing_export(t):
    return ["predict", "--text", "hi", "--model", str(t / "nowhere")], str(t / "nowhere")


def _folder_without_manifest(t):
    (t / "empty").mkdir()
    return ["predict", "--text", "hi", "--model", str(t / "empty")], str(t / "empty")


def _manifest_not_json(t):
    (t / "exp").mkdir()
    (t / "exp" / "manifest.json").write_text('{"schema_version": 1, "name": ')
    return ["predict", "--text", "hi", "--model", str(t / "exp")], "manifest.json"


def _manifest_not_utf8(t):
    (t / "exp").mkdir()
    (t / "exp" / "manifest.json").write_bytes(b'{"name": "caf\xe9"}')
    return ["bench", str(t / "exp")], "manifest.json"


def _manifest_not_an_object(t):
    (t / "exp").mkdir()
    (t / "exp" / "manifest.json").write_text("[1, 2]")
    return ["predict", "--text", "hi", "--model", str(t / "exp")], str(t / "exp")


def _truncated_onnx(t):
    folder = make_export(t / "exp")
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:40])
    return ["predict", "--text", "hi", "--model", str(folder)], "model.onnx"


def _truncated_onnx_bench(t):
    folder = make_export(t / "exp", {"audio": 43})
    (folder / "model.onnx").write_bytes(b"\x08\x08\x12\x04fake")  # a protobuf cut short
    return ["bench", str(folder), "--batch", "1", "--runs", "1", "--warmup", "0"], "model.onnx"


def _bench_out_is_a_folder(t):
    folder = make_export(t / "exp")
    (t / "taken").mkdir()
    return ["bench", str(folder), "--batch", "1", "--runs", "2", "--warmup", "1", "--out", str(t / "taken")], str(t / "taken")


def _garbage_checkpoint(t):
    (t / "run.ckpt").write_bytes(b"PK\x03\x04 not really a zip file" * 3)
    return ["export", str(t / "run.ckpt"), "--out", str(t / "out"), "--no-data"], "run.ckpt"


def _profile_not_json(t):
    (t / "run.ckpt").write_bytes(b"\x00")
    return ["export", str(t / "run.ckpt"), "--profile", "{batch: [1, 8, 64]}", "--out", str(t / "out")], "--profile"


def _extract_label_csv_not_utf8(t):
    ds = _dataset(t / "ds", "video_id,clip_id,text,label,mode\nvid,1,très bien,2.0,train\n".encode("latin-1"))
    return ["extract", str(ds), "--out", str(t / "features"), "--no-vision"], "label.csv"


def _extract_image_renamed_mp4(t):
    ds = _dataset(t / "ds", b"video_id,clip_id,text,label,mode\nvid,1,hello there,1.0,train\n", png_bytes())
    return ["extract", str(ds), "--out", str(t / "features"), "--no-vision", "--no-progress"], "1.mp4"


def _predict_image_renamed_mp4(t):
    folder = make_export(t / "exp", {"audio": 43}, extractors={"audio": {**audio_spec(), "kind": "audio_extractor"},
                                                               "reasons": {}, "max_seconds": None, "source": "test"})
    (t / "still.mp4").write_bytes(png_bytes())
    return ["predict", str(t / "still.mp4"), "--text", "hi", "--model", str(folder)], "still.mp4"


def _predict_missing_clip(t):
    folder = make_export(t / "exp")
    return ["predict", str(t / "gone.mp4"), "--text", "hi", "--model", str(folder)], "gone.mp4"


def _predict_words_not_json(t):
    folder = make_export(t / "exp")
    (t / "clip.wav").write_bytes(b"RIFF")
    (t / "words.json").write_text('[{"word": "hi", "start": 0.0')
    # the words file is read first, so the broken clip is never reached
    return ["predict", str(t / "clip.wav"), "--text", "hi", "--model", str(folder), "--words", str(t / "words.json")], "words.json"


def _features_name_another_extractor(t):
    spec = {**audio_spec(), "kind": "audio_extractor"}
    spec.pop("dimension names")
    folder = make_export(t / "exp", {"audio": 43}, extractors={"audio": spec, "reasons": {}, "max_seconds": None, "source": "t"})
    other = write_feature_folder(t / "features", audio_spec(fmin=90.0))
    (t / "clip.wav").write_bytes(b"RIFF")
    return ["predict", str(t / "clip.wav"), "--text", "hi", "--model", str(folder), "--features", str(other)], str(other)


def _synth_out_under_a_file(t):
    (t / "notes.txt").write_text("a file, not a folder")
    return ["data", "synth", "--out", str(t / "notes.txt" / "synth"), "--scale", "small"], str(t / "notes.txt" / "synth")


def _plot_under_a_file(t):
    (t / "notes.txt").write_text("a file, not a folder")
    labels = t / "label.csv"
    labels.write_text("video_id,clip_id,text,label,mode\nvA,1,good,2.0,train\nvB,1,bad,-1.0,valid\n")
    return ["data", "inspect", str(labels), "--plot", str(t / "notes.txt" / "plots" / "labels.png")], "notes.txt"


def _truncated_mmsa_pickle(t):
    import pickle

    blob = pickle.dumps({"train": {"id": ["a"] * 50, "text": ["x"] * 50}}, protocol=4)
    (t / "unaligned_50.pkl").write_bytes(blob[: len(blob) // 2])
    return ["data", "inspect", str(t / "unaligned_50.pkl")], "unaligned_50.pkl"


CASES = {f.__name__.lstrip("_"): f for f in (
    _missing_export, _folder_without_manifest, _manifest_not_json, _manifest_not_utf8, _manifest_not_an_object,
    _truncated_onnx, _truncated_onnx_bench, _bench_out_is_a_folder, _garbage_checkpoint, _profile_not_json,
    _extract_label_csv_not_utf8, _extract_image_renamed_mp4, _predict_image_renamed_mp4, _predict_missing_clip,
    _predict_words_not_json, _features_name_another_extractor, _synth_out_under_a_file, _plot_under_a_file,
    _truncated_mmsa_pickle,
)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_invocation_is_one_error_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MMSENTI_DEBUG", raising=False)
    argv, named = CASES[case](tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert named in errors[0], errors[0]
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not stop root")
def test_unreadable_manifest_is_one_error_line(tmp_path, capsys):
    folder = make_export(tmp_path / "exp")
    (folder / "manifest.json").chmod(0)
    try:
        assert main(["predict", "--text", "hi", "--model", str(folder)]) == 2
    finally:
        (folder / "manifest.json").chmod(0o644)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: permission denied (") and "manifest.json" in line


# ------------------------------------------------------------------------------ the message of each input failure

@pytest.mark.parametrize("err, expected", [
    (FileNotFoundError(2, "No such file or directory", "/d/x.csd"), "no such file or folder (/d/x.csd): check the path"),
    (PermissionError(13, "Permission denied", "/d/x.csd"), "permission denied (/d/x.csd): check its permissions"),
    (IsADirectoryError(21, "Is a directory", "/d"), "a folder where a file was expected (/d): give the path of a file"),
    (NotADirectoryError(20, "Not a directory", "/f/x"), "a file where a folder was expected (/f/x)"),
    (OSError(28, "No space left on device", "/d/out.onnx"), "no space left on the device (/d/out.onnx)"),
    (OSError("Unable to synchronously open file (file signature not found)"), "Unable to synchronously open file"),
    (EOFError("Ran out of input"), "damaged or truncated file (EOFError: Ran out of input): re-create or re-download it"),
])
def test_input_errors_are_described(err, expected):
    assert expected in describe_input_error(err)


def test_hydra_instantiation_wrappers_are_unwrapped_to_the_cause():
    """Hydra's instantiate() wraps what a target raised (an offline encoder's MmsentiError): the one line is the cause's."""
    from hydra.errors import InstantiationException

    def wrapped(cause):
        try:
            try:
                raise cause
            except Exception as e:
                raise InstantiationException(f"Error in call to target 'x.Y':\n{e!r}") from e
        except InstantiationException as outer:
            return outer

    assert describe_input_error(wrapped(MmsentiError("encoder 'bert-base-chinese' is not available offline"))) == \
        "encoder 'bert-base-chinese' is not available offline"
    assert "no such file or folder (/d/v.txt)" in describe_input_error(wrapped(FileNotFoundError(2, "No such file", "/d/v.txt")))
    assert describe_input_error(wrapped(KeyError("bug"))) is None  # a bug stays a bug


def test_an_error_without_a_file_is_traced_to_the_input_holding_it(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text\ncaf\xe9\n")
    good = tmp_path / "good.csv"
    good.write_text("text\nfine\n")
    try:
        bad.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        message = describe_input_error(err, {"--a": str(good), "--b": str(bad)})
    assert message.startswith("not utf-8 text (byte 0xe9 at offset 8)") and f"({bad})" in message
    try:
        import json

        json.loads("{1: 2}")
    except json.JSONDecodeError as err:
        assert "(the value of --profile)" in describe_input_error(err, {"--profile": "{1: 2}", "--out": str(good)})


@pytest.mark.parametrize("err", [AttributeError("'NoneType' object has no attribute 'shape'"), TypeError("bad operand"),
                                 KeyError("score"), ValueError("math domain error")])
def test_bugs_are_not_input_errors(err):
    assert describe_input_error(err) is None


# ------------------------------------------------------------------------------ bugs, --debug

def _raise_bug(*_args, **_kwargs):
    raise AttributeError("'NoneType' object has no attribute 'engine'")


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import mmsenti.media.predict as predict

    monkeypatch.delenv("MMSENTI_DEBUG", raising=False)
    monkeypatch.setattr(predict, "load_predictor", _raise_bug)
    assert main(["predict", "--text", "hi", "--model", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "_raise_bug" in err
    assert err.strip().splitlines()[-1].startswith("internal error: AttributeError: 'NoneType' object has no attribute")
    assert not any(line.startswith("error:") for line in err.splitlines())


@pytest.mark.parametrize("how", ["flag first", "flag last", "env"])
def test_debug_re_raises(how, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("a file")
    argv = ["data", "synth", "--out", str(tmp_path / "notes.txt" / "synth"), "--scale", "small"]
    monkeypatch.delenv("MMSENTI_DEBUG", raising=False)
    if how == "flag first":
        argv = ["--debug", *argv]
    elif how == "flag last":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("MMSENTI_DEBUG", "1")
    with pytest.raises(NotADirectoryError):
        main(argv)
    with pytest.raises(MmsentiError, match="no manifest.json"):  # user errors too
        main(["--debug", "predict", "--text", "hi", "--model", str(tmp_path)])


def test_debug_prints_the_full_traceback(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MMSENTI_DEBUG", None)
    argv = [sys.executable, "-m", "mmsenti.cli", "data", "synth", "--out", str(tmp_path / "notes.txt" / "x"), "--scale", "small"]
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("error: a file where a folder was expected (")
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "NotADirectoryError" in debug.stderr
    assert "_synth" in debug.stderr  # the frames of our code are there


# ------------------------------------------------------------------------------ train.py / eval.py: run_safely

@pytest.fixture
def cfg(tmp_path):
    from omegaconf import OmegaConf

    labels = tmp_path / "label.csv"
    labels.write_bytes(b"video_id,clip_id,text,label,mode\nv,1,caf\xe9,1.0,train\n")
    return OmegaConf.create({"data": {"path": str(labels), "root": str(tmp_path / "nowhere")}, "extras": {}, "ckpt_path": None})


def _read_as_utf8(cfg):
    return Path(cfg.data.path).read_text(encoding="utf-8")


def _open_missing(cfg):
    return open(Path(cfg.data.root) / "folds.json")


def _bug(cfg):
    return cfg.data.path.no_such_method()


def test_run_safely_input_errors_are_one_line(cfg, capsys, monkeypatch):
    from mmsenti.training.tasks import run_safely

    monkeypatch.delenv("MMSENTI_DEBUG", raising=False)
    for task, named in ((_read_as_utf8, "label.csv"), (_open_missing, "folds.json")):
        with pytest.raises(SystemExit) as stop:
            run_safely(task, cfg)
        assert stop.value.code == 2
        (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert named in line


def test_run_safely_bugs_and_debug(cfg, capsys, monkeypatch):
    from omegaconf import OmegaConf

    from mmsenti.training.tasks import run_safely

    monkeypatch.delenv("MMSENTI_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(AttributeError):  # a bug: re-raised for Hydra to print its traceback
        run_safely(_bug, cfg)
    err = capsys.readouterr().err
    assert "internal error: AttributeError" in err and not any(x.startswith("error:") for x in err.splitlines())

    monkeypatch.setenv("MMSENTI_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_safely(_open_missing, cfg)
    assert os.environ.get("HYDRA_FULL_ERROR") == "1"
    monkeypatch.delenv("MMSENTI_DEBUG")
    debug_cfg = OmegaConf.merge(cfg, {"extras": {"debug": True}})  # python train.py +extras.debug=true
    with pytest.raises(UnicodeDecodeError):
        run_safely(_read_as_utf8, debug_cfg)


@pytest.mark.slow
def test_train_py_debug_override(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MMSENTI_DEBUG", None)
    base = [sys.executable, str(ROOT / "train.py"), "data=mosi", f"data.root={tmp_path}/nowhere", f"paths.log_dir={tmp_path}/logs",
            "extras.print_config=false"]
    debug = subprocess.run([*base, "+extras.debug=true"], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "MmsentiError" in debug.stderr, debug.stderr[-3000:]


@pytest.mark.parametrize("argv, option", [
    (["bench", "some_export", "--runs", "0"], "--runs"),
    (["bench", "some_export", "--seq=-3"], "--seq"),
    (["data", "download", "mosi", "--timeout", "-1"], "--timeout"),
    (["data", "download", "mosi", "--mirror", "notaurl"], "--mirror"),
])
def test_bad_option_values_are_usage_errors_naming_the_option(argv, option, capsys):
    from mmsenti.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option}" in err and "Traceback" not in err
