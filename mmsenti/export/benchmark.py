"""Latency/throughput benchmark: engines (and optionally PyTorch eager) side by side, JSON out.

Method (MLPerf-style single-stream latency plus offline throughput):

* every variant gets the *same* inputs per batch size (``seq`` tokens, ``frames`` audio/vision
  frames per sample, fixed seed);
* warm-up calls first, then ``runs`` timed calls per variant, either **interleaved** round-robin
  (the order rotates every round) so that machine noise hits all variants alike — the default,
  for ratios — or in **blocks** (``mode="blocks"``: each variant warmed up and timed on its own,
  one after another, as a deployment runs one model): single-stream latency without the cache
  and branch-predictor churn of switching between ~100 MB models every call;
* ORT sessions never spin (``session.intra_op.allow_spinning=0``) and PyTorch's OpenMP threads are
  made passive (``OMP_WAIT_POLICY=PASSIVE`` before torch loads): spinning threads left behind by
  one variant would otherwise slow the next one 3–4x on 2 cores;
* per variant and batch size: mean, p50, p95, p99 (latency_99) in ms and throughput
  (samples/s = batch / mean latency); ratios against the reference (eager if present).

The JSON records threads, CPU model, core count, load average before/after and versions — on a
shared machine, compare only figures from one run.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError

BENCH_SCHEMA = "mmsenti.bench/1"
RESULT_KEYS = {"variant", "batch", "runs", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "min_ms", "throughput_per_s"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(threads: int) -> dict[str, Any]:
    from mmsenti.runtime.session import default_threads

    return {"cpu": cpu_model(), "machine": platform.machine(), "cores_available": default_threads(),
            "threads": threads, "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def stats(times_s: list[float], batch: int) -> dict[str, float]:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {"runs": int(ms.size), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()),
            "throughput_per_s": float(batch / (ms.mean() / 1e3))}


def time_blocks(prepares: dict[str, Callable[[], Callable[[], Any]]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Each variant on its own: build its call, warm it up, time ``runs`` calls, release it."""
    times: dict[str, list[float]] = {}
    clock = time.perf_counter
    for name, prepare in prepares.items():
        fn = prepare()
        for _ in range(warmup):
            fn()
        t = []
        for _ in range(runs):
            t0 = clock()
            fn()
            t.append(clock() - t0)
        times[name] = t
        del fn
    return times


