"""Pruning really zeroes / removes what it reports (unstructured L1, structured FFN neurons and heads)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmsenti.compression import ScheduledL1Pruning, StructuredPruning, l1_prune, make_permanent, prune_structured, shrink
from mmsenti.compression.structured import apply_masks, compute_masks, find_units, structure_report
from mmsenti.models.checkpoint import shrink_to_state_dict
from mmsenti.compression.unstructured import CheckpointAfterPruning, is_pruning_pending, linear_weights, sparsity_report, step_amounts
from mmsenti.errors import MmsentiError
from mmsenti.models import SentimentModel, SentimentModelConfig

SMALL = {"d_model": 32, "num_layers": 1, "num_heads": 4}


def small_model(seed: int = 0) -> SentimentModel:
    torch.manual_seed(seed)
    cfg = SentimentModelConfig(fusion={"name": "mult", **SMALL},
                               audio_encoder={"name": "conv_transformer", "input_dim": 74, "d_model": 32, "num_heads": 4},
                               vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 32, "num_heads": 4})
    return SentimentModel(cfg).eval()


def inputs(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (batch, 12), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(batch, 12, dtype=torch.long)
    mask[0, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask,
            "audio": torch.randn(batch, 9, 74, generator=g), "audio_mask": torch.ones(batch, 9, dtype=torch.bool),
            "vision": torch.randn(batch, 7, 47, generator=g), "vision_mask": torch.ones(batch, 7, dtype=torch.bool)}


@pytest.fixture(scope="module")
def base_model() -> SentimentModel:
    return small_model()


def fresh(base: SentimentModel) -> SentimentModel:
    import copy

    return copy.deepcopy(base)


# ----------------------------------------------------------------------------- unstructured
def test_l1_prune_zeroes_exactly_the_reported_fraction(base_model):
    model = fresh(base_model)
    report = l1_prune(model, 0.5, scope=["text_encoder.backbone.encoder.layer.5", "fusion", "frame_encoders"])
    weights = [m.weight for m, _ in linear_weights(model, ["text_encoder.backbone.encoder.layer.5", "fusion", "frame_encoders"])]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / total == pytest.approx(0.5, abs=1e-6)
    assert report["linear_sparsity_in_scope"] == pytest.approx(zeros / total)
    assert report["zeros"] == sum(int((p == 0).sum()) for p in model.parameters())
    # permanent: plain weights, no masks or hooks left for export to trip on
    assert not is_pruning_pending(model)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())
    assert report["linear_gzip_bytes"] < 0.8 * report["linear_dense_bytes"]  # zeros compress
    assert torch.isfinite(model(**inputs()).score).all()


def test_l1_prune_scope_leaves_other_parts_dense(base_model):
    model = fresh(base_model)
    l1_prune(model, 0.4, scope=["fusion"])
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            share = float((m.weight == 0).float().mean())
            if name.startswith("text_encoder") or name.startswith("head"):
                assert share == 0.0, name


def test_step_amounts_reach_cumulative_targets():
    steps = step_amounts({0: 0.3, 2: 0.5, 3: 0.5})
    assert set(steps) == {0, 2}
    assert steps[0] == pytest.approx(0.3) and steps[2] == pytest.approx(0.2 / 0.7)
    with pytest.raises(MmsentiError, match="grow"):
        step_amounts({0: 0.5, 1: 0.3})


class ToyModule(L.LightningModule):
    """Tiny regression module with an MLP and a transformer layer (prunable both ways)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Module()
        self.net.fusion = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
        self.net.frame_encoders = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.net.frame_encoders(self.net.fusion(x)).mean(1)).squeeze(-1)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def _fit(module: L.LightningModule, callbacks: list, epochs: int, tmp_path) -> L.Trainer:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 5, 8), torch.randn(64)), batch_size=16)
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
                        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks))
    trainer.fit(module, data)
    return trainer


def test_scheduled_l1_pruning_follows_schedule_and_saves_plain_weights(tmp_path):
    module = ToyModule()
    pruning = ScheduledL1Pruning({0: 0.25, 1: 0.5}, scope=["fusion", "frame_encoders"])
    ckpt = CheckpointAfterPruning(dirpath=tmp_path / "ckpt", save_last=True, start_epoch=1, monitor=None)
    _fit(module, [pruning, ckpt], epochs=3, tmp_path=tmp_path)
    assert [a["epoch"] for a in pruning.applied] == [0, 1]
    assert pruning.applied[0]["linear_sparsity_in_scope"] == pytest.approx(0.25, abs=0.01)
    assert pruning.applied[1]["linear_sparsity_in_scope"] == pytest.approx(0.5, abs=0.01)
    # made permanent at the end of training; masks stayed applied through fine-tuning
    assert not is_pruning_pending(module)
    report = sparsity_report(module, scope=["fusion", "frame_encoders"])
    assert report["linear_sparsity_in_scope"] == pytest.approx(0.5, abs=0.01)
    assert float((module.head.weight == 0).float().mean()) == 0.0  # out of scope
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    w = state["net.fusion.0.weight"]
    assert float((w == 0).float().mean()) > 0.3


