"""A Triton Inference Server model repository from an export: ``mmsenti export CKPT --format triton``.

The scale-out path for users who outgrow one ``mmsenti serve`` box. The ONNX engine is exported as
usual (fp32, fp16 or INT8, with its parity check) and then laid out as a Triton model repository::

    <repo>/<name>/config.pbtxt                 ONNX Runtime backend: dynamic batching, instance group, versions
    <repo>/<name>/<N>/                         the whole export folder: model.onnx, tokenizer/, manifest.json
    <repo>/<name>_tokenizer/config.pbtxt       Python backend: raw text -> input_ids, attention_mask
    <repo>/<name>_tokenizer/<N>/model.py       (mmsenti/export/triton_tokenizer_model.py, copied)
    <repo>/<name>_tokenizer/<N>/tokenizer/     the export's tokenizer.json (+ vocab/config)
    <repo>/<name>_tokenizer/<N>/manifest.json  the export's manifest: tokenizer settings, text.normalization
    <repo>/<name>_text/config.pbtxt            ensemble: "text" (TYPE_STRING) -> tokenizer -> engine -> score
    <repo>/<name>_text/1/                      (Triton wants a version folder, empty for an ensemble)

Each engine version folder is itself a complete export (``Predictor.load(repo/name/N)`` and
``mmsenti serve`` read it). Exporting again with ``--triton-version N`` adds ``N/`` beside the
others; a version folder appears only complete (staged, then renamed), so a Triton server polling
the repository never loads half a model. The manifest schema is unchanged: a repository is not
an engine format, it is a layout of one ONNX export (this module is its only writer).

Tensor specs come from the manifest: the leading ``batch`` axis is Triton's (``max_batch_size``),
named axes become ``-1``, a batch-only output (``score``) is ``dims: [1]`` with
``reshape: { shape: [ ] }``. See docs/triton.md for running it (docker, load balancer, Kubernetes).

Torch-free: it only reads an export folder and writes text and files.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.io import write_text_atomic
from mmsenti.runtime.manifest import MANIFEST_NAME, read_manifest, staged_folder

TRITON_FORMAT = "triton"  # an `mmsenti export --format` beside the manifest's FORMATS, not one of them
CONFIG_NAME = "config.pbtxt"
TOKENIZER_SUFFIX = "_tokenizer"
ENSEMBLE_SUFFIX = "_text"
TOKENIZER_MODEL_SOURCE = Path(__file__).with_name("triton_tokenizer_model.py")
DEVICES = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
TRITON_DTYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "float32": "TYPE_FP32",
                 "float16": "TYPE_FP16"}
WARMUP_LENGTH = 16  # tokens / frames of the zero-filled warm-up request Triton runs when it loads a version
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TritonOptions:
    """What ``--triton-*`` sets: model name, version, batching and instances."""

    name: str | None = None  # default: "sentiment" (text_only export) or "sentiment_fused"
    version: int = 1  # the version folder this export becomes
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] | None = None  # default: 8, 16, 32, ... up to max_batch_size
    max_queue_delay_us: int = 2000  # as `mmsenti serve --max-wait-ms 2`
    device: str = "cpu"  # instance_group kind: cpu | gpu
    instances: int = 1  # model instances (each one ORT session / one tokenizer process)
    threads: int = 1  # ORT intra-op threads per CPU instance (as `mmsenti serve --threads 1`)
    keep_versions: int = 1  # version_policy latest { num_versions }: how many versions Triton serves
    overwrite: bool = False  # replace an existing version folder N

    def validate(self) -> None:
        if self.name is not None and not _NAME.match(self.name):
            raise MmsentiError(f"--triton-name {self.name!r}: use letters, digits, '_', '-' or '.' (a Triton model folder name)")
        if self.device not in DEVICES:
            raise MmsentiError(f"--triton-device {self.device!r}; choose one of {', '.join(DEVICES)}")
        for flag, value in (("--triton-version", self.version), ("--triton-max-batch", self.max_batch_size),
                            ("--triton-instances", self.instances), ("--triton-threads", self.threads),
                            ("--triton-keep-versions", self.keep_versions)):
            if not isinstance(value, int) or value < 1:
                raise MmsentiError(f"{flag} {value!r}: must be an integer >= 1")
        if not isinstance(self.max_queue_delay_us, int) or self.max_queue_delay_us < 0:
            raise MmsentiError(f"--triton-max-delay-us {self.max_queue_delay_us!r}: must be an integer >= 0")
        bad = [b for b in self.preferred_batch_sizes or () if not 1 <= b <= self.max_batch_size]
        if bad:
            raise MmsentiError(f"--triton-preferred-batch {bad}: each size must be in 1..--triton-max-batch ({self.max_batch_size})")

    def model_name(self, variant: str) -> str:
        return self.name or ("sentiment" if variant == "text_only" else "sentiment_fused")

    def preferred(self) -> list[int]:
        if self.preferred_batch_sizes:
            return sorted(set(self.preferred_batch_sizes))
        sizes = [b for b in (8, 16, 32, 64, 128, 256, 512, 1024) if b < self.max_batch_size]
        return sizes + [self.max_batch_size]


@dataclass
class TritonRepository:
    """What :func:`write_repository` wrote."""

    root: Path
    engine: str  # model names
    tokenizer: str
    ensemble: str
    version: int
    versions: list[int] = field(default_factory=list)  # engine versions now in the repository

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "engine": self.engine, "tokenizer": self.tokenizer, "ensemble": self.ensemble,
                "version": self.version, "versions": list(self.versions)}


# ----------------------------------------------------------------------------- protobuf text format
class Enum(str):
    """A protobuf enum value: written bare (``TYPE_INT64``), not quoted."""


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """Render a message (dict: field -> value) in protobuf text format, the syntax of ``config.pbtxt``.

    Values: str (quoted), :class:`Enum` (bare), bool, int, dict (a sub-message), list of scalars
    (``dims: [ -1, 7 ]``) or list of dicts (repeated messages and map entries, ``input [ {...}, {...} ]``).
    """
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(items) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]" if value else f"{pad}{key}: [ ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no protobuf text form for {value!r}")


# ----------------------------------------------------------------------------- model configs
def triton_tensor(spec: dict[str, Any], what: str = "tensor") -> dict[str, Any]:
    """A manifest tensor spec (``{name, dtype, shape: ["batch", ...]}``) as a Triton input/output."""
    shape = list(spec["shape"])
    if not shape or shape[0] != "batch":
        raise MmsentiError(f"{what} {spec['name']}: shape {shape} has no leading 'batch' axis; Triton batches along it")
    if spec["dtype"] not in TRITON_DTYPES:
        raise MmsentiError(f"{what} {spec['name']}: dtype {spec['dtype']!r} has no Triton type here ({sorted(TRITON_DTYPES)})")
    tensor: dict[str, Any] = {"name": spec["name"], "data_type": Enum(TRITON_DTYPES[spec["dtype"]])}
    dims = [d if isinstance(d, int) else -1 for d in shape[1:]]  # named (dynamic) axes -> -1
    if dims:
        tensor["dims"] = dims
    else:  # [batch] only: the API sees [batch, 1]
        tensor["dims"] = [1]
        tensor["reshape"] = {"shape": []}
    return tensor


def _header(name: str, runs_on: dict[str, str], opts: TritonOptions) -> dict[str, Any]:
    """name, backend/platform, batch size and version policy: the head of every config here."""
    return {"name": name, **runs_on, "max_batch_size": opts.max_batch_size,
            "version_policy": {"latest": {"num_versions": opts.keep_versions}}}


def engine_config(manifest: dict[str, Any], name: str, opts: TritonOptions) -> dict[str, Any]:
    """``<name>/config.pbtxt``: the export's ONNX graph on Triton's ONNX Runtime backend."""
    config = {
        **_header(name, {"backend": "onnxruntime"}, opts),
        "default_model_filename": manifest["engine"],
        "input": [triton_tensor(s, "input") for s in manifest["inputs"]],
        "output": [triton_tensor(s, "output") for s in manifest["outputs"]],
        "dynamic_batching": {"preferred_batch_size": opts.preferred(), "max_queue_delay_microseconds": opts.max_queue_delay_us},
        "instance_group": [{"count": opts.instances, "kind": Enum(DEVICES[opts.device])}],
    }
    if opts.device == "cpu":  # one intra-op thread per instance: instances, not threads, scale a shared box
        config["parameters"] = [{"key": "intra_op_thread_count", "value": {"string_value": str(opts.threads)}},
                                {"key": "inter_op_thread_count", "value": {"string_value": "1"}}]
    config["model_warmup"] = [{  # zero ids/masks (padding, absent frames): the first real request is not the slow one
        "name": "zeros", "batch_size": 1,
        "inputs": [{"key": s["name"], "value": {"data_type": Enum(TRITON_DTYPES[s["dtype"]]),
                                                "dims": [WARMUP_LENGTH if d == -1 else d for d in triton_tensor(s)["dims"]],
                                                "zero_data": True}}
                   for s in manifest["inputs"]]}]
    return config


def tokenizer_config(manifest: dict[str, Any], name: str, opts: TritonOptions) -> dict[str, Any]:
    """``<name>_tokenizer/config.pbtxt``: Python backend, ``text`` -> the engine's token inputs.

    Its own dynamic batcher hands several requests to one ``execute``: they are tokenised together
    (one padded length), so the engine's batcher can merge them again.
    """
    token_specs = [s for s in manifest["inputs"] if s["name"] in ("input_ids", "attention_mask")]
    return {
        **_header(name + TOKENIZER_SUFFIX, {"backend": "python"}, opts),
        "input": [{"name": "text", "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [triton_tensor(s, "input") for s in token_specs],
        "dynamic_batching": {"max_queue_delay_microseconds": opts.max_queue_delay_us},
        "instance_group": [{"count": opts.instances, "kind": Enum("KIND_CPU")}],
    }


def ensemble_config(manifest: dict[str, Any], name: str, opts: TritonOptions) -> dict[str, Any]:
    """``<name>_text/config.pbtxt``: raw text in, the engine's outputs out (tokenizer -> engine).

    A fused export's ensemble also takes the engine's frame inputs (``audio``, ``audio_mask``, ...)
    and passes them straight to the engine. Both steps run their latest version.
    """
    frames = [s for s in manifest["inputs"] if s["name"] not in ("input_ids", "attention_mask")]
    token_names = [s["name"] for s in manifest["inputs"] if s["name"] in ("input_ids", "attention_mask")]
    outputs = []
    for spec in manifest["outputs"]:
        tensor = triton_tensor(spec, "output")
        tensor.pop("reshape", None)  # the ensemble sees the engine's API shape ([1] for a batch-only output)
        outputs.append(tensor)

    def mapping(names: Iterable[str]) -> list[dict[str, str]]:
        return [{"key": n, "value": n} for n in names]

    return {
        **_header(name + ENSEMBLE_SUFFIX, {"platform": "ensemble"}, opts),
        "input": [{"name": "text", "data_type": Enum("TYPE_STRING"), "dims": [1]}] + [triton_tensor(s, "input") for s in frames],
        "output": outputs,
        "ensemble_scheduling": {"step": [
            {"model_name": name + TOKENIZER_SUFFIX, "model_version": -1,
             "input_map": mapping(["text"]), "output_map": mapping(token_names)},
            {"model_name": name, "model_version": -1,
             "input_map": mapping(token_names + [s["name"] for s in frames]),
             "output_map": mapping(s["name"] for s in manifest["outputs"])},
        ]},
    }


# ----------------------------------------------------------------------------- the writer
def _versions(model_dir: Path) -> list[int]:
    """Numbered version folders (Triton ignores the rest, e.g. hidden staging folders)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"))


