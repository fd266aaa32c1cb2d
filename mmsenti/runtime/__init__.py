"""The runtime: what runs an exported engine, torch-free (numpy + onnxruntime + tokenizers).

* :mod:`~mmsenti.runtime.manifest` — the export folder's ``manifest.json`` (schema, reader, atomic writer);
* :mod:`~mmsenti.runtime.session` — ONNX Runtime sessions configured once (threads, spinning, providers);
* :mod:`~mmsenti.runtime.tensorrt` — TensorRT profiles, ORT's TensorRT EP options, the engine runner;
* :mod:`~mmsenti.runtime.repository` — a watched model repository ``DIR/<name>/<version>/`` (the version rule
  ``mmsenti serve --model-repo`` and ``mmsenti stream run --model-repo`` share);
* :mod:`~mmsenti.runtime.predictor` — the one :class:`Predictor` that ``mmsenti predict``, ``mmsenti serve``,
  the benchmarks and the stream job use.

Layering: below :mod:`mmsenti.export` (which writes engines) and :mod:`mmsenti.serve`; imports
nothing of torch, Lightning or the model code.
"""


def __getattr__(name: str):  # lazy: `import mmsenti.runtime` stays cheap
    if name == "Predictor":
        from mmsenti.runtime.predictor import Predictor

        return Predictor
    raise AttributeError(name)
