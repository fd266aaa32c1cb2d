"""LSTM encoders without packed sequences: same outputs as packed nn.LSTM at valid steps, and they export
to ONNX (the BiLSTM text student and the lstm frame encoder were refused before)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmsenti.models.encoders import bidirectional_lstm


@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_bidirectional_lstm_equals_packed_at_valid_steps(layers):
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5, layers, batch_first=True, bidirectional=True).eval()
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    want, _ = nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=7)
    with torch.no_grad():
        got = bidirectional_lstm(lstm, x, lengths)
    valid = (torch.arange(7)[None] < lengths[:, None]).unsqueeze(-1)
    assert torch.allclose(got * valid, want * valid, atol=1e-6)
    x2 = x.clone()
    x2[1, 4:] = 100.0  # padding content never reaches a valid step
    with torch.no_grad():
        assert torch.allclose(bidirectional_lstm(lstm, x2, lengths)[1, :4], got[1, :4], atol=1e-6)


@pytest.mark.slow
def test_bilstm_student_and_lstm_frame_encoder_export_with_parity(tmp_path):
    from mmsenti.export.pipeline import ExportOptions, export_model
    from mmsenti.models import SentimentModel, SentimentModelConfig
    from mmsenti.runtime.predictor import Predictor

    torch.manual_seed(0)
    cfg = SentimentModelConfig(
        text_encoder={"pretrained": "minilm_l6", "architecture": "bilstm", "backbone_options": {"hidden_size": 32},
                      "finetune": "full"},
        audio_encoder={"name": "lstm", "input_dim": 74, "d_model": 16},
        vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 16, "num_heads": 2},
        fusion={"name": "mult", "d_model": 16, "num_layers": 1, "num_heads": 2})
    model = SentimentModel(cfg).eval()
    manifest = export_model(model, tmp_path / "bilstm", ExportOptions(variant="fused", metrics=False), source={"checkpoint": None})
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    engine = Predictor.load(tmp_path / "bilstm", threads=1)
    audio = [np.random.default_rng(0).standard_normal((5, 74)).astype(np.float32), None]
    out = engine.predict(["a fine film", "dull"], audio=audio)
    from mmsenti.export.wrapper import eager_predictor

    eager = eager_predictor(model).predict(["a fine film", "dull"], audio=audio)
    assert np.abs(out["score"] - eager["score"]).max() <= 1e-4


@pytest.mark.slow
def test_a_second_lstm_export_in_the_same_process_keeps_its_dynamic_axes(tmp_path):
    """An export used to leave aten.lstm's decomposition cached: the next export froze the frame axis."""
    import onnx

    from mmsenti.export.onnx_export import export_onnx
    from mmsenti.export.wrapper import ExportWrapper
    from mmsenti.models import SentimentModel, SentimentModelConfig

    hp = dict(modalities=["text", "audio"], text_encoder={"pretrained": "minilm_l6", "finetune": "frozen"},
              audio_encoder={"name": "lstm", "input_dim": 43, "d_model": 8}, fusion={"name": "late", "d_model": 8})
    for k in range(2):
        model = SentimentModel(SentimentModelConfig.from_dict(hp)).eval()
        export_onnx(ExportWrapper(model, "fused"), tmp_path / f"m{k}.onnx")
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                for i in onnx.load(str(tmp_path / f"m{k}.onnx")).graph.input}
        assert dims["audio"] == ["batch", "audio_frames", 43] and dims["input_ids"] == ["batch", "seq"], (k, dims)
