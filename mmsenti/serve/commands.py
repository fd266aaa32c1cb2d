"""``mmsenti serve`` (wired into the ``mmsenti`` command by :mod:`mmsenti.cli`).

    mmsenti serve EXPORT_DIR [--port 8000] [--host 127.0.0.1] [--workers 1] [--max-batch 32 --max-wait-ms 2]
                  [--no-batching] [--threads 1] [--queue-size 256] [--model-repo DIR [--poll-s 2]] [--name NAME]
                  [--max-items 64] [--max-text-chars 5000] [--max-frames 1024] [--max-body-mb 16]
                  [--drain-s 30] [--access-log] [--log-level info]

FastAPI, uvicorn and the engine load only when the command runs (``mmsenti --help`` stays fast).
The export is loaded, verified and warmed before the port opens, so a bad folder is one ``error:``
line; ``--workers N`` checks it the same way, then starts N uvicorn worker processes on one port.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve an export over HTTP (micro-batching, hot model swap, Prometheus metrics)",
        description="Score text (+ pre-extracted audio/vision frames) over HTTP: POST /v1/predict, GET /healthz, "
                    "/readyz, /metrics, GET/POST /v1/models, OpenAPI docs at /docs. See mmsenti/serve/README.md.",
    )
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
    p.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace):
    from mmsenti.serve.config import Limits, ServeSettings

    try:
        limits = Limits(max_items=args.max_items, max_text_chars=args.max_text_chars, max_frames=args.max_frames,
                        max_body_bytes=int(args.max_body_mb * (1 << 20)))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        from mmsenti.errors import MmsentiError
        from mmsenti.serve.config import validation_message

        raise MmsentiError(f"serve limits: {validation_message(err, root='')}") from None
    return ServeSettings.build(
        export=args.export, name=args.name, model_repo=args.model_repo, poll_s=args.poll_s, host=args.host,
        port=args.port, workers=args.workers, threads=args.threads, max_batch=1 if args.no_batching else args.max_batch,
        max_wait_ms=0.0 if args.no_batching else args.max_wait_ms, queue_size=args.queue_size, limits=limits,
        drain_s=args.drain_s, access_log=args.access_log, log_level=args.log_level, handle_sighup=True)


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
    if settings.export:
        model = registry.preload(settings.name, settings.export)  # LoadFailed: one error line, before the port opens
        _announce(settings, f"{model.name} version {model.version} ({model.load_seconds:.2f} s to load, verify, warm)")
    else:
        _announce(settings, f"models from {settings.model_repo}")
    _quiet_after_drain()
    uvicorn.run(create_app(settings, registry), **_uvicorn_options(settings))
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
    print(f"mmsenti serve: {what}; http://{settings.host}:{settings.port} ({batching}, queue {settings.queue_size} "
          f"items, {settings.threads} engine thread(s))", file=sys.stderr, flush=True)
