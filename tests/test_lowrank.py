"""Low-rank factorisation (compression=lowrank): the SVD bound, rank selection by energy and by budget,
layers left dense, checkpoints that rebuild the factorised structure, smaller exports with parity,
composition with structured pruning and INT8, and a fast_dev_run of the Hydra config."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmsenti.compression.lowrank import (
    LowRankFactorisation, budget_ranks, candidate_layers, energy_rank, factorise, factorise_linear, plan_ranks, saves_parameters)
from mmsenti.compression.structured import apply_masks, compute_masks, prune_structured, structure_report
from mmsenti.errors import MmsentiError
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.models.checkpoint import load_sentiment_checkpoint, low_rank_ranks
from mmsenti.models.layers import LowRankLinear
from test_compression import inputs  # noqa: E402  (the one set of tiny model inputs; tests/ is on sys.path)

# one MiniLM projection and the fusion: SVDs of the whole encoder take tens of seconds on a busy 2-core machine
TEXT_LAYER = "text_encoder.backbone.encoder.layer.5.attention.self.query"
SCOPE = (TEXT_LAYER, "fusion.*")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """LAPACK's SVD on two threads is several times slower than on one when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(seed: int = 0) -> SentimentModel:
    torch.manual_seed(seed)
    cfg = SentimentModelConfig(fusion={"name": "mult", "d_model": 32, "num_layers": 1, "num_heads": 4},
                               audio_encoder={"name": "conv_transformer", "input_dim": 74, "d_model": 32, "num_heads": 4},
                               vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 32, "num_heads": 4})
    return SentimentModel(cfg, pretrained_weights=False).eval()


@pytest.fixture(scope="module")
def base_model() -> SentimentModel:
    return small_model()


# ----------------------------------------------------------------------------- the SVD
@pytest.mark.parametrize("rank", [1, 5, 12])
def test_factorised_layer_is_within_the_truncation_error_bound(rank):
    torch.manual_seed(0)
    dense = nn.Linear(24, 40)
    s = torch.linalg.svdvals(dense.weight.detach().double())
    thin = factorise_linear(dense, rank)
    assert isinstance(thin, LowRankLinear) and thin.rank == rank
    assert tuple(thin.first.weight.shape) == (rank, 24) and tuple(thin.second.weight.shape) == (40, rank)
    assert thin.first.bias is None and torch.equal(thin.second.bias, dense.bias)
    error = (dense.weight - thin.weight).detach().double()
    # Eckart–Young–Mirsky: spectral error s_{r+1}, Frobenius error sqrt(sum_{i>r} s_i^2)
    assert torch.linalg.matrix_norm(error, ord=2).item() == pytest.approx(s[rank].item(), rel=1e-4)
    assert torch.linalg.matrix_norm(error).item() == pytest.approx(s[rank:].square().sum().sqrt().item(), rel=1e-4)
    x = torch.randn(6, 24)
    with torch.no_grad():
        assert torch.allclose(thin(x), x @ thin.weight.T + dense.bias, atol=1e-5)
        bound = s[rank].item() * x.norm(dim=1)  # ||(W - W_r) x|| <= s_{r+1} ||x||
        assert bool(((thin(x) - dense(x)).norm(dim=1) <= bound * (1 + 1e-4) + 1e-5).all())


def test_full_rank_factorisation_reproduces_the_layer():
    torch.manual_seed(1)
    dense = nn.Linear(8, 5)
    thin = factorise_linear(dense, 5)
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(thin(x), dense(x), atol=1e-5)


# ----------------------------------------------------------------------------- ranks
def test_energy_rank_on_a_hand_computed_spectrum():
    s = torch.tensor([3.0, 2.0, 1.0])  # s^2 = 9, 4, 1: energies 9/14 = 0.643, 13/14 = 0.929, 1
    assert energy_rank(s, 0.5) == 1
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 0.65) == 2
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 13 / 14) == 2
    assert energy_rank(s, 0.93) == 3
    assert energy_rank(s, 1.0) == 3
    assert energy_rank(torch.zeros(4), 0.9) == 1  # an all-zero weight: rank 1 keeps everything there is
    for bad in (0.0, 1.5):
        with pytest.raises(MmsentiError, match="compression.energy"):
            energy_rank(s, bad)


