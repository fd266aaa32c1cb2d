"""Teacher vs students, side by side in one process: parameters, size on disk, batch-1 latency and
batch-64 throughput on CPU. Prints JSON (and writes it with --out).

    python benchmarks/bench_distill.py --texts sst2 \
        --variant teacher=logs/.../teacher.ckpt --variant minilm_l3=logs/.../student.ckpt
    python benchmarks/bench_distill.py --variant l6=config:minilm_l6 --variant l3=config:minilm_l3   # untrained, speed only

A variant is ``NAME=PATH.ckpt`` (any mmsenti checkpoint: the model it describes, with its weights)
or ``NAME=config:<model/text_encoder option>`` (a text-only model, untrained: for speed only).

Method: texts are tokenised once per variant (each with its own tokenizer; tokenisation is not
timed); every round times each variant once, in a fresh random order (interleaved, so load
changes on a shared machine hit all variants alike), after a warm-up. Batch 1 cycles through the
texts; batch 64 takes consecutive chunks. Fused (text+audio+vision) models get frames shaped as the
project's aligned data (one audio/vision row per word), random values: feature *extraction* is not
timed. Reported: median and p99 per variant, and each variant's speed-up over the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmsenti.data.batch import SentimentCollator  # noqa: E402
from mmsenti.distill.teacher import load_teacher  # noqa: E402
from mmsenti.models import SentimentModel, SentimentModelConfig  # noqa: E402
from mmsenti.pretrained import load_pretrained  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def load_texts(kind: str, limit: int) -> list[str]:
    if kind == "sst2" and (SHARED / "sst2" / "dev.tsv").is_file():
        from mmsenti.data.sst2 import read_tsv

        return [s["text"] for s in read_tsv(SHARED / "sst2" / "dev.tsv", "dev")][:limit]
    if kind == "mosi" and (SHARED / "mosi" / "label_trainvalid.csv").is_file():
        from mmsenti.data.mmsa import load_label_csv

        return [s["text"] for s in load_label_csv(SHARED / "mosi" / "label_trainvalid.csv").splits["valid"]][:limit]
    rng = random.Random(0)
    words = "the film was great but far too long and i really did not like the ending at all".split()
    return [" ".join(rng.choices(words, k=rng.randint(5, 25))) for _ in range(limit)]


def build_variant(spec: str) -> tuple[SentimentModel, str]:
    if spec.startswith("config:"):
        import yaml

        name = spec.split(":", 1)[1]
        text_encoder = yaml.safe_load((ROOT / "configs" / "model" / "text_encoder" / f"{name}.yaml").read_text())
        text_encoder.pop("defaults", None)
        cfg = SentimentModelConfig(modalities=["text"], text_encoder=text_encoder, fusion={"name": "text_only"})
        return SentimentModel(cfg).eval(), str(text_encoder["pretrained"])
    net, hparams = load_teacher(spec)
    return net.eval(), str(hparams["text_encoder"]["pretrained"])


def size_on_disk(net: torch.nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(net.state_dict(), path)
        return path.stat().st_size


def make_inputs(net: SentimentModel, tokenizer, texts: list[str], max_len: int) -> dict:
    frame_dims = net.frame_dims
    collator = SentimentCollator(tokenizer, frame_dims.get("audio", 0), frame_dims.get("vision", 0), max_len)
    samples = []
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(texts):
        n = max(1, len(t.split()))
        samples.append({"id": str(i), "text": t, "label": 0.0,
                        "audio": torch.randn(n, frame_dims["audio"], generator=g).numpy() if "audio" in frame_dims else None,
                        "vision": torch.randn(n, frame_dims["vision"], generator=g).numpy() if "vision" in frame_dims else None})
    return {"collate": collator, "samples": samples}


def forward(net: SentimentModel, batch) -> None:
    net(batch.input_ids, batch.attention_mask, audio=batch.audio, audio_mask=batch.audio_mask,
        vision=batch.vision, vision_mask=batch.vision_mask)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="NAME=PATH.ckpt or NAME=config:<text_encoder>")
    ap.add_argument("--texts", default="sst2", choices=["sst2", "mosi", "synthetic"])
    ap.add_argument("--num-texts", type=int, default=512)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--rounds-b1", type=int, default=200)
    ap.add_argument("--rounds-b64", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts = load_texts(args.texts, args.num_texts)
    variants = {}
    for item in args.variant:
        name, spec = item.split("=", 1)
        net, tokenizer_name = build_variant(spec)
        data = make_inputs(net, load_pretrained(tokenizer_name, "tokenizer"), texts, args.max_len)
        collate, samples = data["collate"], data["samples"]
        b1 = [collate([s]) for s in samples]
        b64 = [collate(samples[i:i + 64]) for i in range(0, len(samples) - 63, 64)]
        variants[name] = {"spec": spec, "net": net, "b1": b1, "b64": b64,
                          "params": sum(p.numel() for p in net.parameters()), "bytes": size_on_disk(net),
                          "modalities": list(net.config.modalities), "text_encoder": dict(net.config.text_encoder),
                          "t1": [], "t64": []}

    rng = random.Random(0)
    with torch.inference_mode():
        for v in variants.values():  # warm-up
            for i in range(args.warmup):
                forward(v["net"], v["b1"][i % len(v["b1"])])
            for i in range(2):
                forward(v["net"], v["b64"][i % len(v["b64"])])
        for r in range(args.rounds_b1):
            for name in rng.sample(list(variants), len(variants)):
                v = variants[name]
                batch = v["b1"][r % len(v["b1"])]
                start = time.perf_counter()
                forward(v["net"], batch)
                v["t1"].append(time.perf_counter() - start)
        for r in range(args.rounds_b64):
            for name in rng.sample(list(variants), len(variants)):
                v = variants[name]
                batch = v["b64"][r % len(v["b64"])]
                start = time.perf_counter()
                forward(v["net"], batch)
                v["t64"].append(time.perf_counter() - start)

    first = next(iter(variants.values()))
    base_b1, base_b64 = statistics.median(first["t1"]), statistics.median(first["t64"])
    results = {}
    for name, v in variants.items():
        m1, m64 = statistics.median(v["t1"]), statistics.median(v["t64"])
        results[name] = {
            "spec": v["spec"], "modalities": v["modalities"], "text_encoder": v["text_encoder"],
            "params": v["params"], "size_mb": round(v["bytes"] / 2**20, 2),
            "batch1_ms_median": round(1e3 * m1, 3), "batch1_ms_p99": round(1e3 * percentile(v["t1"], 0.99), 3),
            "batch64_ms_median": round(1e3 * m64, 2), "batch64_ms_p99": round(1e3 * percentile(v["t64"], 0.99), 2),
            "batch64_utt_per_s": round(64 / m64, 1),
            "speedup_batch1_vs_first": round(base_b1 / m1, 2), "speedup_batch64_vs_first": round(base_b64 / m64, 2),
        }
    import lightning
    import transformers

    report = {
        "benchmark": "bench_distill", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "texts": args.texts, "num_texts": len(texts), "max_len": args.max_len,
        "rounds": {"batch1": args.rounds_b1, "batch64": args.rounds_b64, "warmup": args.warmup, "interleaved": True},
        "mean_tokens": round(statistics.mean(int(b.attention_mask.sum()) for b in first["b1"]), 1),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "lightning": lightning.__version__},
        "variants": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
