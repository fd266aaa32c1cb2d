"""mmsenti's attention layers: the same function and initial weights as PyTorch's, a leaner ONNX graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsenti.models.attention import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer, onnx_attention_op


def _padding(batch: int, length: int) -> torch.Tensor:
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[1, 4:] = True  # sample 1 has padding at the end
    return pad


def test_multihead_attention_matches_torch_and_loads_its_weights():
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)
    torch.manual_seed(3)
    ours = MultiheadAttention(32, 4, 0.1)
    # same parameter names and the same initial values from the same seed
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    with torch.no_grad():  # random weights (the init zeroes biases), then compare
        for p in ref.parameters():
            p.normal_(0, 0.3)
    ours.load_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    q, kv, pad = torch.randn(3, 5, 32), torch.randn(3, 9, 32), _padding(3, 9)
    expected = ref(q, kv, kv, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(ours(q, kv, pad), expected, atol=1e-5, rtol=1e-5)
    expected_self = ref(kv, kv, kv, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(ours(kv, kv, pad), expected_self, atol=1e-5, rtol=1e-5)


def test_encoder_matches_torch_prenorm_encoder():
    torch.manual_seed(4)
    ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, 0.1, batch_first=True, norm_first=True), 2,
                                enable_nested_tensor=False)
    torch.manual_seed(4)
    ours = TransformerEncoder(TransformerEncoderLayer(32, 4, 64, 0.1), 2)
    assert list(ours.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    ours.load_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    x, pad = torch.randn(3, 9, 32), _padding(3, 9)
    torch.testing.assert_close(ours(x, pad), ref(x, src_key_padding_mask=pad), atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 6, 16)
    attn.eval()
    torch.testing.assert_close(attn(x, x), attn(x, x))
    attn.train()
    assert not torch.allclose(attn(x, x), attn(x, x))


@pytest.mark.parametrize("opset,attention_nodes", [(23, 1), (18, 0)])
def test_onnx_export_writes_one_attention_node_per_layer(tmp_path, opset, attention_nodes):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiheadAttention(32, 4)

        def forward(self, q, kv, kv_mask):
            return self.attn(q, kv, ~kv_mask)

    torch.manual_seed(0)
    model = Cross().eval()
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.ones(2, 7, dtype=torch.bool)
    path = tmp_path / "attn.onnx"
    batch, tq, tk = torch.export.Dim("batch"), torch.export.Dim("tq"), torch.export.Dim("tk")
    with onnx_attention_op(model, opset >= 23):
        program = torch.onnx.export(model, (q, kv, mask), dynamo=True, opset_version=opset,
                                    input_names=["q", "kv", "kv_mask"], verbose=False,
                                    dynamic_shapes=({0: batch, 1: tq}, {0: batch, 1: tk}, {0: batch, 1: tk}))
    program.save(str(path))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Attention") == attention_nodes
    assert model.attn.onnx_attention_op is True  # restored after the block
    # ORT runs it at other shapes, masks included, and agrees with PyTorch
    q2, kv2 = torch.randn(3, 4, 32), torch.randn(3, 11, 32)
    mask2 = torch.ones(3, 11, dtype=torch.bool)
    mask2[0, 6:] = False
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"q": q2.numpy(), "kv": kv2.numpy(), "kv_mask": mask2.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(q2, kv2, mask2), atol=1e-5, rtol=1e-5)