def test_saving_rule():
    assert saves_parameters(3, 8, 8)  # 3*16 = 48 < 64
    assert not saves_parameters(4, 8, 8)  # 64 == 64: no saving, stays dense
    assert not saves_parameters(1, 1, 192)  # a 1-output head never saves


def test_budget_is_shared_across_layers_by_energy_per_parameter():
    a = torch.tensor([2.0, 1.0, 0, 0, 0, 0, 0, 0])  # energy shares 0.8, 0.2
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0])  # 0.25 each
    spectra = {"a": (a, 8, 8), "b": (b, 8, 8)}
    # half of 128 weights = 4 singular values of 16 weights each: rank 1 each, then b's 0.25s beat a's 0.2
    assert budget_ranks(spectra, 0.5) == {"a": 1, "b": 3}
    # a budget that only a dense layer can use: every rank reaches break-even, so both stay dense
    assert budget_ranks(spectra, 1.0) == {"a": None, "b": None}
    with pytest.raises(MmsentiError, match="too small"):
        budget_ranks(spectra, 0.1)  # rank 1 in both already needs 32 of 128
    with pytest.raises(MmsentiError, match="compression.budget"):
        budget_ranks(spectra, 0.0)


def test_budget_on_a_model_keeps_the_budget(base_model):
    model = copy.deepcopy(base_model)
    plans = plan_ranks(model, budget=0.4, include=SCOPE)
    dense = sum(p.dense_params for p in plans.values())
    assert sum(p.params for p in plans.values()) <= 0.4 * dense
    assert all(p.rank is None or saves_parameters(p.rank, p.out_features, p.in_features) for p in plans.values())
    assert len({p.rank for p in plans.values()}) > 1  # shared, not one rank everywhere


def test_layers_that_would_not_save_parameters_are_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    report = factorise(model, energy=1.0, include=["*"], exclude=[])
    assert report["layers_factorised"] == 0 and type(model[0]) is nn.Linear and type(model[2]) is nn.Linear
    assert "would not save parameters" in report["left_dense"]["0"] and "2" in report["left_dense"]
    report = factorise(model, energy=0.5, include=["*"], exclude=[])
    assert isinstance(model[0], LowRankLinear) and type(model[2]) is nn.Linear  # the 16 -> 1 head never saves
    assert report["ranks"] == {"0": model[0].rank}


def test_default_scope_is_the_text_encoder_layers_and_the_fusion_blocks(base_model):
    names = set(candidate_layers(base_model))
    assert {"text_encoder.backbone.encoder.layer.0.attention.self.query", "text_encoder.backbone.encoder.layer.5.output.dense",
            "fusion.cross.audio_to_text.0.ff.0"} <= names
    assert not any(n.startswith(("fusion.inputs.", "head", "frame_encoders")) or ".pooler." in n for n in names)


def test_ranks_round_up_to_a_multiple(base_model):
    plans = plan_ranks(base_model, energy=0.5, include=["fusion.*"], multiple_of=8)
    ranks = [p.rank for p in plans.values() if p.rank is not None]
    assert ranks and all(r % 8 == 0 for r in ranks)


def test_torch_fast_path_modules_are_never_factorised():
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), nn.Linear(16, 16))
    assert list(candidate_layers(model, ["*"], [])) == ["1"]  # their fast paths read .weight directly
    with pytest.raises(MmsentiError, match="no nn.Linear layer matches"):
        plan_ranks(model, include=["nothing.*"])


# ----------------------------------------------------------------------------- the model
def test_factorising_the_model_drops_parameters_and_keeps_outputs_close(base_model):
    model = copy.deepcopy(base_model)
    with torch.no_grad():
        before = base_model(**inputs()).score
    report = factorise(model, energy=0.9, include=SCOPE)
    assert report["layers_factorised"] > 0 and report["ranks"] == low_rank_ranks(model)
    assert report["params"] == sum(p.numel() for p in model.parameters()) < report["params_before"]
    assert all(n == TEXT_LAYER or n.startswith("fusion.") for n in report["ranks"])
    assert not any(n.startswith("fusion.inputs.") for n in report["ranks"])  # excluded by default
    assert all(0.9 <= e <= 1.0 for e in report["energy_kept"].values())
    with torch.no_grad():
        after = model(**inputs()).score
    assert (after - before).abs().max().item() < 0.5  # close, not equal: 10% of the energy is gone
    # structured pruning still reads a factorised FFN (its .weight is the product) and finds nothing dead
    assert structure_report(model)["ffn_neurons_zeroed"] == 0


