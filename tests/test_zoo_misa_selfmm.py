"""The fusion zoo's loss-carrying models (issue 16): ``misa`` (Hazarika et al., 2020), ``self_mm`` (Yu et al., 2021)
and ``mult_paper`` (MulT as published, Tsai et al., 2019).

Each paper's defining computation on hand-checked tensors: MISA's CMD and soft-orthogonality losses and how
its three terms combine; Self-MM's unimodal-label rule (centres, relative distances, the ratio/difference
rule, the momentum from epoch 2) on four samples by hand, and its weighted unimodal loss; MulT's final
LayerNorm, embedding scale and last-valid-step pooling. Then each trains under ``experiment=mosi_fusion``
(fast_dev_run, the LightningModule's loss hook adding the terms) and exports to ONNX with fp32 parity."""

from __future__ import annotations

import math

import pytest
import torch

from mmsenti import registry
from mmsenti.models.zoo.misa import MISAFusion, cmd, difference_loss
from mmsenti.models.zoo.mult_paper import MulTPaperFusion, last_valid_step
from mmsenti.models.zoo.self_mm import (SelfMMFusion, UnimodalLabelStore, generated_labels, momentum_update,
                                        relative_distance)

DIMS = {"text": 6, "audio": 5, "vision": 4}
NAMES = ["misa", "self_mm", "mult_paper"]


def _inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    steps = {"text": 7, "audio": 5, "vision": 6}
    states = {m: torch.randn(batch, steps[m], d, generator=g) for m, d in DIMS.items()}
    masks = {m: torch.arange(t)[None] < torch.randint(1, t + 1, (batch,), generator=g)[:, None] for m, t in steps.items()}
    return states, masks


def test_registered_with_their_papers():
    described = registry.describe()["fusion"]
    assert set(NAMES) <= set(registry.available("fusion"))
    assert "Hazarika" in described["misa"] and "Yu et al." in described["self_mm"] and "Tsai" in described["mult_paper"]


# ---------------------------------------------------------------- MISA
def test_cmd_hand_checked():
    x = torch.tensor([[0.1, 0.7], [0.4, 0.2], [0.9, 0.5]])
    assert cmd(x, x.clone()).item() == 0.0  # equal distributions
    # a shifted mean: the centred samples are equal, so only the first-moment term ||c||_2 = 5 is left
    assert cmd(x, x + torch.tensor([3.0, 4.0])).item() == pytest.approx(5.0, abs=1e-5)
    # x1 = {0, 2}, x2 = {1, 1}: equal means; centred ±1 vs 0, so moments 2 and 4 differ by 1, moments 3 and 5 by 0
    x1, x2 = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    assert cmd(x1, x2, moments=5).item() == pytest.approx(2.0)
    assert cmd(x1, x2, moments=2).item() == pytest.approx(1.0) and cmd(x1, x2, moments=1).item() == 0.0


def test_orthogonality_loss_orthogonal_vs_parallel():
    # columns orthogonal over the batch (the rows already centred): H_a^T H_b = 0
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert difference_loss(a, b).item() == 0.0
    # parallel: the rows are unit-normalised, so a scaled copy is the same matrix; a^T a = [[2, 0], [0, 0]] (times
    # (1/(1+1e-6))^2), the mean of its squared entries 4 / 4
    assert difference_loss(a, 5.0 * a).item() == pytest.approx(1.0, rel=1e-5)
    assert difference_loss(a, a).item() == pytest.approx(1.0, rel=1e-5)
    # the mean is taken off first: a constant offset changes nothing
    assert difference_loss(a + 3.0, b - 2.0).item() == pytest.approx(0.0, abs=1e-10)


