"""Export round trip: ONNX parity (fused and text-only, several shapes), INT8 agreement, the
torch-free Predictor, manifest schema and atomic writes, the TensorRT boundary, bench/report JSON.

One small fused model (MulT d_model 32, the real MiniLM-L6 encoder, untrained fusion) is exported
once per variant for the whole module; parity does not need training.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsenti.errors import MmsentiError
from mmsenti.runtime.manifest import (
    MANIFEST_NAME, read_manifest, staged_folder, validate_manifest, write_manifest)
from mmsenti.io import write_json_atomic
from mmsenti.export.pipeline import ExportOptions, export_model
from mmsenti.runtime.predictor import Predictor
from mmsenti.export.wrapper import ExportWrapper, example_feeds, torch_outputs
from mmsenti.models import SentimentModel, SentimentModelConfig

ROOT = Path(__file__).resolve().parents[1]
# (batch, tokens, frames): single items, odd sizes, one frame, longer than the export example
SHAPES = [(1, 5, 1), (3, 40, 60), (7, 12, 9), (16, 64, 130)]
FP32_TOL = 1e-4
INT8_TOL = 0.1  # |score| difference (score in [-3, 3]) INT8 vs fp32 on a fixed batch; see export/README.md


@pytest.fixture(scope="module")
def model(tiny_model) -> SentimentModel:
    """The session's small fused model (tests/conftest.py)."""
    return tiny_model


@pytest.fixture(scope="module")
def exports(tiny_exports) -> dict[str, Path]:
    """Its fused and text-only exports (tests/conftest.py), made once per test session."""
    return tiny_exports


def _feeds(wrapper: ExportWrapper, b: int, s: int, t: int, seed: int = 1) -> dict[str, np.ndarray]:
    return example_feeds(wrapper, batch=b, seq=s, frames={m: t for m in wrapper.frame_modalities}, seed=seed)


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("variant", ["fused", "text_only"])
def test_round_trip_parity_at_several_shapes(variant, model, exports):
    wrapper = ExportWrapper(model, variant)
    pred = Predictor.load(exports[variant], threads=1)
    assert pred.input_names == wrapper.input_names
    for b, s, t in SHAPES:
        feeds = _feeds(wrapper, b, s, t)
        ref = torch_outputs(wrapper, feeds)
        got = pred.run(feeds)
        assert got["score"].shape == (b,)
        np.testing.assert_allclose(got["score"], ref[0], atol=FP32_TOL, err_msg=f"{variant} b={b} seq={s} frames={t}")
        np.testing.assert_allclose(got["logits_7"], ref[1], atol=FP32_TOL)
    manifest = read_manifest(exports[variant])
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_diff"] < FP32_TOL
    assert len(manifest["parity"]["cases"]) >= 4


