"""Knowledge distillation and the text-only fast path (issue 6).

Loss values against hand-computed cases, a frozen teacher, the soft-target cache, layer-initialised
students, the fast path, and one tiny run of every new experiment composed with Hydra as
``tests/test_train.py`` does (small synthetic data, a tiny slice of SST-2 / real MOSI text; runs on
the shared data skip when it is absent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmsenti.data.batch import SentimentCollator
from mmsenti.distill import losses as L
from mmsenti.distill.cache import load_or_compute, samples_fingerprint, soft_target_key
from mmsenti.io import file_digest
from mmsenti.distill.module import DistillSentimentLitModule
from mmsenti.distill.teacher import init_student_from_teacher, load_teacher
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.models.encoders import TextEncoder
from mmsenti.pretrained import load_pretrained
from mmsenti.training.lit_module import hard_loss
from mmsenti.training.tasks import train
from test_train import compose_train

L3 = {"pretrained": "minilm_l6", "keep_layers": [0, 2, 4], "finetune": "full"}
L6 = {"pretrained": "minilm_l6", "finetune": "full"}
TEXT_ONLY = {"modalities": ["text"], "fusion": {"name": "text_only"}}
FAST = ["extras.print_config=false", "logger=none", "data.batch_size=8", "data.eval_batch_size=16", "data.max_text_len=24"]
TINY = [*FAST, "callbacks.model_checkpoint.save_last=false", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "++trainer.val_check_interval=1.0"]


# ---------------------------------------------------------------------------- losses, by hand
def test_kd_kl_matches_hand_computation_with_temperature_squared():
    student, teacher, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]]), 2.0
    p_t = [1 / (1 + math.e), math.e / (1 + math.e)]  # softmax([0, 2] / 2)
    p_s = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]  # softmax([0, 1] / 2)
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    assert L.kd_kl(student, teacher, t).item() == pytest.approx(t * t * kl, rel=1e-5)
    assert L.kd_kl(student, teacher, t).item() == pytest.approx(0.105378, abs=1e-5)
    # T = 1 is the plain KL; batchmean: a mean over samples
    two = L.kd_kl(torch.cat([student, teacher]), torch.cat([teacher, teacher]), 1.0)
    p_t1 = torch.softmax(teacher[0], -1)
    kl1 = float((p_t1 * (p_t1.log() - torch.log_softmax(student[0], -1))).sum())
    assert two.item() == pytest.approx(kl1 / 2, rel=1e-5)
    assert L.kd_kl(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_hard_losses_by_hand():
    z, y = torch.tensor([1.5, -0.5]), torch.tensor([1.0, 1.0])
    expected = (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(0.5))) / 2  # -log sigmoid(z) for positives
    assert hard_loss(z, y, "classification").item() == pytest.approx(expected, rel=1e-6)
    assert hard_loss(z, torch.tensor([-1.0, -1.0]), "classification").item() == pytest.approx(
        (math.log(1 + math.exp(1.5)) + math.log(1 + math.exp(-0.5))) / 2, rel=1e-6)
    assert hard_loss(z, torch.tensor([1.0, 0.5]), "regression", "l1").item() == pytest.approx(0.75)
    assert hard_loss(z, torch.tensor([1.0, 0.5]), "regression", "mse").item() == pytest.approx(0.625)


def test_hard_loss_skips_unlabelled_transfer_samples():
    z = torch.tensor([1.5, -0.5, 3.0], requires_grad=True)
    y = torch.tensor([1.0, float("nan"), 0.5])
    assert hard_loss(z, y, "regression", "l1").item() == pytest.approx((0.5 + 2.5) / 2)  # the NaN row is left out
    assert hard_loss(z, y, "classification").item() == pytest.approx(
        (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(-3.0))) / 2, rel=1e-6)
    none = hard_loss(z, torch.full((3,), float("nan")), "classification")
    none.backward()  # a batch of transfer samples only: zero loss, zero gradient, no NaN
    assert none.item() == 0.0 and torch.equal(z.grad, torch.zeros(3))


def test_hidden_and_attention_losses_mask_padding_and_project():
    mask = torch.tensor([[1, 1, 0]])
    s, t = torch.zeros(1, 3, 2), torch.ones(1, 3, 4)
    t[0, 2] = 100.0  # padding must not count
    proj = torch.nn.Linear(2, 4)
    torch.nn.init.zeros_(proj.weight)
    torch.nn.init.constant_(proj.bias, 3.0)
    assert L.hidden_state_loss([s], [t], mask, proj).item() == pytest.approx(4.0)  # (3 - 1)^2
    a_s, a_t = torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    a_t[..., :2, :2] = 0.5
    a_t[..., 2, :] = 9.0  # padded query row
    assert L.attention_loss([a_s], [a_t], mask).item() == pytest.approx(0.25)
    assert L.uniform_layer_map(3, 6) == [1, 3, 5] and L.uniform_layer_map(6, 12) == [1, 3, 5, 7, 9, 11]


# ---------------------------------------------------------------------------- teacher checkpoints
def save_checkpoint(path: Path, net: SentimentModel, **hparams) -> Path:
    """A Lightning-layout checkpoint (what training writes: the model config under ``model_config``) for a given model."""
    hp = {"model_config": net.config.to_dict(), "loss": "l1", "aux_7class_weight": 0.0, "encoder_lr": 5e-5, **hparams}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "hyper_parameters": hp}, path)
    return path


@pytest.fixture(scope="module")
def text_teacher(tmp_path_factory) -> Path:
    """A MiniLM-L6 text-only teacher whose weights differ from the pretrained ones (as after fine-tuning)."""
    torch.manual_seed(0)
    net = SentimentModel(SentimentModelConfig(text_encoder=L6, aux_7class=True, **TEXT_ONLY))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.ckpt", net)


def distill_module(teacher: Path | None, task: str = "regression", text_encoder: dict = L3, **distill) -> DistillSentimentLitModule:
    return DistillSentimentLitModule(
        net={"modalities": ["text"], "text_encoder": text_encoder, "fusion": {"name": "text_only"}, "aux_7class": True, "task": task},
        distill={"teacher_ckpt": str(teacher) if teacher else None, "cache_dir": None, **distill},
    )


def text_batch(texts: list[str], labels: list[float]):
    collator = SentimentCollator(load_pretrained("minilm_l6", "tokenizer"), 0, 0, max_text_len=16)
    return collator([{"id": f"s{i}", "text": t, "label": y} for i, (t, y) in enumerate(zip(texts, labels))])


TEXTS, LABELS = ["a great film", "dull and far too long", "fine"], [1.0, -1.0, 1.0]


def test_total_loss_combines_hard_alpha_and_temperature(text_teacher):
    from mmsenti.distill.cache import SoftTargets

    module = distill_module(text_teacher, task="classification", alpha=0.7, temperature=3.0, hard_weight=0.4).eval()
    batch = text_batch(TEXTS, LABELS)
    module.soft_targets = SoftTargets(batch.ids, torch.tensor([2.0, -1.0, 0.5]), None)
    out = module(batch)
    losses = module.training_losses(out, batch)
    z = out.score.detach().double()
    hard = float(torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor([1.0, 0.0, 1.0], dtype=torch.double)))
    kd = 0.0
    for zs, zt in zip(z.tolist(), [2.0, -1.0, 0.5]):
        p_t, p_s = 1 / (1 + math.exp(-zt / 3)), 1 / (1 + math.exp(-zs / 3))
        kd += p_t * math.log(p_t / p_s) + (1 - p_t) * math.log((1 - p_t) / (1 - p_s))
    kd = 9.0 * kd / 3
    assert losses["loss_main"].item() == pytest.approx(hard, rel=1e-5)
    assert losses["loss_kd"].item() == pytest.approx(kd, rel=1e-4)
    assert losses["loss"].item() == pytest.approx(0.4 * hard + 0.7 * kd, rel=1e-4)


def test_regression_soft_targets_mse_and_7class_kl(text_teacher):
    from mmsenti.distill.cache import SoftTargets

    module = distill_module(text_teacher, score_weight=2.0, alpha=0.5, temperature=2.0).eval()
    batch = text_batch(TEXTS, [2.0, -1.5, 0.0])
    t_logits = torch.randn(3, 7)
    module.soft_targets = SoftTargets(batch.ids, torch.tensor([1.0, -1.0, 0.2]), t_logits)
    out = module(batch)
    losses = module.training_losses(out, batch)
    score = out.score.detach()
    mse = float(((score - torch.tensor([1.0, -1.0, 0.2])) ** 2).mean())
    l1 = float((score - torch.tensor([2.0, -1.5, 0.0])).abs().mean())
    kd7 = float(L.kd_kl(out.logits_7.detach(), t_logits, 2.0))
    assert losses["loss_score"].item() == pytest.approx(mse, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(l1 + 2.0 * mse + 0.5 * kd7, rel=1e-5)


# ---------------------------------------------------------------------------- cross-modal: audio/vision averaged out
class AdditiveTeacher(torch.nn.Module):
    """score = text part (from token ids) + audio part (mean of audio dim 0); 3 'classes' from the score."""

    def forward(self, input_ids, attention_mask, audio=None, audio_mask=None, vision=None, vision_mask=None):
        from types import SimpleNamespace

        text = (input_ids * attention_mask).sum(1).float() / 10000.0
        audio_part = (audio[..., 0] * audio_mask).sum(1) / audio_mask.sum(1).clamp(min=1)
        score = text + audio_part
        return SimpleNamespace(score=score, logits_7=torch.stack([score, -score, torch.zeros_like(score)], -1))


def test_marginal_teacher_outputs_average_the_other_modalities_out():
    import numpy as np

    from mmsenti.distill.outputs import marginal_teacher_outputs, teacher_outputs

    texts = ["a great film", "dull", "fine by me", "too long", "loved every minute", "meh"]
    samples = [{"id": f"s{i}", "text": t, "label": 0.0, "vision": None,
                "audio": np.full((2 + i, 2), float(i), dtype=np.float32)} for i, t in enumerate(texts)]
    collator = SentimentCollator(load_pretrained("minilm_l6", "tokenizer"), 2, 0, max_text_len=16)
    teacher, draws, temperature = AdditiveTeacher(), 5, 2.0
    joint, _ = teacher_outputs(teacher, samples, collator, 4)
    score, logits = marginal_teacher_outputs(teacher, samples, collator, 4, "cpu", ["audio"], draws, temperature)
    text_part = joint - torch.arange(6, dtype=torch.float32)  # sample i's audio is all i
    rng = np.random.default_rng(0)  # the function's seeded draws, replayed
    donors = torch.tensor(np.stack([rng.permutation(6) for _ in range(draws)]), dtype=torch.float32)  # [draws, 6]
    torch.testing.assert_close(score, text_part + donors.mean(0))
    # the 7-class distributions are averaged at the temperature, returned as logits with that softmax
    per_draw = torch.softmax(torch.stack([torch.stack([s, -s, torch.zeros_like(s)], -1) for s in text_part + donors]) / temperature, -1)
    torch.testing.assert_close(torch.softmax(logits / temperature, -1), per_draw.mean(0))
    # a teacher that reads no audio: marginal == joint
    silent = [{**s, "audio": np.zeros((3, 2), dtype=np.float32)} for s in samples]
    torch.testing.assert_close(marginal_teacher_outputs(teacher, silent, collator, 4, "cpu", ["audio"], 3, 1.0)[0],
                               teacher_outputs(teacher, silent, collator, 4)[0])


def test_corrected_labels_remove_what_the_teacher_credits_to_audio_vision(text_teacher):
    from mmsenti.distill.cache import SoftTargets
    from mmsenti.errors import MmsentiError

    batch = text_batch(TEXTS, [2.0, float("nan"), 0.5])
    marginal, joint = torch.tensor([0.4, 0.1, -0.2]), torch.tensor([1.4, 0.3, -1.2])
    module = distill_module(text_teacher, marginalize=["audio", "vision"], corrected_labels=True, score_weight=1.0, alpha=0.0).eval()
    module.soft_targets = SoftTargets(batch.ids, marginal, None, score_joint=joint)
    target = module.hard_targets(batch)
    assert target[0].item() == pytest.approx(2.0 - 1.0) and target[2].item() == pytest.approx(0.5 + 1.0)
    assert math.isnan(target[1].item())  # a transfer-set sample stays unlabelled
    out = module(batch)
    losses = module.training_losses(out, batch)
    score = out.score.detach()
    l1 = float((score[[0, 2]] - torch.tensor([1.0, 1.5])).abs().mean())
    mse = float(((score - marginal) ** 2).mean())
    assert losses["loss_main"].item() == pytest.approx(l1, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(l1 + mse, rel=1e-5)
    # without the switch the labels are used as they are; the switch needs marginalize; only audio/vision average out
    plain = distill_module(text_teacher, marginalize=["audio", "vision"]).eval()
    plain.soft_targets = module.soft_targets
    assert plain.hard_targets(batch) is batch.labels
    with pytest.raises(MmsentiError, match="corrected_labels needs distill.marginalize"):
        distill_module(text_teacher, corrected_labels=True)
    with pytest.raises(MmsentiError, match="only \\['audio', 'vision'\\]"):
        distill_module(text_teacher, marginalize=["text"])


def test_marginalising_a_text_only_teacher_changes_nothing(tmp_path, text_teacher):
    from types import SimpleNamespace

    samples = [{"id": f"s{i}", "text": t, "label": y, "audio": None, "vision": None} for i, (t, y) in enumerate(zip(TEXTS, LABELS))]
    dm = SimpleNamespace(splits={"train": samples}, hparams={"max_text_len": 16, "audio_dim": 0, "vision_dim": 0, "max_frames": None})
    plain = distill_module(text_teacher, cache_dir=str(tmp_path)).compute_soft_targets(dm)
    marginal = distill_module(text_teacher, cache_dir=str(tmp_path), marginalize=["audio", "vision"],
                              corrected_labels=True).compute_soft_targets(dm)
    assert marginal.from_cache and marginal.key == plain.key and marginal.score_joint is None  # same key: nothing to average


def test_frozen_teacher_gets_no_gradients(text_teacher):
    module = distill_module(text_teacher, hidden_weight=1.0, attention_weight=1.0, alpha=0.0, score_weight=0.0)
    teacher = module.teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    assert not any(n.startswith("teacher") for n, _ in module.named_parameters())  # not optimised, not saved
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module.train()
    with module.training_forward_context():
        out = module(text_batch(TEXTS, LABELS))
    losses = module.training_losses(out, text_batch(TEXTS, LABELS))
    assert losses["loss_hidden"] > 0 and losses["loss_attention"] > 0
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.text_encoder.parameters())
    torch.optim.SGD(module.net.parameters(), lr=1.0).step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_tinybert_terms_match_a_hand_computation(text_teacher):
    """Hidden-state and attention-map terms against HF's own per-layer outputs, layer map and padding by hand."""
    module = distill_module(text_teacher, hidden_weight=2.0, attention_weight=3.0, alpha=0.0, score_weight=0.0,
                            hard_weight=0.5).eval()
    assert module.layer_map == [1, 3, 5]  # TinyBERT's uniform map, L3 from L6
    batch = text_batch(["a great film", "dull and far too long for what it has to say", "fine"], [1.0, -1.0, 0.5])
    assert not batch.attention_mask.all()  # padded rows: padding must not count
    with module.training_forward_context():
        out = module(batch)
    losses = module.training_losses(out, batch)

    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        s, t = module.net.text_encoder.backbone(**kwargs), module.teacher.text_encoder.backbone(**kwargs)
    valid = batch.attention_mask.bool()
    pairs = valid[:, None, :, None] & valid[:, None, None, :]  # [B, 1, L, L]: real query and real key
    hidden, attention = [], []
    for i, j in enumerate([1, 3, 5]):
        diff = (s.hidden_states[i + 1] - t.hidden_states[j + 1])[valid]  # hidden_states[0] is the embeddings
        hidden.append(float((diff ** 2).sum()) / diff.numel())
        heads = s.attentions[i].shape[1]
        attention.append(float(((s.attentions[i] - t.attentions[j]) ** 2 * pairs).sum()) / (float(pairs.sum()) * heads))
    hidden, attention = sum(hidden) / 3, sum(attention) / 3
    hard = float((out.score.detach() - batch.labels).abs().mean())
    assert losses["loss_hidden"].item() == pytest.approx(hidden, rel=1e-4)
    assert losses["loss_attention"].item() == pytest.approx(attention, rel=1e-4)
    assert losses["loss_main"].item() == pytest.approx(hard, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(0.5 * hard + 2.0 * hidden + 3.0 * attention, rel=1e-4)
    assert hidden > 0 and attention > 0 and set(losses) == {"loss", "loss_main", "loss_hidden", "loss_attention"}


# ---------------------------------------------------------------------------- soft-target cache
def test_soft_target_cache_hit_and_miss(tmp_path, text_teacher):
    samples = [{"id": f"s{i}", "text": t, "label": y, "audio": None, "vision": None} for i, (t, y) in enumerate(zip(TEXTS, LABELS))]
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([0.5, -0.5, 0.1]), torch.zeros(3, 7)

    key = soft_target_key(file_digest(text_teacher), samples_fingerprint(samples), {"tokenizer": "minilm_l6"})
    first = load_or_compute(tmp_path, key, [s["id"] for s in samples], compute)
    second = load_or_compute(tmp_path, key, [s["id"] for s in samples], compute)
    assert (first.from_cache, second.from_cache, len(calls)) == (False, True, 1)
    assert torch.equal(first.score, second.score) and second.lookup(["s2", "s0"])[0].tolist() == pytest.approx([0.1, 0.5])
    # any change of data, settings or teacher is a new key: a miss
    changed = [dict(samples[0], label=-1.0), *samples[1:]]
    assert samples_fingerprint(changed) != samples_fingerprint(samples)
    assert soft_target_key(file_digest(text_teacher), samples_fingerprint(samples), {"tokenizer": "mpnet_base"}) != key
    other_teacher = tmp_path / "other.ckpt"
    other_teacher.write_bytes(text_teacher.read_bytes() + b"\0")
    new_key = soft_target_key(file_digest(other_teacher), samples_fingerprint(samples), {"tokenizer": "minilm_l6"})
    assert new_key != key
    assert not load_or_compute(tmp_path, new_key, [s["id"] for s in samples], compute).from_cache and len(calls) == 2


def test_module_soft_targets_come_from_the_teacher_and_the_cache(tmp_path, text_teacher):
    from types import SimpleNamespace

    module = distill_module(text_teacher, cache_dir=str(tmp_path))
    samples = [{"id": f"s{i}", "text": t, "label": y, "audio": None, "vision": None} for i, (t, y) in enumerate(zip(TEXTS, LABELS))]
    dm = SimpleNamespace(splits={"train": samples}, hparams={"max_text_len": 16, "audio_dim": 0, "vision_dim": 0, "max_frames": None})
    first = module.compute_soft_targets(dm)
    again = module.compute_soft_targets(dm)
    assert not first.from_cache and again.from_cache and len(list(tmp_path.glob("*.pt"))) == 1
    batch = text_batch(TEXTS, LABELS)
    with torch.no_grad():
        direct = module.teacher(batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(first.score, direct.score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first.logits_7, direct.logits_7, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- students
def test_layer_initialised_student_holds_the_teachers_layers(text_teacher):
    pretrained = load_pretrained("minilm_l6", "model")
    student = TextEncoder(**L3)
    assert student.backbone.config.num_hidden_layers == 3 and len(student.backbone.encoder.layer) == 3
    for i, j in enumerate([0, 2, 4]):
        for (name, a), (_, b) in zip(student.backbone.encoder.layer[i].named_parameters(),
                                     pretrained.encoder.layer[j].named_parameters()):
            assert torch.equal(a, b), (i, j, name)
    # DistilBERT-style from a (fine-tuned) teacher checkpoint: every kept layer, the embeddings and the head
    module = distill_module(text_teacher, student_init="teacher")
    teacher_state, student_state = module.teacher.state_dict(), module.net.state_dict()
    prefix = "text_encoder.backbone.encoder.layer"
    for i, j in enumerate([0, 2, 4]):
        for suffix in ("attention.self.query.weight", "output.dense.bias"):
            assert torch.equal(student_state[f"{prefix}.{i}.{suffix}"], teacher_state[f"{prefix}.{j}.{suffix}"])
    for name in ("text_encoder.backbone.embeddings.word_embeddings.weight", "head.1.weight", "head_7.weight"):
        assert torch.equal(student_state[name], teacher_state[name])
    assert not torch.equal(student_state[f"{prefix}.1.attention.self.query.weight"], pretrained.state_dict()["encoder.layer.2.attention.self.query.weight"])


def test_bilstm_student_uses_the_teachers_embeddings_and_ignores_padding(text_teacher):
    torch.manual_seed(0)
    bilstm = {"pretrained": "minilm_l6", "architecture": "bilstm", "backbone_options": {"hidden_size": 64}, "finetune": "full"}
    net = SentimentModel(SentimentModelConfig(text_encoder=bilstm, **TEXT_ONLY)).eval()
    table = load_pretrained("minilm_l6", "model").get_input_embeddings().weight
    assert torch.equal(net.text_encoder.backbone.get_input_embeddings().weight, table)
    teacher, _ = load_teacher(text_teacher)
    copied = init_student_from_teacher(net, teacher, None)
    assert copied == ["text_encoder.backbone.embeddings.weight"]
    assert torch.equal(net.text_encoder.backbone.embeddings.weight, teacher.text_encoder.backbone.get_input_embeddings().weight)
    short, padded = text_batch(["fine"], [1.0]), text_batch(["fine", "a much longer sentence than the other"], [1.0, 1.0])
    torch.testing.assert_close(net(short.input_ids, short.attention_mask).score,
                               net(padded.input_ids, padded.attention_mask).score[:1], atol=1e-5, rtol=1e-5)


def test_fast_path_builds_no_audio_vision_and_takes_text_only_batches():
    net = SentimentModel(SentimentModelConfig(text_encoder=L3, **TEXT_ONLY)).eval()
    names = [n for n, _ in net.named_modules()]
    assert not net.frame_encoders and not net.normalizers and not any(("audio" in n or "vision" in n) for n in names)
    batch = text_batch(TEXTS, LABELS)
    no_frames = net(batch.input_ids, batch.attention_mask).score  # no audio/vision tensors at all
    with_frames = net(batch.input_ids, batch.attention_mask, audio=torch.randn(3, 5, 74), audio_mask=torch.ones(3, 5, dtype=torch.bool),
                      vision=torch.randn(3, 4, 47), vision_mask=torch.ones(3, 4, dtype=torch.bool)).score
    torch.testing.assert_close(no_frames, with_frames)  # frames a caller passes are ignored, never read


# ---------------------------------------------------------------------------- tiny runs of every experiment
def run(overrides: list[str], out: Path, data: Path) -> dict:
    cfg = compose_train(overrides, out, data)
    train(cfg)
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    from mmsenti.data.synthetic import write_synthetic_mosi

    return write_synthetic_mosi(tmp_path_factory.mktemp("synthetic_small_distill"), scale="small", seed=0)


def sst2_slice(shared: Path) -> list[str]:
    if not (shared / "sst2" / "dev.tsv").is_file():
        pytest.skip(f"SST-2 is absent from {shared}")
    return [f"data.path={shared / 'sst2'}", "data.source_options.train_size=32", "data.source_options.valid_size=16"]


def test_sst2_teacher_then_student_tiny(tmp_path, small_data, shared_data):
    data = sst2_slice(shared_data)
    teacher = run(["experiment=sst2_teacher", "model/text_encoder=minilm_l3", *data, *TINY], tmp_path / "teacher", small_data)
    assert {"acc", "Non0_acc_2"} <= set(teacher["test"]) and teacher["data_report"]["samples"]["test"] == 872
    assert teacher["test"]["acc"] == teacher["test"]["Non0_acc_2"]
    cache = tmp_path / "cache"
    student = run(["experiment=sst2_distill", f"distill.teacher_ckpt={teacher['best_ckpt']}", f"distill.cache_dir={cache}",
                   "model/text_encoder=bilstm", "model.net.text_encoder.backbone_options.hidden_size=32",
                   "data.source_options.transfer_size=8", *data, *TINY],  # + 8 unlabelled sentences (soft targets only)
                  tmp_path / "student", small_data)
    assert 0.0 <= student["test"]["acc"] <= 1.0 and len(list(cache.glob("*.pt"))) == 1
    assert student["data_report"]["samples"]["train"] == 40 and student["data_report"]["samples"]["train_unlabeled"] == 8
    assert torch.isfinite(torch.tensor(student["val"]["loss"]))
    assert student["config"]["model"]["distill"]["teacher_ckpt"] == teacher["best_ckpt"]


def test_sst2_transfer_set_needs_a_teacher(tmp_path, small_data, shared_data):
    from mmsenti.errors import MmsentiError

    data = [*sst2_slice(shared_data), "data.source_options.transfer_size=8"]
    with pytest.raises(MmsentiError, match="8 training samples have no label"):
        run(["experiment=sst2_distill", "distill.teacher_ckpt=null", "model/text_encoder=minilm_l3", *data, *TINY],
            tmp_path / "student", small_data)


def test_crossmodal_fused_teacher_to_text_only_student_tiny(tmp_path, small_data):
    # a fused text+audio+vision teacher with a 7-class head, as experiment=mosi_fusion writes it
    torch.manual_seed(0)
    fused = SentimentModel(SentimentModelConfig(
        text_encoder={**L3, "finetune": "frozen"}, aux_7class=True, fusion={"name": "mult", "d_model": 32, "num_layers": 1},
        audio_encoder={"name": "conv_transformer", "input_dim": 74, "d_model": 32},
        vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 32}))
    teacher = save_checkpoint(tmp_path / "fused.ckpt", fused, aux_7class_weight=0.5)
    cache = tmp_path / "cache"
    student = run(["experiment=mosi_distill_crossmodal", f"distill.teacher_ckpt={teacher}", f"distill.cache_dir={cache}",
                   "model/text_encoder=minilm_l3", "model.net.aux_7class=true", *TINY], tmp_path / "student", small_data)
    assert student["config"]["model"]["net"]["modalities"] == ["text"] and student["val"]["MAE"] > 0
    cached = list(cache.glob("*.pt"))
    assert len(cached) == 1  # the fused teacher's outputs (score + 7-class logits), cached
    # the experiment's default: audio/vision averaged out of the soft targets, the joint score kept for the labels
    assert student["config"]["model"]["distill"]["marginalize"] == ["audio", "vision"]
    stored = torch.load(cached[0], weights_only=True)
    assert stored["score_joint"] is not None and not torch.allclose(stored["score"], stored["score_joint"])
    ckpt = torch.load(student["best_ckpt"], weights_only=True)["state_dict"]
    assert not any(("audio" in k or "vision" in k or k.startswith("teacher")) for k in ckpt)  # text-only student, no teacher inside


@pytest.mark.slow
def test_tinybert_online_distillation_tiny(tmp_path, small_data, text_teacher):
    student = run(["experiment=mosi_distill_crossmodal", "distill=tinybert", f"distill.teacher_ckpt={text_teacher}",
                   "distill.student_init=teacher", "model/text_encoder=minilm_l3", "model.net.aux_7class=true", *TINY],
                  tmp_path / "student", small_data)
    assert student["val"]["MAE"] > 0


def test_mosi_text_on_real_transcripts_tiny(tmp_path, small_data, shared_data):
    label_csv = shared_data / "mosi" / "label_trainvalid.csv"
    if not label_csv.is_file():
        pytest.skip(f"{label_csv} is absent")
    report = run(["experiment=mosi_text", f"data.path={label_csv}", "model/text_encoder=minilm_l3", "debug=fdr", *FAST],
                 tmp_path / "mosi", small_data)
    assert report["data_report"]["samples"] == {"train": 1284, "valid": 229, "test": 0}
    assert "test" not in report and report["val"]["MAE"] > 0  # the test fold is held back: valid only


# ---------------------------------------------------------------------------- SST-2 reader
def test_sst2_reader_labels_splits_and_errors(tmp_path):
    from mmsenti.data.sst2 import load_sst2
    from mmsenti.errors import MmsentiError

    rows = "".join(f"sentence number {i} here\t{i % 2}\n" for i in range(50))
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\na dull one\t0\n")
    data = load_sst2(tmp_path, train_size=20, valid_size=10, seed=3)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 20, "valid": 10, "test": 2}
    assert (data.audio_dim, data.vision_dim) == (0, 0)
    assert [s["label"] for s in data.splits["test"]] == [1.0, -1.0] and data.splits["test"][0]["audio"] is None
    ids = lambda d: [s["id"] for s in d.splits["train"]]  # noqa: E731
    assert ids(data) == ids(load_sst2(tmp_path, train_size=20, valid_size=10, seed=3))  # a pure function of the seed
    assert not set(ids(data)) & {s["id"] for s in data.splits["valid"]}
    # a transfer set: the next sentences of the same shuffle, labels withheld
    transfer = load_sst2(tmp_path, train_size=20, valid_size=10, seed=3, transfer_size=15)
    assert transfer.splits["train"][:20] == data.splits["train"] and len(transfer.splits["train"]) == 35
    extra = transfer.splits["train"][20:]
    assert all(math.isnan(s["label"]) for s in extra) and not {s["id"] for s in extra} & set(ids(data))
    assert not {s["id"] for s in extra} & {s["id"] for s in data.splits["valid"]}
    assert transfer.report.samples["train_unlabeled"] == 15 and transfer.report.positive_share["train"] == data.report.positive_share["train"]
    with pytest.raises(MmsentiError, match="transfer_size=30 of 50"):
        load_sst2(tmp_path, train_size=20, valid_size=10, transfer_size=30)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nbroken row\t7\n")
    with pytest.raises(MmsentiError, match="line 2"):
        load_sst2(tmp_path, train_size=20, valid_size=10)
