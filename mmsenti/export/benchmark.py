"""Latency/throughput benchmark: engines and PyTorch-native baselines side by side, JSON out.

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

Honest baselines: an engine's speed-up is quoted against plain eager *and* against the best
PyTorch-native variant a user would try first on the same model — ``eager``
(``torch.inference_mode``), ``compile`` (``torch.compile``, compile time reported apart, never
timed) and ``bf16`` (CPU ``torch.autocast`` to bfloat16, with its output deviation from fp32):
:func:`native_variants`. ``best_native`` in the JSON names the fastest (lowest p50) of those at
each batch size; every ratio row has ``speedup_vs_eager`` and ``speedup_vs_best_native``. A
variant that cannot be built (say ``torch.compile`` fails for a model) is recorded under
``failed`` with its one-line reason and the run goes on.

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
NATIVE_KINDS = ("eager", "compile", "bf16")  # PyTorch-native variants, in the order they are built
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


def time_blocks(prepares: dict[str, Callable[[], Callable[[], Any]]], runs: int, warmup: int,
                failed: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Each variant on its own: build its call, warm it up, time ``runs`` calls, release it.

    A ``prepare`` raising :class:`VariantFailed` is skipped (its reason goes into ``failed``).
    """
    times: dict[str, list[float]] = {}
    clock = time.perf_counter
    for name, prepare in prepares.items():
        try:
            fn = prepare()
        except VariantFailed as err:
            if failed is not None:
                failed[name] = str(err)
            continue
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


class VariantFailed(MmsentiError):
    """A variant that cannot be built or run here (e.g. ``torch.compile`` fails): recorded, not fatal."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, shortened — the reason a failed variant is recorded with."""
    first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Variant:
    """Something to time: ``prepare(batch) -> call`` builds the zero-argument call for a batch size.

    ``prepare`` may raise :class:`VariantFailed`: the variant is then recorded as failed and skipped.
    """

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


def _native_setup(model, threads: int, seq: int, frames: int, variant: str, seed: int):
    """The export wrapper of ``model`` and a ``batch -> positional tensors`` builder (the engines' inputs)."""
    import torch

    from mmsenti.export.wrapper import ExportWrapper

    torch.set_num_threads(threads)
    wrapper = ExportWrapper(model.eval(), variant).eval()

    def inputs(batch: int) -> tuple:
        feeds = synthetic_feeds(wrapper.input_names, model.frame_dims, batch, seq, frames, seed)
        return tuple(torch.from_numpy(feeds[n]) for n in wrapper.input_names)

    return wrapper, inputs


def _native_info(model, variant: str, native: str, group: str, precision: str, info: dict[str, Any] | None) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    return {"format": "pytorch", "variant": variant, "precision": precision, "params": params, "size_bytes": 4 * params,
            "native": native, "native_group": group, **(info or {})}