def test_misa_loss_terms_combine_as_the_paper():
    torch.manual_seed(0)
    misa = MISAFusion(DIMS, d_model=8, num_heads=2, dim_feedforward=16, sim_weight=0.7, diff_weight=0.3, recon_weight=0.9).train()
    states, masks = _inputs(batch=5)
    masks["audio"][4] = False  # sample 4 lacks audio: left out of the losses
    out = misa(states, masks)
    assert out.shape == (5, 24) and misa.out_dim == 24  # 6 vectors of 8 concatenated, then Linear(48 -> 24)
    terms = misa.auxiliary_losses(torch.zeros(5))
    assert {k: w for k, (w, _) in terms.items()} == {"loss_misa_sim": 0.7, "loss_misa_diff": 0.3, "loss_misa_recon": 0.9}
    u, s, p, present = misa.representations(states, masks)
    assert present["audio"].tolist() == [True] * 4 + [False]
    keep = slice(0, 4)
    u, s, p = ({m: v[m][keep] for m in DIMS} for v in (u, s, p))
    assert all(((x > 0) & (x < 1)).all() for x in (*s.values(), *p.values()))  # sigmoid subspaces
    pairs = [("text", "audio"), ("text", "vision"), ("audio", "vision")]
    sim = sum(cmd(s[a], s[b], 5) for a, b in pairs) / 3  # invariant vectors of each pair, K = 5
    diff = sum(difference_loss(p[m], s[m]) for m in DIMS) + sum(difference_loss(p[a], p[b]) for a, b in pairs)
    recon = sum(torch.mean((misa.reconstruct[m](s[m] + p[m]) - u[m]) ** 2) for m in DIMS) / 3
    for name, want in (("sim", sim), ("diff", diff), ("recon", recon)):
        assert terms[f"loss_misa_{name}"][1].item() == pytest.approx(want.item(), rel=1e-5), name
    # the terms were used once; eval mode keeps nothing (the exported graph is the prediction path)
    assert misa.auxiliary_losses(torch.zeros(5)) == {}
    misa.eval()
    misa(states, masks)
    assert misa.auxiliary_losses(torch.zeros(5)) == {}


def test_misa_missing_modality_is_finite_and_blind_to_masked_frames():
    torch.manual_seed(0)
    misa = registry.build("fusion", "misa", input_dims=DIMS, d_model=8, dim_feedforward=16).eval()
    states, masks = _inputs()
    masks["vision"] = torch.zeros_like(masks["vision"])
    with torch.no_grad():
        base = misa(states, masks)
        noisy = {m: h.clone() for m, h in states.items()}
        for m in DIMS:
            noisy[m][~masks[m]] = float("nan")
        assert torch.isfinite(base).all() and torch.equal(misa(noisy, masks), base)


# ---------------------------------------------------------------- Self-MM
# four samples, 1-d features: multimodal labels y_m, fused features f, text features s
Y_M = torch.tensor([2.0, 1.0, -1.0, -2.0])
F_FUSED = torch.tensor([[3.0], [1.0], [-1.0], [-3.0]])
F_TEXT = torch.tensor([[1.0], [2.0], [-2.0], [0.0]])
# by hand: centres C_p^f = (3 + 1)/2 = 2, C_n^f = -2; with y_s = y_m still, C_p^t = (1 + 2)/2 = 1.5, C_n^t = (-2 + 0)/2 = -1
# alpha = (D_n - D_p) / D_p:  fused  (5-1)/1 = 4, (3-1)/1 = 2, (1-3)/3 = -2/3, (1-5)/5 = -4/5
#                             text   (2-.5)/.5 = 3, (3-.5)/.5 = 5, (1-3.5)/3.5 = -5/7, (1-1.5)/1.5 = -1/3
ALPHA_M = [4.0, 2.0, -2 / 3, -4 / 5]
ALPHA_T = [3.0, 5.0, -5 / 7, -1 / 3]
# new label = y_m·a_t/(2 a_m) + (y_m + a_t - a_m)/2, clipped to [-3, 3]:
#   2·3/8 + (2+3-4)/2 = 1.25;  1·5/4 + (1+5-2)/2 = 3.25 -> 3;  -15/28 - 11/21 = -89/84;  -5/12 - 23/30 = -71/60
NEW = [1.25, 3.0, -89 / 84, -71 / 60]
# epoch 2: y_s = 1/3 · y_m + 2/3 · new
EPOCH2 = [2 / 3 + 2 / 3 * 1.25, 1 / 3 + 2.0, -1 / 3 - 2 / 3 * 89 / 84, -2 / 3 - 2 / 3 * 71 / 60]


def test_self_mm_label_rule_by_hand():
    alpha_m = relative_distance(F_FUSED, torch.tensor([2.0]), torch.tensor([-2.0]))
    alpha_t = relative_distance(F_TEXT, torch.tensor([1.5]), torch.tensor([-1.0]))
    assert alpha_m.tolist() == pytest.approx(ALPHA_M) and alpha_t.tolist() == pytest.approx(ALPHA_T)
    assert generated_labels(Y_M, alpha_m, alpha_t, bound=3.0).tolist() == pytest.approx(NEW)
    assert momentum_update(Y_M, torch.tensor(NEW), epoch=2).tolist() == pytest.approx(EPOCH2)
    assert momentum_update(Y_M, torch.tensor(NEW), epoch=1).tolist() == pytest.approx(NEW)  # (n-1)/(n+1) = 0


