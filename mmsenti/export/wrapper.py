"""The trained :class:`SentimentModel`, wrapped for export — never re-implemented.

``ExportWrapper`` only changes the calling convention: positional tensors in (what ONNX and
TensorRT bind by name), plain tensors out. Two graphs come from the same module:

* ``fused`` — text + every frame modality the model was built with (``audio``/``vision`` with
  their boolean masks);
* ``text_only`` — token ids and mask only. Audio/vision are absent, which the model treats exactly
  as all-zero masks (the same code path training uses for a missing modality); a model trained
  with ``modalities=[text]`` (``experiment=mosi_text_fast``, or a distilled student) gives the
  true fast-path graph with no frame branches at all.

Also here: example inputs for tracing and parity checks. Checkpoints are loaded by the one loader,
:func:`mmsenti.models.checkpoint.load_sentiment_checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.export import VARIANTS
from mmsenti.models import SentimentModel

FRAME_MODALITIES = ("audio", "vision")
MAX_FRAMES = 4096  # SinusoidalPositions' table length


class ExportWrapper(nn.Module):
    def __init__(self, model: SentimentModel, variant: str = "fused", with_logits_7: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise MmsentiError(f"--variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.model = model
        self.variant = variant
        self.frame_modalities = [m for m in FRAME_MODALITIES if m in model.frame_encoders] if variant == "fused" else []
        self.input_names = ["input_ids", "attention_mask"] + [n for m in self.frame_modalities for n in (m, f"{m}_mask")]
        self.with_logits_7 = with_logits_7 and model.head_7 is not None
        self.output_names = ["score"] + (["logits_7"] if self.with_logits_7 else [])

    @property
    def modalities(self) -> list[str]:
        return ["text", *self.frame_modalities]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *frames: torch.Tensor):
        kwargs = {name: t for name, t in zip(self.input_names[2:], frames)}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return (out.score, out.logits_7) if self.with_logits_7 else out.score

    def dynamic_shapes(self) -> tuple[Any, ...]:
        """Dynamic axes in the form ``torch.onnx.export(dynamo=True)`` takes for ``forward(ids, mask, *frames)``."""
        shapes = self.dynamic_axes()
        frames = tuple(shapes[n] for n in self.input_names[2:])
        return (shapes["input_ids"], shapes["attention_mask"], *((frames,) if frames else ()))

    def dynamic_axes(self) -> dict[str, dict[int, Any]]:
        """Dynamic batch and sequence axes (and frame axes), by input name."""
        Dim = torch.export.Dim
        max_len = int(getattr(self.model.text_encoder.backbone.config, "max_position_embeddings", 512))
        batch, seq = Dim("batch", max=4096), Dim("seq", max=max_len)
        shapes: dict[str, dict[int, Any]] = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        for m in self.frame_modalities:
            frames = Dim(f"{m}_frames", max=MAX_FRAMES)
            shapes[m] = {0: batch, 1: frames}
            shapes[f"{m}_mask"] = {0: batch, 1: frames}
        return shapes

    def io_spec(self) -> tuple[list[dict], list[dict]]:
        """Manifest entries for the graph's inputs and outputs (axis names match the ONNX graph)."""
        dims = self.model.frame_dims
        inputs = [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
                  {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]}]
        for m in self.frame_modalities:
            inputs.append({"name": m, "dtype": "float32", "shape": ["batch", f"{m}_frames", dims[m]]})
            inputs.append({"name": f"{m}_mask", "dtype": "bool", "shape": ["batch", f"{m}_frames"]})
        outputs = [{"name": "score", "dtype": "float32", "shape": ["batch"]}]
        if self.with_logits_7:
            outputs.append({"name": "logits_7", "dtype": "float32", "shape": ["batch", 7]})
        return inputs, outputs


