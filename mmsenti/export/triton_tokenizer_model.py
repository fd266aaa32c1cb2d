"""Triton Python-backend model: raw text -> ``input_ids`` / ``attention_mask``, exactly as mmsenti's Predictor.

``mmsenti export --format triton`` copies this file to ``<repo>/<name>_tokenizer/<N>/model.py``,
beside that version's ``tokenizer/`` (the export's ``tokenizer.json``) and ``manifest.json``. It is
not imported by mmsenti itself: Triton's Python backend loads it and calls ``TritonPythonModel``.

Tokenising goes through :meth:`mmsenti.runtime.predictor.Predictor.encode_text` — the model's own
text normalisation (the manifest's ``text.normalization``, :mod:`mmsenti.text`), truncation and
padding — so a sentence gets the same token ids here as in ``mmsenti predict`` and ``mmsenti serve``.
The rule is imported, never copied: the Python environment Triton runs this in needs mmsenti's
torch-free runtime and ``tokenizers``, e.g. ``pip install --no-deps mmsenti && pip install tokenizers numpy``
(see docs/triton.md).

The requests Triton's dynamic batcher hands to one ``execute`` are tokenised together, in one
``encode_batch`` padded to one length, so the engine's own batcher can merge them again. A request
whose text is not UTF-8 fails alone (an error response naming it); its batch-mates are answered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from mmsenti.runtime.manifest import MANIFEST_NAME, validate_manifest
from mmsenti.runtime.predictor import Predictor, load_tokenizer

TOKEN_INPUTS = ("input_ids", "attention_mask")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / str(args["model_version"])
        manifest = validate_manifest(json.loads((folder / MANIFEST_NAME).read_text()))
        spec = manifest["tokenizer"]
        tokenizer = load_tokenizer(folder / spec["path"], spec["max_length"], spec["pad_id"], spec.get("pad_token", "[PAD]"))
        # the one runtime encoder; no engine runs in this model (runner=None)
        self.predictor = Predictor(folder, manifest, None, tokenizer)
        self.dtypes = {s["name"]: np.dtype(s["dtype"]) for s in manifest["inputs"] if s["name"] in TOKEN_INPUTS}

    def execute(self, requests: list) -> list:
        texts: list[str] = []
        rows: list[slice | str] = []  # per request: its rows of the joint batch, or why it failed
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            try:
                batch = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw]
            except UnicodeDecodeError as err:
                rows.append(f"text: not UTF-8 ({err}); send UTF-8 encoded strings")
                continue
            rows.append(slice(len(texts), len(texts) + len(batch)))
            texts.extend(batch)
        feeds = self.predictor.encode_text(texts) if texts else {}
        responses = []
        for part in rows:
            if isinstance(part, str):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(part)))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(feeds[name][part], dtype=self.dtypes[name])) for name in TOKEN_INPUTS]))
        return responses

    def finalize(self) -> None:
        self.predictor = None
