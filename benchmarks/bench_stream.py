"""Streaming benchmark (issue 14): the Flink job end to end — broker, producer and job on this machine.

    python benchmarks/bench_stream.py --rate 500,2000,5000 --seconds 60          # the full run (~15 min)
    python benchmarks/bench_stream.py --quick                                      # a short smoke run

Every run starts its own broker (``mmsenti stream broker``, noida-db, 127.0.0.1, a free port) and
stops it, and every job it starts (``mmsenti stream run``, fresh topics each time) is stopped with
its whole process tree. The model is the text-only INT8 student (the BiLSTM), ``export/serve/student_int8``
(made by ``python benchmarks/bench_serve.py --make-exports export/serve`` when absent); its second
seed ``student_int8_v2`` is the new version of the hot update.

Scenarios:

* ``rates`` — for each ``--rate``: a fresh job; after its first checkpoint, ``mmsenti stream produce``
  sends SST-2 dev sentences at that rate for ``--seconds`` (``--products`` products) while the
  consumer lag is sampled every second (input end offsets minus the job's committed offsets, which
  the Kafka source commits at each checkpoint; their running maximum). Sustained throughput is the committed offsets'
  growth per second over the produce phase; the lag *grows* when its least-squares slope over the
  last two thirds of that phase is above 5% of the rate. The rate where lag starts to grow: the
  first tested rate that grows, refined by ``--search-steps`` bisection runs between it and the
  last bounded one.
* ``latency`` — ``--latency-rate`` (1,000/s) for ``--seconds``: each window result's latency is
  the moment a ``read_committed`` consumer receives it minus the window's end (event time is the
  producer's wall clock at sending, the same clock); p50/p99/max over the windows after the first
  ``--warmup-windows`` window ends. Measured in the ``rates`` runs too.
* ``swap`` — ``--swap-rate`` (default: the highest bounded rate, at most 500/s) with the job
  watching a model repository: version 1 at the start, version 2 renamed into place at 40% of the
  run. Reported: the windows per model version over time, the first window scored by version 2
  (its start minus the drop time: event time, so negative when the job lags and scores events older
  than the drop with the new version), events lost (produced valid events minus the events counted by the
  windows + late events, after a closing event ends every window), and latency before/after.

``--out DIR`` (default ``experiments/streaming``; ``--quick`` defaults to a temp folder) gets
``bench.json`` (everything, per-second samples included), ``summary.json`` (targets met/missed,
also printed) and ``streaming.png``; the results block of ``README.md`` there (between the
``<!-- results -->`` markers) is re-rendered with the command that produced it. Timings come from
a shared 2-core machine: compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmsenti.errors import MmsentiError  # noqa: E402

SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
DEFAULT_EXPORTS = ROOT / "export" / "serve"
TARGETS = {"throughput_per_s": 2000, "latency_p99_s": 3.0, "latency_rate": 1000}


def log(msg: str) -> None:
    print(f"[bench_stream {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ set-up
def ensure_exports(model: str | None, swap_model: str | None) -> tuple[Path, Path]:
    if model:
        first = Path(model)
        second = Path(swap_model) if swap_model else first
    else:
        first, second = DEFAULT_EXPORTS / "student_int8", DEFAULT_EXPORTS / "student_int8_v2"
        if not (first / "manifest.json").is_file() or not (second / "manifest.json").is_file():
            log(f"{first} absent: training and exporting the students (bench_serve.make_exports)")
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from bench_serve import make_exports  # the one train-and-export helper for the tiny engines

            made = make_exports(DEFAULT_EXPORTS)
            first, second = made["student_int8"], made["student_int8_v2"]
    for folder in (first, second):
        if not (folder / "manifest.json").is_file():
            raise MmsentiError(f"{folder}: no manifest.json; give --model EXPORT_DIR")
    return first, second


def topic_set(tag: str) -> dict[str, str]:
    suffix = f"{tag}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    return {name: f"bench-{name}-{suffix}" for name in ("in", "out", "alerts", "late", "dlq")}


def job_argv(args, settings, topics: dict[str, str], work: Path, model_args: list[str]) -> list[str]:
    return ["--bootstrap-servers", settings.bootstrap_servers, *model_args, "--in", topics["in"], "--out", topics["out"],
            "--alerts", topics["alerts"], "--late", topics["late"], "--dlq", topics["dlq"], "--window", args.window,
            "--lateness", args.lateness, "--checkpoint-interval", args.checkpoint_interval,
            "--checkpoint-dir", str(work / "checkpoints"), "--parallelism", str(args.parallelism),
            "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--bundle-ms", str(args.bundle_ms),
            "--reload-every", "1s", "--start", "earliest", "--fresh"]


def committed(settings, group: str, topic: str) -> int:
    from mmsenti.stream.clients import kafka_client

    ck = kafka_client()
    consumer = ck.Consumer(settings.librdkafka(**{"group.id": group, "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=5).topics[topic]
        parts = consumer.committed([ck.TopicPartition(topic, p) for p in meta.partitions], timeout=5)
        return sum(max(0, tp.offset) for tp in parts)
    finally:
        consumer.close()


def end_total(settings, topic: str) -> int:
    from mmsenti.stream.clients import end_offsets

    return sum(end_offsets(settings, topic).values())


# ============================================================================ measuring one run
@dataclass
class WindowWatcher:
    """Follows the results topic (read_committed) and stamps each record's arrival."""

    settings: Any
    topic: str
    arrivals: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "WindowWatcher":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from mmsenti.stream.clients import kafka_client

        ck = kafka_client()
        consumer = ck.Consumer(self.settings.librdkafka(**{
            "group.id": f"bench-watch-{time.monotonic_ns()}", "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "enable.auto.commit": False, "fetch.wait.max.ms": 20}))
        consumer.assign([ck.TopicPartition(self.topic, 0, ck.OFFSET_BEGINNING)])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error():
                    continue
                now = time.time()
                record = json.loads(msg.value())
                self.arrivals.append({"at": now, "product_id": record["product_id"], "window_start": record["window_start"],
                                      "window_end": record["window_end"], "count": record["count"],
                                      "model_version": record["model_version"], "model_versions": record["model_versions"],
                                      "latency_s": now - record["window_end"] / 1000})
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def latency_stats(arrivals: list[dict], after_s: float) -> dict[str, Any]:
    lat = np.array([a["latency_s"] for a in arrivals if a["window_end"] / 1000 >= after_s])
    if lat.size == 0:
        return {"windows": 0}
    return {"windows": int(lat.size), "p50_s": round(float(np.percentile(lat, 50)), 3),
            "p99_s": round(float(np.percentile(lat, 99)), 3), "max_s": round(float(lat.max()), 3),
            "mean_s": round(float(lat.mean()), 3)}


def lag_verdict(samples: list[dict], t_start: float, t_end: float, rate: float) -> dict[str, Any]:
    """Throughput over the produce phase and whether the lag grows (see the module docstring)."""
    inside = [s for s in samples if t_start <= s["t"] <= t_end]
    if len(inside) < 3:
        return {"samples": len(inside)}
    t = np.array([s["t"] for s in inside]) - t_start
    done = np.array([s["committed"] for s in inside], float)
    lag = np.array([s["lag"] for s in inside], float)
    tail = t >= t[-1] / 3
    slope = float(np.polyfit(t[tail], lag[tail], 1)[0]) if tail.sum() >= 2 else float("nan")
    throughput = float((done[-1] - done[0]) / (t[-1] - t[0])) if t[-1] > t[0] else float("nan")
    return {"samples": len(inside), "throughput_per_s": round(throughput, 1), "lag_slope_per_s": round(slope, 1),
            "lag_end": int(lag[-1]), "lag_max": int(lag.max()), "lag_grows": bool(slope > 0.05 * rate)}


def process_cpu(pids: list[int]) -> float | None:
    """CPU seconds used so far by these processes and their children (psutil; None without it)."""
    try:
        import psutil
    except ModuleNotFoundError:
        return None
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                with_children = p.cpu_times()
                total += with_children.user + with_children.system
        except psutil.Error:
            continue
    return total


def run_point(args, settings, model_dir: Path, rate: float, seconds: float, work: Path, tag: str,
              swap_export: Path | None = None) -> dict[str, Any]:
    """One fresh job at one rate (see the module docstring); ``swap_export``: the hot update run."""
    from mmsenti.stream.clients import ensure_topics, read_json
    from mmsenti.stream.commands import JobProcess
    from mmsenti.stream.events import Comment
    from mmsenti.stream.windows import parse_duration

    topics = topic_set(tag)
    ensure_topics(settings, list(topics.values()), partitions=1)
    point_dir = work / tag
    point_dir.mkdir(parents=True, exist_ok=True)
    if swap_export is not None:
        repo = point_dir / "repo"
        shutil.copytree(model_dir, repo / "student" / "1")
        model_args = ["--model-repo", str(repo), "--model-name", "student"]
    else:
        model_args = ["--model", str(model_dir)]
    group = f"mmsenti-{topics['in']}-to-{topics['out']}"
    job = JobProcess(job_argv(args, settings, topics, point_dir, model_args), point_dir / "job.log")
    watcher = WindowWatcher(settings, topics["out"]).start()
    samples: list[dict] = []
    result: dict[str, Any] = {"rate": rate, "seconds": seconds, "topics": topics, "swap": swap_export is not None}
    producer = None
    try:
        # warm-up: a few events, until the job has taken a checkpoint (it is reading and committing)
        subprocess.run([sys.executable, "-m", "mmsenti.cli", "stream", "produce", "--topic", topics["in"], "--rate", "50",
                        "--count", "20", "--products", str(args.products), "--bootstrap-servers", settings.bootstrap_servers,
                        *(["--from", str(SST2_DEV)] if SST2_DEV.is_file() else [])], check=True, capture_output=True, cwd=ROOT)
        t0 = time.monotonic()
        while committed(settings, group, topics["in"]) < 20:
            if not job.running:
                raise MmsentiError(f"the job exited at start: {job.tail()}")
            if time.monotonic() - t0 > args.start_timeout:
                raise MmsentiError(f"the job did not commit its first checkpoint in {args.start_timeout:.0f} s: {job.tail()}")
            time.sleep(0.5)
        result["start_s"] = round(time.monotonic() - t0, 1)
        cmd = [sys.executable, "-m", "mmsenti.cli", "stream", "produce", "--topic", topics["in"], "--rate", str(rate),
               "--seconds", str(seconds), "--products", str(args.products), "--seed", "1",
               "--bootstrap-servers", settings.bootstrap_servers, *(["--from", str(SST2_DEV)] if SST2_DEV.is_file() else [])]
        t_start = time.time()
        producer = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        swapped_at = None
        cpu0 = process_cpu([job.proc.pid])

        def sample() -> dict:
            # the running maximum: the job never commits backwards, the development broker sometimes
            # answers an older commit of the same group
            done = max(committed(settings, group, topics["in"]), samples[-1]["committed"] if samples else 0)
            end = end_total(settings, topics["in"])
            samples.append({"t": time.time(), "end": end, "committed": done, "lag": end - done})
            return samples[-1]

        while True:
            now = time.time()
            sample()
            if swap_export is not None and swapped_at is None and now - t_start >= 0.4 * seconds:
                shutil.copytree(swap_export, repo / "student" / ".2-staging")
                os.rename(repo / "student" / ".2-staging", repo / "student" / "2")
                swapped_at = time.time()
                log(f"  version 2 dropped into {repo / 'student'}")
            if producer.poll() is not None:
                break
            if not job.running:
                raise MmsentiError(f"the job died under load: {job.tail()}")
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        t_end = time.time()
        cpu1 = process_cpu([job.proc.pid])
        out, err = producer.communicate()
        if producer.returncode != 0:
            raise MmsentiError(f"the producer failed: {err.strip().splitlines()[-1:]}")
        result["produced"] = json.loads(out.strip().splitlines()[-1])
        # drain: how long until the lag is gone (bounded)
        drain_deadline = time.time() + args.drain_timeout
        while time.time() < drain_deadline:
            if sample()["lag"] == 0:
                break
            time.sleep(1.0)
        result["drained_after_s"] = round(samples[-1]["t"] - t_end, 1) if samples[-1]["lag"] == 0 else None
        result.update(lag_verdict(samples, t_start, t_end, rate))
        if cpu0 is not None and cpu1 is not None:
            result["job_cpu_cores"] = round((cpu1 - cpu0) / (t_end - t_start), 2)
        warm = t_start + args.warmup_windows * parse_duration(args.window) / 1000
        result["latency"] = latency_stats(watcher.arrivals, warm)
        if swap_export is not None:
            # close every window, then count: events produced vs events in windows + late
            from mmsenti.stream.clients import kafka_client

            ck = kafka_client()
            p = ck.Producer(settings.librdkafka())
            p.produce(topics["in"], Comment("closer", "zz-closer", "the end", int(time.time() * 1000) + 600_000).to_json())
            p.flush(10)
            time.sleep(args.drain_timeout / 4)
            windows = [r for r in read_json(settings, topics["out"]) if r["product_id"] != "zz-closer"]
            late = read_json(settings, topics["late"])
            versions = sorted(((w["window_start"], w["model_version"]) for w in windows))
            first_v2 = next((ws for ws, v in versions if v == "2"), None)
            result["swap"] = {
                "dropped_at": swapped_at, "first_v2_window_start": first_v2,
                "first_v2_window_after_drop_s": round(first_v2 / 1000 - swapped_at, 2) if first_v2 and swapped_at else None,
                "windows_by_version": {v: sum(1 for _, x in versions if x == v) for v in sorted({x for _, x in versions})},
                "windows_after_v2_scored_by_v1": sum(1 for ws, v in versions if first_v2 and ws > first_v2 and v == "1"),
                "events_produced": result["produced"]["sent"] + 20, "events_in_windows": sum(w["count"] for w in windows),
                "late_events": len(late)}
            result["swap"]["events_lost"] = result["swap"]["events_produced"] - result["swap"]["events_in_windows"] - len(late)
            if swapped_at:
                result["latency_before_swap"] = latency_stats([a for a in watcher.arrivals if a["at"] < swapped_at], warm)
                result["latency_after_swap"] = latency_stats([a for a in watcher.arrivals if a["at"] >= swapped_at], warm)
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
        watcher.stop()
        job.stop()
    t_ref = samples[0]["t"] if samples else 0.0
    result["lag_series"] = [{"t": round(s["t"] - t_ref, 2), "lag": s["lag"], "committed": s["committed"]} for s in samples]
    result["windows"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in a.items()} for a in watcher.arrivals]
    return result


# ============================================================================ report
def summarize(results: dict[str, Any]) -> dict[str, Any]:
    points = sorted(results["rates"], key=lambda p: p["rate"])
    bounded = [p for p in points if p.get("lag_grows") is False]
    growing = [p for p in points if p.get("lag_grows")]
    best = max(bounded, key=lambda p: p["rate"], default=None)
    lat = results.get("latency") or {}
    swap = results.get("swap") or {}
    summary = {
        "sustained_throughput_per_s": {
            "target": f">= {TARGETS['throughput_per_s']}/s for the full run with bounded lag",
            "highest_bounded_rate": best["rate"] if best else None,
            "throughput_at_it": best.get("throughput_per_s") if best else None,
            "met": bool(best and best["rate"] >= TARGETS["throughput_per_s"])},
        "lag_grows_from_rate": min((p["rate"] for p in growing), default=None),
        "window_latency_at_1000": {
            "target": f"p99 <= {TARGETS['latency_p99_s']} s at {TARGETS['latency_rate']}/s",
            "rate": lat.get("rate"), **(lat.get("latency") or {}), "lag_grows": lat.get("lag_grows"),
            "met": bool(lat.get("latency", {}).get("p99_s") is not None and lat["latency"]["p99_s"] <= TARGETS["latency_p99_s"]
                        and not lat.get("lag_grows") and lat.get("rate") == TARGETS["latency_rate"])},
        "hot_update": {"rate": swap.get("rate"), **{k: v for k, v in (swap.get("swap") or {}).items() if k != "dropped_at"},
                       "met": bool(swap.get("swap") and swap["swap"]["events_lost"] == 0 and swap["swap"]["first_v2_window_start"]
                                   and swap["swap"]["windows_after_v2_scored_by_v1"] == 0)},
        "points": [{k: p.get(k) for k in ("rate", "throughput_per_s", "lag_slope_per_s", "lag_end", "lag_grows",
                                          "drained_after_s", "job_cpu_cores")} | {"latency": p.get("latency")} for p in points],
    }
    return summary


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for p in sorted(results["rates"], key=lambda p: p["rate"]):
        series = p["lag_series"]
        axes[0].plot([s["t"] for s in series], [s["lag"] for s in series], label=f"{p['rate']:g}/s")
    axes[0].set(title="consumer lag (input end - committed offsets)", xlabel="seconds since the producer started",
                ylabel="messages behind")
    axes[0].legend()
    lat = results.get("latency") or {}
    if lat.get("windows"):
        values = [w["latency_s"] for w in lat["windows"]]
        axes[1].hist(values, bins=40)
        axes[1].set(title=f"window end -> read_committed consumer, {lat['rate']:g}/s", xlabel="seconds", ylabel="windows")
    swap = results.get("swap") or {}
    if swap.get("windows"):
        t0 = swap["windows"][0]["window_end"] / 1000
        for version in sorted({w["model_version"] for w in swap["windows"]}):
            ws = [w for w in swap["windows"] if w["model_version"] == version]
            axes[2].scatter([w["window_end"] / 1000 - t0 for w in ws], [w["latency_s"] for w in ws], s=8, label=f"version {version}")
        if swap.get("swap", {}).get("dropped_at"):
            axes[2].axvline(swap["swap"]["dropped_at"] - t0, color="k", linestyle="--", label="version 2 dropped")
        axes[2].set(title=f"hot update at {swap['rate']:g}/s: window latency by model version", xlabel="window end (s)",
                    ylabel="latency (s)")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_readme(out: Path, summary: dict[str, Any], command: str, env: dict[str, Any]) -> None:
    readme = out / "README.md"
    if not readme.is_file():
        return
    text = readme.read_text()
    start, end = "<!-- results -->", "<!-- /results -->"
    if start not in text or end not in text:
        return
    load = ", ".join(f"{x:.1f}" for x in env.get("load_average_at_start", ()))
    block = [start, "", f"Command: `{command}`", "",
             f"Machine: {env.get('cpus')} CPUs, load average at the start {load} (1/5/15 min); apache-flink "
             f"{env.get('apache-flink')}, onnxruntime {env.get('onnxruntime')}, noida-db {env.get('noida-db')}.", "",
             "```json", json.dumps(summary, indent=1), "```", "", end]
    head, rest = text.split(start, 1)
    readme.write_text(head + "\n".join(block) + rest.split(end, 1)[1])


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    from mmsenti.stream.commands import flink_python

    flink = flink_python()
    flink_version = subprocess.run([flink, "-c", "import importlib.metadata as m; print(m.version('apache-flink'))"],
                                   capture_output=True, text=True).stdout.strip()
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "apache-flink": flink_version, "confluent-kafka": md.version("confluent-kafka"), "noida-db": md.version("noida-db"),
            "onnxruntime": md.version("onnxruntime"), "load_average_at_start": os.getloadavg()}


# ============================================================================ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="500,2000,5000", help="comma-separated producer rates (messages/s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="produce phase of each run")
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--swap-rate", type=float, help="rate of the hot-update run (default: highest bounded rate, <= 500)")
    parser.add_argument("--search-steps", type=int, default=2, help="bisection runs between the last bounded and first growing rate")
    parser.add_argument("--scenarios", default="rates,latency,swap")
    parser.add_argument("--model", help="export folder (default export/serve/student_int8, made when absent)")
    parser.add_argument("--swap-model", help="the hot update's new version (default export/serve/student_int8_v2)")
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--window", default="5s")
    parser.add_argument("--lateness", default="1s")
    parser.add_argument("--checkpoint-interval", default="1s")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--bundle-ms", type=int, default=100)
    parser.add_argument("--warmup-windows", type=int, default=2, help="window ends after the producer starts left out of latency")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--out", help="output folder (default experiments/streaming; --quick: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: rates 100,300 for 8 s, latency at 100/s, swap at 100/s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.seconds, args.latency_rate, args.swap_rate = "100,300", 8.0, 100.0, args.swap_rate or 100.0
        args.search_steps, args.drain_timeout, args.window, args.warmup_windows = 0, 15.0, "2s", 1
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="bench_stream_")) if args.quick else ROOT / "experiments" / "streaming")
    out.mkdir(parents=True, exist_ok=True)
    scenarios = set(args.scenarios.split(","))
    rates = [float(r) for r in args.rate.split(",") if r]

    from mmsenti.stream import broker
    from mmsenti.stream.clients import KafkaSettings

    model, swap_model = ensure_exports(args.model, args.swap_model)
    work = Path(tempfile.mkdtemp(prefix="bench_stream_work_"))
    running = broker.start(broker.free_port(), work / "broker")
    settings = KafkaSettings(running.bootstrap)
    results: dict[str, Any] = {"command": " ".join(["python", "benchmarks/bench_stream.py", *(argv if argv is not None else sys.argv[1:])]),
                               "environment": environment(), "model": str(model), "swap_model": str(swap_model),
                               "settings": {k: getattr(args, k) for k in ("window", "lateness", "checkpoint_interval", "parallelism",
                                                                         "threads", "batch_size", "bundle_ms", "products", "seconds")},
                               "rates": []}
    try:
        if "rates" in scenarios:
            for rate in rates:
                log(f"rate {rate:g}/s for {args.seconds:g} s")
                results["rates"].append(run_point(args, settings, model, rate, args.seconds, work, f"r{int(rate)}"))
                log(f"  -> {json.dumps({k: results['rates'][-1].get(k) for k in ('throughput_per_s', 'lag_grows', 'lag_end', 'latency')})}")
            for _ in range(args.search_steps):
                points = sorted(results["rates"], key=lambda p: p["rate"])
                ok = [p["rate"] for p in points if p.get("lag_grows") is False]
                bad = [p["rate"] for p in points if p.get("lag_grows")]
                if not ok or not bad or min(bad) - max(ok) <= 50:
                    break
                rate = float(round((max(ok) + min(bad)) / 2, -1))
                log(f"bisection: rate {rate:g}/s")
                results["rates"].append(run_point(args, settings, model, rate, args.seconds, work, f"r{int(rate)}"))
        if "latency" in scenarios:
            log(f"latency at {args.latency_rate:g}/s")
            results["latency"] = run_point(args, settings, model, args.latency_rate, args.seconds, work, "latency")
        if "swap" in scenarios:
            bounded = [p["rate"] for p in results["rates"] if p.get("lag_grows") is False]
            rate = args.swap_rate or min(500.0, max(bounded, default=200.0))
            log(f"hot update at {rate:g}/s")
            results["swap"] = run_point(args, settings, model, rate, args.seconds, work, "swap", swap_export=swap_model)
    finally:
        broker.stop(running.port, running.data_dir)
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)
    (out / "bench.json").write_text(json.dumps(results, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(results, out / "streaming.png")
    render_readme(out, summary, results["command"], results["environment"])
    print(json.dumps(summary, indent=1))
    log(f"wrote {out / 'bench.json'}, {out / 'summary.json'}, {out / 'streaming.png'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MmsentiError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