def _threaded(threads: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    import torch

    def call():
        if torch.get_num_threads() != threads:  # PyTorch variants with other thread counts share torch
            torch.set_num_threads(threads)
        return fn()

    return call


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def eager_variant(model, threads: int, seq: int, frames: int, name: str = "pytorch_eager", variant: str = "fused",
                  seed: int = 0, info: dict[str, Any] | None = None, group: str | None = None) -> Variant:
    """The PyTorch model itself (``inference_mode``), fed the same inputs as the engines.

    ``group`` names the model's PyTorch-native variants (eager, compile, bf16) that compete for
    ``best_native``; it defaults to ``name``.
    """
    import torch

    wrapper, inputs = _native_setup(model, threads, seq, frames, variant, seed)

    def prepare(batch: int) -> Callable[[], Any]:
        args = inputs(batch)

        def run():
            with torch.inference_mode():
                return wrapper(*args)

        return _threaded(threads, run)

    return Variant(name, "pytorch", prepare, _native_info(model, variant, "eager", group or name, "fp32", info))


_compiled_at_threads: list[int] = []  # the thread count dynamo's caches were last compiled for


def compile_variant(model, threads: int, seq: int, frames: int, name: str = "pytorch_compile", variant: str = "fused",
                    seed: int = 0, info: dict[str, Any] | None = None, group: str = "pytorch_eager",
                    backend: str | Callable = "inductor", mode: str | None = None) -> Variant:
    """``torch.compile`` of the same wrapped module (``inference_mode``), default mode unless ``mode``.

    The first call at each batch size compiles (or recompiles for a new shape): it runs in
    ``prepare``, outside the timed window, and its seconds go to ``info["compile_seconds"]``
    (``{batch: s}``), graph breaks to ``info["graph_breaks"]``. A failure to compile or run raises
    :class:`VariantFailed` with the one-line reason. Inductor's CPU kernels bake in the thread
    count they were generated for, so dynamo's caches are reset when ``threads`` changes between
    compile variants (do not interleave compile variants of different thread counts).
    """
    import torch

    wrapper, inputs = _native_setup(model, threads, seq, frames, variant, seed)
    details = _native_info(model, variant, "compile", group, "fp32", info)
    details.update(backend=backend if isinstance(backend, str) else getattr(backend, "__name__", str(backend)),
                   compile_mode=mode or "default", compile_seconds={}, graph_breaks={})
    state: dict[str, Any] = {}

    def prepare(batch: int) -> Callable[[], Any]:
        if "failed" in state:
            raise VariantFailed(state["failed"])
        args = inputs(batch)
        try:
            from torch._dynamo.utils import counters

            if _compiled_at_threads and _compiled_at_threads[-1] != threads:
                torch._dynamo.reset()
                state.pop("compiled", None)
            _compiled_at_threads[:] = [threads]
            if "compiled" not in state:
                state["compiled"] = torch.compile(wrapper, backend=backend, mode=mode)
            compiled = state["compiled"]
            breaks = sum(counters["graph_break"].values())
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(*args)
            details["compile_seconds"][str(batch)] = round(time.perf_counter() - t0, 2)
            details["graph_breaks"][str(batch)] = sum(counters["graph_break"].values()) - breaks
        except Exception as err:  # noqa: BLE001 — any compiler failure is a result to record, not a crash
            state["failed"] = f"torch.compile failed at batch {batch}: {one_line(err)}"
            raise VariantFailed(state["failed"]) from err

        def run():
            with torch.inference_mode():
                return compiled(*args)

        return _threaded(threads, run)

    return Variant(name, "pytorch", prepare, details)


def bf16_variant(model, threads: int, seq: int, frames: int, name: str = "pytorch_bf16", variant: str = "fused",
                 seed: int = 0, info: dict[str, Any] | None = None, group: str = "pytorch_eager") -> Variant:
    """CPU ``torch.autocast(dtype=torch.bfloat16)`` under ``inference_mode`` (weights stay fp32).

    ``info["bf16_max_abs_diff"]`` (``{batch: x}``): max |score − fp32 score| on the timed inputs,
    measured in ``prepare`` (outside the timed window).
    """
    import torch

    wrapper, inputs = _native_setup(model, threads, seq, frames, variant, seed)
    details = _native_info(model, variant, "bf16", group, "bf16-autocast", info)
    details["bf16_max_abs_diff"] = {}

    def forward(args):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return wrapper(*args)

    def prepare(batch: int) -> Callable[[], Any]:
        args = inputs(batch)
        with torch.inference_mode():
            ref = _first_tensor(wrapper(*args)).float()
        got = _first_tensor(forward(args)).float()
        details["bf16_max_abs_diff"][str(batch)] = float((got - ref).abs().max())
        return _threaded(threads, lambda: forward(args))

    return Variant(name, "pytorch", prepare, details)


NATIVE_BUILDERS = {"eager": eager_variant, "compile": compile_variant, "bf16": bf16_variant}


def native_variants(model, threads: int, seq: int, frames: int, kinds: tuple[str, ...] | list[str] = NATIVE_KINDS,
                    names: str = "pytorch_{kind}", variant: str = "fused", seed: int = 0, info: dict[str, Any] | None = None,
                    **compile_options) -> list[Variant]:
    """The PyTorch-native baselines of one model, named ``names.format(kind=...)`` and grouped under the eager one.

    ``kinds`` from :data:`NATIVE_KINDS`; ``eager`` is always built, first (it is the reference the
    engines' ``speedup_vs_eager`` is taken against). ``info`` goes to the eager variant only (the
    others were not measured for accuracy). ``compile_options``: ``backend``/``mode``.
    """
    unknown = [k for k in kinds if k not in NATIVE_BUILDERS]
    if unknown:
        raise MmsentiError(f"PyTorch-native variant(s) {unknown}; choose from {', '.join(NATIVE_KINDS)}")
    group = names.format(kind="eager")
    out = []
    for kind in NATIVE_KINDS:
        if kind != "eager" and kind not in kinds:
            continue
        extra = {"group": group} if kind != "eager" else {"info": info}
        if kind == "compile":
            extra.update(compile_options)
        out.append(NATIVE_BUILDERS[kind](model, threads, seq, frames, name=names.format(kind=kind), variant=variant, seed=seed,
                                         **extra))
    return out


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
    failed: dict[str, str] = {}  # variant -> one-line reason (the first failure; it is not retried)
    for batch in batches:
        # fewer timed runs at big batches keeps the wall time similar (at least min_runs)
        n = max(min_runs, int(runs / max(1, batch) ** 0.5)) if batch > 1 else runs
        n_warm = max(2, warmup if batch == 1 else warmup // 4)
        alive = [v for v in variants if v.name not in failed]
        if mode == "blocks":
            times = time_blocks({v.name: (lambda v=v: v.prepare(batch)) for v in alive}, n, n_warm, failed)
        else:
            calls = {}
            for v in alive:
                try:
                    calls[v.name] = v.prepare(batch)
                except VariantFailed as err:
                    failed[v.name] = str(err)
            times = time_interleaved(calls, n, n_warm) if calls else {}
        for name, t in times.items():
            results.append({"variant": name, "batch": batch, **stats(t, batch)})
    hw["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    reference = reference or next((v.name for v in variants if v.info.get("native") == "eager"),
                                  next((v.name for v in variants if v.kind == "pytorch"), variants[0].name))
    report = {
        "schema": BENCH_SCHEMA,
        "created": utc_now(),
        "hardware": hw,
        "settings": {"batches": list(batches), "runs": runs, "warmup": warmup, "seq": seq, "frames": frames,
                     "interleaved": mode == "interleaved", "mode": mode, "ort_spinning": any(v.info.get("spin") for v in variants),
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "reference": reference,
                     "wall_seconds": round(time.perf_counter() - started, 1)},
        "versions": library_versions("mmsenti", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt"),
        "variants": [{"name": v.name, "kind": v.kind, **v.info, **({"failed": failed[v.name]} if v.name in failed else {})}
                     for v in variants],
        "results": results,
        "failed": failed,
    }
    report["best_native"] = best_natives(report)
    report["ratios"] = speedups(report)
    return validate_bench(report)


def native_candidates(report: dict[str, Any]) -> list[str]:
    """The PyTorch-native variants (eager, compile, bf16) of the reference's model that ran.

    Empty for a bench JSON written before these baselines existed (no ``native_group``), or when
    the reference is not a PyTorch variant.
    """
    by_name = {v["name"]: v for v in report["variants"]}
    group = by_name.get(report["settings"]["reference"], {}).get("native_group")
    if group is None:
        return []
    return [n for n, v in by_name.items() if v.get("kind") == "pytorch" and v.get("native_group") == group and not v.get("failed")]


def best_natives(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"batch=1": {"variant", "native", "p50_ms", "p99_ms", "of", "failed"}}``: the fastest (lowest
    p50) PyTorch-native variant of the reference's model at each batch size."""
    candidates = native_candidates(report)
    if not candidates:
        return {}
    by_name = {v["name"]: v for v in report["variants"]}
    group = by_name[report["settings"]["reference"]]["native_group"]
    failed = sorted(n for n, v in by_name.items() if v.get("native_group") == group and v.get("failed"))
    out = {}
    for batch in report["settings"]["batches"]:
        rows = [r for r in report["results"] if r["batch"] == batch and r["variant"] in candidates]
        if not rows:
            continue
        best = min(rows, key=lambda r: r["p50_ms"])
        out[f"batch={batch}"] = {"variant": best["variant"], "native": by_name[best["variant"]].get("native"),
                                 "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"], "by": "p50_ms",
                                 "of": [r["variant"] for r in rows], "failed": failed}
    return out


def speedups(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"batch=1": {variant: {...}}}`` for every variant but the reference.

    ``p50_speedup`` / ``p99_speedup`` (reference / variant latency) and ``throughput_ratio``
    (variant / reference) as always; when the reference is PyTorch eager also ``speedup_vs_eager``
    (p50) and ``speedup_vs_eager_p99``; when ``best_native`` is known, ``best_native`` (its
    name), ``speedup_vs_best_native`` (p50) and ``speedup_vs_best_native_p99``.
    """
    ref = report["settings"]["reference"]
    kinds = {v["name"]: v.get("kind") for v in report["variants"]}
    best = report.get("best_native") or {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for batch in report["settings"]["batches"]:
        rows = {r["variant"]: r for r in report["results"] if r["batch"] == batch}
        if ref not in rows:
            continue
        base = rows[ref]
        native = best.get(f"batch={batch}")
        table = {}
        for name, r in rows.items():
            if name == ref:
                continue
            row: dict[str, Any] = {"p50_speedup": base["p50_ms"] / r["p50_ms"], "p99_speedup": base["p99_ms"] / r["p99_ms"],
                                   "throughput_ratio": r["throughput_per_s"] / base["throughput_per_s"]}
            if kinds.get(ref) == "pytorch":
                row.update(speedup_vs_eager=row["p50_speedup"], speedup_vs_eager_p99=row["p99_speedup"])
            if native and native["variant"] in rows:
                nb = rows[native["variant"]]
                row.update(best_native=native["variant"], speedup_vs_best_native=nb["p50_ms"] / r["p50_ms"],
                           speedup_vs_best_native_p99=nb["p99_ms"] / r["p99_ms"])
            table[name] = row
        out[f"batch={batch}"] = table
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
        for name in report.get("failed") or {}:  # absent in bench JSON written before failures were recorded
            if name not in names:
                problems.append(f"failed names unknown variant {name!r}")
    if problems:
        raise MmsentiError(f"invalid bench report: {'; '.join(problems)}")
    return report


def summary_table(report: dict[str, Any]) -> str:
    """A plain-text table of the results (what ``mmsenti bench`` prints without --json).

    ``p50 x``: against the reference (eager); ``x best``: against the best PyTorch-native variant.
    """
    lines = [f"{'variant':<28} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'items/s':>9} {'p50 x':>7} {'x best':>7}"]
    ratios = report.get("ratios", {})
    for r in report["results"]:
        row = ratios.get(f"batch={r['batch']}", {}).get(r["variant"], {})
        speed, vs_best = row.get("p50_speedup"), row.get("speedup_vs_best_native")
        lines.append(f"{r['variant']:<28} {r['batch']:>5} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f} {r['p99_ms']:>9.2f} "
                     f"{r['throughput_per_s']:>9.1f} {'' if speed is None else f'{speed:.2f}':>7} "
                     f"{'' if vs_best is None else f'{vs_best:.2f}':>7}")
    hw = report["hardware"]
    lines.append(f"({hw['cpu']}, {hw['threads']} threads of {hw['cores_available']} cores, load {hw.get('load_avg')} → "
                 f"{hw.get('load_avg_after')}; reference {report['settings']['reference']})")
    for key, b in (report.get("best_native") or {}).items():
        lines.append(f"best PyTorch-native at {key}: {b['variant']} (lowest p50 of {', '.join(b['of'])}"
                     + (f"; failed: {', '.join(b['failed'])}" if b["failed"] else "") + ")")
    for name, reason in (report.get("failed") or {}).items():
        lines.append(f"failed: {name}: {reason}")
    return "\n".join(lines)