def test_self_mm_store_centres_and_momentum_across_epochs():
    store = UnimodalLabelStore(["text"], exclude_zero=True, bound=3.0)
    ids = ["a", "b", "c", "d"]
    feats = {"fusion": F_FUSED, "text": F_TEXT}
    present = {"fusion": torch.ones(4, dtype=torch.bool), "text": torch.ones(4, dtype=torch.bool)}
    slots = store.slots(ids, Y_M, {"fusion": 1, "text": 1})
    assert slots.tolist() == [0, 1, 2, 3] and store.labels["text"].tolist() == Y_M.tolist()  # y_s starts at y_m
    store.update(slots, feats, present, epoch=1)  # epoch 1: labels stay, features and centres stored
    assert store.labels["text"].tolist() == Y_M.tolist()
    assert [c.item() for c in store.centres["fusion"]] == [2.0, -2.0] and [c.item() for c in store.centres["text"]] == [1.5, -1.0]
    store.update(store.slots(ids, Y_M, {}), feats, present, epoch=2)  # epoch 2: the rule, with the epoch-1 centres
    assert store.labels["text"].tolist() == pytest.approx(EPOCH2)
    assert store.labels["fusion"].tolist() == Y_M.tolist()  # y_m never moves
    # the text centres now use the new labels (same signs: same centres), so epoch 3 moves by 1/2 toward NEW
    assert [c.item() for c in store.centres["text"]] == [1.5, -1.0]
    store.update(store.slots(ids, Y_M, {}), feats, present, epoch=3)
    assert store.labels["text"].tolist() == pytest.approx([0.5 * a + 0.5 * b for a, b in zip(EPOCH2, NEW)])
    # a sample without text keeps its text label and stored feature
    absent = {**present, "text": torch.tensor([False, True, True, True])}
    before = store.labels["text"][0].item()
    store.update(store.slots(ids, Y_M, {}), {"fusion": F_FUSED, "text": F_TEXT + 10}, absent, epoch=4)
    assert store.labels["text"][0].item() == before and store.features["text"][0].item() == 1.0


def test_self_mm_zero_labels_and_empty_centres():
    store = UnimodalLabelStore(["text"], exclude_zero=True)
    labels = torch.tensor([0.0, 1.0])
    slots = store.slots(["z", "p"], labels, {"fusion": 1, "text": 1})
    ones = torch.ones(2, dtype=torch.bool)
    store.update(slots, {"fusion": torch.tensor([[5.0], [1.0]]), "text": torch.tensor([[5.0], [1.0]])},
                 {"fusion": ones, "text": ones}, epoch=1)
    positive, negative = store.centres["text"]
    assert positive.item() == 1.0 and negative is None  # 0 is in no class; no negative sample: no centre
    # without a negative centre the labels cannot be generated: they stay
    store.update(slots, {"fusion": torch.tensor([[5.0], [1.0]]), "text": torch.tensor([[5.0], [1.0]])},
                 {"fusion": ones, "text": ones}, epoch=2)
    assert store.labels["text"].tolist() == [0.0, 1.0]


def test_self_mm_weighted_unimodal_loss_and_the_prediction_path():
    torch.manual_seed(0)
    fusion = SelfMMFusion(DIMS, d_model=8, text_hidden=4, audio_hidden=3, vision_hidden=2, text_weight=0.5).train()
    states, masks = _inputs(batch=3)
    masks["audio"][2] = False
    with torch.no_grad():  # the unimodal heads predict 0
        for head in fusion.unimodal_heads.values():
            head[-1].weight.zero_()
            head[-1].bias.zero_()
    labels = torch.tensor([2.0, -1.0, 0.5])
    ids = ["x", "y", "w"]
    fusion(states, masks)
    terms = fusion.auxiliary_losses(labels, ids=ids, epoch=1)
    assert {k: w for k, (w, _) in terms.items()} == {"loss_selfmm_text": 0.5, "loss_selfmm_audio": 1.0, "loss_selfmm_vision": 1.0}
    assert all(v.item() == 0.0 for _, v in terms.values())  # y_s = y_m: weight tanh(0) = 0 in epoch 1
    # set the generated labels: the loss is mean(tanh(|y_s - y_m|) · |0 - y_s|) over the samples that have the modality
    y_s = {"text": torch.tensor([1.0, -1.0, 2.0]), "audio": torch.tensor([0.0, 0.5, 9.0])}
    for m, v in y_s.items():
        fusion.store.labels[m][:] = v
    fusion(states, masks)
    terms = fusion.auxiliary_losses(labels, ids=ids, epoch=1)
    want_text = (math.tanh(1.0) * 1.0 + 0.0 + math.tanh(1.5) * 2.0) / 3
    want_audio = (math.tanh(2.0) * 0.0 + math.tanh(1.5) * 0.5) / 2  # sample 2 has no audio
    assert terms["loss_selfmm_text"][1].item() == pytest.approx(want_text)
    assert terms["loss_selfmm_audio"][1].item() == pytest.approx(want_audio)
    # NaN labels (a transfer set) are left out; eval mode computes the fused vector only
    fusion(states, masks)
    fusion.auxiliary_losses(torch.tensor([float("nan"), -1.0, 0.5]), ids=["new", "y", "w"], epoch=1)
    assert "new" not in fusion.store.index
    fusion.eval()
    assert fusion(states, masks).shape == (3, 8) and fusion.auxiliary_losses(labels, ids=ids) == {}


