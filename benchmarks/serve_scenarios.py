"""Serving-intelligence scenarios (issue 13): the answer cache, the lexicon hybrid, the A/B split and shadow traffic.

    python benchmarks/serve_scenarios.py cache   --export export/serve/student_int8 [--seconds 15] [--out DIR]
    python benchmarks/serve_scenarios.py lexicon --export export/serve/student_int8
    python benchmarks/serve_scenarios.py ab      --export export/serve/student_int8 --candidate export/serve/student_int8_v2
    python benchmarks/serve_scenarios.py all     --make-exports export/serve        # tiny engines (bench_serve's), then all three
    python benchmarks/serve_scenarios.py cache --export DIR --quick                 # a short smoke run

Each scenario is a function ``run_<name>(server, export_dir, out_dir, seconds, **options) -> dict`` that
prints its JSON summary and writes ``out_dir/<name>.json`` (``benchmarks/bench_serve.py --scenario``
can call them). ``server`` is ``None`` (start ``mmsenti serve`` subprocesses here: every point that
needs a cold cache or other flags gets its own, always stopped), a factory ``(name, export, flags)
-> context manager yielding an object with .base (URL) and .cpu_seconds()``, or the URL of a server
already running — then only the parts that need no other server flags run, the rest say ``skipped``.

Load comes from the same two generators as ``bench_serve.py``: k6's open-loop ``constant-arrival-rate``
(bench_serve's runner, for every max-rate search: p99 <= ``--p99-bound`` ms, no errors, >= 95% of the
offered rate answered; rate ladder then ``--search-steps`` bisections) and ``mmsenti serve replay``
(:mod:`mmsenti.serve.replay`, open loop in Python, for what needs each response: cache layers, lexicon
paths, the A/B variant per key).

* **cache** — the Zipf stream (``mmsenti.serve_traffic``: s = 1.1, 20k requests over 5k SST-2
  sentences with 20% surface variants and 5% negation twins), replayed once against a server with
  the exact and near layers: the hit rate of each layer (overall and per traffic kind), the near
  hits on negation twins (polarity-flipping hits: must be 0), the server time of cached and
  computed answers (``Server-Timing``). Then the max rate at the p99 bound with the cache on
  (default server: exact layer) vs ``--no-cache``, the stream's texts as the k6 bodies and a fresh
  server per point, so each point sees the stream's own hit rate from a cold cache (reported).
* **lexicon** — SST-2 dev (872 labelled sentences) and the MOSI valid transcripts
  (``label_trainvalid.csv``, mode ``valid``) through the server in modes ``model``, ``override``,
  ``blend``, ``lexicon``: accuracy (the sign of the score; MOSI also MAE / Non0 Acc-2, MMSA's
  conventions), the share answered by the rules, the deltas against ``model``; the
  ``--override-confident`` sweep (offline, the same :func:`mmsenti.lexicon.hybrid.plan` on the
  model's scores) picks the most permissive threshold within 0.5 pt of ``model`` on SST-2, and the
  max rate of ``override`` at that threshold vs ``model`` (no cache: the rules are the lever).
  ``benchmarks/data/finance_examples.tsv`` (50 hand-written English + Chinese finance headlines):
  the model's errors and how many ``override`` / ``blend`` fix (and break).
* **ab** — a 90/10 split over 10k keyed requests of the stream (1000 users): the observed split,
  the share of keys that always met one variant, ``GET /v1/experiments`` (counts, mean score,
  polarity mix, latency, z-test); then the primary's p99 at a fixed rate with ``{"shadow":
  "candidate"}`` off and on (interleaved, no cache so the shadow does real work) and the shadow's
  comparison (MAE, agreement, drops).

Every figure comes from one run on one machine; compare within a run only (the machine's load is
recorded, as in bench_serve).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_serve as bs  # noqa: E402  (its k6 runner, server processes, statistics)

from mmsenti.errors import MmsentiError  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SST2 = SHARED / "sst2"
MOSI_TRANSCRIPTS = SHARED / "mosi" / "label_trainvalid.csv"
FINANCE = Path(__file__).resolve().parent / "data" / "finance_examples.tsv"
LEXICONS = "finance_en,finance_zh,general_zh,vader"
MODES = ("model", "override", "blend", "lexicon")
CONFIDENT_SWEEP = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3)
log = bs.log


# ============================================================================ servers
class Fixed:
    """A server somebody else started (``server`` given as a URL): no flags can be changed."""

    def __init__(self, url: str):
        self.base = url.rstrip("/")

    def cpu_seconds(self) -> float:
        return 0.0


def local_factory(work: Path, threads: int = 1, max_batch: int = 32, max_wait_ms: float = 2.0,
                  start_timeout: float = 120.0) -> Callable:
    """``(name, export, flags)`` -> a context manager running ``mmsenti serve EXPORT flags`` on a free port."""

    @contextlib.contextmanager
    def start(name: str, export: Path, flags: list[str]):
        port = bs.free_port()
        cmd = [sys.executable, "-m", "mmsenti.cli", "serve", str(export), "--host", "127.0.0.1", "--port", str(port),
               "--threads", str(threads), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), *flags]
        server = bs.Server(name, cmd, port, "/readyz", work / f"{name}.log")
        try:
            server.start(timeout=start_timeout)
            yield server
        finally:
            server.stop()

    return start


def resolve_server(server, work: Path, args) -> tuple[Callable | None, Fixed | None]:
    if server is None:
        return local_factory(work, args.threads, args.max_batch, args.max_wait_ms), None
    if isinstance(server, str):
        return None, Fixed(server)
    return server, None


def k6_args(args) -> argparse.Namespace:
    return argparse.Namespace(max_vus=args.max_vus, request_timeout=args.request_timeout)


def metrics_of(base: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = bs.http_json("GET", base + "/metrics")
    out: dict[str, list] = {}
    if status != 200 or not isinstance(text, str):
        return out
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def metric(samples: dict, name: str, **labels) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def cache_counts(base: str) -> dict[str, float]:
    m = metrics_of(base)
    return {f"{layer}_{what}": metric(m, f"mmsenti_cache_{what}_total", layer=layer)
            for layer in ("exact", "near") for what in ("hits", "misses")}


# ============================================================================ max-rate search
def rate_search(points_for: dict[str, Callable[[float], dict]], rates: list[float], bound: float, steps: int) -> dict:
    """Interleaved rate ladders (one per configuration): each rate in turn for every configuration still passing,
    then ``steps`` bisections each; ``{config: {"points": [...], "max_rate_rps": R}}``."""
    results = {name: [] for name in points_for}
    failed: set[str] = set()
    for k, rate in enumerate(rates):
        order = list(points_for) if k % 2 == 0 else list(reversed(points_for))
        for name in order:
            if name in failed:
                continue
            point = points_for[name](rate)
            results[name].append(point)
            if not bs.passes(point, bound):
                failed.add(name)
    for _ in range(steps):
        for name, fn in points_for.items():
            mid = bs.bisect_rate(results[name], bound)
            if mid is not None:
                results[name].append(fn(mid))
    return {name: {"max_rate_rps": bs.max_rate(points, bound), "points": sorted(points, key=lambda p: p["offered_rps"])}
            for name, points in results.items()}


def k6_point(server, bodies: "bs.Bodies", rate: float, seconds: float, warmup: float, work: Path, args,
             with_cache: bool = False) -> dict:
    before = cache_counts(server.base) if with_cache else None
    phases = [bs.Phase("warmup", rate, warmup), bs.Phase("measure", rate, seconds)]
    reqs = bs.run_k6(server.base + "/v1/predict", bodies, phases, work, k6_args(args), server=server)
    point = bs.point_stats(reqs)
    if with_cache:
        after = cache_counts(server.base)
        lookups = after["exact_hits"] + after["exact_misses"] - before["exact_hits"] - before["exact_misses"]
        point["exact_hit_rate"] = round((after["exact_hits"] - before["exact_hits"]) / lookups, 4) if lookups else None
    log(f"  {rate:g} req/s: p99 {point['p99_ms']} ms, achieved {point['achieved_rps']}, errors {point['error_count']}"
        + (f", exact hit rate {point.get('exact_hit_rate')}" if with_cache else ""))
    return point


def slim(point: dict) -> dict:
    keep = ("offered_rps", "achieved_rps", "p50_ms", "p99_ms", "error_count", "exact_hit_rate", "server_cpu_cores",
            "generator_cpu_cores")
    return {k: point[k] for k in keep if k in point}


# ============================================================================ data
def stream(out_dir: Path, n: int, seed: int = 0, users: int = 1000) -> Path:
    from mmsenti.serve_traffic import write_traffic

    path = out_dir / f"traffic_{n}_seed{seed}.jsonl"
    if not path.is_file():
        if (SST2 / "train.tsv").is_file():
            write_traffic(path, n=n, seed=seed, sst2_root=SST2, users=users)
        else:
            log(f"{SST2} is absent: the stream is built from bench_serve's built-in sentences")
            write_traffic(path, n=n, seed=seed, sentences=bs.FALLBACK_TEXTS, users=users)
    return path


def sst2_dev() -> list[tuple[str, int]]:
    from mmsenti.data.sst2 import read_tsv

    return [(s["text"], 1 if s["label"] > 0 else 0) for s in read_tsv(SST2 / "dev.tsv", "dev")]


def mosi_valid() -> list[tuple[str, float]]:
    with MOSI_TRANSCRIPTS.open(newline="", encoding="utf-8") as fh:
        return [(r["text"], float(r["label"])) for r in csv.DictReader(fh) if r["mode"] == "valid" and r["text"].strip()]


def finance_examples() -> list[tuple[str, int]]:
    rows = [line.rstrip("\n").split("\t") for line in FINANCE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    return [(t, int(y)) for t, y in rows[1:]]


def score_all(base: str, texts: list[str], mode: str, batch: int = 32) -> tuple[np.ndarray, list[str]]:
    """Scores and answering paths of ``texts`` in ``mode`` (requests of ``batch`` items)."""
    scores, paths = [], []
    for i in range(0, len(texts), batch):
        status, body = bs.http_json("POST", base + "/v1/predict",
                                    {"items": [{"text": t} for t in texts[i:i + batch]], "mode": mode}, timeout=60)
        if status != 200:
            raise MmsentiError(f"mode {mode}: the server answered {status}: {body}")
        for item in body["items"]:
            scores.append(item["score"])
            paths.append((item.get("lexicon") or {}).get("path", "model"))
    return np.asarray(scores, float), paths


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return round(float(((scores > 0) == (labels > 0)).mean()) * 100, 2)


# ============================================================================ cache
def run_cache(server=None, export_dir: Path | None = None, out_dir: Path | None = None, seconds: float = 15.0,
              args: argparse.Namespace | None = None, **options) -> dict:
    args = args or parse_args(["cache", *(["--export", str(export_dir)] if export_dir else [])])
    out_dir, work = prepare(out_dir, args)
    factory, fixed = resolve_server(server, work, args)
    from mmsenti.serve.replay import replay
    from mmsenti.serve_traffic import read_traffic, traffic_summary

    traffic = stream(out_dir, args.requests)
    report: dict[str, Any] = {"scenario": "cache", "stream": traffic_summary(read_traffic(traffic)), "traffic": str(traffic)}

    # 1. hit rates of each layer over the whole stream, the server time of a cached answer
    log(f"cache: replaying {traffic.name} at {args.replay_rate:g} req/s (exact + near layers)")
    with (factory("cache_near", export_dir, ["--near-cache"]) if factory else contextlib.nullcontext(fixed)) as srv:
        rows_path = out_dir / "cache_replay_rows.jsonl"
        replayed = replay(traffic, srv.base, rate=args.replay_rate, max_in_flight=args.max_vus, save=rows_path)
        rows = [json.loads(x) for x in rows_path.read_text().splitlines()]
        flips = sum(1 for r in rows if r.get("kind") == "negation" and r.get("cached") == "near")
        m = metrics_of(srv.base)
    report["replay"] = {k: replayed[k] for k in ("sent", "dropped", "statuses", "offered_rps", "achieved_rps", "latency_ms",
                                                 "cached", "hit_rate", "hit_rate_by_kind", "server_ms")}
    report["near_hits_on_negation_twins"] = flips
    report["near_guard_rejects"] = metric(m, "mmsenti_cache_guard_rejects_total", layer="near")

    # 2. max rate at the p99 bound: cache on (default server) vs off, a cold server per point
    if factory is None:
        report["max_rate"] = {"skipped": "a fixed --url cannot be restarted with and without the cache"}
    else:
        texts = [r["text"] for r in read_traffic(traffic)]
        bodies = bs.Bodies.write(work / "bodies_stream.json", bs.text_bodies(texts))

        def point(flags: list[str], with_cache: bool):
            def run(rate: float) -> dict:
                with factory(f"cache_{'on' if with_cache else 'off'}_{rate:g}", export_dir, flags) as srv:
                    return k6_point(srv, bodies, rate, seconds, args.warmup, work, args, with_cache=with_cache)
            return run

        log(f"cache: max rate at p99 <= {args.p99_bound:g} ms, cache on vs off, rates {args.rates}")
        search = rate_search({"cache_on": point([], True), "cache_off": point(["--no-cache"], False)}, args.rates,
                             args.p99_bound, args.search_steps)
        on, off = search["cache_on"]["max_rate_rps"], search["cache_off"]["max_rate_rps"]
        report["max_rate"] = {"p99_bound_ms": args.p99_bound, "cache_on_rps": on, "cache_off_rps": off,
                              "ratio": bs.ratio(on, off),
                              "points": {k: [slim(p) for p in v["points"]] for k, v in search.items()}}
    sm = report["replay"]["server_ms"]
    report["targets"] = [
        target("exact and near hit rates on the Zipf stream (s=1.1)", "reported", None,
               exact=report["replay"]["hit_rate"]["exact"], near=report["replay"]["hit_rate"]["near"]),
        target("near layer: polarity-flipping hits on negation twins", "0", flips == 0, hits=flips),
        target("cached answer: server time p50", "<= 0.5 ms", sm["cached_p50"] is not None and sm["cached_p50"] <= 0.5,
               cached_p50_ms=sm["cached_p50"], computed_p50_ms=sm["computed_p50"]),
        target("max rate at p99 bound, cache on vs off", ">= 2x",
               None if "ratio" not in report["max_rate"] else (report["max_rate"]["ratio"] or 0) >= 2,
               ratio=report["max_rate"].get("ratio"), on=report["max_rate"].get("cache_on_rps"),
               off=report["max_rate"].get("cache_off_rps")),
    ]
    return finish("cache", report, out_dir)


# ============================================================================ lexicon
def run_lexicon(server=None, export_dir: Path | None = None, out_dir: Path | None = None, seconds: float = 15.0,
                args: argparse.Namespace | None = None, **options) -> dict:
    args = args or parse_args(["lexicon", *(["--export", str(export_dir)] if export_dir else [])])
    out_dir, work = prepare(out_dir, args)
    factory, fixed = resolve_server(server, work, args)
    from mmsenti.lexicon.hybrid import plan
    from mmsenti.lexicon.rules import Scorer

    sets: dict[str, list] = {}
    if (SST2 / "dev.tsv").is_file():
        sets["sst2_dev"] = sst2_dev()
    else:
        log(f"{SST2 / 'dev.tsv'} is absent: no SST-2 accuracy")
    if MOSI_TRANSCRIPTS.is_file():
        sets["mosi_valid"] = mosi_valid()
    else:
        log(f"{MOSI_TRANSCRIPTS} is absent: no MOSI accuracy")
    sets["finance_examples"] = finance_examples()
    report: dict[str, Any] = {"scenario": "lexicon", "lexicons": LEXICONS, "datasets": {k: len(v) for k, v in sets.items()}}
    flags = ["--no-cache", "--lexicon", LEXICONS]
    with (factory("lexicon_accuracy", export_dir, flags) if factory else contextlib.nullcontext(fixed)) as srv:
        status, models = bs.http_json("GET", srv.base + "/v1/models")
        task = "classification"
        if status == 200:
            from mmsenti.runtime.manifest import read_manifest

            active = next(m for m in models["models"] if m["name"] == models["active"])
            task = read_manifest(active["path"]).get("task", "regression")
        report["task"] = task
        answers = {name: {mode: score_all(srv.base, [t for t, _ in rows], mode) for mode in MODES}
                   for name, rows in sets.items()}
    scorer = Scorer(LEXICONS.split(","))
    for name, rows in sets.items():
        labels = np.asarray([y for _, y in rows], float)
        res: dict[str, Any] = {}
        base_acc = accuracy(answers[name]["model"][0], labels)
        for mode in MODES:
            scores, paths = answers[name][mode]
            entry = {"acc_2": accuracy(scores, labels), "rules_share": round(paths.count("lexicon") / len(paths), 4),
                     "paths": {p: paths.count(p) for p in sorted(set(paths))}}
            entry["acc_2_delta_pt"] = round(entry["acc_2"] - base_acc, 2)
            if name == "mosi_valid":
                from mmsenti.metrics import mosi_regression_metrics

                mm = mosi_regression_metrics(scores, labels)
                entry.update(mae=round(mm["MAE"], 4), non0_acc_2=round(mm["Non0_acc_2"] * 100, 2))
            res[mode] = entry
        if name == "finance_examples":
            model_ok = (answers[name]["model"][0] > 0) == (labels > 0)
            for mode in ("override", "blend", "lexicon"):
                ok = (answers[name][mode][0] > 0) == (labels > 0)
                res[mode]["model_errors"] = int((~model_ok).sum())
                res[mode]["fixed"] = int((~model_ok & ok).sum())
                res[mode]["broken"] = int((model_ok & ~ok).sum())
        report[name] = res

    # the general-lexicon short cut: offline sweep of --override-confident on the model's own scores
    chosen = None
    if "sst2_dev" in sets:
        texts = [t for t, _ in sets["sst2_dev"]]
        labels = np.asarray([y for _, y in sets["sst2_dev"]], float)
        model_scores = answers["sst2_dev"]["model"][0]
        base_acc = accuracy(model_scores, labels)
        sweep = []
        for c in (None, *CONFIDENT_SWEEP):
            decided = [plan(t, "override", scorer, task, confident=c).finish(s) for t, s in zip(texts, model_scores)]
            acc = accuracy(np.asarray([d.score for d in decided]), labels)
            share = sum(d.path == "lexicon" for d in decided) / len(decided)
            sweep.append({"confident": c, "acc_2": acc, "acc_2_delta_pt": round(acc - base_acc, 2),
                          "rules_share": round(share, 4)})
        report["override_confident_sweep_sst2"] = sweep
        within = [s for s in sweep if s["confident"] is not None and s["acc_2_delta_pt"] >= -0.5]
        chosen = max(within, key=lambda s: s["rules_share"]) if within else None
        report["override_confident_chosen"] = chosen["confident"] if chosen else None

    # max rate: override (at the chosen threshold) vs model, same server, no cache
    if factory is None:
        report["max_rate"] = {"skipped": "a fixed --url cannot be restarted with --override-confident"}
    elif "sst2_dev" not in sets:
        report["max_rate"] = {"skipped": "needs SST-2 dev"}
    else:
        texts = [t for t, _ in sets["sst2_dev"]]
        bodies = {mode: bs.Bodies.write(work / f"bodies_{mode}.json",
                                        [json.dumps({"items": [{"text": t}], "mode": mode}) for t in texts])
                  for mode in ("model", "override")}
        c = chosen["confident"] if chosen else None
        extra = ["--override-confident", str(c)] if c is not None else []
        log(f"lexicon: max rate at p99 <= {args.p99_bound:g} ms, override (confident={c}) vs model")
        with factory("lexicon_rate", export_dir, [*flags, *extra]) as srv:
            scores, paths = score_all(srv.base, texts, "override")  # the sweep's choice, through the server
            labels = np.asarray([y for _, y in sets["sst2_dev"]], float)
            report["override_chosen_sst2_server"] = {"confident": c, "acc_2": accuracy(scores, labels),
                                                     "rules_share": round(paths.count("lexicon") / len(paths), 4)}
            search = rate_search({mode: (lambda rate, mode=mode: k6_point(srv, bodies[mode], rate, seconds, args.warmup,
                                                                          work, args)) for mode in bodies},
                                 args.rates, args.p99_bound, args.search_steps)
        o, mo = search["override"]["max_rate_rps"], search["model"]["max_rate_rps"]
        report["max_rate"] = {"override_confident": c, "override_rps": o, "model_rps": mo, "ratio": bs.ratio(o, mo),
                              "points": {k: [slim(p) for p in v["points"]] for k, v in search.items()}}
    fin = report["finance_examples"]
    targets = []
    for name in ("sst2_dev", "mosi_valid"):
        if name in report:
            targets.append(target(f"override (strong domain terms only) on {name}: Acc-2 within 0.5 pt of model",
                                  ">= -0.5 pt", report[name]["override"]["acc_2_delta_pt"] >= -0.5,
                                  delta_pt=report[name]["override"]["acc_2_delta_pt"],
                                  rules_share=report[name]["override"]["rules_share"],
                                  **({"mae": report[name]["override"]["mae"], "model_mae": report[name]["model"]["mae"]}
                                     if name == "mosi_valid" else {})))
    if "override_chosen_sst2_server" in report:
        chosen_run = report["override_chosen_sst2_server"]
        targets.append(target("override with the chosen --override-confident on sst2_dev: within 0.5 pt of model",
                              ">= -0.5 pt", chosen_run["acc_2"] - report["sst2_dev"]["model"]["acc_2"] >= -0.5,
                              **chosen_run, model_acc_2=report["sst2_dev"]["model"]["acc_2"]))
    targets.append(target("override max rate vs model (the QPS lever)", ">= 1.5x",
                          None if "ratio" not in report["max_rate"] else (report["max_rate"]["ratio"] or 0) >= 1.5,
                          ratio=report["max_rate"].get("ratio"), confident=report["max_rate"].get("override_confident")))
    targets.append(target("finance examples: model errors fixed by override / blend", "counted",
                          fin["override"]["fixed"] > 0, model_errors=fin["override"]["model_errors"],
                          override_fixed=fin["override"]["fixed"], override_broken=fin["override"]["broken"],
                          blend_fixed=fin["blend"]["fixed"], blend_broken=fin["blend"]["broken"]))
    report["targets"] = targets
    return finish("lexicon", report, out_dir)


# ============================================================================ A/B and shadow
def run_ab(server=None, export_dir: Path | None = None, out_dir: Path | None = None, seconds: float = 15.0,
           args: argparse.Namespace | None = None, candidate: Path | None = None, **options) -> dict:
    args = args or parse_args(["ab", *(["--export", str(export_dir)] if export_dir else [])])
    out_dir, work = prepare(out_dir, args)
    factory, fixed = resolve_server(server, work, args)
    from mmsenti.serve.replay import replay

    candidate = Path(candidate or args.candidate or bs.swap_copy(export_dir, work))
    traffic = stream(out_dir, args.ab_requests, seed=1)
    report: dict[str, Any] = {"scenario": "ab", "candidate": str(candidate), "traffic": str(traffic)}

    def load_candidate(base: str) -> None:
        status, body = bs.http_json("POST", base + "/v1/models", {"name": "candidate", "path": str(candidate)}, timeout=120)
        if status != 200:
            raise MmsentiError(f"loading the candidate failed ({status}): {body}")

    # 1. the 90/10 split over keyed requests
    with (factory("ab_split", export_dir, ["--name", "primary"]) if factory else contextlib.nullcontext(fixed)) as srv:
        load_candidate(srv.base)
        status, body = bs.http_json("POST", srv.base + "/v1/models", {"traffic": {"primary": 0.9, "candidate": 0.1}})
        if status != 200:
            raise MmsentiError(f"setting the split failed ({status}): {body}")
        log(f"ab: replaying {args.ab_requests} keyed requests at {args.ab_replay_rate:g} req/s over a 90/10 split")
        replayed = replay(traffic, srv.base, rate=args.ab_replay_rate, max_in_flight=args.max_vus)
        _, experiments = bs.http_json("GET", srv.base + "/v1/experiments")
        bs.http_json("POST", srv.base + "/v1/models", {"action": "rollback"})
    share = replayed["models"].get("candidate", {}).get("share", 0.0)
    report["split"] = {"requests": replayed["answered_200"], "statuses": replayed["statuses"],
                       "observed": {m: v["share"] for m, v in replayed["models"].items()},
                       "candidate_share_pt_off": round((share - 0.1) * 100, 2), "stickiness": replayed["stickiness"],
                       "experiments": experiments}

    # 2. shadow on: the primary's p99 at a fixed rate, shadow off / on interleaved, no cache
    if factory is None:
        report["shadow"] = {"skipped": "a fixed --url: start the server with --no-cache and POST the shadow yourself"}
    else:
        texts, _ = bs.load_texts()
        bodies = bs.Bodies.write(work / "bodies_text.json", bs.text_bodies(texts))
        runs: dict[str, list] = {"off": [], "on": []}
        comparisons = []
        with factory("ab_shadow", export_dir, ["--name", "primary", "--no-cache"]) as srv:
            load_candidate(srv.base)
            for k in range(args.rounds):
                for state in (("off", "on") if k % 2 == 0 else ("on", "off")):
                    bs.http_json("POST", srv.base + "/v1/models", {"shadow": "candidate" if state == "on" else None})
                    log(f"ab: shadow {state}, {args.ab_rate:g} req/s")
                    runs[state].append(slim(k6_point(srv, bodies, args.ab_rate, seconds, args.warmup, work, args)))
                    if state == "on":  # the shadow's comparison of this run (a new shadow starts from zero)
                        time.sleep(1.0)  # the last copies finish
                        _, experiments = bs.http_json("GET", srv.base + "/v1/experiments")
                        comparisons.append(experiments.get("shadow") if isinstance(experiments, dict) else None)
        p99 = {s: float(np.mean([r["p99_ms"] for r in v if r["p99_ms"] is not None])) for s, v in runs.items()}
        report["shadow"] = {"rate_rps": args.ab_rate, "runs": runs,
                            "primary_p99_ms": {s: round(v, 2) for s, v in p99.items()},
                            "p99_change_pct": round((p99["on"] / p99["off"] - 1) * 100, 1) if p99["off"] else None,
                            "comparisons": comparisons}
    split = report["split"]
    report["targets"] = [
        target("A/B 90/10: observed split", "within ±1 pt", abs(split["candidate_share_pt_off"]) <= 1.0,
               candidate_share=split["observed"].get("candidate"), requests=split["requests"]),
        target("A/B: stickiness per key", "100%", split["stickiness"]["sticky_share"] == 1.0,
               keys=split["stickiness"]["keys_with_2_or_more"], sticky_share=split["stickiness"]["sticky_share"]),
        target("shadow on: primary p99 rise", "<= 10%",
               None if "p99_change_pct" not in report["shadow"] else report["shadow"]["p99_change_pct"] <= 10,
               change_pct=report["shadow"].get("p99_change_pct"), p99_ms=report["shadow"].get("primary_p99_ms")),
    ]
    return finish("ab", report, out_dir)


# ============================================================================ shared
def target(name: str, bound: str, met: bool | None, **figures) -> dict:
    return {"target": name, "bound": bound, "met": met, **figures}


def prepare(out_dir: Path | None, args) -> tuple[Path, Path]:
    out = Path(out_dir or args.out or (Path(tempfile.gettempdir()) / "serve_scenarios_quick" if args.quick
                                      else ROOT / "experiments" / "serving_intel"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve_scenarios_"))
    WORKS.append(work)
    return out, work


WORKS: list[Path] = []


def finish(name: str, report: dict, out_dir: Path) -> dict:
    from mmsenti.io import write_json_atomic

    report["environment"] = bs.environment()
    write_json_atomic(out_dir / f"{name}.json", report)
    summary = {"scenario": name, "targets": report["targets"], "file": str(out_dir / f"{name}.json")}
    print(json.dumps(summary, indent=1, ensure_ascii=False), flush=True)
    return report


SCENARIOS = {"cache": run_cache, "lexicon": run_lexicon, "ab": run_ab}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=[*SCENARIOS, "all"])
    ap.add_argument("--export", type=Path, help="text-only engine (export folder)")
    ap.add_argument("--candidate", type=Path, help="ab: the candidate engine (default: a copy of --export)")
    ap.add_argument("--make-exports", type=Path, metavar="OUT", help="bench_serve's tiny engines into OUT first (reused)")
    ap.add_argument("--url", help="a running server instead of starting them here (only the parts that need no restart)")
    ap.add_argument("--out", type=Path, help="where <scenario>.json go (default experiments/serving_intel; --quick: a temp folder)")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per k6 point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rates", default="100,200,400,800,1600", help="rate ladder of the max-rate searches, req/s")
    ap.add_argument("--search-steps", type=int, default=2)
    ap.add_argument("--p99-bound", type=float, default=25.0)
    ap.add_argument("--requests", type=int, default=20_000, help="cache: requests in the Zipf stream")
    ap.add_argument("--replay-rate", type=float, default=400.0, help="cache: replay rate of the stream, req/s")
    ap.add_argument("--ab-requests", type=int, default=10_000)
    ap.add_argument("--ab-replay-rate", type=float, default=300.0)
    ap.add_argument("--ab-rate", type=float, default=100.0, help="ab: the fixed rate of the shadow off/on runs")
    ap.add_argument("--rounds", type=int, default=2, help="ab: shadow off/on rounds (interleaved)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--request-timeout", type=float, default=5.0)
    ap.add_argument("--max-vus", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="a short smoke run: small stream, 2-s points, no bisection")
    args = ap.parse_args(argv)
    if args.quick:
        bs.apply_quick(args, argv, {"seconds": 2.0, "warmup": 1.0, "rates": "50,150", "search_steps": 0, "requests": 600,
                                    "replay_rate": 150.0, "ab_requests": 400, "ab_replay_rate": 150.0, "ab_rate": 40.0,
                                    "rounds": 1})
    args.rates = sorted(float(r) for r in str(args.rates).split(",") if r.strip())
    return args


def main(argv: list[str] | None = None) -> int:
    import signal

    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # finally-blocks stop the servers on these too
        signal.signal(sig, lambda *_: sys.exit(128 + 15))
    try:
        bs.k6_binary()
        if args.make_exports:
            made = bs.make_exports(args.make_exports)
            args.export = args.export or made["student_int8"]
            args.candidate = args.candidate or made["student_int8_v2"]
        if not args.url and (not args.export or not (args.export / "manifest.json").is_file()):
            raise MmsentiError("give --export DIR (a text-only export folder), --make-exports OUT or --url URL")
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        for name in names:
            SCENARIOS[name](args.url, args.export, args.out, args.seconds, args=args)
        return 0
    except MmsentiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for server in list(bs.LIVE):
            server.stop()
        for work in WORKS:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