def _signature(manifest: dict[str, Any]) -> list[tuple]:
    return [(side, s["name"], s["dtype"], tuple(triton_tensor(s)["dims"]))
            for side in ("inputs", "outputs") for s in manifest[side]]


def _check_version_free(repo: Path, name: str, opts: TritonOptions) -> list[int]:
    """The engine's existing versions; raises when ``opts.version`` is one of them (without overwrite)."""
    if repo.exists() and not repo.is_dir():
        raise MmsentiError(f"{repo} is a file; --out must be a (new or existing) Triton model repository folder")
    existing = _versions(repo / name)
    if opts.version in existing and not opts.overwrite:
        raise MmsentiError(f"{repo / name / str(opts.version)} exists; pass --triton-version {max(existing) + 1} "
                           "to add a version, or --overwrite to replace this one")
    return existing


def _check_repository(repo: Path, manifest: dict[str, Any], name: str, opts: TritonOptions) -> None:
    """Refuse what would break the repository, before anything is written."""
    for model in (name, name + TOKENIZER_SUFFIX, name + ENSEMBLE_SUFFIX):
        folder = repo / model
        if folder.exists() and not (folder / CONFIG_NAME).is_file():
            raise MmsentiError(f"{folder} exists but holds no {CONFIG_NAME}: not a model this command wrote; "
                               "choose another --triton-name or --out")
    existing = _check_version_free(repo, name, opts)
    for v in existing:
        if v == opts.version:
            continue
        path = repo / name / str(v) / MANIFEST_NAME
        if not path.is_file():
            raise MmsentiError(f"{path.parent}: a version without {MANIFEST_NAME} (not written by mmsenti export); "
                               "remove it or choose another --triton-name")
        other = read_manifest(path.parent)
        if _signature(other) != _signature(manifest):
            raise MmsentiError(f"{name} version {v} has other inputs/outputs ({other['variant']}, modalities "
                               f"{other['modalities']}) than this export ({manifest['variant']}, {manifest['modalities']}); "
                               "one Triton model serves one interface: choose another --triton-name")


