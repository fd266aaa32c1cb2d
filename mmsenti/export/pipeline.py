"""One export: model → engine (+ quantization / TensorRT build) → parity → tokenizer → manifest.

Used by ``mmsenti export`` (from a checkpoint), by the post-training hook (``export=onnx``) and by
the benchmark script. The folder appears only once everything succeeded (:func:`staged_folder`).
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.export import DEFAULT_OPSET
from mmsenti.runtime.manifest import FORMATS, PRECISIONS, QUANTIZATIONS, VARIANTS
from mmsenti.runtime.manifest import (
    SCHEMA_VERSION, file_entries, library_versions, staged_folder, utc_now, write_manifest)
from mmsenti.io import file_digest
from mmsenti.export.quantize import DEFAULT_EXCLUDE
from mmsenti.export.triton import TRITON_FORMAT, TritonOptions, export_triton

log = logging.getLogger(__name__)



@dataclass
class ExportOptions:
    format: str = "onnx"
    variant: str = "fused"
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    quantization: str = "dynamic"  # int8 on ONNX Runtime: dynamic | static (TensorRT INT8 is always static Q/DQ)
    calibration_method: str = "entropy"
    calibration_batches: int = 8
    calibration_batch_size: int = 16
    per_channel: bool = True
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # module-name substrings kept in fp32 when quantizing
    tolerance: float | None = None  # parity tolerance; None = the default for the precision
    metrics: bool = True  # engine vs PyTorch MOSI metrics on valid/test (needs a datamodule)
    shrink: bool = True  # physically remove structurally pruned (zeroed) units first
    max_text_len: int = 64
    tensorrt_profile: dict[str, Any] = field(default_factory=dict)  # batch/seq/frames: [min, opt, max]
    timing_cache: str | None = None  # TensorRT timing cache shared across builds
    overwrite: bool = False
    triton: TritonOptions | None = None  # format=triton: the repository's name, version, batching (None: defaults)

    def validate(self) -> None:
        for name, value, allowed in (("--format", self.format, (*FORMATS, TRITON_FORMAT)), ("--variant", self.variant, VARIANTS),
                                     ("--precision", self.precision, PRECISIONS),
                                     ("--quantization", self.quantization, QUANTIZATIONS)):
            if value not in allowed:
                raise MmsentiError(f"{name} {value!r}; choose one of {', '.join(allowed)}")


def prepare_model(model, shrink: bool = True, compressed_size: bool = False) -> tuple[Any, dict[str, Any]]:
    """A copy ready to export: pruning masks folded in, zeroed structures removed, eval, fp32."""
    from mmsenti.compression import make_permanent
    from mmsenti.compression.structured import shrink as shrink_structures
    from mmsenti.compression.structured import structure_report
    from mmsenti.compression.unstructured import sparsity_report

    model = copy.deepcopy(model).cpu().float().eval()
    folded = make_permanent(model)
    report: dict[str, Any] = {"pruning_masks_folded": folded}
    structure = shrink_structures(model) if shrink else {"before": structure_report(model), "after": structure_report(model)}
    before, after = structure["before"], structure["after"]
    report["structured"] = {k: before[k] for k in ("ffn_neurons", "ffn_neurons_zeroed", "heads", "heads_zeroed")}
    report["structured"].update({"params_before": before["params"], "params_after": after["params"],
                                 "ffn_neurons_after": after["ffn_neurons"], "heads_after": after["heads"]})
    report["sparsity"] = sparsity_report(model, compressed=compressed_size)
    return model, report


def save_tokenizer(pretrained: str, folder: Path, max_length: int) -> dict[str, Any]:
    """The training tokenizer as ``tokenizer.json`` (+ vocab/config) for the torch-free runtime."""
    from mmsenti.pretrained import load_pretrained

    tok = load_pretrained(pretrained, "tokenizer")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise MmsentiError(f"tokenizer of {pretrained!r} has no fast (tokenizer.json) form; the runtime needs one")
    return {"path": folder.name, "source": pretrained, "max_length": int(max_length), "pad_id": int(tok.pad_token_id or 0),
            "pad_token": str(tok.pad_token or "[PAD]"), "padding": "longest, right", "truncation": True,
            "lowercase": bool(getattr(tok, "do_lower_case", True))}


def _datamodule_facts(datamodule) -> dict[str, Any]:
    if datamodule is None:
        return {}
    hp = datamodule.hparams
    return {"source": hp.get("source"), "location": str(getattr(datamodule, "location", "")), "mode": hp.get("mode"),
            "max_text_len": hp.get("max_text_len"), "max_frames": hp.get("max_frames"),
            "collapse": hp.get("collapse"), "text_normalization": hp.get("text_normalization")}


def _training_data(datamodule, source: dict[str, Any] | None, data_config: dict[str, Any] | None) -> tuple[dict | None, str]:
    """The settings of the data the model was trained on, and where they came from: the export's
    datamodule, else ``data_config`` (a checkpoint's), else the source checkpoint's (its datamodule
    hyper-parameters or its run's ``resolved_config.yaml``)."""
    if datamodule is not None:
        return {**dict(datamodule.hparams), "location": str(getattr(datamodule, "location", ""))}, "the export's data"
    if data_config:
        return dict(data_config), "the checkpoint's data config"
    ckpt = (source or {}).get("checkpoint")
    if ckpt and Path(ckpt).is_file():
        from mmsenti.models.checkpoint import _run_config, read_checkpoint

        try:
            hp = dict(read_checkpoint(ckpt).get("datamodule_hyper_parameters") or _run_config(Path(ckpt))[0].get("data") or {})
        except MmsentiError:
            hp = {}
        if hp:
            return hp, "the checkpoint's data config"
    return None, "nothing"


def extractor_facts(model_dims: dict[str, int], datamodule=None, source: dict[str, Any] | None = None,
                    data_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``extractors``: for each frame modality of the engine (``model_dims``: modality ->
    width), the extractor that made the training features (:func:`mmsenti.media.csd_writer.training_extractors`)."""
    from mmsenti.media.csd_writer import training_extractors

    data, origin = _training_data(datamodule, source, data_config)
    return training_extractors(data, model_dims, origin)


def export_model(model, out_dir: str | Path, options: ExportOptions | None = None, datamodule=None,
                 source: dict[str, Any] | None = None, name: str | None = None,
                 data_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``model`` (a :class:`SentimentModel`) to ``out_dir``; returns the manifest written there.

    ``format="triton"``: ``out_dir`` is a Triton model repository; the ONNX export becomes a version
    of a model in it (:func:`mmsenti.export.triton.export_triton`). ``data_config``: the settings of
    the training data when no ``datamodule`` is given (a checkpoint's ``data_config``); the manifest's
    ``extractors`` are read from that data (else from the source checkpoint's record of it).
    """
    from mmsenti.export.onnx_export import check_parity, export_onnx, metric_drift, onnx_ops, parity_tolerance
    from mmsenti.export.quantize import calibration_feeds, convert_fp16, quantize_dynamic_int8, quantize_static_int8
    from mmsenti.runtime.session import make_session
    from mmsenti.export.wrapper import ExportWrapper

    opts = options or ExportOptions()
    opts.validate()
    if opts.format == TRITON_FORMAT:
        return export_triton(model, out_dir, opts, datamodule=datamodule, source=source, name=name)
    out_dir = Path(out_dir)
    if opts.format == "tensorrt":  # fail before anything is written when TensorRT cannot run here
        from mmsenti.runtime.tensorrt import import_tensorrt

        import_tensorrt()
    if opts.precision == "int8" and (opts.quantization == "static" or opts.format == "tensorrt") and datamodule is None:
        raise MmsentiError("static INT8 needs calibration batches from the data: give the checkpoint's data (--data-root)")
    max_text_len = int(getattr(datamodule, "hparams", {}).get("max_text_len", opts.max_text_len)) if datamodule is not None else opts.max_text_len

    model, compression = prepare_model(model, opts.shrink)
    wrapper = ExportWrapper(model, opts.variant).eval()
    inputs, outputs = wrapper.io_spec()

    with staged_folder(out_dir, overwrite=opts.overwrite) as stage, tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        export_info = export_onnx(wrapper, fp32, opset=opts.opset)
        quant: dict[str, Any] | None = None
        calib = None
        if opts.precision == "int8" and (opts.quantization == "static" or opts.format == "tensorrt"):
            calib = calibration_feeds(wrapper, datamodule, opts.calibration_batches, opts.calibration_batch_size)

        # the ONNX graph this export ships (and, for TensorRT, builds from)
        onnx_file = stage / "model.onnx"
        if opts.precision == "fp32":
            shutil.copyfile(fp32, onnx_file)
        elif opts.precision == "fp16":
            quant = convert_fp16(fp32, onnx_file)
        elif opts.format == "tensorrt" or opts.quantization == "static":
            quant = quantize_static_int8(fp32, onnx_file, calib, method=opts.calibration_method,
                                         per_channel=opts.per_channel, exclude=opts.exclude)
        else:
            quant = quantize_dynamic_int8(fp32, onnx_file, per_channel=opts.per_channel, exclude=opts.exclude)

        # the TensorRT profile of this export, recorded for every format: the TensorRT builder uses it
        # here, ORT's TensorRT EP reads it back from the manifest (mmsenti.runtime.tensorrt.manifest_profile)
        from mmsenti.runtime.tensorrt import ProfileSpec

        profile = (ProfileSpec.from_config(opts.tensorrt_profile) if opts.tensorrt_profile
                   else ProfileSpec.for_text_len(max_text_len))
        engine_file, tensorrt_info = onnx_file, {"profile": {k: list(v) for k, v in profile.axes().items()}}
        if opts.format == "tensorrt":
            from mmsenti.export.tensorrt import build_engine
            from mmsenti.runtime.tensorrt import TensorRTRunner

            engine_file = stage / "model.engine"
            tensorrt_info.update(build_engine(onnx_file, engine_file, opts.precision, inputs, profile,
                                              timing_cache=opts.timing_cache or (stage / "timing.cache"), calibration=calib))
            tensorrt_info["profile_shapes"] = tensorrt_info.pop("profile")  # per input: [min, opt, max] shapes
            tensorrt_info["profile"] = {k: list(v) for k, v in profile.axes().items()}
            runner = TensorRTRunner(engine_file, [o["name"] for o in outputs])
            session = _RunnerSession(runner, [i["name"] for i in inputs])
        else:
            session = make_session(onnx_file)

        static = opts.precision == "int8" and (opts.quantization == "static" or opts.format == "tensorrt")
        tolerance = opts.tolerance if opts.tolerance is not None else parity_tolerance(opts.precision, "static" if static else "dynamic")
        parity = check_parity(wrapper, session, opts.precision, datamodule=datamodule, tolerance=tolerance)
        if opts.metrics and datamodule is not None:
            parity["metrics"] = metric_drift(wrapper, session, datamodule)

        tokenizer = save_tokenizer(model.config.text_encoder.get("pretrained", "minilm_l6"), stage / "tokenizer", max_text_len)
        dims = model.frame_dims
        features = {m: {"dim": int(dims[m]), "shape": [f"{m}_frames", int(dims[m])],
                        "normalization": "raw features; training-set mean/std applied inside the engine",
                        "non_finite": "NaN/inf set to 0 (as the data loader does)",
                        "rate": "one row per word (aligned)" if getattr(datamodule, "hparams", {}).get("mode", "aligned") == "aligned"
                        else "frames at the feature extractor's rate"}
                    for m in wrapper.frame_modalities}
        engine_metrics = {k: v["engine"] for k, v in parity.get("metrics", {}).items()}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name or out_dir.name,
            "format": opts.format,
            "engine": engine_file.name,
            "onnx": onnx_file.name,
            "variant": opts.variant,
            "precision": opts.precision,
            "quantization": quant,
            "opset": int(opts.opset),
            "modalities": wrapper.modalities,
            "model_modalities": list(model.modalities),
            "inputs": inputs,
            "outputs": outputs,
            "tokenizer": tokenizer,
            "features": features,
            "source": {**(source or {}), "model_config": model.config.to_dict()},
            "compression": compression,
            "export": {**export_info, "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()}},
            "tensorrt": tensorrt_info,
            "task": model.config.task,
            "text": {"normalization": model.config.text_normalization},
            "extractors": extractor_facts({m: int(dims[m]) for m in wrapper.frame_modalities}, datamodule, source, data_config),
            "parity": parity,
            "metrics": {"source_run": (source or {}).get("run_metrics", {}), "engine": engine_metrics},
            "data": _datamodule_facts(datamodule),
            "graph": {"ops": onnx_ops(onnx_file), "nodes": sum(onnx_ops(onnx_file).values())},
            "files": {},
            "versions": library_versions("mmsenti", "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
                                         "transformers", "tokenizers", "tensorrt", "lightning"),
            "created": utc_now(),
        }
        manifest["files"] = file_entries(stage)
        manifest["size_bytes"] = (stage / manifest["engine"]).stat().st_size
        write_manifest(stage, manifest)
    log.info("exported %s (%s %s %s) to %s: parity max |diff| %.3g", manifest["name"], opts.format, opts.variant,
             opts.precision, out_dir, parity["max_abs_diff"])
    return manifest


class _RunnerSession:
    """Makes a TensorRT runner look like an ORT session for the parity check."""

    def __init__(self, runner, input_names: list[str]):
        self.runner = runner
        self._inputs = [type("Input", (), {"name": n})() for n in input_names]

    def get_inputs(self):
        return self._inputs

    def run(self, _outputs, feeds):
        return self.runner.run(feeds)


def checkpoint_source(ckpt_path: str | Path) -> dict[str, Any]:
    """What the manifest records about a checkpoint: path, sha256, epoch, and its run's metrics."""
    from mmsenti.export.wrapper import run_metrics_for

    path = Path(ckpt_path)
    return {"checkpoint": str(path.resolve()), "sha256": file_digest(path), "bytes": path.stat().st_size,
            "run_metrics": run_metrics_for(path)}