def test_self_mm_needs_ids():
    from mmsenti.errors import MmsentiError

    fusion = SelfMMFusion(DIMS, d_model=8).train()
    fusion(*_inputs())
    with pytest.raises(MmsentiError, match="SentimentBatch.ids"):
        fusion.auxiliary_losses(torch.zeros(3), ids=[])


# ---------------------------------------------------------------- MulT as published
def test_last_valid_step_pooling():
    x = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1) + 1  # [[1, 2, 3, 4], [5, 6, 7, 8]]
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert last_valid_step(x, mask).flatten().tolist() == [3.0, 8.0]
    assert last_valid_step(x, torch.zeros(2, 4, dtype=torch.bool)).flatten().tolist() == [0.0, 0.0]


def test_mult_paper_switches():
    torch.manual_seed(0)
    paper = MulTPaperFusion(DIMS, d_model=8, num_layers=2, num_heads=2).eval()
    encoders = [*paper.cross.values(), *paper.self_attn.values()]
    assert len(paper.cross) == 6 and all(isinstance(e.norm, torch.nn.LayerNorm) for e in encoders)  # final LayerNorm
    assert all(len(e.layers) == 3 for e in paper.self_attn.values())  # 3 self-attention layers after the cross-modal
    assert paper.cross["audio_to_text"].scale == math.sqrt(8) and paper.self_attn["text"].scale == math.sqrt(16)
    assert paper.cross["audio_to_text"].embed_dropout.p == 0.25 and paper.output_block is not None
    states, masks = _inputs(batch=3)
    # what each target's self-attention encoder returns, through hooks
    seen = {}
    for t, enc in paper.self_attn.items():
        enc.register_forward_hook(lambda mod, args, out, t=t: seen.__setitem__(t, out))
    with torch.no_grad():
        out = paper(states, masks)
        assert out.shape == (3, paper.out_dim) and paper.out_dim == 3 * 16
        lengths = {m: masks[m].sum(1) for m in DIMS}
        for t in DIMS:  # the final LayerNorm: every step normalised
            assert seen[t].mean(-1).abs().max() < 1e-5 and (seen[t].std(-1, unbiased=False) - 1).abs().max() < 1e-3
        last = torch.cat([seen[t][torch.arange(3), lengths[t] - 1] for t in DIMS], dim=-1)  # last *valid* step
        assert torch.allclose(out, last + paper.output_block(last), atol=1e-6)
        noisy = {m: h.clone() for m, h in states.items()}
        for m in DIMS:
            noisy[m][~masks[m]] = float("nan")
        assert torch.equal(paper(noisy, masks), out)  # masked frames never reach the output
    # mult's choices as switches
    ours = MulTPaperFusion(DIMS, d_model=8, num_layers=2, num_heads=2, self_layers=1, embed_dropout=0.0, embed_scale=False,
                           final_norm=False, pooling="mean", output_block=False).eval()
    assert all(e.norm is None and e.scale == 1.0 for e in ours.cross.values()) and ours.output_block is None
    assert all(len(e.layers) == 1 for e in ours.self_attn.values())
    from mmsenti.errors import MmsentiError

    with pytest.raises(MmsentiError, match="pooling='first'"):
        MulTPaperFusion(DIMS, d_model=8, num_heads=2, pooling="first")


