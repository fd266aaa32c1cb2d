"""Honest baselines in the engine benchmark (issue 15, item 4): eager, torch.compile and bf16 autocast
timed in the same harness as the engines, ``best_native`` and the ratios against it, failures
recorded (not fatal), and the Pareto report rendering old and new bench JSON."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from mmsenti.errors import MmsentiError
from mmsenti.export import benchmark
from mmsenti.export.benchmark import (NATIVE_KINDS, Variant, VariantFailed, best_natives, bf16_variant, compile_variant,
                                      native_variants, run_benchmark, speedups, summary_table, validate_bench)
from mmsenti.export.report import pareto_report, rows_from
from mmsenti.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_BENCH = ROOT / "experiments" / "engines" / "bench.json"

# p50 in ms of each fake variant at each batch size: compile wins at batch 1, eager at batch 8
FAKE_MS = {"eager": {1: 10.0, 8: 40.0}, "compile": {1: 8.0, 8: 44.0}, "bf16": {1: 12.0, 8: 60.0},
           "ort_int8": {1: 2.0, 8: 10.0}}


def fake(name: str, native: str | None = None, fail: str | None = None, calls: list | None = None) -> Variant:
    def prepare(batch: int):
        if calls is not None:
            calls.append((name, batch))
        if fail:
            raise VariantFailed(fail)
        return lambda: None

    info = {"native": native, "native_group": "eager"} if native else {}
    return Variant(name, "pytorch" if native else "onnxruntime", prepare, info)


@pytest.fixture
def fake_clock(monkeypatch) -> list[int]:
    """Timings from ``FAKE_MS`` at batch ``fake_clock[0]`` instead of the clock (the bookkeeping is tested)."""
    batch = [1]
    monkeypatch.setattr(benchmark, "time_interleaved",
                        lambda calls, runs, warmup: {name: [FAKE_MS[name][batch[0]] / 1e3] * runs for name in calls})
    return batch


def fake_report(fake_clock, variants=None, batches=(1, 8)) -> dict:
    variants = variants or [fake("eager", "eager"), fake("compile", "compile"), fake("bf16", "bf16"), fake("ort_int8")]
    results = []
    for b in batches:  # one batch size per call, so the fake clock knows which figures to return
        fake_clock[0] = b
        results.append(run_benchmark(variants, [b], runs=5, warmup=1, threads=1, min_runs=2))
    report = results[0]
    report["settings"]["batches"] = list(batches)
    report["results"] = [r for part in results for r in part["results"]]
    report["failed"] = {k: v for part in results for k, v in part["failed"].items()}
    report["best_native"] = best_natives(report)
    report["ratios"] = speedups(report)
    return validate_bench(report)


# ----------------------------------------------------------------------------- best native and ratios
def test_best_native_is_the_fastest_native_at_each_batch(fake_clock):
    report = fake_report(fake_clock)
    assert report["settings"]["reference"] == "eager"  # the eager variant, even when listed later
    b1, b8 = report["best_native"]["batch=1"], report["best_native"]["batch=8"]
    assert (b1["variant"], b1["native"], b1["p50_ms"]) == ("compile", "compile", 8.0)
    assert (b8["variant"], b8["p50_ms"]) == ("eager", 40.0)
    assert sorted(b1["of"]) == ["bf16", "compile", "eager"] and b1["failed"] == []
    assert "ort_int8" not in b1["of"]  # engines never compete for the native baseline


def test_ratios_against_eager_and_best_native(fake_clock):
    report = fake_report(fake_clock)
    int8 = report["ratios"]["batch=1"]["ort_int8"]
    assert int8["speedup_vs_eager"] == pytest.approx(10.0 / 2.0)
    assert int8["speedup_vs_best_native"] == pytest.approx(8.0 / 2.0) and int8["best_native"] == "compile"
    assert int8["speedup_vs_best_native_p99"] == pytest.approx(4.0)
    assert int8["p50_speedup"] == int8["speedup_vs_eager"]  # the old key keeps its meaning
    at8 = report["ratios"]["batch=8"]
    assert at8["ort_int8"]["best_native"] == "eager" and at8["ort_int8"]["speedup_vs_best_native"] == pytest.approx(4.0)
    assert at8["compile"]["speedup_vs_best_native"] == pytest.approx(40.0 / 44.0)  # natives are rated too
    assert report["ratios"]["batch=1"]["compile"]["speedup_vs_best_native"] == pytest.approx(1.0)
    assert "eager" not in report["ratios"]["batch=1"]  # the reference itself has no row, as before
    table = summary_table(report)
    assert "best PyTorch-native at batch=1: compile" in table and "best PyTorch-native at batch=8: eager" in table


def test_engine_only_bench_has_no_native_ratios(fake_clock):
    report = fake_report(fake_clock, [fake("ort_int8"), fake("compile")], batches=(1,))  # compile w/o group
    assert report["best_native"] == {}
    row = report["ratios"]["batch=1"]["compile"]
    assert "speedup_vs_eager" not in row and "speedup_vs_best_native" not in row  # reference is not eager: not claimed


# ----------------------------------------------------------------------------- failures
@pytest.mark.parametrize("mode", ["interleaved", "blocks"])
def test_failed_variant_is_recorded_and_the_run_goes_on(mode):
    calls: list = []
    variants = [fake("eager", "eager", calls=calls), fake("compile", "compile", fail="torch.compile failed: no compiler", calls=calls),
                fake("ort_int8", calls=calls)]
    report = run_benchmark(variants, [1, 2], runs=3, warmup=1, threads=1, min_runs=2, mode=mode)
    assert report["failed"] == {"compile": "torch.compile failed: no compiler"}
    assert {(r["variant"], r["batch"]) for r in report["results"]} == {(n, b) for n in ("eager", "ort_int8") for b in (1, 2)}
    assert next(v for v in report["variants"] if v["name"] == "compile")["failed"].startswith("torch.compile failed")
    assert ("compile", 2) not in calls  # not retried at the next batch size
    assert report["best_native"]["batch=1"]["variant"] == "eager" and report["best_native"]["batch=1"]["failed"] == ["compile"]
    assert "failed: compile: torch.compile failed" in summary_table(report)
    json.dumps(report)


def test_compile_failure_is_one_line_and_not_a_crash(tiny_model, monkeypatch):
    import torch

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: C++ compile error\n  long traceback line\n  another")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(benchmark, "_compiled_at_threads", [])
    v = compile_variant(tiny_model, 1, 8, 5)
    with pytest.raises(VariantFailed, match=r"^torch.compile failed at batch 1: RuntimeError: InductorError: C\+\+ compile error$"):
        v.prepare(1)
    with pytest.raises(VariantFailed):  # remembered: not compiled again
        v.prepare(2)
    report = run_benchmark([*native_variants(tiny_model, 1, 8, 5, kinds=["eager"]), compile_variant(tiny_model, 1, 8, 5)],
                           [1], runs=2, warmup=1, threads=1, seq=8, frames=5, min_runs=2)
    assert "RuntimeError" in report["failed"]["pytorch_compile"] and "\n" not in report["failed"]["pytorch_compile"]
    assert [r["variant"] for r in report["results"]] == ["pytorch_eager"]


# ----------------------------------------------------------------------------- the real variants
def test_native_variants_names_groups_and_bf16_deviation(tiny_model):
    variants = native_variants(tiny_model, 1, 8, 5, names="{kind}_fused", info={"metrics": {"test": {"MAE": 0.5}}})
    assert [v.name for v in variants] == ["eager_fused", "compile_fused", "bf16_fused"]
    assert [v.info["native"] for v in variants] == list(NATIVE_KINDS)
    assert {v.info["native_group"] for v in variants} == {"eager_fused"}
    assert "metrics" in variants[0].info and "metrics" not in variants[2].info  # accuracy only where measured
    assert variants[2].info["precision"] == "bf16-autocast"
    with pytest.raises(MmsentiError, match="fp16"):
        native_variants(tiny_model, 1, 8, 5, kinds=["fp16"])
    bf16 = bf16_variant(tiny_model, 1, 8, 5)
    call = bf16.prepare(1)
    score = call()[0]
    diff = bf16.info["bf16_max_abs_diff"]["1"]
    assert math.isfinite(diff) and 0.0 < diff < 0.5  # bf16 rounds (non-zero), but stays close to fp32
    assert score.dtype.is_floating_point and score.shape == (1,)


@pytest.mark.slow
def test_compile_variant_really_compiles(tiny_model, monkeypatch):
    """torch.compile with the ``eager`` backend (dynamo tracing, no C++ codegen): scores match eager."""
    import torch

    monkeypatch.setattr(benchmark, "_compiled_at_threads", [])
    eager = native_variants(tiny_model, 1, 8, 5, kinds=["eager"])[0]
    comp = compile_variant(tiny_model, 1, 8, 5, backend="eager")
    got, ref = comp.prepare(2)(), eager.prepare(2)()
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    assert comp.info["compile_seconds"]["2"] > 0 and comp.info["backend"] == "eager"


# ----------------------------------------------------------------------------- the report
def test_report_renders_new_json_with_best_native(fake_clock, tmp_path):
    report = fake_report(fake_clock)
    for v in report["variants"]:
        v["metrics"] = {"test": {"Non0_acc_2": 0.8, "MAE": 0.5}}
    next(v for v in report["variants"] if v["name"] == "compile")["compile_seconds"] = {"1": 95.5}
    write_json_atomic(tmp_path / "bench.json", report)
    text = Path(pareto_report(tmp_path)["markdown"]).read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| ort_int8 |"))
    assert "| 5.00x | 4.00x |" in row  # x eager, x best native (compile at batch 1)
    assert "**`compile`** (compile)" in text and "compile time (first call per batch size, not timed) b=1: 95.5 s" in text
    rows = {r["variant"]: r for r in rows_from(report)}
    assert rows["bf16"]["vs_best_native"] == pytest.approx(8.0 / 12.0)


def test_report_renders_committed_old_json(tmp_path):
    """The committed bench JSON predates the native baselines: it renders, best-native columns '–'."""
    old = json.loads(COMMITTED_BENCH.read_text())
    assert "best_native" not in old and "failed" not in old
    write_json_atomic(tmp_path / "bench.json", old)
    text = Path(pareto_report(tmp_path)["markdown"]).read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| ort_fused_int8 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[6] == "5.37x" and cells[7] == "–"  # x eager (interleaved p50 34.46 / 6.42), x best native absent
    assert "predates the PyTorch-native baselines" in text
    single = text.split("## Single stream")[1]
    int8 = next(ln for ln in single.splitlines() if ln.startswith("| ort_fused_int8 |"))
    assert "| 5.95x | – |" in int8  # the published single-stream 5.95x p99 against eager only
    assert "no PyTorch-native baselines in these runs" in single


def test_report_single_stream_against_best_native(fake_clock, tmp_path):
    report = fake_report(fake_clock, batches=(1,))
    report["single_stream"] = {"1": fake_report(fake_clock, batches=(1,))}
    write_json_atomic(tmp_path / "bench.json", report)
    single = Path(pareto_report(tmp_path)["markdown"]).read_text().split("## Single stream")[1]
    assert "| ort_int8 | 2.00 / 2.00 | 5.00x | 4.00x |" in single
    assert "**`compile`** (lowest p99 of `bf16`, `compile`, `eager`)" in single


# ----------------------------------------------------------------------------- bench_engines' target
def _bench_engines():
    spec = importlib.util.spec_from_file_location("bench_engines", ROOT / "benchmarks" / "bench_engines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stream(p99: dict[str, float], threads: str = "1", failed: dict | None = None) -> dict:
    rows = [{"variant": n, "batch": 1, "p50_ms": ms * 0.9, "p99_ms": ms, "throughput_per_s": 1e3 / ms} for n, ms in p99.items()]
    return {threads: {"results": rows, "failed": failed or {}}}


def test_bench_engines_target_is_against_the_best_native():
    be = _bench_engines()
    t = be.native_target({"single_stream": _stream({"eager_fused": 18.0, "compile_fused": 9.0, "bf16_fused": 20.0,
                                                    "ort_fused_int8": 2.9})})
    assert t["best_native"] == "compile_fused" and t["speedup_p99"] == pytest.approx(3.1, abs=0.01) and t["met"] is True
    t = be.native_target({"single_stream": _stream({"eager_fused": 18.0, "compile_fused": 8.0, "ort_fused_int8": 2.9})})
    assert t["speedup_p99"] == pytest.approx(2.76, abs=0.01) and t["met"] is False  # 6.2x eager, but < 3x compile
    t = be.native_target({"single_stream": _stream({"eager_fused": 18.0, "ort_fused_int8": 2.9},
                                                   failed={"compile_fused": "torch.compile failed at batch 1: X"})})
    assert t["met"] is None and "not judged" in t["note"] and t["failed"] == {"compile_fused": "torch.compile failed at batch 1: X"}
    committed = be.native_target(json.loads(COMMITTED_BENCH.read_text()))
    assert committed["best_native"] == "eager_fused" and committed["speedup_p99"] == pytest.approx(5.95) and committed["met"] is None
