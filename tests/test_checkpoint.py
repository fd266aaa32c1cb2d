"""The one checkpoint loader: the model from the stored config, one aux_7class rule, one strictness
policy, and one clear line for every foreign, unsafe or mismatched file."""

from __future__ import annotations

import collections

import pytest
import torch

from mmsenti.errors import MmsentiError
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.models.checkpoint import describe_mismatch, load_sentiment_checkpoint, state_dict_mismatch

TEXT_ONLY = dict(modalities=["text"], text_encoder={"pretrained": "minilm_l6", "finetune": "frozen"},
                 fusion={"name": "text_only"}, head_dropout=0.0)


def _save(path, hparams, model=None, **extra):
    model = model or SentimentModel(SentimentModelConfig.from_dict(hparams))
    torch.save({"hyper_parameters": hparams, "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
                "epoch": 3, **extra}, path)
    return model


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "text.ckpt"
    hp = {**TEXT_ONLY, "aux_7class_weight": 0.5, "loss": "l1"}
    model = _save(path, hp, SentimentModel(SentimentModelConfig.from_dict({**TEXT_ONLY, "aux_7class": True})),
                  datamodule_hyper_parameters={"source": "sst2", "max_text_len": 40, "text_normalization": "none"})
    return path, model


def test_the_model_comes_back_with_its_weights_and_the_aux_rule(text_ckpt):
    path, original = text_ckpt
    loaded = load_sentiment_checkpoint(path)
    assert loaded.model_config.aux_7class  # the head exists because its loss had a weight
    assert loaded.model.head_7 is not None and not loaded.model.training
    assert loaded.data_config["max_text_len"] == 40 and loaded.task == "regression" and loaded.extras["epoch"] == 3
    ids = torch.tensor([[101, 2023, 2001, 2307, 102]])
    with torch.no_grad():
        want = original.eval()(ids, torch.ones_like(ids))
        got = loaded.model(ids, torch.ones_like(ids))
    assert torch.equal(want.score, got.score) and torch.equal(want.logits_7, got.logits_7)


def test_no_pretrained_weight_file_is_read(text_ckpt, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained must not run: the checkpoint holds every tensor")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    load_sentiment_checkpoint(text_ckpt[0])


def test_nested_model_config_is_read_first(tmp_path):
    path = tmp_path / "nested.ckpt"
    model = SentimentModel(SentimentModelConfig.from_dict({**TEXT_ONLY, "task": "classification"}))
    torch.save({"hyper_parameters": {"model_config": SentimentModelConfig.from_dict({**TEXT_ONLY, "task": "classification"}).to_dict(),
                                     "loss": "bce"},
                "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_sentiment_checkpoint(path)
    assert loaded.task == "classification" and loaded.model_config.modalities == ["text"]


class Payload:
    """Stands for any pickled object a checkpoint may smuggle in (code runs when it is unpickled)."""


def test_a_pickled_object_is_refused_naming_its_class(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": collections.OrderedDict(a=1), "payload": Payload()}, path)
    with pytest.raises(MmsentiError, match=r"refused to unpickle [\w.]*test_checkpoint\.Payload") as err:
        load_sentiment_checkpoint(path)
    assert "\n" not in str(err.value) and "trust" in str(err.value)


@pytest.mark.parametrize("content,match", [
    (b"not a torch file at all", "not a readable mmsenti checkpoint"),
    (None, "no such file"),
])
def test_foreign_or_missing_files_get_one_line(tmp_path, content, match):
    path = tmp_path / "x.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MmsentiError, match=match):
        load_sentiment_checkpoint(path)


def test_a_state_dict_without_the_model_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": TEXT_ONLY}, path)
    with pytest.raises(MmsentiError, match="no 'net.' weights"):
        load_sentiment_checkpoint(path)


def test_mismatches_are_counted_the_same_way_and_strictness_is_one_switch(tmp_path, text_ckpt):
    path = tmp_path / "mismatch.ckpt"
    state = torch.load(text_ckpt[0], weights_only=True)
    state["state_dict"].pop("net.head.4.weight")
    state["state_dict"]["net.extra.weight"] = torch.zeros(1)
    state["state_dict"]["net.text_encoder.backbone.embeddings.LayerNorm.weight"] = torch.zeros(5)
    torch.save(state, path)
    with pytest.raises(MmsentiError, match=r"missing: head\.4\.weight \(1\); unexpected: extra\.weight \(1\); "
                                           r"shape mismatch: text_encoder\.backbone\.embeddings\.LayerNorm\.weight \(1\)"):
        load_sentiment_checkpoint(path)
    loaded = load_sentiment_checkpoint(path, strict=False)
    assert loaded.extras["mismatch"]["missing"] == ["head.4.weight"]


def test_hf_position_buffers_never_count_as_mismatches():
    a = {"x.position_ids": torch.zeros(3), "w": torch.zeros(2)}
    assert describe_mismatch(state_dict_mismatch(a, {"w": torch.zeros(2)})) is None
