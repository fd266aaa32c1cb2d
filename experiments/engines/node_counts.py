"""ONNX node counts of the fused model's fp32 graph with and without the ``Attention`` op (export/README.md).

    python experiments/engines/node_counts.py            # writes experiments/engines/node_counts.json

The graph's nodes depend on the architecture only, not on the weights: the network is built from
``experiment=mosi_fusion`` (MiniLM-L6 + MulT, as in the engines study) with its pretrained text encoder and
freshly initialised fusion, exported as ``mmsenti export`` does (``prepare_model``, ``export_onnx``) at opset
18 (attention decomposed into MatMul/Softmax/...) and opset 23 (one ONNX ``Attention`` node per attention
layer), and counted with ``mmsenti.export.onnx_export.onnx_ops`` (the manifest's ``graph.nodes``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "experiments" / "engines" / "node_counts.json"
OPSETS = (18, 23)


def main() -> None:
    import onnx
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mmsenti.export.onnx_export import export_onnx, onnx_ops
    from mmsenti.export.pipeline import prepare_model
    from mmsenti.export.wrapper import ExportWrapper
    from mmsenti.models import SentimentModel, SentimentModelConfig

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    torch.manual_seed(0)
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("train", overrides=["experiment=mosi_fusion"])
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    model, _ = prepare_model(SentimentModel(SentimentModelConfig.from_dict(net)).eval())
    wrapper = ExportWrapper(model, "fused").eval()
    graphs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for opset in OPSETS:
            path = Path(tmp) / f"fused_fp32_opset{opset}.onnx"
            export_onnx(wrapper, path, opset=opset)
            ops = onnx_ops(path)
            graphs[f"opset{opset}"] = {"nodes": sum(ops.values()), "main_graph_nodes": len(onnx.load(str(path)).graph.node),
                                       "Attention": ops.get("Attention", 0), "ops": ops}
    report = {
        "command": "python experiments/engines/node_counts.py",
        "model": "experiment=mosi_fusion network (fp32, variant fused)",
        "params": sum(p.numel() for p in model.parameters()),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        "graphs": graphs,
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: {"nodes": v["nodes"], "Attention": v["Attention"]} for k, v in graphs.items()}))
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