def time_interleaved(calls: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Warm every call up, then time them round-robin with a rotating order."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter
    for i in range(runs):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            fn = calls[name]
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


class Variant:
    """Something to time: ``prepare(batch) -> call`` builds the zero-argument call for a batch size."""

    def __init__(self, name: str, kind: str, prepare: Callable[[int], Callable[[], Any]], info: dict[str, Any] | None = None):
        self.name, self.kind, self.prepare, self.info = name, kind, prepare, dict(info or {})


def engine_variant(folder: str | Path, threads: int, seq: int, frames: int, name: str | None = None,
                   spin: bool = False, optimization: str = "all", seed: int = 0) -> Variant:
    """An export folder run through :class:`Predictor`'s engine with fixed synthetic inputs."""
    from mmsenti.runtime.predictor import Predictor

    pred = Predictor.load(folder, threads=threads, spin=spin, optimization=optimization)
    m = pred.manifest

    def prepare(batch: int) -> Callable[[], Any]:
        feeds = synthetic_feeds(pred.input_names, pred.feature_dims, batch, seq, frames, seed)
        feeds = {k: feeds[k] for k in pred.input_names}
        run = pred.runner.run
        return lambda: run(feeds)

    info = {"path": str(folder), "format": m["format"], "variant": m["variant"], "precision": m["precision"],
            "quantization": (m.get("quantization") or {}).get("method"), "size_bytes": m.get("size_bytes"),
            "params": (m.get("compression") or {}).get("structured", {}).get("params_after"),
            "metrics": m.get("metrics", {}).get("engine", {}), "source_metrics": m.get("metrics", {}).get("source_run", {}),
            "compression": m.get("compression", {}), "parity_max_abs_diff": m.get("parity", {}).get("max_abs_diff"),
            "optimization": optimization, "spin": spin}
    return Variant(name or Path(folder).name, "onnxruntime" if m["format"] == "onnx" else "tensorrt", prepare, info)


def eager_variant(model, threads: int, seq: int, frames: int, name: str = "pytorch_eager", variant: str = "fused",
                  seed: int = 0, info: dict[str, Any] | None = None) -> Variant:
    """The PyTorch model itself (``inference_mode``), fed the same inputs as the engines."""
    import torch

    from mmsenti.export.wrapper import ExportWrapper

    torch.set_num_threads(threads)
    wrapper = ExportWrapper(model.eval(), variant).eval()

    def prepare(batch: int) -> Callable[[], Any]:
        feeds = synthetic_feeds(wrapper.input_names, model.frame_dims, batch, seq, frames, seed)
        args = tuple(torch.from_numpy(feeds[n]) for n in wrapper.input_names)

        def call():
            if torch.get_num_threads() != threads:  # eager variants with other thread counts share torch
                torch.set_num_threads(threads)
            with torch.inference_mode():
                return wrapper(*args)

        return call

    params = sum(p.numel() for p in model.parameters())
    return Variant(name, "pytorch", prepare, {"format": "pytorch", "variant": variant, "precision": "fp32",
                                              "params": params, "size_bytes": 4 * params, **(info or {})})


def synthetic_feeds(input_names: list[str], dims: dict[str, int], batch: int, seq: int, frames: int, seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """Full-length inputs (no padding): ``seq`` tokens and ``frames`` frames for every sample."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 8000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    feeds = {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64)}
    for m in ("audio", "vision"):
        if m in input_names:
            feeds[m] = rng.standard_normal((batch, frames, dims[m])).astype(np.float32)
            feeds[f"{m}_mask"] = np.ones((batch, frames), bool)
    return feeds


def run_benchmark(variants: list[Variant], batches: list[int], runs: int = 200, warmup: int = 20, threads: int = 2,
                  seq: int = 32, frames: int = 50, reference: str | None = None, min_runs: int = 20,
                  mode: str = "interleaved") -> dict[str, Any]:
    """Time every variant at every batch size; returns the bench JSON (see :func:`validate_bench`).

    ``mode``: ``interleaved`` (round-robin, the default) or ``blocks`` (each variant on its own).
    """
    from mmsenti.runtime.manifest import library_versions, utc_now

    if not variants:
        raise MmsentiError("nothing to benchmark")
    if mode not in ("interleaved", "blocks"):
        raise MmsentiError(f"benchmark mode {mode!r}; choose interleaved or blocks")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise MmsentiError(f"variant names must be unique: {names}")
    started = time.perf_counter()
    hw = hardware(threads)
    results = []
    for batch in batches:
        # fewer timed runs at big batches keeps the wall time similar (at least min_runs)
        n = max(min_runs, int(runs / max(1, batch) ** 0.5)) if batch > 1 else runs
        n_warm = max(2, warmup if batch == 1 else warmup // 4)
        if mode == "blocks":
            times = time_blocks({v.name: (lambda v=v: v.prepare(batch)) for v in variants}, n, n_warm)
        else:
            times = time_interleaved({v.name: v.prepare(batch) for v in variants}, n, n_warm)
        for name, t in times.items():
            results.append({"variant": name, "batch": batch, **stats(t, batch)})
    hw["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    reference = reference or next((v.name for v in variants if v.kind == "pytorch"), variants[0].name)
    report = {
        "schema": BENCH_SCHEMA,
        "created": utc_now(),
        "hardware": hw,
        "settings": {"batches": list(batches), "runs": runs, "warmup": warmup, "seq": seq, "frames": frames,
                     "interleaved": mode == "interleaved", "mode": mode, "ort_spinning": any(v.info.get("spin") for v in variants),
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "reference": reference,
                     "wall_seconds": round(time.perf_counter() - started, 1)},
        "versions": library_versions("mmsenti", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"),
        "variants": [{"name": v.name, "kind": v.kind, **v.info} for v in variants],
        "results": results,
    }
    report["ratios"] = speedups(report)
    return validate_bench(report)


def speedups(report: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"batch=1": {variant: {"p50": ref/variant, "p99": ..., "throughput": variant/ref}}}``."""
    ref = report["settings"]["reference"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for batch in report["settings"]["batches"]:
        rows = {r["variant"]: r for r in report["results"] if r["batch"] == batch}
        if ref not in rows:
            continue
        base = rows[ref]
        out[f"batch={batch}"] = {name: {"p50_speedup": base["p50_ms"] / r["p50_ms"], "p99_speedup": base["p99_ms"] / r["p99_ms"],
                                        "throughput_ratio": r["throughput_per_s"] / base["throughput_per_s"]}
                                 for name, r in rows.items() if name != ref}
    return out


def validate_bench(report: dict[str, Any]) -> dict[str, Any]:
    """Schema check of a bench JSON (raises :class:`MmsentiError`)."""
    problems = []
    if report.get("schema") != BENCH_SCHEMA:
        problems.append(f"schema is {report.get('schema')!r}, expected {BENCH_SCHEMA!r}")
    for key in ("created", "hardware", "settings", "versions", "variants", "results", "ratios"):
        if key not in report:
            problems.append(f"missing '{key}'")
    if not problems:
        for key in ("threads", "cpu", "cores_available"):
            if key not in report["hardware"]:
                problems.append(f"hardware.{key} missing")
        names = {v.get("name") for v in report["variants"]}
        for i, r in enumerate(report["results"]):
            missing = RESULT_KEYS - set(r)
            if missing:
                problems.append(f"results[{i}] lacks {sorted(missing)}")
            elif r["variant"] not in names:
                problems.append(f"results[{i}] names unknown variant {r['variant']!r}")
            elif not r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] or r["min_ms"] > r["p50_ms"]:
                problems.append(f"results[{i}] percentiles out of order")
    if problems:
        raise MmsentiError(f"invalid bench report: {'; '.join(problems)}")
    return report


def summary_table(report: dict[str, Any]) -> str:
    """A plain-text table of the results (what ``mmsenti bench`` prints without --json)."""
    lines = [f"{'variant':<28} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'items/s':>9} {'p50 x':>7}"]
    ratios = report.get("ratios", {})
    for r in report["results"]:
        speed = ratios.get(f"batch={r['batch']}", {}).get(r["variant"], {}).get("p50_speedup")
        lines.append(f"{r['variant']:<28} {r['batch']:>5} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f} {r['p99_ms']:>9.2f} "
                     f"{r['throughput_per_s']:>9.1f} {'' if speed is None else f'{speed:.2f}':>7}")
    hw = report["hardware"]
    lines.append(f"({hw['cpu']}, {hw['threads']} threads of {hw['cores_available']} cores, load {hw.get('load_avg')} → "
                 f"{hw.get('load_avg_after')}; reference {report['settings']['reference']})")
    return "\n".join(lines)
