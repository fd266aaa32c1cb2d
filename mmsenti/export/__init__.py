"""Deployment: ONNX/TensorRT export of :class:`~mmsenti.models.SentimentModel`, quantization,
parity checks, benchmarks and reports. What runs an export (manifest reader, ORT sessions, the
TensorRT runner, the one :class:`~mmsenti.runtime.predictor.Predictor`) is :mod:`mmsenti.runtime`,
the torch-free layer below this one::

    from mmsenti.runtime import Predictor                 # numpy + onnxruntime + tokenizers only
    from mmsenti.export.onnx_export import export_model   # needs torch (the training side)
"""

from mmsenti.runtime.manifest import FORMATS, MANIFEST_NAME, PRECISIONS, VARIANTS  # noqa: F401  (the schema owns them)

# opset 23: attention layers export as one ONNX ``Attention`` node (ONNX Runtime >= 1.23, TensorRT >= 10.14)
DEFAULT_OPSET = 23