def test_callback_prunes_then_factorises_before_the_optimiser(base_model):
    """setup("fit"): pruned (zeroed) FFN neurons are removed first, then the SVD; frozen layers stay frozen."""
    from mmsenti.compression.structured import find_units

    module = SimpleNamespace(net=copy.deepcopy(base_model))
    apply_masks(module.net, compute_masks(module.net, ffn_amount=0.5, scope=["fusion"]), ["fusion"])
    units = find_units(module.net, ["fusion"])[0]
    widths = {u.name: u.size for u in units}
    scope = (*SCOPE, "text_encoder.backbone.encoder.layer.0.attention.self.query")  # a frozen layer too
    trainable = {n: m.weight.requires_grad for n, m in candidate_layers(module.net, scope, ()).items()}
    assert not trainable["text_encoder.backbone.encoder.layer.0.attention.self.query"]
    callback = LowRankFactorisation(budget=0.5, include=scope)
    callback.setup(None, module, "validate")
    assert not low_rank_ranks(module.net)  # only a fit factorises
    callback.setup(None, module, "fit")
    ranks = low_rank_ranks(module.net)
    assert ranks and callback.report["ranks"] == ranks and "text_encoder.backbone.encoder.layer.0.attention.self.query" in ranks
    assert all(u.up.out_features == widths[u.name] - round(0.5 * widths[u.name]) for u in units)  # pruned units gone first
    assert any(isinstance(u.down, LowRankLinear) and u.down.in_features < widths[u.name] for u in units)  # then factorised
    for name in ranks:
        assert all(p.requires_grad == trainable[name] for p in module.net.get_submodule(name).parameters()), name
    callback.setup(None, module, "fit")  # already factorised (a resumed run): left as it is
    assert low_rank_ranks(module.net) == ranks
    checkpoint: dict = {}
    callback.on_save_checkpoint(None, module, checkpoint)
    assert checkpoint["mmsenti_compression"]["lowrank"]["ranks"] == ranks
    assert checkpoint["mmsenti_compression"]["lowrank"]["budget"] == 0.5
    with pytest.raises(MmsentiError, match="compression.energy or compression.budget"):
        LowRankFactorisation(energy=None, budget=None)


# ----------------------------------------------------------------------------- checkpoints
def save_lightning_like(model: SentimentModel, path: Path, ranks: dict[str, int] | None) -> Path:
    ckpt = {"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_config": model.config.to_dict()}}
    if ranks is not None:
        ckpt["mmsenti_compression"] = {"lowrank": {"ranks": ranks}}
    torch.save(ckpt, path)
    return path


def test_checkpoint_loader_rebuilds_the_factorised_structure(base_model, tmp_path):
    model = copy.deepcopy(base_model)
    prune_structured(model, ffn_amount=0.5, scope=["fusion"])  # prune, then factorise: both shapes must come back
    factorise(model, budget=0.5, include=SCOPE)
    ranks = low_rank_ranks(model)
    loaded = load_sentiment_checkpoint(save_lightning_like(model, tmp_path / "lowrank.ckpt", ranks))
    assert low_rank_ranks(loaded.model) == ranks and loaded.extras["low_rank"] == ranks
    with torch.no_grad():
        assert torch.allclose(loaded.model(**inputs()).score, model(**inputs()).score, atol=1e-6)
    assert sum(p.numel() for p in loaded.model.parameters()) == sum(p.numel() for p in model.parameters())