# ----------------------------------------------------------------------------- inputs
def example_feeds(wrapper: ExportWrapper, batch: int = 2, seq: int = 16, frames: dict[str, int] | None = None,
                  seed: int = 0, vocab: tuple[int, int] = (1000, 8000)) -> dict[str, np.ndarray]:
    """Random but realistic inputs: [CLS] ... [SEP] with padding, partly masked/absent frames."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(*vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 101
    mask = np.ones((batch, seq), dtype=np.int64)
    for i in range(1, batch):  # varied lengths, the longest unpadded
        n = max(2, seq - int(rng.integers(0, max(1, seq // 2))))
        ids[i, n - 1], ids[i, n:], mask[i, n:] = 102, 0, 0
    ids[0, -1] = 102
    feeds = {"input_ids": ids, "attention_mask": mask}
    frames = frames or {}
    dims = wrapper.model.frame_dims
    for j, m in enumerate(wrapper.frame_modalities):
        t = frames.get(m, 20 + 3 * j)  # distinct sizes so the exporter cannot tie the axes together
        x = rng.standard_normal((batch, t, dims[m])).astype(np.float32)
        fm = np.ones((batch, t), dtype=bool)
        for i in range(1, batch):
            fm[i, max(1, t - int(rng.integers(0, max(1, t // 2)))):] = False
        if batch > 2:
            fm[2] = False  # one sample without this modality
        feeds[m], feeds[f"{m}_mask"] = x, fm
    return feeds


def batch_feeds(wrapper: ExportWrapper, batch) -> dict[str, np.ndarray]:
    """Feeds from a :class:`~mmsenti.data.batch.SentimentBatch` (a real batch from the datamodule)."""
    feeds = {"input_ids": batch.input_ids.numpy().astype(np.int64),
             "attention_mask": batch.attention_mask.numpy().astype(np.int64)}
    for m in wrapper.frame_modalities:
        feeds[m] = getattr(batch, m).numpy().astype(np.float32)
        feeds[f"{m}_mask"] = getattr(batch, f"{m}_mask").numpy().astype(bool)
    return feeds


def to_torch_args(wrapper: ExportWrapper, feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in wrapper.input_names)


@torch.no_grad()
def torch_outputs(wrapper: ExportWrapper, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = wrapper(*to_torch_args(wrapper, feeds))
    out = out if isinstance(out, tuple) else (out,)
    return [o.float().numpy() for o in out]


# ----------------------------------------------------------------------------- run metrics
def run_metrics_for(ckpt_path: str | Path) -> dict[str, Any]:
    """The metrics.json of the run a checkpoint came from (``<run>/checkpoints/x.ckpt``), if any."""
    path = Path(ckpt_path).resolve().parent.parent / "metrics.json"
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return {k: report[k] for k in ("val", "test") if k in report}


# ----------------------------------------------------------------------------- eager runtime
class EagerRunner:
    """Runs the PyTorch model behind the runtime :class:`~mmsenti.runtime.predictor.Predictor` interface."""

    def __init__(self, wrapper: ExportWrapper):
        self.wrapper = wrapper.eval()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return torch_outputs(self.wrapper, feeds)


def eager_predictor(model: SentimentModel, max_text_len: int = 64, name: str = "eager", variant: str = "fused"):
    """The one runtime :class:`~mmsenti.runtime.predictor.Predictor` over an in-memory PyTorch model.

    Same tokenizer (the training tokenizer's fast form, truncated at ``max_text_len``), the same text
    normalisation, input conventions and result dict as an exported engine: ``mmsenti predict`` on a
    checkpoint and the parity tests go through it.
    """
    from tokenizers import Tokenizer

    from mmsenti.pretrained import load_pretrained
    from mmsenti.runtime.predictor import Predictor

    wrapper = ExportWrapper(model.eval(), variant)
    inputs, outputs = wrapper.io_spec()
    hf = load_pretrained(model.config.text_encoder.get("pretrained", "minilm_l6"), "tokenizer")
    if not getattr(hf, "is_fast", False):
        raise MmsentiError(f"tokenizer of {model.config.text_encoder.get('pretrained')!r} has no fast form; the runtime needs one")
    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.enable_truncation(max_length=int(max_text_len))
    tok.enable_padding(pad_id=int(hf.pad_token_id or 0), pad_token=str(hf.pad_token or "[PAD]"), direction="right")
    dims = model.frame_dims
    manifest = {
        "name": name, "format": "eager", "variant": variant, "precision": "fp32", "modalities": wrapper.modalities,
        "inputs": inputs, "outputs": outputs, "task": model.config.task,
        "text": {"normalization": model.config.text_normalization},
        "features": {m: {"dim": int(dims[m])} for m in wrapper.frame_modalities},
        "tokenizer": {"max_length": int(max_text_len), "pad_id": int(hf.pad_token_id or 0)},
    }
    return Predictor(None, manifest, EagerRunner(wrapper), tok)
