"""The library anchor of ``bench_serve.py``: LitServe serving an export through our one ``Predictor``.

    python benchmarks/serve_anchor_litserve.py EXPORT_DIR --port 8100 [--max-batch 32 --max-wait-ms 2] [--threads 1]

LitServe 0.2.19 (``pip install '.[bench]'``) with its own dynamic batching (``max_batch_size``,
``batch_timeout``): one HTTP server process and one inference worker process (its default on CPU),
the same request body as ``mmsenti serve`` (``POST /v1/predict {"items": [{"text": ...}]}``, one
text per request, as the benchmark's curve sends), ``GET /health`` once the worker has loaded and
warmed the engine. Nothing of the model is re-implemented here: tokenising, the engine call and the
polarity rule are ``mmsenti.runtime.predictor.Predictor``'s.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import litserve as ls  # noqa: E402


class PredictorAPI(ls.LitAPI):
    """One text per request in, ``{"items": [{"score", "polarity", "class_7"}]}`` out."""

    def __init__(self, export_dir: str, threads: int, **kwargs):
        super().__init__(**kwargs)
        self.export_dir = export_dir
        self.threads = threads

    def setup(self, device: str) -> None:
        from mmsenti.runtime.predictor import Predictor

        self.predictor = Predictor.load(self.export_dir, threads=self.threads)
        self.predictor.predict(["warm up the engine"] * 4)

    def decode_request(self, request: dict) -> str:
        items = request.get("items") or []
        if len(items) != 1 or not isinstance(items[0].get("text"), str):
            raise ls.HTTPException(status_code=422, detail='this anchor takes {"items": [{"text": str}]} (one item)')
        return items[0]["text"]

    def predict(self, texts):
        batch = [texts] if isinstance(texts, str) else list(texts)  # max_batch_size=1 passes one input
        out = self.predictor.predict(batch)
        rows = [{"score": float(s), "polarity": p, "class_7": int(c)}
                for s, p, c in zip(out["score"], out["polarity"], out["class_7"])]
        return rows[0] if isinstance(texts, str) else rows

    def unbatch(self, output):
        return output

    def encode_response(self, output: dict) -> dict:
        return {"items": [output]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", help="export folder (manifest.json + engine + tokenizer/)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--max-batch", type=int, default=32, help="LitServe max_batch_size (1 = batching off)")
    ap.add_argument("--max-wait-ms", type=float, default=2.0, help="LitServe batch_timeout, in ms")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--workers", type=int, default=1, help="LitServe inference workers (workers_per_device), each with the engine")
    ap.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ queues instead of multiprocessing ones")
    args = ap.parse_args()
    api = PredictorAPI(args.export, args.threads, max_batch_size=args.max_batch,
                       batch_timeout=args.max_wait_ms / 1000 if args.max_batch > 1 else 0.0, api_path="/v1/predict")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, timeout=30, fast_queue=args.fast_queue)
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
