"""Architecture adapters: structured pruning, layer selection and checkpoint fix-ups on BERT, MPNet and
DistilBERT encoders (tiny random configs, no weights read), and a clear refusal for anything else."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModel, BertConfig, DistilBertConfig, MPNetConfig

from mmsenti.compression.structured import apply_masks, compute_masks, find_units, shrink
from mmsenti.errors import MmsentiError
from mmsenti.models.adapters import adapter_for, encoder_layers
from mmsenti.models.checkpoint import shrink_to_state_dict
from mmsenti.models.encoders import keep_encoder_layers

CONFIGS = {
    "bert": lambda: BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100),
    "mpnet": lambda: MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100),
    "distilbert": lambda: DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=100),
}


class _Holder(nn.Module):
    """What find_units looks for: a ``text_encoder`` with a ``backbone``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.text_encoder = nn.Module()
        self.text_encoder.backbone = backbone

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state


def _tiny(kind: str) -> _Holder:
    torch.manual_seed(0)
    return _Holder(AutoModel.from_config(CONFIGS[kind]()).eval())


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_structured_pruning_shrinks_every_architecture_without_changing_its_function(kind):
    model = _tiny(kind)
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ffn, heads = find_units(model, ("text_encoder",))
    prunable_heads = kind != "mpnet"  # MPNet's shared per-head position bias: FFN only
    assert len(ffn) == 2 and len(heads) == (2 if prunable_heads else 0) and all(h.size == 4 for h in heads)
    apply_masks(model, compute_masks(model, ffn_amount=0.5, head_amount=0.5 if prunable_heads else 0.0,
                                     scope=("text_encoder",)), ("text_encoder",))
    with torch.no_grad():
        masked = model(ids, mask)
    report = shrink(model, ("text_encoder",))
    with torch.no_grad():
        shrunk = model(ids, mask)
    assert report["after"]["ffn_neurons"] == 64 and report["after"]["heads"] == (4 if prunable_heads else 0)  # half of 2x64 / 2x4
    assert torch.allclose(masked, shrunk, atol=1e-5)
    adapter = adapter_for(model.text_encoder.backbone)
    for layer in adapter.layers(model.text_encoder.backbone):
        att = adapter.self_attention(layer)
        assert getattr(att, adapter.heads_attr) == (2 if prunable_heads else 4)  # the counter follows the new width


def test_mpnet_head_pruning_is_refused_with_the_reason():
    with pytest.raises(MmsentiError, match="relative-position bias per head"):
        compute_masks(_tiny("mpnet"), ffn_amount=0.2, head_amount=0.2, scope=("text_encoder",))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_shrunk_state_dict_loads_into_a_fresh_model(kind):
    pruned = _tiny(kind)
    heads = 0.0 if kind == "mpnet" else 0.5
    apply_masks(pruned, compute_masks(pruned, ffn_amount=0.5, head_amount=heads, scope=("text_encoder",)), ("text_encoder",))
    shrink(pruned, ("text_encoder",))
    fresh = _tiny(kind)
    assert shrink_to_state_dict(fresh, pruned.state_dict()) > 0
    fresh.load_state_dict(pruned.state_dict())
    ids = torch.randint(5, 100, (1, 6))
    with torch.no_grad():
        assert torch.allclose(fresh(ids, torch.ones_like(ids)), pruned(ids, torch.ones_like(ids)), atol=1e-6)
    adapter = adapter_for(fresh.text_encoder.backbone)
    assert all(getattr(adapter.self_attention(layer), adapter.heads_attr) == (4 if kind == "mpnet" else 2)
               for layer in adapter.layers(fresh.text_encoder.backbone))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_keep_layers_selects_layers_of_every_architecture(kind):
    backbone = AutoModel.from_config(CONFIGS[kind]())
    second = encoder_layers(backbone)[1]
    keep_encoder_layers(backbone, [1])
    assert len(encoder_layers(backbone)) == 1 and encoder_layers(backbone)[0] is second


def test_an_architecture_without_an_adapter_is_refused_in_one_line():
    class Odd(nn.Module):
        config = type("C", (), {"model_type": "xlnet"})()

    model = _Holder(Odd())
    with pytest.raises(MmsentiError, match=r"model_type 'xlnet'.*supported: bert, distilbert, mpnet") as err:
        find_units(model, ("text_encoder",))
    assert "\n" not in str(err.value)
