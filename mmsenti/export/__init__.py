"""Deployment: ONNX/TensorRT export of :class:`~mmsenti.models.SentimentModel`, quantization,
parity checks, a torch-free :class:`~mmsenti.export.predictor.Predictor`, benchmarks and reports.

Submodules are imported on demand so that the runtime side (``manifest``, ``predictor``) stays
free of torch::

    from mmsenti.export.predictor import Predictor        # numpy + onnxruntime + tokenizers only
    from mmsenti.export.onnx_export import export_model   # needs torch (the training side)
"""

MANIFEST_NAME = "manifest.json"
VARIANTS = ("fused", "text_only")
PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "tensorrt")
# opset 23: attention layers export as one ONNX ``Attention`` node (ONNX Runtime >= 1.23, TensorRT >= 10.14)
DEFAULT_OPSET = 23


def __getattr__(name: str):  # lazy, so `import mmsenti.export` never pulls torch in
    if name == "Predictor":
        from mmsenti.export.predictor import Predictor

        return Predictor
    raise AttributeError(name)
