"""``mmsenti serve`` (wired into the ``mmsenti`` command by :mod:`mmsenti.cli`).

    mmsenti serve EXPORT_DIR [--port 8000] [--host 127.0.0.1] [--workers 1] [--max-batch 32 --max-wait-ms 2]
                  [--no-batching] [--threads 1] [--queue-size 256] [--max-queue-ms MS] [--model-repo DIR [--poll-s 2]] [--name NAME]
                  [--max-items 64] [--max-text-chars 5000] [--max-frames 1024] [--max-body-mb 16]
                  [--drain-s 30] [--access-log] [--log-level info]
                  [--no-cache | --cache-size N --cache-mb MB --cache-ttl S] [--near-cache [--near-threshold 0.8]]
                  [--redis URL] [--lexicon NAME_OR_FILE[,...]] [--mode model|lexicon|override|blend]
                  [--blend-weight 0.5] [--override-confident C] [--shadow-queue 256]
    mmsenti serve replay FILE --url http://127.0.0.1:8000 [--rate R | --recorded] [--seconds S] [--save ROWS.jsonl]
    mmsenti serve traffic --out FILE [--n 20000] [--seed 0] [--zipf 1.1] [--unique 5000] [--rate 200]

FastAPI, uvicorn and the engine load only when the command runs (``mmsenti --help`` stays fast).
The export is loaded, verified and warmed before the port opens, so a bad folder is one ``error:``
line; ``--workers N`` checks it the same way, then starts N uvicorn worker processes on one port.
``replay`` and ``traffic`` are tools beside the server (:mod:`mmsenti.serve.replay`,
:mod:`mmsenti.serve_traffic`); ``mmsenti serve replay --help`` describes each.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from mmsenti.lexicon.hybrid import MODES  # light: no jieba, no VADER until a scorer is built

__all__ = ["add_commands"]

TOOLS = ("replay", "traffic")  # `mmsenti serve TOOL ...`: words that are not export folders


class _ServeParser(argparse.ArgumentParser):
    """``mmsenti serve``'s parser: ``serve EXPORT_DIR [flags]``, or ``serve replay|traffic ...`` (the tools' own parsers).

    argparse cannot mix an optional positional (the export) with sub-commands, so the first word
    picks the parser; an export folder named like a tool is reached as ``./replay``.
    """

    tools: dict[str, argparse.ArgumentParser]

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] in getattr(self, "tools", {}):
            return self.tools[args[0]].parse_known_args(args[1:], namespace)
        return super().parse_known_args(args, namespace)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve an export over HTTP (micro-batching, hot model swap, answer cache, lexicon hybrid, "
                      "A/B split, Prometheus metrics); serve replay / serve traffic",
        description="Score text (+ pre-extracted audio/vision frames) over HTTP: POST /v1/predict, GET /healthz, "
                    "/readyz, /metrics, GET/POST /v1/models, GET /v1/experiments, OpenAPI docs at /docs. "
                    "See mmsenti/serve/README.md. Tools: `mmsenti serve replay FILE --url URL` (send a traffic file "
                    "open loop), `mmsenti serve traffic --out FILE` (write one).",
    )
    p.__class__ = _ServeParser
    p.tools = {"replay": _replay_parser(p.prog), "traffic": _traffic_parser(p.prog)}
    p.add_argument("export", nargs="?", default=None, help="an export folder (mmsenti export); optional with --model-repo")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes on the one port (default 1)")
    p.add_argument("--name", default=None, help="the model's name in the API (default: the export's manifest name)")
    p.add_argument("--max-batch", type=int, default=32, help="items per engine call (default 32; 1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long the oldest queued item waits for batch-mates (default 2; 0 = never wait)")
    p.add_argument("--no-batching", action="store_true", help="one engine call per item (same as --max-batch 1)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model (default 1)")
    p.add_argument("--queue-size", type=int, default=256,
                   help="items waiting per model beyond which requests get 429 + Retry-After (default 256)")
    p.add_argument("--max-queue-ms", type=float, default=0.0,
                   help="queued work per model (items x the engine's recent time per item) beyond which requests get "
                        "429 + Retry-After: bounds the queueing delay whatever the engine's speed (default 0 = off)")
    p.add_argument("--model-repo", default=None, help="watch DIR/<name>/<version>/ export folders and serve each "
                   "name's highest version (Triton-style layout)")
    p.add_argument("--poll-s", type=float, default=2.0, help="model-repo poll period in seconds (default 2)")
    p.add_argument("--max-items", type=int, default=64, help="items per request (default 64)")
    p.add_argument("--max-text-chars", type=int, default=5000, help="characters per text (default 5000)")
    p.add_argument("--max-frames", type=int, default=1024, help="audio/vision frames per item (default 1024)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body size in MiB (default 16)")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, how long in-flight requests may take to finish (default 30)")
    p.add_argument("--access-log", action="store_true", help="log one line per request (off by default: it costs)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default info: start, model loads and swaps, shutdown; never one line per request)")
    c = p.add_argument_group("answer cache (keyed by model name + engine version: a swap never serves old answers)")
    c.add_argument("--no-cache", action="store_true", help="no answer cache at all (every item is computed)")
    c.add_argument("--cache-size", type=int, default=100_000, help="exact-layer entries (default 100000)")
    c.add_argument("--cache-mb", type=float, default=64.0, help="exact-layer payload MiB (default 64)")
    c.add_argument("--cache-ttl", type=float, default=3600.0, help="entry lifetime in seconds (default 3600; 0 = until evicted)")
    c.add_argument("--near-cache", action="store_true",
                   help="also serve near-duplicates (MinHash over character 3-grams, negation/lexicon guard; loads lexicons)")
    c.add_argument("--near-threshold", type=float, default=0.8, help="near layer: Jaccard similarity to accept (default 0.8)")
    c.add_argument("--redis", default=None, metavar="URL", help="a shared exact layer for several workers, e.g. "
                   "redis://127.0.0.1:6379/0 (the in-process LRU stays the first layer)")
    h = p.add_argument_group("lexicon + model hybrid")
    h.add_argument("--lexicon", default=None, metavar="NAME_OR_FILE[,...]",
                   help="lexicons, first wins on a shared term: shipped names (finance_en, finance_zh, general_zh, vader) "
                        "or files (term<TAB>score[<TAB>strong]); default when a mode or --near-cache needs them: "
                        "finance_en,finance_zh,general_zh,vader")
    h.add_argument("--mode", default="model", choices=MODES,
                   help="hybrid mode of requests that name none (default model; override: a strong domain term "
                        "answers without the model)")
    h.add_argument("--blend-weight", type=float, default=0.5, help="blend: the lexicon's weight (default 0.5)")
    h.add_argument("--override-confident", type=float, default=None, metavar="C",
                   help="override: also answer from the lexicon when |compound| >= C without negation (default off)")
    p.add_argument("--shadow-queue", type=int, default=256,
                   help="shadow requests waiting for the candidate beyond which they are dropped (default 256)")
    p.set_defaults(func=_serve)


def _replay_parser(prog: str) -> argparse.ArgumentParser:
    r = argparse.ArgumentParser(prog=f"{prog} replay", description="Send a traffic file (JSONL: text, key?, ts) to a "
                                "running server open loop and print a JSON summary (rates, latency, statuses, cache "
                                "hit rates, lexicon paths, A/B shares and stickiness). See mmsenti/serve/replay.py.")
    r.add_argument("file", help="traffic file (mmsenti serve traffic --out FILE writes one)")
    r.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    when = r.add_mutually_exclusive_group()
    when.add_argument("--rate", type=float, default=None, help="send at this many requests/s (default: --recorded)")
    when.add_argument("--recorded", action="store_true", help="send at the file's own timestamps (the default)")
    r.add_argument("--seconds", type=float, default=None, help="stop sending after this many seconds")
    r.add_argument("--limit", type=int, default=None, help="only the first N lines")
    r.add_argument("--mode", default=None, choices=MODES,
                   help="hybrid mode sent with every request (default: the line's, else the server's)")
    r.add_argument("--max-in-flight", type=int, default=256,
                   help="outstanding requests at most; a request due when none is free is dropped (counted)")
    r.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s (default 10)")
    r.add_argument("--save", default=None, metavar="ROWS.jsonl", help="also write every request's record")
    r.set_defaults(func=_replay)
    return r


def _traffic_parser(prog: str) -> argparse.ArgumentParser:
    t = argparse.ArgumentParser(prog=f"{prog} traffic", description="Write a replayable traffic file: a Zipf-repeated "
                                "comment stream from SST-2 sentences with case/punctuation/space/emoji variants and "
                                "negation twins (mmsenti.serve_traffic).")
    t.add_argument("--out", required=True, help="the JSONL file to write")
    t.add_argument("--n", type=int, default=20_000, help="requests (default 20000)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s (default 1.1)")
    t.add_argument("--unique", type=int, default=5000, help="distinct SST-2 sentences drawn from (default 5000)")
    t.add_argument("--rate", type=float, default=200.0, help="recorded arrival rate, req/s (Poisson; default 200)")
    t.add_argument("--users", type=int, default=1000, help="distinct request keys (default 1000)")
    t.add_argument("--variant-rate", type=float, default=0.2, help="share of surface variants (default 0.2)")
    t.add_argument("--negation-rate", type=float, default=0.05, help="share of negation twins (default 0.05)")
    t.add_argument("--sst2", default=None, help="SST-2 folder (default ../shared/data/sst2 beside the repository)")
    t.set_defaults(func=_traffic)
    return t


def _replay(args: argparse.Namespace) -> int:
    import json

    from mmsenti.errors import MmsentiError

    try:
        import httpx  # noqa: F401
    except ModuleNotFoundError:
        raise MmsentiError("mmsenti serve replay needs httpx: pip install -e '.[serve]'") from None
    from mmsenti.serve.replay import replay

    summary = replay(args.file, args.url, rate=args.rate, seconds=args.seconds, max_in_flight=args.max_in_flight,
                     timeout=args.timeout, mode=args.mode, save=args.save, limit=args.limit)
    print(json.dumps(summary, indent=1))
    return 0


def _traffic(args: argparse.Namespace) -> int:
    import json

    from mmsenti.serve_traffic import DEFAULT_SST2, read_traffic, traffic_summary, write_traffic

    path = write_traffic(args.out, n=args.n, seed=args.seed, sst2_root=args.sst2 or DEFAULT_SST2, s=args.zipf,
                         unique=args.unique, rate=args.rate, users=args.users, variant_rate=args.variant_rate,
                         negation_rate=args.negation_rate)
    print(json.dumps({"file": str(path), **traffic_summary(read_traffic(path))}, indent=1))
    return 0


def settings_from_args(args: argparse.Namespace):
    from mmsenti.serve.config import CacheSettings, Limits, ServeSettings

    try:
        limits = Limits(max_items=args.max_items, max_text_chars=args.max_text_chars, max_frames=args.max_frames,
                        max_body_bytes=int(args.max_body_mb * (1 << 20)))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        from mmsenti.errors import MmsentiError
        from mmsenti.serve.config import validation_message

        raise MmsentiError(f"serve limits: {validation_message(err, root='')}") from None
    try:
        cache = CacheSettings(enabled=not args.no_cache, max_entries=args.cache_size, max_mb=args.cache_mb,
                              ttl_s=args.cache_ttl or None, near=args.near_cache, near_threshold=args.near_threshold,
                              redis_url=args.redis)
    except ValueError as err:
        from mmsenti.errors import MmsentiError
        from mmsenti.serve.config import validation_message

        raise MmsentiError(f"serve cache (--cache-*, --near-*): {validation_message(err, root='')}") from None
    lexicons = [x for x in args.lexicon.split(",")] if args.lexicon is not None else None
    return ServeSettings.build(
        export=args.export, name=args.name, model_repo=args.model_repo, poll_s=args.poll_s, host=args.host,
        port=args.port, workers=args.workers, threads=args.threads, max_batch=1 if args.no_batching else args.max_batch,
        max_wait_ms=0.0 if args.no_batching else args.max_wait_ms, queue_size=args.queue_size, max_queue_ms=args.max_queue_ms, limits=limits,
        drain_s=args.drain_s, access_log=args.access_log, log_level=args.log_level, handle_sighup=True, cache=cache,
        mode=args.mode, lexicons=lexicons, blend_weight=args.blend_weight, override_confident=args.override_confident,
        shadow_queue=args.shadow_queue)


def _serve(args: argparse.Namespace) -> int:
    from mmsenti.errors import MmsentiError

    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError as err:
        raise MmsentiError(f"mmsenti serve needs {err.name}: pip install -e '.[serve]'") from None
    import logging

    settings = settings_from_args(args)
    # tokenising happens in each model's one worker thread; the tokenizer's own thread pool would
    # compete with it and with the event loop for the same cores
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.export and not settings.name:
        from mmsenti.serve.app import initial_model_name

        settings = settings.model_copy(update={"name": initial_model_name(settings)})
    if settings.workers > 1:
        return _serve_workers(settings)

    import uvicorn

    from mmsenti.serve.app import create_app
    from mmsenti.serve.metrics import ServeMetrics
    from mmsenti.serve.models import ModelRegistry

    registry = ModelRegistry(settings, ServeMetrics())
    model = None
    if settings.export:
        model = registry.preload(settings.name, settings.export)  # LoadFailed: one error line, before the port opens
    app = create_app(settings, registry)  # lexicons and the cache: a bad file or flag is one error line too
    if model is not None:
        _announce(settings, f"{model.name} version {model.version} ({model.load_seconds:.2f} s to load, verify, warm)")
    else:
        _announce(settings, f"models from {settings.model_repo}")
    _quiet_after_drain()
    uvicorn.run(app, **_uvicorn_options(settings))
    return 0


def _quiet_after_drain() -> None:
    """After a graceful shutdown on SIGTERM, uvicorn raises the signal again for the previous handler;
    with the default one the process would die by the signal instead of exiting 0 once drained."""
    import signal

    signal.signal(signal.SIGTERM, lambda sig, frame: None)


def _serve_workers(settings) -> int:
    import shutil
    import tempfile

    import uvicorn

    from mmsenti.serve.metrics import MULTIPROC_ENV

    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):  # workers share their samples through this folder (see serve.metrics)
        own_dir = tempfile.mkdtemp(prefix="mmsenti-serve-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        if settings.export:
            from mmsenti.serve.models import prepare_model

            model = prepare_model(settings.name, settings.export, settings)  # the same checks each worker will make
            _announce(settings, f"{model.name} version {model.version} in {settings.workers} worker processes")
            del model
        else:
            _announce(settings, f"models from {settings.model_repo} in {settings.workers} worker processes")
        if settings.needs_lexicons:  # a bad lexicon file fails here in one line, not in every worker
            from mmsenti.lexicon.rules import Scorer

            Scorer(settings.lexicon_specs())
        os.environ.update(settings.to_env())
        uvicorn.run("mmsenti.serve.app:app_from_env", factory=True, workers=settings.workers,
                    **_uvicorn_options(settings))
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def _uvicorn_options(settings) -> dict:
    return {"host": settings.host, "port": settings.port, "access_log": settings.access_log,
            "log_level": settings.log_level, "timeout_graceful_shutdown": math.ceil(settings.drain_s),
            "server_header": False}


def _announce(settings, what: str) -> None:
    batching = (f"batches of up to {settings.max_batch}, {settings.max_wait_ms:g} ms wait" if settings.max_batch > 1
                else "no batching")
    c = settings.cache
    cache = "no cache" if not c.enabled else (f"cache {c.max_entries} entries/{c.max_mb:g} MiB"
                                              + (" + near" if c.near else "") + (" + redis" if c.redis_url else ""))
    mode = f", mode {settings.mode}" if settings.mode != "model" else ""
    print(f"mmsenti serve: {what}; http://{settings.host}:{settings.port} ({batching}, queue {settings.queue_size} "
          f"items{f' / {settings.max_queue_ms:g} ms' if settings.max_queue_ms else ''}, {settings.threads} engine thread(s), {cache}{mode})", file=sys.stderr, flush=True)