def test_mismatched_factorised_checkpoints_are_one_clear_error(base_model, tmp_path):
    model = copy.deepcopy(base_model)
    factorise(model, budget=0.5, include=SCOPE)
    ranks = low_rank_ranks(model)
    name = next(iter(ranks))
    with pytest.raises(MmsentiError, match="no mmsenti_compression.lowrank.ranks record"):
        load_sentiment_checkpoint(save_lightning_like(model, tmp_path / "no_record.ckpt", None))
    with pytest.raises(MmsentiError, match=f"says {name} has rank {ranks[name] + 1}"):
        load_sentiment_checkpoint(save_lightning_like(model, tmp_path / "wrong_rank.ckpt", {**ranks, name: ranks[name] + 1}))
    with pytest.raises(MmsentiError, match="names fusion.nowhere"):
        state = save_lightning_like(model, tmp_path / "bad_name.ckpt", ranks)
        ckpt = torch.load(state, weights_only=True)
        ckpt["mmsenti_compression"]["lowrank"]["ranks"]["fusion.nowhere"] = 3
        ckpt["state_dict"]["net.fusion.nowhere.first.weight"] = torch.zeros(3, 4)
        torch.save(ckpt, state)
        load_sentiment_checkpoint(state)


# ----------------------------------------------------------------------------- export
# one more dynamo export of the tiny model (minutes on a busy 2-core machine); the dense one is the session's
@pytest.fixture(scope="module")
def lowrank_export(tiny_model, tmp_path_factory) -> dict:
    """The session's tiny model (its dense export is conftest's ``tiny_exports``), pruned then factorised, exported fp32."""
    from mmsenti.export.pipeline import ExportOptions, export_model

    model = copy.deepcopy(tiny_model)
    prune_structured(model, ffn_amount=0.25, scope=["fusion"])
    factorise(model, budget=0.5, include=SCOPE)
    folder = tmp_path_factory.mktemp("lowrank_export") / "fused"
    manifest = export_model(model, folder, ExportOptions(metrics=False), source={"checkpoint": None})
    return {"manifest": manifest, "folder": folder, "model": model}


def onnx_params(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).size for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.slow
def test_exported_low_rank_graph_is_smaller_and_passes_parity(tiny_model, tiny_exports, lowrank_export):
    from mmsenti.runtime.manifest import read_manifest

    dense = read_manifest(tiny_exports["fused"])
    low = lowrank_export["manifest"]
    assert low["parity"]["passed"] and low["parity"]["max_abs_diff"] <= 1e-4
    assert low["size_bytes"] < dense["size_bytes"]
    saved = sum(p.numel() for p in tiny_model.parameters()) - sum(p.numel() for p in lowrank_export["model"].parameters())
    dense_params = onnx_params(tiny_exports["fused"] / "model.onnx")
    low_params = onnx_params(lowrank_export["folder"] / "model.onnx")
    assert dense_params - low_params >= 0.9 * saved > 0  # the thin layers are what the graph holds
    assert dense["size_bytes"] - low["size_bytes"] >= 0.75 * 4 * saved  # fp32 bytes (less the thin layers' names and nodes)


@pytest.mark.slow
def test_low_rank_graph_quantizes_to_int8_within_the_export_parity_bound(lowrank_export, tmp_path):
    """INT8 at export composes: the dynamic-INT8 graph of the factorised model passes the INT8 parity check."""
    from mmsenti.export.onnx_export import check_parity, parity_tolerance
    from mmsenti.export.quantize import quantize_dynamic_int8
    from mmsenti.export.wrapper import ExportWrapper
    from mmsenti.runtime.session import make_session

    int8 = tmp_path / "model.int8.onnx"
    quantize_dynamic_int8(lowrank_export["folder"] / "model.onnx", int8)
    assert int8.stat().st_size < (lowrank_export["folder"] / "model.onnx").stat().st_size
    wrapper = ExportWrapper(lowrank_export["model"], "fused").eval()
    parity = check_parity(wrapper, make_session(int8), "int8", tolerance=parity_tolerance("int8", "dynamic"))
    assert parity["passed"]


# ----------------------------------------------------------------------------- Hydra + Lightning
@pytest.fixture(scope="module")
def lowrank_run(tmp_path_factory):
    """A fast_dev_run of experiment=mosi_fusion compression=lowrank, and its checkpoint."""
    from test_train import SMALL, compose_train

    from mmsenti.data.synthetic import write_synthetic_mosi
    from mmsenti.training.tasks import train

    root = tmp_path_factory.mktemp("lowrank_run")
    data = write_synthetic_mosi(root / "data", scale="small", seed=0)
    overrides = ["experiment=mosi_fusion", "compression=lowrank", "compression.budget=0.5",
                 f"compression.include=[{','.join(SCOPE)}]", "debug=fdr", *SMALL]
    cfg = compose_train(overrides, root / "run", data)
    metrics, objects = train(cfg)
    ckpt = root / "run" / "trained.ckpt"
    objects["trainer"].save_checkpoint(ckpt)  # fast_dev_run writes none
    return {"cfg": cfg, "metrics": metrics, "objects": objects, "ckpt": ckpt, "data": data, "root": root}