def test_mult_is_unchanged_by_the_new_options():
    """``mult``'s parameters and output stay what they were (exported engines and checkpoints depend on them)."""
    from mmsenti.models.attention import TransformerEncoderLayer
    from mmsenti.models.fusion import MulTFusion

    torch.manual_seed(0)
    mult = MulTFusion(DIMS, d_model=8, num_heads=2).eval()
    assert all(layer.norm_first for enc in mult.self_attn.values() for layer in enc.layers)
    layer = TransformerEncoderLayer(8, 2, 16, 0.0)
    post = TransformerEncoderLayer(8, 2, 16, 0.0, norm_first=False)
    post.load_state_dict(layer.state_dict())  # the same parameter names
    ref = torch.nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True, norm_first=False)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert torch.allclose(post(x), ref(x), atol=1e-6)
        ref.norm_first = True
        assert torch.allclose(layer(x), ref(x), atol=1e-6)


# ---------------------------------------------------------------- training and export
@pytest.mark.parametrize("name", NAMES)
def test_fast_dev_run_mosi_fusion(name, tmp_path, synthetic_small, monkeypatch):
    """``python train.py experiment=mosi_fusion model/fusion=<name> debug=fdr``, in-process; the fusion's terms reach
    the training objective through the LightningModule's loss hook."""
    from test_train import compose_train

    from mmsenti.training.lit_module import SentimentLitModule
    from mmsenti.training.tasks import train

    objective = []
    original = SentimentLitModule.training_losses

    def recorded(self, out, batch):
        losses = original(self, out, batch)
        objective.append({k: float(v.detach()) for k, v in losses.items()})
        return losses

    monkeypatch.setattr(SentimentLitModule, "training_losses", recorded)
    cfg = compose_train(["experiment=mosi_fusion", f"model/fusion={name}", "debug=fdr", "model.net.text_encoder.top_k=1",
                         "data.batch_size=16"], tmp_path, synthetic_small)
    assert cfg.trainer.fast_dev_run and cfg.model.net.fusion.name == name
    metrics, objects = train(cfg)
    assert any(k.startswith("val/") for k in metrics)
    assert type(objects["model"].net.fusion) is registry.lookup("fusion", name)
    terms = {"misa": ["loss_misa_sim", "loss_misa_diff", "loss_misa_recon"],
             "self_mm": ["loss_selfmm_text", "loss_selfmm_audio", "loss_selfmm_vision"], "mult_paper": []}[name]
    assert len(objective) == 1 and sorted(objective[0]) == sorted(["loss", "loss_main", *terms])
    if name == "misa":  # loss = main + 1.0 sim + 0.3 diff + 1.0 recon (the yaml's weights)
        step = objective[0]
        want = step["loss_main"] + step["loss_misa_sim"] + 0.3 * step["loss_misa_diff"] + step["loss_misa_recon"]
        assert step["loss"] == pytest.approx(want, rel=1e-5) and step["loss_misa_recon"] > 0


@pytest.mark.slow
def test_self_mm_labels_move_from_epoch_2(tmp_path, synthetic_small):
    """Two short epochs through Lightning: the hook passes ids and the epoch; epoch 2 generates unimodal labels."""
    from test_train import compose_train

    from mmsenti.training.tasks import train

    cfg = compose_train(["experiment=mosi_fusion", "model/fusion=self_mm", "model.net.text_encoder.top_k=1",
                         "data.batch_size=16", "trainer.max_epochs=2", "+trainer.limit_train_batches=2",
                         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"], tmp_path, synthetic_small)
    _, objects = train(cfg)
    store = objects["model"].net.fusion.store
    assert len(store.index) >= 16
    moved = (store.labels["text"] - store.labels["fusion"]).abs()
    assert bool((moved > 0).any()) and bool((store.labels["text"].abs() <= 3.0).all())


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_fp32_parity(name, tmp_path):
    """``export_model`` in its own process (as test_zoo_fusions.py: a second export in one process can freeze an axis)."""
    from conftest import export_small_fusion

    # small widths equal to none of the export's example sizes (batch 2, 16 tokens, 20 / 23 frames)
    fusion = {"misa": {"d_model": 6, "num_heads": 2, "dim_feedforward": 14},
              "self_mm": {"d_model": 10, "text_hidden": 5, "audio_hidden": 3, "vision_hidden": 2},
              "mult_paper": {"d_model": 6, "num_heads": 2, "num_layers": 2}}[name]
    manifest = export_small_fusion({"name": name, **fusion}, tmp_path)
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
