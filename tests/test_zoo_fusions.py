"""The fusion zoo's tensor-fusion models (issue 16): ``tfn`` (Zadeh et al., 2017) and ``lmf`` (Liu et al., 2018).

TFN's outer-product layout on hand-checked numbers; LMF at full rank is TFN followed by a Linear layer
(one rank-1 term per tensor entry, one-hot factors); a missing modality gives finite output that no
masked frame can change; both train under ``experiment=mosi_fusion`` (fast_dev_run) and export to ONNX
with fp32 parity."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch

from mmsenti import registry
from mmsenti.models.zoo.lmf import LowRankFusion
from mmsenti.models.zoo.tfn import TensorFusion, outer_product

DIMS = {"text": 6, "audio": 5, "vision": 4}  # encoder widths fed to the fusions


def _inputs(batch: int = 3, steps: dict[str, int] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    steps = steps or {"text": 7, "audio": 5, "vision": 6}
    states = {m: torch.randn(batch, steps[m], d, generator=g) for m, d in DIMS.items()}
    masks = {}
    for m, t in steps.items():
        lengths = torch.randint(1, t + 1, (batch,), generator=g)
        masks[m] = torch.arange(t)[None] < lengths[:, None]
    return states, masks


def _set_unimodal(model, values: dict[str, float]) -> None:
    """Make the 1-wide, 1-layer subnetworks output fixed values: weight 0, ReLU(bias) = value > 0."""
    with torch.no_grad():
        for m, v in values.items():
            linear = model.subnets.nets[m][0]
            linear.weight.zero_()
            linear.bias.fill_(v)


def test_zoo_fusions_are_registered_with_descriptions():
    assert {"tfn", "lmf"} <= set(registry.available("fusion"))
    described = registry.describe()["fusion"]
    assert "Zadeh" in described["tfn"] and "Liu" in described["lmf"]


def test_tfn_outer_product_layout_hand_checked():
    t, a, v = 2.0, 3.0, 5.0
    got = outer_product([torch.tensor([[t]]), torch.tensor([[a]]), torch.tensor([[v]])])
    # row-major, text outermost, vision fastest; [h; 1] puts the 1 last
    assert got.tolist() == [[t * a * v, t * a, t * v, t, a * v, a, v, 1.0]]
    # the same through the module: dt = da = dv = 1, subnetworks made to output t, a, v
    tfn = TensorFusion(DIMS, text_hidden=1, audio_hidden=1, vision_hidden=1, num_layers=1, d_model=4).eval()
    assert tfn.fusion_dim == 8
    _set_unimodal(tfn, {"text": t, "audio": a, "vision": v})
    states, masks = _inputs(batch=2)
    fused = tfn.fuse(states, masks)
    assert torch.equal(fused, torch.tensor([[t * a * v, t * a, t * v, t, a * v, a, v, 1.0]] * 2))
    # a missing audio (h_a = 0): only the terms without audio stay, the constant 1 keeps them
    masks["audio"] = torch.zeros_like(masks["audio"])
    assert tfn.fuse(states, masks)[0].tolist() == [0.0, 0.0, t * v, t, 0.0, 0.0, v, 1.0]


def test_tfn_shape_and_the_constant_term():
    dt, da, dv = 3, 2, 4
    tfn = TensorFusion(DIMS, text_hidden=dt, audio_hidden=da, vision_hidden=dv, d_model=16).eval()
    states, masks = _inputs()
    fused = tfn.fuse(states, masks)
    assert fused.shape == (3, (dt + 1) * (da + 1) * (dv + 1)) and tfn.fusion_dim == fused.shape[1]
    assert torch.equal(fused[:, -1], torch.ones(3))  # 1·1·1
    hs = tfn.subnets(states, masks)
    cube = fused.view(3, dt + 1, da + 1, dv + 1)
    assert torch.allclose(cube[:, :dt, da, dv], hs["text"])  # unimodal terms: the other two constants
    assert torch.allclose(cube[:, dt, :da, dv], hs["audio"]) and torch.allclose(cube[:, dt, da, :dv], hs["vision"])
    assert torch.allclose(cube[:, :dt, :da, :dv], torch.einsum("bi,bj,bk->bijk", hs["text"], hs["audio"], hs["vision"]))
    assert tfn(states, masks).shape == (3, 16) and tfn.out_dim == 16
    text_only = TensorFusion({"text": 6}, text_hidden=dt, d_model=16).eval()
    assert text_only.fuse({"text": states["text"]}, {"text": masks["text"]}).shape == (3, dt + 1)


def test_lmf_at_full_rank_equals_tfn_then_a_linear_layer():
    torch.manual_seed(0)
    dt, da, dv, out = 2, 1, 3, 5
    dims = {"text": dt, "audio": da, "vision": dv}
    n = (dt + 1) * (da + 1) * (dv + 1)
    tfn = TensorFusion(DIMS, text_hidden=dt, audio_hidden=da, vision_hidden=dv, d_model=8).eval()
    lmf = LowRankFusion(DIMS, text_hidden=dt, audio_hidden=da, vision_hidden=dv, rank=n, d_model=out).eval()
    lmf.subnets.load_state_dict(tfn.subnets.state_dict())  # the same h_m
    linear = torch.nn.Linear(n, out)
    weight = linear.weight.detach().view(out, dt + 1, da + 1, dv + 1)
    # CP decomposition of the weight tensor: one rank-1 term per entry (i, j, k), one-hot factors,
    # the weight column carried by the text factor
    with torch.no_grad():
        for f in lmf.factors.values():
            f.zero_()
        for r, (i, j, k) in enumerate(itertools.product(range(dt + 1), range(da + 1), range(dv + 1))):
            lmf.factors["text"][r, i] = weight[:, i, j, k]
            lmf.factors["audio"][r, j] = 1.0
            lmf.factors["vision"][r, k] = 1.0
        lmf.bias.copy_(linear.bias)
    assert {m: lmf.factors[m].shape for m in dims} == {m: (n, d + 1, out) for m, d in dims.items()}
    for seed in range(3):
        states, masks = _inputs(batch=4, seed=seed)
        if seed == 2:
            masks["vision"][1] = False  # a missing modality too
        with torch.no_grad():
            want = linear(tfn.fuse(states, masks))
            got = lmf(states, masks)
        assert got.shape == (4, out) and torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("name", ["tfn", "lmf"])
@pytest.mark.parametrize("missing", ["audio", "vision", "both"])
def test_missing_modality_is_finite_and_blind_to_masked_frames(name, missing):
    torch.manual_seed(0)
    model = registry.build("fusion", name, input_dims=DIMS, d_model=8).eval()
    states, masks = _inputs(batch=3)
    gone = ["audio", "vision"] if missing == "both" else [missing]
    for m in gone:
        masks[m] = torch.zeros_like(masks[m])
    with torch.no_grad():
        base = model(states, masks)
        assert torch.isfinite(base).all()
        for garbage in (1e6, float("inf"), float("nan")):
            noisy = {m: h.clone() for m, h in states.items()}
            for m in DIMS:  # every masked frame, of missing and present modalities alike
                noisy[m][~masks[m]] = garbage
            assert torch.equal(model(noisy, masks), base), garbage
        # and the output is that of no frames at all
        empty = {**states, **{m: torch.zeros(3, 1, DIMS[m]) for m in gone}}
        assert torch.allclose(model(empty, {**masks, **{m: torch.zeros(3, 1, dtype=torch.bool) for m in gone}}), base)


@pytest.mark.parametrize("name", ["tfn", "lmf"])
def test_bad_sizes_are_one_line(name):
    from mmsenti.errors import MmsentiError

    with pytest.raises(MmsentiError, match="num_layers=0"):
        registry.build("fusion", name, input_dims=DIMS, num_layers=0)
    if name == "lmf":
        with pytest.raises(MmsentiError, match="rank=0"):
            registry.build("fusion", name, input_dims=DIMS, rank=0)


@pytest.mark.parametrize("name", ["tfn", "lmf"])
def test_fast_dev_run_mosi_fusion(name, tmp_path, synthetic_small):
    """``python train.py experiment=mosi_fusion model/fusion=<name> debug=fdr``, in-process (``debug=fdr`` sets
    ``trainer.fast_dev_run``, which configs/trainer does not define: a bare ``trainer.fast_dev_run=true`` needs ``+``)."""
    from test_train import compose_train

    from mmsenti.training.tasks import train

    cfg = compose_train(["experiment=mosi_fusion", f"model/fusion={name}", "debug=fdr", "model.net.text_encoder.top_k=1",
                         "data.batch_size=16"], tmp_path, synthetic_small)
    assert cfg.trainer.fast_dev_run
    assert cfg.model.net.fusion.name == name
    metrics, objects = train(cfg)
    assert any(k.startswith("val/") for k in metrics)
    net = objects["model"].net
    assert type(net.fusion) is registry.lookup("fusion", name)
    assert sorted(net.frame_encoders) == ["audio", "vision"]


# small widths that equal none of the export's example sizes (batch 2, 16 tokens, 20 / 23 frames): the dynamo
# exporter can tie a static width to a dynamic axis of the same size (a 20-wide text x audio product made ONNX
# Runtime fail at batch 1; a 16-wide text encoder froze the token axis)
SMALL_FUSIONS = {"tfn": {"name": "tfn", "text_hidden": 5, "audio_hidden": 3, "vision_hidden": 2, "d_model": 10},
                 "lmf": {"name": "lmf", "text_hidden": 5, "audio_hidden": 3, "vision_hidden": 2, "d_model": 10, "rank": 3}}


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """``small_export(name) -> (folder, manifest)``: the small model of ``SMALL_FUSIONS[name]`` exported once per
    module (each export ~40 s of dynamo tracing); read-only, write beside it in a test's own ``tmp_path``."""
    from conftest import export_small_fusion

    done: dict[str, tuple] = {}

    def get(name: str):
        if name not in done:
            out = tmp_path_factory.mktemp(f"small_{name}")
            done[name] = (out / "export", export_small_fusion(SMALL_FUSIONS[name], out))
        return done[name]

    return get


