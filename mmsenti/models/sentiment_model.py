"""The multimodal sentiment model: one module from training to deployment.

Reads top to bottom: a config holds every size; the model builds a text encoder, an encoder for
each non-text modality it was asked for, a registered fusion module and the heads; ``forward``
takes named tensors and returns a named output. The text-only fast path is this same class with
``modalities=["text"]``: the audio and vision branches are then never built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models import encoders, fusion  # noqa: F401  (importing registers the components)
from mmsenti.models.encoders import TextEncoder
from mmsenti.registry import build
from mmsenti.text import check_normalization

MODALITIES = ("text", "audio", "vision")
NUM_CLASSES_7 = 7  # sentiment classes -3..3 (MOSI Acc-7)
TASKS = ("regression", "classification")


@dataclass
class SentimentModelConfig:
    """Every size and switch of :class:`SentimentModel` (what Hydra's ``model`` group fills)."""

    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    text_encoder: dict[str, Any] = field(default_factory=lambda: {"pretrained": "minilm_l6", "finetune": "top_k", "top_k": 2})
    audio_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "conv_transformer", "input_dim": 74, "d_model": 64})
    vision_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "conv_transformer", "input_dim": 47, "d_model": 64})
    fusion: dict[str, Any] = field(default_factory=lambda: {"name": "mult", "d_model": 64, "num_layers": 2, "num_heads": 4})
    head_dropout: float = 0.1
    aux_7class: bool = False
    modality_dropout: float = 0.0  # per-sample probability of hiding audio/vision while training
    # regression (MOSI): score = 3·tanh(raw/3), bounded to [-3, 3]; classification (SST-2): score is
    # the unbounded logit of p(positive) (a bounded logit would cap p at σ(3) = 0.95)
    task: str = "regression"
    # how text is normalised before tokenising (mmsenti.text): applied in training, eval, export, serving
    text_normalization: str = "none"

    def __post_init__(self) -> None:
        check_normalization(self.text_normalization, "model.net.text_normalization")
        if self.task not in TASKS:
            raise MmsentiError(f"model.net.task={self.task!r}; choose one of {list(TASKS)}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or "text" not in self.modalities:
            raise MmsentiError(f"model.net.modalities={self.modalities}: must include 'text' and only {list(MODALITIES)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SentimentModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{k: (dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, (list, tuple)) else v)) for k, v in known.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SentimentOutput:
    score: torch.Tensor  # [B] sentiment in [-3, 3] (regression) or the logit of p(positive) (classification)
    logits_7: torch.Tensor | None = None  # [B, 7] auxiliary class logits
    pooled: torch.Tensor | None = None  # [B, F] fused utterance vector (for distillation)


class FeatureNormalizer(nn.Module):
    """Standardises raw frame features with training-set statistics kept as buffers.

    Raw COVAREP/FACET-style features have wildly different scales; keeping the statistics inside
    the model means the exported graph and a served model normalise exactly as training did.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SentimentModel(nn.Module):
    def __init__(self, config: SentimentModelConfig, pretrained_weights: bool = True):
        """``pretrained_weights=False``: the text backbone from its config only (a checkpoint brings the weights)."""
        super().__init__()
        self.config = config
        self.modalities = list(config.modalities)
        self.text_encoder = TextEncoder(**config.text_encoder, pretrained_weights=pretrained_weights)
        input_dims = {"text": self.text_encoder.hidden_size}
        self.normalizers = nn.ModuleDict()
        self.frame_encoders = nn.ModuleDict()
        for m in self.modalities:
            if m == "text":
                continue
            spec = dict(getattr(config, f"{m}_encoder"))
            name = spec.pop("name", "conv_transformer")
            self.normalizers[m] = FeatureNormalizer(spec["input_dim"])
            self.frame_encoders[m] = build("sequence_encoder", name, **spec)
            input_dims[m] = self.frame_encoders[m].out_dim
        fusion_spec = dict(config.fusion)
        self.fusion = build("fusion", fusion_spec.pop("name", "mult"), input_dims=input_dims, **fusion_spec)
        width = self.fusion.out_dim
        self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(width, width), nn.GELU(),
                                  nn.Dropout(config.head_dropout), nn.Linear(width, 1))
        self.head_7 = nn.Linear(width, NUM_CLASSES_7) if config.aux_7class else None

    @property
    def frame_dims(self) -> dict[str, int]:
        return {m: int(n.mean.numel()) for m, n in self.normalizers.items()}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        audio: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        vision: torch.Tensor | None = None,
        vision_mask: torch.Tensor | None = None,
    ) -> SentimentOutput:
        states = {"text": self.text_encoder(input_ids, attention_mask)}
        masks = {"text": attention_mask.bool()}
        frames = {"audio": (audio, audio_mask), "vision": (vision, vision_mask)}
        for m, encoder in self.frame_encoders.items():
            x, mask = frames[m]
            if x is None:  # modality absent at call time: an all-zero mask, same code path
                x = states["text"].new_zeros(input_ids.shape[0], 1, self.normalizers[m].mean.numel())
                mask = torch.zeros(input_ids.shape[0], 1, dtype=torch.bool, device=input_ids.device)
            mask = mask.bool()
            if self.training and self.config.modality_dropout > 0:
                keep = torch.rand(mask.shape[0], 1, device=mask.device) >= self.config.modality_dropout
                mask = mask & keep
            x = self.normalizers[m](x) * mask.unsqueeze(-1).to(x.dtype)
            states[m] = encoder(x, mask)
            masks[m] = mask
        pooled = self.fusion(states, masks)
        raw = self.head(pooled).squeeze(-1)
        # regression: bounded to the MOSI range, ~identity near 0; classification: the logit itself
        score = 3.0 * torch.tanh(raw / 3.0) if self.config.task == "regression" else raw
        logits_7 = self.head_7(pooled) if self.head_7 is not None else None
        return SentimentOutput(score=score, logits_7=logits_7, pooled=pooled)
