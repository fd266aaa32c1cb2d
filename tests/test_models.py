"""The sentiment model: shapes, masks, missing modalities, the fast path, the registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmsenti import registry
from mmsenti.errors import MmsentiError
from mmsenti.models import SentimentModel, SentimentModelConfig

SMALL = {"d_model": 32, "num_layers": 1, "num_heads": 4}


def make_inputs(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (batch, 9), generator=g)
    ids[:, 0] = 101
    attention = torch.ones(batch, 9, dtype=torch.long)
    attention[0, 6:] = 0
    audio_mask = torch.ones(batch, 7, dtype=torch.bool)
    audio_mask[1] = False  # sample 1 has no audio at all
    vision_mask = torch.ones(batch, 5, dtype=torch.bool)
    vision_mask[2, 2:] = False
    return {
        "input_ids": ids, "attention_mask": attention,
        "audio": torch.randn(batch, 7, 74, generator=g), "audio_mask": audio_mask,
        "vision": torch.randn(batch, 5, 47, generator=g), "vision_mask": vision_mask,
    }


@pytest.fixture(scope="module", params=["mult", "late", "text_only"])
def model(request) -> SentimentModel:
    torch.manual_seed(0)
    cfg = SentimentModelConfig(fusion={"name": request.param, **SMALL}, aux_7class=True,
                               audio_encoder={"name": "conv_transformer", "input_dim": 74, "d_model": 32, "num_heads": 4},
                               vision_encoder={"name": "lstm", "input_dim": 47, "d_model": 32})
    return SentimentModel(cfg).eval()


def test_output_shapes_and_range(model):
    out = model(**make_inputs())
    assert out.score.shape == (3,)
    assert out.logits_7.shape == (3, 7)
    assert torch.isfinite(out.score).all()
    assert (out.score.abs() <= 3).all()


# the fusions that read audio and vision, with each frame encoder on each modality: where padding and an
# absent modality can leak into the prediction (text_only fusion ignores frames, so it could never fail)
FUSED = [(fusion, audio, vision) for fusion in ("mult", "late")
         for audio, vision in (("conv_transformer", "lstm"), ("lstm", "conv_transformer"))]


@pytest.fixture(scope="module", params=FUSED, ids=["-".join(p) for p in FUSED])
def fused(request) -> SentimentModel:
    fusion, audio, vision = request.param
    torch.manual_seed(0)
    cfg = SentimentModelConfig(fusion={"name": fusion, **SMALL}, aux_7class=True,
                               audio_encoder={"name": audio, "input_dim": 74, "d_model": 32},
                               vision_encoder={"name": vision, "input_dim": 47, "d_model": 32})
    return SentimentModel(cfg).eval()


def test_padding_does_not_change_predictions(fused):
    inputs = make_inputs()
    before = fused(**inputs).score
    poisoned = dict(inputs)
    poisoned["audio"] = inputs["audio"].clone()
    poisoned["audio"][1] = 1e4  # fully masked sample
    poisoned["vision"] = inputs["vision"].clone()
    poisoned["vision"][2, 2:] = -1e4  # masked tail
    after = fused(**poisoned).score
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)
    # the same poison on real frames does change them: the check above can fail
    for modality, sample in (("audio", 0), ("vision", 2)):
        real = dict(inputs)
        real[modality] = inputs[modality].clone()
        real[modality][sample, :2] += 3.0
        changed = fused(**real).score
        assert (before[sample] - changed[sample]).abs() > 1e-3, modality
        torch.testing.assert_close(before[[i for i in range(3) if i != sample]],
                                   changed[[i for i in range(3) if i != sample]], atol=1e-5, rtol=1e-5)


def test_missing_modality_equals_all_zero_mask(fused):
    """Calling without audio/vision is the same code path as an all-False mask."""
    inputs = make_inputs()
    absent = fused(inputs["input_ids"], inputs["attention_mask"]).score
    masked = dict(inputs)
    masked["audio_mask"] = torch.zeros_like(inputs["audio_mask"])
    masked["vision_mask"] = torch.zeros_like(inputs["vision_mask"])
    torch.testing.assert_close(absent, fused(**masked).score, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(absent, fused(**inputs).score, atol=1e-4)  # the frames it has do count


def test_classification_score_is_the_unbounded_logit():
    torch.manual_seed(0)
    net = SentimentModel(SentimentModelConfig(modalities=["text"], fusion={"name": "text_only"}, task="classification")).eval()
    ids, mask = torch.tensor([[101, 2009, 102]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        net.head[-1].bias.fill_(8.0)
        raw = net.head(net.fusion({"text": net.text_encoder(ids, mask)}, {"text": mask.bool()})).squeeze(-1)
        assert net(ids, mask).score.item() == pytest.approx(raw.item()) and raw.item() > 3.0
        regression = SentimentModel(dataclasses.replace(net.config, task="regression")).eval()
        regression.load_state_dict(net.state_dict())
        assert regression(ids, mask).score.item() == pytest.approx(3.0 * math.tanh(raw.item() / 3.0), rel=1e-5)


def test_fusion_uses_audio_and_vision():
    torch.manual_seed(0)
    net = SentimentModel(SentimentModelConfig(fusion={"name": "mult", **SMALL})).eval()
    inputs = make_inputs()
    changed = dict(inputs)
    changed["audio"] = inputs["audio"] + 3.0
    assert not torch.allclose(net(**inputs).score, net(**changed).score)


def test_text_only_fast_path_builds_no_frame_branches():
    net = SentimentModel(SentimentModelConfig(modalities=["text"], fusion={"name": "text_only"}))
    names = [n for n, _ in net.named_modules()]
    assert not any("frame_encoders." in n or "normalizers." in n for n in names)
    out = net(torch.tensor([[101, 2009, 102]]), torch.ones(1, 3, dtype=torch.long))
    assert out.score.shape == (1,)


def test_modality_dropout_only_while_training():
    torch.manual_seed(0)
    net = SentimentModel(SentimentModelConfig(fusion={"name": "late", **SMALL}, modality_dropout=1.0, head_dropout=0.0))
    inputs = make_inputs()
    net.train()
    torch.manual_seed(1)  # same dropout draws for both calls
    dropped = net(**inputs).score
    torch.manual_seed(1)
    hidden = {**inputs, "audio_mask": torch.zeros_like(inputs["audio_mask"]), "vision_mask": torch.zeros_like(inputs["vision_mask"])}
    text_only = net(**hidden).score
    torch.testing.assert_close(dropped, text_only)  # p=1 hides audio and vision for every sample
    net.eval()
    assert not torch.allclose(net(**inputs).score, net(**hidden).score)


def test_text_encoder_finetune_modes():
    def trainable_layers(mode: str, top_k: int = 2) -> set[int]:
        net = SentimentModel(SentimentModelConfig(modalities=["text"], fusion={"name": "text_only"},
                                                  text_encoder={"pretrained": "minilm_l6", "finetune": mode, "top_k": top_k}))
        layers = net.text_encoder.backbone.encoder.layer
        return {i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())}

    assert trainable_layers("frozen") == set()
    assert trainable_layers("top_k", 2) == {4, 5}
    assert trainable_layers("full") == set(range(6))
    with pytest.raises(MmsentiError, match="finetune"):
        trainable_layers("sometimes")


def test_pretrained_weights_are_real():
    """The default encoder is the packaged MiniLM-L6, not a random initialisation."""
    from transformers import AutoTokenizer

    from mmsenti.pretrained import resolve_pretrained

    net = SentimentModel(SentimentModelConfig(modalities=["text"], fusion={"name": "text_only"}))
    tok = AutoTokenizer.from_pretrained(resolve_pretrained("minilm_l6"))
    enc = tok(["i loved this movie", "a wonderful film", "the weather report for tuesday"], padding=True, return_tensors="pt")
    with torch.no_grad():
        h = net.text_encoder(enc["input_ids"], enc["attention_mask"])
    pooled = torch.nn.functional.normalize((h * enc["attention_mask"][..., None]).sum(1), dim=-1)
    sims = pooled @ pooled.T
    assert sims[0, 1] > sims[0, 2] + 0.1  # two movie compliments are closer than an unrelated sentence


def test_registry_names_and_errors():
    assert {"mult", "late", "text_only"} <= set(registry.available("fusion"))
    assert {"conv_transformer", "lstm"} <= set(registry.available("sequence_encoder"))
    with pytest.raises(MmsentiError, match="fusion='nonexistent': unknown fusion; choose one of late, lmf, misa, mult, mult_paper, self_mm, text_only, tfn"):
        registry.build("fusion", "nonexistent")


def test_bad_modalities_rejected():
    with pytest.raises(MmsentiError, match="modalities"):
        SentimentModelConfig(modalities=["audio", "vision"])


def test_offline_hub_id_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from mmsenti.pretrained import load_pretrained

    with pytest.raises(MmsentiError, match="could not load"):
        load_pretrained("some-org/definitely-not-cached-model", "model")