def test_graph_keeps_batch_sequence_and_frame_axes_dynamic(exports):
    import onnx

    graph = onnx.load(str(exports["fused"] / "model.onnx"), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == ["batch", "seq"] and dims["attention_mask"] == ["batch", "seq"]
    assert dims["audio"] == ["batch", "audio_frames", 74] and dims["vision_mask"] == ["batch", "vision_frames"]
    text = onnx.load(str(exports["text_only"] / "model.onnx"), load_external_data=False).graph
    assert [i.name for i in text.input] == ["input_ids", "attention_mask"]


def test_text_only_graph_equals_fused_graph_without_audio_vision(model, exports):
    """text_only = the same model with the modalities absent (all-false masks), not another model."""
    fused, text = Predictor.load(exports["fused"], threads=1), Predictor.load(exports["text_only"], threads=1)
    texts = ["i loved this movie", "what a dull and boring film", ""]
    a = fused.predict(texts)  # no audio/vision given: all-false masks
    b = text.predict(texts)
    np.testing.assert_allclose(a["score"], b["score"], atol=FP32_TOL)


# ----------------------------------------------------------------------------- predictor
def test_predictor_tokenizes_like_training_and_pads_frames(model, exports):
    from mmsenti.data.batch import SentimentCollator
    from mmsenti.pretrained import load_pretrained

    pred = Predictor.load(exports["fused"], threads=1)
    rng = np.random.default_rng(0)
    samples = [{"id": "a", "text": "I LOVED it, truly!", "audio": rng.standard_normal((4, 74)).astype(np.float32),
                "vision": None, "label": 1.0},
               {"id": "b", "text": "a slow, forgettable film " * 20, "audio": None,
                "vision": rng.standard_normal((6, 47)).astype(np.float32), "label": -1.0}]
    samples[0]["audio"][1, 3] = np.nan  # non-finite values become 0, as in the data loader
    collator = SentimentCollator(load_pretrained("minilm_l6", "tokenizer"), 74, 47, max_text_len=64)
    batch = collator(samples)
    feeds = pred.feeds([s["text"] for s in samples], audio=[s["audio"] for s in samples], vision=[s["vision"] for s in samples])
    np.testing.assert_array_equal(feeds["input_ids"], batch.input_ids.numpy())
    np.testing.assert_array_equal(feeds["attention_mask"], batch.attention_mask.numpy())
    np.testing.assert_array_equal(feeds["audio_mask"], batch.audio_mask.numpy())
    np.testing.assert_array_equal(feeds["vision_mask"], batch.vision_mask.numpy())
    assert feeds["audio"][0, 1, 3] == 0.0
    out = pred.predict([s["text"] for s in samples], audio=[s["audio"] for s in samples], vision=[s["vision"] for s in samples])
    wrapper = ExportWrapper(model, "fused")
    ref = torch_outputs(wrapper, feeds)[0]
    np.testing.assert_allclose(out["score"], ref, atol=FP32_TOL)
    assert out["polarity"] == ["positive" if s > 0 else "negative" for s in out["score"]]
    assert set(out) >= {"score", "polarity", "class_7", "logits_7"}
    with pytest.raises(MmsentiError, match="expected"):
        pred.predict(["x"], audio=[np.zeros((3, 5), np.float32)])
    with pytest.raises(MmsentiError, match="takes no audio"):
        Predictor.load(exports["text_only"], threads=1).predict(["x"], audio=[np.zeros((3, 74), np.float32)])


def test_predictor_runs_without_torch(exports):
    """The runtime side imports no torch (serving machines need only numpy/onnxruntime/tokenizers)."""
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises\n"
        "import numpy as np\n"
        "from mmsenti.runtime.predictor import Predictor\n"
        f"p = Predictor.load({str(exports['fused'])!r}, threads=1)\n"
        "out = p.predict(['a wonderful film', 'awful'], audio=[np.ones((3, 74), np.float32), None])\n"
        "print(json.dumps({'score': out['score'].tolist(), 'torch': 'torch' in sys.modules and sys.modules['torch'] is not None}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["torch"] is False and len(printed["score"]) == 2
    local = Predictor.load(exports["fused"], threads=1).predict(["a wonderful film", "awful"], audio=[np.ones((3, 74), np.float32), None])
    np.testing.assert_allclose(printed["score"], local["score"], atol=1e-6)


# ----------------------------------------------------------------------------- INT8
@pytest.fixture(scope="module")
def int8_dynamic(exports) -> tuple[Path, dict]:
    from mmsenti.export.quantize import quantize_dynamic_int8

    path = exports["fused"].parent / "fused_int8_dynamic.onnx"
    return path, quantize_dynamic_int8(exports["fused"] / "model.onnx", path)


def test_int8_dynamic_agrees_with_fp32_on_a_fixed_batch(model, exports, int8_dynamic):
    from mmsenti.runtime.session import make_session

    src = exports["fused"] / "model.onnx"
    path, info = int8_dynamic
    excluded = info["excluded_nodes"]  # the default: head and MulT's input projections stay fp32, nothing else
    assert any(n.startswith("model.head") for n in excluded) and any(n.startswith("model.fusion.inputs") for n in excluded)
    assert all(n.startswith(("model.head", "model.fusion.inputs")) for n in excluded)
    assert path.stat().st_size < 0.35 * src.stat().st_size  # ~3.7x smaller: MatMul/Gemm weights and embeddings in INT8
    fp32, int8 = make_session(src, threads=1), make_session(path, threads=1)
    wrapper = ExportWrapper(model, "fused")
    feeds = _feeds(wrapper, 16, 32, 50, seed=7)
    a, b = fp32.run(None, feeds)[0], int8.run(None, feeds)[0]
    assert np.max(np.abs(a - b)) < INT8_TOL, np.max(np.abs(a - b))


def test_fp16_conversion_runs_and_agrees(exports, tmp_path):
    from mmsenti.export.quantize import convert_fp16
    from mmsenti.runtime.session import make_session

    convert_fp16(exports["text_only"] / "model.onnx", tmp_path / "fp16.onnx")
    feeds = {"input_ids": np.array([[101, 2023, 3185, 2001, 2307, 102]]), "attention_mask": np.ones((1, 6), np.int64)}
    a = make_session(exports["text_only"] / "model.onnx", threads=1).run(None, feeds)[0]
    b = make_session(tmp_path / "fp16.onnx", threads=1).run(None, feeds)[0]
    assert b.dtype == np.float32 and abs(float(a[0] - b[0])) < 5e-2


# ----------------------------------------------------------------------------- manifest
def test_manifest_schema(exports):
    manifest = json.loads((exports["fused"] / MANIFEST_NAME).read_text())
    validate_manifest(manifest, exports["fused"])
    assert manifest["modalities"] == ["text", "audio", "vision"]
    assert manifest["features"]["audio"]["dim"] == 74 and manifest["features"]["vision"]["dim"] == 47
    assert manifest["tokenizer"]["max_length"] == 64 and (exports["fused"] / "tokenizer" / "tokenizer.json").is_file()
    assert manifest["opset"] == 23 and manifest["precision"] == "fp32" and manifest["format"] == "onnx"
    assert {"torch", "onnxruntime", "onnx"} <= set(manifest["versions"])
    assert manifest["files"]["model.onnx"]["bytes"] == (exports["fused"] / "model.onnx").stat().st_size
    for key, bad in (("precision", "int4"), ("variant", "audio_only"), ("inputs", [{"name": "input_ids"}])):
        broken = copy.deepcopy(manifest)
        broken[key] = bad
        with pytest.raises(MmsentiError, match="invalid manifest"):
            validate_manifest(broken)
    broken = copy.deepcopy(manifest)
    del broken["source"]
    with pytest.raises(MmsentiError, match="missing 'source'"):
        validate_manifest(broken)
    broken = copy.deepcopy(manifest)
    broken["inputs"] = [i for i in broken["inputs"] if i["name"] != "audio_mask"]
    with pytest.raises(MmsentiError, match="audio_mask"):
        validate_manifest(broken)


def test_manifest_write_is_atomic(exports, tmp_path, monkeypatch):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    (folder / "tokenizer").mkdir()
    manifest = json.loads((exports["fused"] / MANIFEST_NAME).read_text())
    write_manifest(folder, manifest)
    before = (folder / MANIFEST_NAME).read_bytes()

    real_dump = json.dump

    def dump_then_crash(obj, f, **kw):
        f.write('{"schema_version": 1, "name": "half')  # a torn write...
        raise OSError("disk full")  # ...then the failure

    monkeypatch.setattr(json, "dump", dump_then_crash)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(folder, {**manifest, "name": "changed"})
    monkeypatch.setattr(json, "dump", real_dump)
    assert (folder / MANIFEST_NAME).read_bytes() == before  # the old manifest is intact
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "tokenizer"]  # no temp left