# ----------------------------------------------------------------------------- structured
def test_find_units_covers_encoder_and_fusion(base_model):
    ffn, heads = find_units(base_model)
    names = {u.name for u in ffn}
    assert sum(n.startswith("text_encoder.") for n in names) == 6
    assert any(n.startswith("fusion.cross.") for n in names) and any(n.startswith("fusion.self_attn.") for n in names)
    assert any(n.startswith("frame_encoders.") for n in names)
    assert len(heads) == 6 and all(u.size == 12 for u in heads)


def test_structured_shrink_removes_what_it_reports_and_keeps_outputs(base_model):
    model = fresh(base_model)
    x = inputs()
    report = prune_structured(model, ffn_amount=0.4, head_amount=0.25, shrink_now=False)
    with torch.no_grad():
        masked = model(**x).score
    ffn, heads = find_units(model)
    expected_ffn = sum(u.size - max(1, u.size - round(0.4 * u.size)) for u in ffn)
    assert report["ffn_neurons_zeroed"] == expected_ffn
    assert report["heads_zeroed"] == 6 * 3
    before = sum(p.numel() for p in model.parameters())
    result = shrink(model)
    after = sum(p.numel() for p in model.parameters())
    assert result["after"]["params"] == after < before == result["before"]["params"]
    assert result["after"]["ffn_neurons"] == result["before"]["ffn_neurons"] - expected_ffn
    assert result["after"]["ffn_neurons_zeroed"] == 0 and result["after"]["heads_zeroed"] == 0
    layer = model.text_encoder.backbone.encoder.layer[0]
    assert layer.intermediate.dense.weight.shape == (1536 - round(0.4 * 1536), 384)  # physically smaller
    assert layer.output.dense.weight.shape == (384, 1536 - round(0.4 * 1536))
    assert layer.attention.self.query.weight.shape == (9 * 32, 384)
    assert layer.attention.self.num_attention_heads == 9
    assert model.fusion.cross["audio_to_text"][0].ff[0].out_features == 128 - round(0.4 * 128)
    with torch.no_grad():
        shrunk = model(**x).score
    torch.testing.assert_close(shrunk, masked, atol=1e-5, rtol=1e-5)  # removing zeros changes nothing


def test_shrunk_state_dict_loads_into_a_fresh_model(base_model):
    model = fresh(base_model)
    prune_structured(model, ffn_amount=0.5, head_amount=0.5)
    state = model.state_dict()
    other = small_model(seed=1)
    assert shrink_to_state_dict(other, state) > 0
    other.load_state_dict(state)
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(**x).score, model(**x).score)
    assert other.text_encoder.backbone.encoder.layer[3].attention.self.num_attention_heads == 6


def test_masks_only_grow_and_scope_is_respected(base_model):
    model = fresh(base_model)
    first = compute_masks(model, ffn_amount=0.2, scope=["fusion"])
    apply_masks(model, first, scope=["fusion"])
    second = compute_masks(model, ffn_amount=0.4, scope=["fusion"])
    for name, keep in first.items():
        assert not (second[name] & ~keep).any()  # nothing pruned comes back
    report = structure_report(model, scope=["text_encoder"])
    assert report["ffn_neurons_zeroed"] == 0


def test_structured_callback_keeps_pruned_units_zero_while_training(tmp_path):
    module = ToyModule()
    pruning = StructuredPruning(ffn_amount=0.5, epochs=[0, 1], scope=["frame_encoders"])
    _fit(module, [pruning], epochs=3, tmp_path=tmp_path)
    layer = module.net.frame_encoders
    dead_rows = (layer.linear1.weight == 0).all(dim=1) & (layer.linear1.bias == 0)
    assert int(dead_rows.sum()) == 8  # 50% of 16 neurons, still zero after two more epochs of AdamW
    assert (layer.linear2.weight[:, dead_rows] == 0).all()
    assert [h["ffn_pruned"] for h in pruning.history] == [4, 8]
    shrink(module.net, scope=["frame_encoders"])
    assert layer.linear1.out_features == 8 and layer.linear2.in_features == 8


def test_bad_amounts_are_clear_errors():
    with pytest.raises(MmsentiError, match="ffn_amount"):
        StructuredPruning(ffn_amount=1.0)
    with pytest.raises(MmsentiError, match="amount"):
        l1_prune(nn.Sequential(nn.Linear(2, 2)), 1.5, scope=["0"])
    assert make_permanent(nn.Linear(2, 2)) == 0


def test_pruning_can_start_from_a_trained_checkpoint(tmp_path):
    source = ToyModule()
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.5)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "trained.ckpt")
    module = ToyModule()
    pruning = StructuredPruning(ffn_amount=0.5, epochs=[3], scope=["fusion"], init_from=str(tmp_path / "trained.ckpt"))
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 5, 8), torch.randn(8)), batch_size=8)
    L.Trainer(max_epochs=1, limit_train_batches=0, callbacks=[pruning], logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path).fit(module, data)
    assert all(torch.all(p == 0.5) for p in module.parameters())  # weights came from the checkpoint
    with pytest.raises(MmsentiError, match="no such checkpoint"):
        StructuredPruning(init_from=str(tmp_path / "missing.ckpt")).on_fit_start(None, module)