@pytest.mark.parametrize("name", ["tfn", "lmf"])
def test_onnx_export_fp32_parity(name, small_export):
    """``export_model`` (what ``mmsenti export`` runs) in its own process, as the CLI does: exported second in one
    process, after the other zoo model, lmf's token axis came out frozen at the example's 16 tokens."""
    _, manifest = small_export(name)
    assert manifest["parity"]["max_abs_diff"] <= 1e-4


def test_lmf_dynamic_int8_keeps_its_rank3_factors_in_fp32_and_runs(small_export, tmp_path):
    """LMF's per-rank factors are MatMul weights of rank 3 ([rank, d + 1, out]). ORT's dynamic quantizer
    turned them into MatMulInteger nodes that fail at run time ("b zero point is not valid": the zoo report's
    `mmsenti export <lmf ckpt> --precision int8` died in its parity check); they now stay fp32, the rest is INT8."""
    from mmsenti.export.benchmark import synthetic_feeds
    from mmsenti.export.quantize import batched_weight_matmuls, quantize_dynamic_int8
    from mmsenti.runtime.session import make_session

    folder, manifest = small_export("lmf")
    src = folder / "model.onnx"
    batched = batched_weight_matmuls(src)
    assert batched and all(n.startswith("model.fusion") for n in batched)  # the factors, nothing else
    info = quantize_dynamic_int8(src, tmp_path / "int8.onnx")
    assert info["fp32_batched_weights"] and set(info["fp32_batched_weights"]) <= set(info["excluded_nodes"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the other MatMuls are INT8
    dims = {m: spec["dim"] for m, spec in manifest["features"].items()}
    feeds = synthetic_feeds([i["name"] for i in manifest["inputs"]], dims, batch=2, seq=16, frames=20)
    fp32, int8 = (make_session(p, threads=1).run(None, feeds)[0] for p in (src, tmp_path / "int8.onnx"))
    assert np.isfinite(int8).all() and np.max(np.abs(int8 - fp32)) < 0.5