def test_failed_export_leaves_nothing_half_written(model, tmp_path, monkeypatch):
    import mmsenti.export.onnx_export as onnx_export

    def export_then_fail(wrapper, path, opset=23, quiet=True):
        Path(path).write_bytes(b"partial onnx")
        raise MmsentiError("simulated exporter crash")

    monkeypatch.setattr(onnx_export, "export_onnx", export_then_fail)
    target = tmp_path / "out"
    with pytest.raises(MmsentiError, match="simulated"):
        export_model(model, target, ExportOptions(metrics=False))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind

    # an existing export survives a failed re-export untouched
    target.mkdir()
    (target / MANIFEST_NAME).write_text("{}")
    with pytest.raises(MmsentiError, match="simulated"):
        export_model(model, target, ExportOptions(metrics=False, overwrite=True))
    assert (target / MANIFEST_NAME).read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(MmsentiError, match="already exists"):
        export_model(model, target, ExportOptions(metrics=False))


def test_staged_folder_replaces_only_on_success(tmp_path):
    target = tmp_path / "t"
    with staged_folder(target) as stage:
        write_json_atomic(stage / MANIFEST_NAME, {"v": 1})
    assert json.loads((target / MANIFEST_NAME).read_text()) == {"v": 1}
    with pytest.raises(RuntimeError):
        with staged_folder(target, overwrite=True) as stage:
            write_json_atomic(stage / MANIFEST_NAME, {"v": 2})
            raise RuntimeError("boom")
    assert json.loads((target / MANIFEST_NAME).read_text()) == {"v": 1}
    with staged_folder(target, overwrite=True) as stage:
        write_json_atomic(stage / MANIFEST_NAME, {"v": 3})
    assert json.loads((target / MANIFEST_NAME).read_text()) == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("precious")
    with pytest.raises(MmsentiError, match="not an export folder"):
        with staged_folder(unrelated, overwrite=True):
            pass
    assert (unrelated / "thesis.tex").read_text() == "precious"


