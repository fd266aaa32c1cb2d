"""Shared fixtures: the real-data folder (may be absent), synthetic CMU-MOSI sets, and one small
model with its fused and text-only exports (made once per test session: test_export, test_serve)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repo; tests using it skip when it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only CI and the lab machines have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mosi_label_file(shared_data: Path) -> Path:
    path = shared_data / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
    if not path.is_file():
        pytest.skip(f"official label file {path} is absent")
    return path


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """Synthetic CMU-MOSI, scale "small" (12 videos x 10 segments), seed 0. Treat as read-only."""
    from mmsenti.data.synthetic import write_synthetic_mosi

    return write_synthetic_mosi(tmp_path_factory.mktemp("synthetic_small"), scale="small", seed=0)


@pytest.fixture(scope="session")
def synthetic_mosi(tmp_path_factory) -> Path:
    """Synthetic CMU-MOSI at full scale (93 videos, 2,199 segments), seed 0. Treat as read-only."""
    from mmsenti.data.synthetic import write_synthetic_mosi

    return write_synthetic_mosi(tmp_path_factory.mktemp("synthetic_mosi"), scale="mosi", seed=0)


@pytest.fixture(scope="session")
def tiny_model():
    """A small fused model: MulT d_model 32, the real MiniLM-L6 encoder, untrained fusion, non-trivial
    feature statistics (standardisation must travel with the graph). Treat as read-only."""
    import torch

    from mmsenti.models import SentimentModel, SentimentModelConfig

    torch.manual_seed(0)
    cfg = SentimentModelConfig(
        fusion={"name": "mult", "d_model": 32, "num_layers": 1, "num_heads": 4, "self_layers": 1},
        audio_encoder={"name": "conv_transformer", "input_dim": 74, "d_model": 32, "num_heads": 4},
        vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 32, "num_heads": 4},
        aux_7class=True)
    net = SentimentModel(cfg).eval()
    with torch.no_grad():
        net.normalizers["audio"].fit(torch.linspace(-1, 1, 74), torch.linspace(0.5, 2, 74))
        net.normalizers["vision"].fit(torch.linspace(1, -1, 47), torch.linspace(2, 0.5, 47))
    return net


EXPORT_SCRIPT = """
import sys, torch
from mmsenti.export.pipeline import ExportOptions, export_model
from mmsenti.models import SentimentModel, SentimentModelConfig
saved = torch.load(sys.argv[1], weights_only=True)
model = SentimentModel(SentimentModelConfig.from_dict(saved["config"]))
model.load_state_dict(saved["state"])
export_model(model.eval(), sys.argv[2], ExportOptions(variant=sys.argv[3], metrics=False), source={"checkpoint": None})
"""


def export_small_fusion(fusion: dict, out_dir: Path) -> dict:
    """A tiny fused model with this ``fusion`` config (BiLSTM text, LSTM audio, conv-transformer vision: widths
    equal to none of the export's example sizes), exported in its own process (two different exports in one
    process can freeze a dynamic axis); returns the export's manifest."""
    import json

    import torch

    from mmsenti.models import SentimentModel, SentimentModelConfig

    torch.manual_seed(0)
    cfg = SentimentModelConfig(
        text_encoder={"pretrained": "minilm_l6", "architecture": "bilstm", "backbone_options": {"hidden_size": 24},
                      "finetune": "full"},
        audio_encoder={"name": "lstm", "input_dim": 74, "d_model": 12},
        vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 12, "num_heads": 2},
        fusion=fusion)
    model = SentimentModel(cfg).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "state": model.state_dict()}, out_dir / "model.pt")
    run = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(out_dir / "model.pt"), str(out_dir / "export"), "fused"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out_dir / "export" / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_exports(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """``tiny_model`` exported as fp32 ONNX, both variants: ``{"fused": DIR, "text_only": DIR}``. The
    text-only one in a second process (the export is single-threaded Python: two cores export both
    in the time of one). Treat as read-only (copy a folder to change it)."""
    import torch

    from mmsenti.export.pipeline import ExportOptions, export_model

    root = tmp_path_factory.mktemp("exports")
    torch.save({"config": tiny_model.config.to_dict(), "state": tiny_model.state_dict()}, root / "model.pt")
    side = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(root / "model.pt"), str(root / "text_only"), "text_only"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        export_model(tiny_model, root / "fused", ExportOptions(variant="fused", metrics=False), source={"checkpoint": None})
    finally:
        _, err = side.communicate(timeout=900)
    assert side.returncode == 0, err[-3000:]
    return {"fused": root / "fused", "text_only": root / "text_only"}