def test_compression_lowrank_fast_dev_run_and_its_checkpoint(lowrank_run):
    import hydra

    from mmsenti.training.tasks import check_checkpoint

    cfg, objects, ckpt = lowrank_run["cfg"], lowrank_run["objects"], lowrank_run["ckpt"]
    assert cfg.callbacks.lowrank._target_.endswith("LowRankFactorisation")
    assert math.isfinite(lowrank_run["metrics"]["val/MAE"])
    net = objects["model"].net
    ranks = low_rank_ranks(net)
    assert ranks and all(n == TEXT_LAYER or n.startswith("fusion.") for n in ranks)
    # the optimiser trains the thin layers (it was built after the factorisation)
    optimised = {id(p) for group in objects["trainer"].optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in optimised for n, m in net.named_modules() if n in ranks for p in m.parameters() if p.requires_grad)
    loaded = load_sentiment_checkpoint(ckpt)
    assert low_rank_ranks(loaded.model) == ranks
    batch = inputs(2)
    with torch.no_grad():
        assert torch.allclose(loaded.model(**batch).score, net.eval()(**batch).score, atol=1e-5)
    # resume / eval: the configured (dense) module takes the checkpoint's structure before the check
    fresh = hydra.utils.instantiate(cfg.model, _convert_="all")
    check_checkpoint(str(ckpt), fresh)
    assert low_rank_ranks(fresh.net) == ranks


def test_lowrank_student_distils_from_a_teacher_checkpoint(lowrank_run):
    """distill.teacher_ckpt + compression=lowrank compose: the teacher (here itself factorised) loads through
    the one loader, the student is factorised before training and learns from the teacher's soft targets."""
    from test_train import SMALL, compose_train

    from mmsenti.training.tasks import train

    cfg = compose_train(["experiment=mosi_distill_crossmodal", "compression=lowrank", "compression.budget=0.5",
                         f"compression.include=[{','.join(SCOPE)}]", f"distill.teacher_ckpt={lowrank_run['ckpt']}",
                         "distill.cache_dir=null", "debug=fdr", *SMALL], lowrank_run["root"] / "distill", lowrank_run["data"])
    metrics, objects = train(cfg)
    student = objects["model"]
    assert math.isfinite(metrics["val/MAE"]) and student.soft_targets is not None
    assert low_rank_ranks(student.teacher) == low_rank_ranks(lowrank_run["objects"]["model"].net)
    assert low_rank_ranks(student.net) and "fusion.inputs.proj.text" not in low_rank_ranks(student.net)


def test_lowrank_init_from_composes_with_distillation(tmp_path):
    from test_train import compose_train

    cfg = compose_train(["experiment=sst2_distill", "model/text_encoder=minilm_l6", "compression=lowrank",
                         "distill.teacher_ckpt=teacher.ckpt", "compression.init_from=teacher.ckpt"], tmp_path, tmp_path)
    assert cfg.model._target_.endswith("DistillSentimentLitModule") and cfg.model.distill.teacher_ckpt == "teacher.ckpt"
    assert cfg.callbacks.lowrank.init_from == "teacher.ckpt" and cfg.compression.name == "lowrank"


def test_a_factorised_run_resumes_from_its_checkpoint(lowrank_run):
    """train.py ckpt_path=<factorised ckpt>: the structure comes from the checkpoint, not from a new SVD."""
    from test_train import SMALL, compose_train

    from mmsenti.training.tasks import train

    overrides = ["experiment=mosi_fusion", "compression=lowrank", "compression.energy=0.5",  # other ranks if recomputed
                 f"compression.include=[{','.join(SCOPE)}]", f"ckpt_path={lowrank_run['ckpt']}", "debug=fdr", *SMALL]
    _, objects = train(compose_train(overrides, lowrank_run["root"] / "resume", lowrank_run["data"]))
    assert low_rank_ranks(objects["model"].net) == low_rank_ranks(lowrank_run["objects"]["model"].net)