def test_parity_failure_is_loud(model, exports):
    from mmsenti.export.onnx_export import check_parity
    from mmsenti.runtime.session import make_session

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head[-1].bias += 0.5  # a model that no longer matches the engine
    session = make_session(exports["fused"] / "model.onnx", threads=1)
    with pytest.raises(MmsentiError, match="parity check failed"):
        check_parity(ExportWrapper(other, "fused"), session, "fp32")


# ----------------------------------------------------------------------------- TensorRT boundary
def test_tensorrt_missing_gives_one_clear_line(tmp_path, capsys):
    from mmsenti.cli import main
    from mmsenti.runtime.tensorrt import tensorrt_status

    if tensorrt_status()["tensorrt"]:
        pytest.skip("TensorRT is installed here")
    rc = main(["export", str(tmp_path / "any.ckpt"), "--format", "tensorrt", "--out", str(tmp_path / "trt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: TensorRT is not available here")
    assert "pip install -e '.[gpu]'" in err[0] and "--format onnx" in err[0]
    assert not (tmp_path / "trt").exists()


def test_tensorrt_builder_and_runner_fail_clearly(exports, tmp_path):
    from mmsenti.export.tensorrt import build_engine
    from mmsenti.runtime.tensorrt import ProfileSpec, TensorRTRunner, tensorrt_status

    if tensorrt_status()["tensorrt"]:
        pytest.skip("TensorRT is installed here")
    manifest = read_manifest(exports["fused"])
    with pytest.raises(MmsentiError, match="TensorRT is not available"):
        build_engine(exports["fused"] / "model.onnx", tmp_path / "m.engine", "fp16", manifest["inputs"], ProfileSpec())
    with pytest.raises(MmsentiError, match="TensorRT is not available"):
        TensorRTRunner(tmp_path / "m.engine", ["score"])
    with pytest.raises(MmsentiError, match="TensorrtExecutionProvider"):
        Predictor.load(exports["fused"], device="tensorrt")


def test_tensorrt_profiles_and_ort_ep_options_from_config(exports):
    from mmsenti.runtime.tensorrt import ProfileSpec, ort_tensorrt_options, profile_shapes

    manifest = read_manifest(exports["fused"])
    spec = ProfileSpec.from_config({"batch": [1, 8, 64], "seq": [1, 32, 64], "frames": [1, 50, 400]})
    shapes = profile_shapes(manifest["inputs"], spec)
    assert shapes["input_ids"] == ((1, 1), (8, 32), (64, 64))
    assert shapes["audio"] == ((1, 1, 74), (8, 50, 74), (64, 400, 74))
    assert shapes["vision_mask"] == ((1, 1), (8, 50), (64, 400))
    opts = ort_tensorrt_options(manifest, "/cache", profile=spec)
    assert opts["trt_profile_opt_shapes"].startswith("input_ids:8x32,attention_mask:8x32,audio:8x50x74")
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"] and not opts["trt_fp16_enable"]
    with pytest.raises(MmsentiError, match="min <= opt <= max"):
        ProfileSpec.from_config({"batch": [8, 1, 64]})


def test_graphs_hold_only_ops_tensorrt_parses(model, exports, int8_dynamic, tmp_path):
    """fp32 and Q/DQ INT8 graphs are TensorRT-ready; ORT's dynamic INT8 graph is not (and says so)."""
    from mmsenti.export.quantize import pad_to_common_shape, quantize_static_int8
    from mmsenti.export.tensorrt import check_onnx_for_tensorrt
    from mmsenti.runtime.tensorrt import ProfileSpec, fit_to_profile

    fp32 = exports["fused"] / "model.onnx"
    check = check_onnx_for_tensorrt(fp32)
    assert check["ok"], check["unsupported_ops"]
    assert check["int64_inputs"] == ["input_ids", "attention_mask"]
    dyn = check_onnx_for_tensorrt(int8_dynamic[0])
    assert not dyn["ok"] and "MatMulInteger" in dyn["unsupported_ops"]
    # calibration batches (ragged, as the datamodule yields them) padded to one shape, cropped to the profile
    wrapper = ExportWrapper(model, "fused")
    feeds = pad_to_common_shape([_feeds(wrapper, 4, s, t, seed=s) for s, t in ((20, 30), (48, 70), (9, 5))])
    assert len({f["input_ids"].shape for f in feeds}) == 1 and len({f["audio"].shape for f in feeds}) == 1
    cropped = fit_to_profile(feeds[0], read_manifest(exports["fused"])["inputs"], ProfileSpec(seq=(1, 32, 32), frames=(1, 50, 64)))
    assert cropped["input_ids"].shape == (4, 32) and cropped["audio"].shape == (4, 64, 74)
    info = quantize_static_int8(fp32, tmp_path / "qdq.onnx", feeds, method="minmax")
    qdq = check_onnx_for_tensorrt(tmp_path / "qdq.onnx")
    assert qdq["ok"] and qdq["explicit_int8_qdq"], qdq["unsupported_ops"]
    assert info["calibration"]["batches"] == 3


# ----------------------------------------------------------------------------- bench and report
def test_bench_json_schema_and_report(model, exports, tmp_path):
    from mmsenti.export.benchmark import BENCH_SCHEMA, eager_variant, engine_variant, run_benchmark, validate_bench
    from mmsenti.export.report import pareto_report

    variants = [eager_variant(model, 1, 8, 5), engine_variant(exports["fused"], 1, 8, 5, name="onnx_fp32"),
                engine_variant(exports["text_only"], 1, 8, 5, name="onnx_text")]
    report = run_benchmark(variants, [1, 2], runs=3, warmup=1, threads=1, seq=8, frames=5, min_runs=2)
    assert report["schema"] == BENCH_SCHEMA
    assert {(r["variant"], r["batch"]) for r in report["results"]} == {(v.name, b) for v in variants for b in (1, 2)}
    assert set(report["ratios"]["batch=1"]) == {"onnx_fp32", "onnx_text"}
    assert report["hardware"]["threads"] == 1 and report["settings"]["interleaved"]
    json.dumps(report)  # serialisable
    broken = copy.deepcopy(report)
    del broken["results"][0]["p99_ms"]
    with pytest.raises(MmsentiError, match="p99_ms"):
        validate_bench(broken)
    for v in report["variants"]:  # accuracy figures as the bench script records them
        v["metrics"] = {"test": {"Non0_acc_2": 0.8 if v["name"] != "onnx_text" else 0.7, "MAE": 0.6}}
    report["single_stream"] = {"1": run_benchmark(variants[1:], [1], runs=3, warmup=1, threads=1, seq=8, frames=5, mode="blocks")}
    write_json_atomic(tmp_path / "bench.json", report)
    result = pareto_report(tmp_path)
    assert Path(result["markdown"]).is_file() and Path(result["png"]).is_file()
    text = Path(result["markdown"]).read_text()
    assert "onnx_fp32" in text
    single = text.split("## Single stream")[1]  # the blocks table: one row per variant timed on its own
    assert "| onnx_fp32 |" in single and "| onnx_text |" in single and "pytorch_eager" not in single
    assert Path(result["single_stream_png"]).is_file() and "pareto_single_stream.png" in single
    assert set(result["single_stream_front"]) <= {"onnx_fp32", "onnx_text"}  # only variants timed alone


def test_bench_blocks_mode_times_each_variant_on_its_own(model, exports):
    from mmsenti.export.benchmark import Variant, run_benchmark

    log: list[str] = []

    def recording(name: str) -> Variant:
        def prepare(batch: int):
            log.append(f"prepare {name}")
            return lambda: log.append(name)
        return Variant(name, "onnxruntime", prepare)

    report = run_benchmark([recording("a"), recording("b")], [1], runs=3, warmup=1, threads=1, mode="blocks", min_runs=2)
    # a is built, warmed up (at least 2 calls) and timed to the end before b is even built
    assert log == ["prepare a", *["a"] * 5, "prepare b", *["b"] * 5]
    assert report["settings"]["mode"] == "blocks" and not report["settings"]["interleaved"]
    assert [r["runs"] for r in report["results"]] == [3, 3]
    log.clear()
    run_benchmark([recording("a"), recording("b")], [1], runs=2, warmup=1, threads=1, min_runs=2)
    assert log == ["prepare a", "prepare b", "a", "a", "b", "b", "a", "b", "b", "a"]  # interleaved, order rotates
    with pytest.raises(MmsentiError, match="benchmark mode"):
        run_benchmark([recording("a")], [1], mode="random")


def test_bench_cli_prints_valid_json(exports, tmp_path, capsys):
    from mmsenti.cli import main
    from mmsenti.export.benchmark import validate_bench

    assert main(["bench", str(exports["text_only"]), "--batch", "1,2", "--runs", "3", "--warmup", "1", "--threads", "1",
                 "--seq", "8", "--json", "--out", str(tmp_path / "b.json")]) == 0
    printed = validate_bench(json.loads(capsys.readouterr().out))
    assert printed == json.loads((tmp_path / "b.json").read_text())
    assert main(["bench", str(exports["text_only"]), "--batch", "1,x"]) == 2
    assert capsys.readouterr().err.strip() == "error: --batch '1,x': expected comma-separated integers like 1,8,64"


# ----------------------------------------------------------------------------- end to end (slow)
SMALL_TRAIN = ["++model.net.fusion.d_model=32", "model.net.text_encoder.top_k=1", "data.batch_size=16", "extras.print_config=false",
               "logger=none", "debug=limit"]


from test_train import compose_train  # noqa: E402  (the one Hydra compose helper for tests)


@pytest.fixture(scope="module")
def bf16_run(synthetic_small, tmp_path_factory) -> Path:
    """A short bf16-mixed training run with ``export=onnx`` (fp32 + INT8) — the AMP → export path."""
    from mmsenti.training.tasks import train

    out = tmp_path_factory.mktemp("bf16_run") / "run"
    # late fusion over a 2-layer text encoder: the AMP -> export path is the same for every fusion, and MulT's
    # graph over all six layers took the dynamo exporter 2-3x longer (this fixture was CI's second-slowest step)
    train(compose_train(["experiment=mosi_fusion", "model/fusion=late", "++model.net.text_encoder.keep_layers=[0,1]",
                         "trainer.precision=bf16-mixed", "export=onnx", *SMALL_TRAIN], out, synthetic_small))
    return out


@pytest.mark.slow
def test_bf16_training_then_export_hook(bf16_run):
    report = json.loads((bf16_run / "metrics.json").read_text())
    assert report["config"]["trainer"]["precision"] == "bf16-mixed"
    manifests = report["export"]["manifests"]
    assert set(manifests) == {"fused_fp32", "fused_int8"}
    for name, path in manifests.items():
        manifest = read_manifest(Path(path).parent)
        assert manifest["parity"]["passed"], name
        assert manifest["source"]["sha256"] and manifest["source"]["run_metrics"] == {}  # metrics.json is written after
        assert {"val", "test"} <= set(manifest["metrics"]["engine"])
        drift = manifest["parity"]["metrics"]["val"]["drift"]
        if name == "fused_fp32":
            assert abs(drift["MAE"]) < 1e-4
    pred = Predictor.load(Path(manifests["fused_int8"]).parent, threads=1)
    assert pred.predict(["good", "bad"])["score"].shape == (2,)


@pytest.mark.slow
def test_cli_export_static_int8_and_bench_against_checkpoint(bf16_run, tmp_path):
    from mmsenti.cli import main

    ckpt = json.loads((bf16_run / "metrics.json").read_text())["best_ckpt"]
    out = tmp_path / "static"
    assert main(["export", ckpt, "--precision", "int8", "--quantization", "static", "--calibration", "minmax",
                 "--calibration-batches", "2", "--out", str(out)]) == 0  # the real static-INT8 parity bound
    manifest = read_manifest(out)
    assert manifest["quantization"]["method"] == "static" and manifest["quantization"]["calibration"]["batches"] >= 1
    assert manifest["metrics"]["source_run"]["val"]  # the run's own metrics.json, beside the checkpoint folder
    bench = tmp_path / "bench.json"
    assert main(["bench", str(out), "--against", ckpt, "--batch", "1,4", "--runs", "5", "--warmup", "1", "--threads", "1",
                 "--native", "bf16", "--out", str(bench)]) == 0  # (torch.compile is timed by tests/test_bench_baselines.py)
    from mmsenti.export.benchmark import validate_bench

    report = validate_bench(json.loads(bench.read_text()))
    assert report["settings"]["reference"] == "pytorch_eager"
    assert {"pytorch_eager", "pytorch_bf16"} <= {v["name"] for v in report["variants"]}
    assert report["best_native"]  # the engines' ratios are also taken against the fastest PyTorch-native variant
    assert main(["report", str(tmp_path), "--pareto"]) == 0
    assert (tmp_path / "pareto.md").is_file()


@pytest.mark.slow
def test_prune_experiment_trains_prunes_and_exports_smaller(synthetic_small, tmp_path):
    from mmsenti.training.tasks import train

    out = tmp_path / "run"
    # late fusion: the pruning acts on the text encoder's FFNs, whatever the fusion (MulT only slows the export)
    train(compose_train(["experiment=mosi_prune", "model/fusion=late", "model.net.text_encoder.finetune=top_k", "export=onnx",
                         "export.precisions=[fp32]", *SMALL_TRAIN], out, synthetic_small))
    report = json.loads((out / "metrics.json").read_text())
    structured = report["compression"]["structured"]
    assert structured["ffn_neurons_zeroed"] == pytest.approx(0.4 * structured["ffn_neurons"], rel=0.01)
    assert structured["params_after"] < structured["params_before"]
    manifest = read_manifest(Path(report["export"]["manifests"]["fused_fp32"]).parent)
    assert manifest["compression"]["structured"]["ffn_neurons_after"] == structured["ffn_neurons_after"]
    assert manifest["parity"]["passed"]