def _fill_version(stage: Path, source: Path, move: bool) -> None:
    for entry in sorted(source.iterdir()):
        if move:  # shutil.move: the repository may be another file system (a mounted volume)
            shutil.move(str(entry), str(stage / entry.name))
        elif entry.is_dir():
            shutil.copytree(entry, stage / entry.name)
        else:
            shutil.copy2(entry, stage / entry.name)


def write_repository(export_dir: str | Path, repo: str | Path, options: TritonOptions | None = None,
                     move: bool = False) -> TritonRepository:
    """Lay out (or add a version to) a Triton model repository from an ONNX export folder.

    ``move=True`` moves the export's files into the repository instead of copying them (the
    ``--format triton`` path, whose export folder is a temporary one).
    """
    opts = options or TritonOptions()
    opts.validate()
    export_dir, repo = Path(export_dir), Path(repo)
    manifest = read_manifest(export_dir)
    if manifest["format"] != "onnx":
        raise MmsentiError(f"{export_dir} is a {manifest['format']} export; a Triton repository is made from an ONNX "
                           "export (`mmsenti export CKPT --format triton`; on GPUs Triton's ONNX Runtime backend can "
                           "hand it to TensorRT, see docs/triton.md)")
    name = opts.model_name(manifest["variant"])
    _check_repository(repo, manifest, name, opts)
    version = str(opts.version)
    # a tokenizer version without its engine version is what a failed earlier write left: replace it
    tokenizer_overwrite = opts.overwrite or opts.version not in _versions(repo / name)
    repo.mkdir(parents=True, exist_ok=True)
    for model in (name, name + TOKENIZER_SUFFIX, name + ENSEMBLE_SUFFIX):
        (repo / model).mkdir(exist_ok=True)

    # the tokenizer first: once the engine's new version appears, the ensemble may run the pair
    with staged_folder(repo / (name + TOKENIZER_SUFFIX) / version, overwrite=tokenizer_overwrite) as stage:
        shutil.copytree(export_dir / manifest["tokenizer"]["path"], stage / manifest["tokenizer"]["path"])
        shutil.copy2(export_dir / MANIFEST_NAME, stage / MANIFEST_NAME)
        shutil.copy2(TOKENIZER_MODEL_SOURCE, stage / "model.py")
    with staged_folder(repo / name / version, overwrite=opts.overwrite) as stage:
        _fill_version(stage, export_dir, move)
    (repo / (name + ENSEMBLE_SUFFIX) / "1").mkdir(exist_ok=True)

    write_text_atomic(repo / name / CONFIG_NAME, to_pbtxt(engine_config(manifest, name, opts)))
    write_text_atomic(repo / (name + TOKENIZER_SUFFIX) / CONFIG_NAME, to_pbtxt(tokenizer_config(manifest, name, opts)))
    write_text_atomic(repo / (name + ENSEMBLE_SUFFIX) / CONFIG_NAME, to_pbtxt(ensemble_config(manifest, name, opts)))
    return TritonRepository(root=repo, engine=name, tokenizer=name + TOKENIZER_SUFFIX, ensemble=name + ENSEMBLE_SUFFIX,
                            version=opts.version, versions=_versions(repo / name))


def export_triton(model, repo: str | Path, options, datamodule=None, source: dict[str, Any] | None = None,
                  name: str | None = None) -> dict[str, Any]:
    """``mmsenti export --format triton``: the ONNX export (as ``--format onnx``), then :func:`write_repository`.

    ``options`` is the :class:`~mmsenti.export.pipeline.ExportOptions` (its ``triton`` field the
    :class:`TritonOptions`). Returns the engine's manifest, with the repository under ``"triton"``
    (the manifest file itself is unchanged: the schema knows nothing of Triton).
    """
    from mmsenti.export.pipeline import export_model

    triton = options.triton or TritonOptions()
    triton = replace(triton, overwrite=triton.overwrite or options.overwrite)
    triton.validate()
    repo = Path(repo)
    model_name = triton.model_name(options.variant)
    _check_version_free(repo, model_name, triton)  # before the (long) export, not after
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.export-", dir=repo.parent))  # beside the repository: never polled
    try:
        manifest = export_model(model, tmp / "engine", replace(options, format="onnx", triton=None, overwrite=False),
                                datamodule=datamodule, source=source, name=name or model_name)
        written = write_repository(tmp / "engine", repo, triton, move=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**manifest, "triton": written.to_dict()}
