"""``mmsenti export --format triton``: the Triton model repository (layout, versions, ``config.pbtxt``
against the manifest), and the tokenizer's Python-backend model against ``Predictor.encode_text``.

One small text-only model (the real MiniLM-L6 tokenizer and one of its layers, untrained head,
``transcript`` normalisation) is exported once through the CLI for the whole module. There is no
ONNX Runtime backend for Triton on these machines, so the real-server test (slow, skipped when no
``tritonserver`` binary is found) runs the tokenizer and the ensemble with the engine in a Python-backend
stand-in that scores through the export's own Predictor.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsenti.errors import MmsentiError
from mmsenti.export.triton import (
    CONFIG_NAME, TOKENIZER_MODEL_SOURCE, TritonOptions, engine_config, ensemble_config, to_pbtxt, tokenizer_config,
    write_repository)
from mmsenti.models import SentimentModel, SentimentModelConfig
from mmsenti.runtime.manifest import read_manifest
from mmsenti.runtime.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Great phone, battery LASTS!", "  screen   died after a week...", "so-so. don't buy", "",
         "an endless, dull film " * 30]  # the last one is truncated at max_length


# ----------------------------------------------------------------------------- protobuf text format
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[{}\[\]:,])|(?P<comment>#[^\n]*))')


def parse_pbtxt(text: str) -> dict[str, list]:
    """A small parser of protobuf text format: every field -> the list of its values (scalars or dicts).

    Enough for config.pbtxt (strings, ints, bare enums/bools, sub-messages, ``[...]`` lists, repeated
    fields); raises on anything else, so a syntax error in a written config fails here.
    """
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot tokenise at {text[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "comment":
            tokens.append((kind, m.group(kind)))
    out, i = _message(tokens, 0, end=None)
    assert i == len(tokens)
    return out


def _scalar(tok):
    kind, value = tok
    if kind == "str":
        return json.loads(value)
    if kind == "num":
        return int(value) if re.fullmatch(r"-?\d+", value) else float(value)
    if kind == "id":
        return {"true": True, "false": False}.get(value, value)
    raise ValueError(f"expected a value, got {value!r}")


def _message(tokens, i, end):
    fields: dict[str, list] = {}
    while i < len(tokens) and tokens[i] != ("punct", end):
        kind, key = tokens[i]
        if kind != "id":
            raise ValueError(f"expected a field name, got {key!r}")
        i += 1
        colon = tokens[i] == ("punct", ":")
        i += colon
        values = fields.setdefault(key, [])
        if tokens[i] == ("punct", "{"):
            sub, i = _message(tokens, i + 1, "}")
            values.append(sub)
            i += 1
        elif tokens[i] == ("punct", "["):
            i += 1
            while tokens[i] != ("punct", "]"):
                if tokens[i] == ("punct", "{"):
                    sub, i = _message(tokens, i + 1, "}")
                    values.append(sub)
                    i += 1
                else:
                    if not colon:
                        raise ValueError(f"{key}: a list of scalars needs ':'")
                    values.append(_scalar(tokens[i]))
                    i += 1
                if tokens[i] == ("punct", ","):
                    i += 1
            i += 1
        else:
            if not colon:
                raise ValueError(f"{key}: a scalar needs ':'")
            values.append(_scalar(tokens[i]))
            i += 1
    if end is not None and i >= len(tokens):
        raise ValueError(f"missing {end!r}")
    return fields, i


def one(msg: dict, key: str):
    values = msg[key]
    assert len(values) == 1, (key, values)
    return values[0]


def read_config(folder: Path) -> dict:
    return parse_pbtxt((folder / CONFIG_NAME).read_text())


def test_pbtxt_writer_and_parser_agree_on_every_value_kind():
    from mmsenti.export.triton import Enum

    msg = {"name": 'a "quoted" \\ name', "n": -1, "flag": True, "kind": Enum("KIND_CPU"), "dims": [-1, 7], "empty": [],
           "sub": {"shape": []}, "rep": [{"key": "k", "value": {"string_value": "1"}}, {"key": "j", "value": {"string_value": "2"}}]}
    parsed = parse_pbtxt(to_pbtxt(msg))
    assert one(parsed, "name") == 'a "quoted" \\ name' and one(parsed, "n") == -1 and one(parsed, "flag") is True
    assert one(parsed, "kind") == "KIND_CPU" and parsed["dims"] == [-1, 7] and parsed["empty"] == []
    assert one(parsed, "sub") == {"shape": []}
    assert [one(r, "key") for r in parsed["rep"]] == ["k", "j"]
    with pytest.raises(ValueError):
        parse_pbtxt("input [ { name: \"x\" ")


# ----------------------------------------------------------------------------- the exported repository
@pytest.fixture(scope="module")
def model() -> SentimentModel:
    torch.manual_seed(0)
    cfg = SentimentModelConfig(modalities=["text"], text_encoder={"pretrained": "minilm_l6", "keep_layers": [0]},
                               fusion={"name": "text_only"}, aux_7class=True, text_normalization="transcript")
    return SentimentModel(cfg).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    """A Lightning-style checkpoint of ``model`` (what train.py writes: net.* weights + the model config)."""
    path = tmp_path_factory.mktemp("ckpt") / "text.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_config": model.config.to_dict()}}, path)
    return path


@pytest.fixture(scope="module")
def repo(ckpt, tmp_path_factory) -> Path:
    from mmsenti.cli import main

    out = tmp_path_factory.mktemp("triton") / "models"
    assert main(["export", str(ckpt), "--format", "triton", "--variant", "text_only", "--no-data", "--out", str(out),
                 "--triton-max-batch", "16", "--triton-max-delay-us", "500", "--triton-instances", "2"]) == 0
    return out


def test_repository_layout(repo):
    assert sorted(p.name for p in repo.iterdir()) == ["sentiment", "sentiment_text", "sentiment_tokenizer"]
    assert sorted(p.name for p in (repo / "sentiment").iterdir()) == ["1", CONFIG_NAME]
    engine = repo / "sentiment" / "1"
    assert {"model.onnx", "manifest.json", "tokenizer"} <= {p.name for p in engine.iterdir()}
    manifest = read_manifest(engine)  # the version folder is a complete export (schema unchanged: format onnx)
    assert manifest["format"] == "onnx" and manifest["variant"] == "text_only" and manifest["name"] == "sentiment"
    tok = repo / "sentiment_tokenizer" / "1"
    assert (tok / "model.py").read_text() == TOKENIZER_MODEL_SOURCE.read_text()
    assert (tok / "tokenizer" / "tokenizer.json").read_bytes() == (engine / "tokenizer" / "tokenizer.json").read_bytes()
    assert json.loads((tok / "manifest.json").read_text())["text"]["normalization"] == "transcript"
    assert (repo / "sentiment_text" / "1").is_dir() and not any((repo / "sentiment_text" / "1").iterdir())
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    out = Predictor.load(engine, threads=1).predict(["fine", "awful"])
    assert out["score"].shape == (2,)


def test_engine_config_matches_manifest(repo):
    manifest = read_manifest(repo / "sentiment" / "1")
    cfg = read_config(repo / "sentiment")
    assert one(cfg, "name") == "sentiment" and one(cfg, "backend") == "onnxruntime"
    assert one(cfg, "default_model_filename") == manifest["engine"] == "model.onnx"
    assert one(cfg, "max_batch_size") == 16
    batching = one(cfg, "dynamic_batching")
    assert batching["preferred_batch_size"] == [8, 16] and one(batching, "max_queue_delay_microseconds") == 500
    group = one(cfg, "instance_group")
    assert one(group, "kind") == "KIND_CPU" and one(group, "count") == 2
    assert one(one(one(cfg, "version_policy"), "latest"), "num_versions") == 1
    params = {one(p, "key"): one(one(p, "value"), "string_value") for p in cfg["parameters"]}
    assert params["intra_op_thread_count"] == "1"
    dtypes = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
    for side, key in (("inputs", "input"), ("outputs", "output")):
        assert [one(t, "name") for t in cfg[key]] == [s["name"] for s in manifest[side]]
        for tensor, spec in zip(cfg[key], manifest[side]):
            assert one(tensor, "data_type") == dtypes[spec["dtype"]]
            expected = [d if isinstance(d, int) else -1 for d in spec["shape"][1:]]  # batch axis is Triton's
            if expected:
                assert tensor["dims"] == expected and "reshape" not in tensor
            else:  # score: [batch] -> dims [1], reshaped away for the engine
                assert tensor["dims"] == [1] and one(tensor, "reshape") == {"shape": []}
    assert {one(t, "name"): t["dims"] for t in cfg["input"]} == {"input_ids": [-1], "attention_mask": [-1]}
    assert {one(t, "name"): t["dims"] for t in cfg["output"]} == {"score": [1], "logits_7": [7]}
    warm = one(cfg, "model_warmup")
    assert {one(i, "key") for i in warm["inputs"]} == {"input_ids", "attention_mask"}


def test_tokenizer_and_ensemble_configs_chain_text_to_score(repo):
    tok = read_config(repo / "sentiment_tokenizer")
    assert one(tok, "backend") == "python" and one(tok, "max_batch_size") == 16
    assert [(one(t, "name"), one(t, "data_type"), t["dims"]) for t in tok["input"]] == [("text", "TYPE_STRING", [1])]
    engine = read_config(repo / "sentiment")
    assert tok["output"] == engine["input"]  # the tokenizer emits exactly what the engine takes
    ens = read_config(repo / "sentiment_text")
    assert one(ens, "platform") == "ensemble" and one(ens, "max_batch_size") <= one(engine, "max_batch_size")
    assert [(one(t, "name"), one(t, "data_type"), t["dims"]) for t in ens["input"]] == [("text", "TYPE_STRING", [1])]
    assert [(one(t, "name"), t["dims"]) for t in ens["output"]] == [("score", [1]), ("logits_7", [7])]
    first, second = one(ens, "ensemble_scheduling")["step"]
    assert one(first, "model_name") == "sentiment_tokenizer" and one(second, "model_name") == "sentiment"
    produced = {one(m, "value") for m in first["output_map"]}
    assert {one(m, "value") for m in second["input_map"]} == produced == {"input_ids", "attention_mask"}
    assert {one(m, "value") for m in second["output_map"]} == {"score", "logits_7"}


@pytest.fixture(scope="module")
def triton_schema():
    """Triton's own ModelConfig protobuf (unknown or mistyped fields fail), when tritonclient is installed."""
    try:
        from tritonclient.grpc import model_config_pb2
    except Exception as err:  # noqa: BLE001  (absent, or installed without its grpc extra)
        pytest.skip(f"tritonclient[grpc] is not installed here ({type(err).__name__}); the hand parser checks the syntax")
    return model_config_pb2


def test_configs_parse_as_tritons_model_config(repo, triton_schema):
    from google.protobuf import text_format

    for model in ("sentiment", "sentiment_tokenizer", "sentiment_text"):
        config = text_format.Parse((repo / model / CONFIG_NAME).read_text(), triton_schema.ModelConfig())
        assert config.name == model and config.max_batch_size == 16


def test_fused_configs_carry_frames_with_their_dtypes():
    from mmsenti.export.wrapper import ExportWrapper

    torch.manual_seed(0)
    fused = SentimentModel(SentimentModelConfig(
        text_encoder={"pretrained": "minilm_l6", "keep_layers": [0]},
        fusion={"name": "mult", "d_model": 16, "num_layers": 1, "num_heads": 2, "self_layers": 1},
        audio_encoder={"name": "conv_transformer", "input_dim": 74, "d_model": 16, "num_heads": 2},
        vision_encoder={"name": "conv_transformer", "input_dim": 47, "d_model": 16, "num_heads": 2}))
    inputs, outputs = ExportWrapper(fused, "fused").io_spec()
    manifest = {"inputs": inputs, "outputs": outputs, "engine": "model.onnx", "variant": "fused"}
    opts = TritonOptions(device="gpu")
    name = opts.model_name("fused")
    assert name == "sentiment_fused"
    engine = parse_pbtxt(to_pbtxt(engine_config(manifest, name, opts)))
    got = {one(t, "name"): (one(t, "data_type"), t["dims"]) for t in engine["input"]}
    assert got == {"input_ids": ("TYPE_INT64", [-1]), "attention_mask": ("TYPE_INT64", [-1]),
                   "audio": ("TYPE_FP32", [-1, 74]), "audio_mask": ("TYPE_BOOL", [-1]),
                   "vision": ("TYPE_FP32", [-1, 47]), "vision_mask": ("TYPE_BOOL", [-1])}
    assert one(one(engine, "instance_group"), "kind") == "KIND_GPU" and "parameters" not in engine
    warm = {one(i, "key"): one(i, "value")["dims"] for i in one(engine, "model_warmup")["inputs"]}
    assert warm["audio"] == [16, 74] and warm["audio_mask"] == [16]
    ens = parse_pbtxt(to_pbtxt(ensemble_config(manifest, name, opts)))
    assert [one(t, "name") for t in ens["input"]] == ["text", "audio", "audio_mask", "vision", "vision_mask"]
    to_engine = {one(m, "key") for m in one(ens, "ensemble_scheduling")["step"][1]["input_map"]}
    assert to_engine == {s["name"] for s in inputs}  # frames go straight from the ensemble's inputs to the engine
    tok = parse_pbtxt(to_pbtxt(tokenizer_config(manifest, name, opts)))
    assert one(one(tok, "instance_group"), "kind") == "KIND_CPU"  # the tokenizer is CPU work on any device


# ----------------------------------------------------------------------------- the tokenizer model
class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


class _FakeRequest:
    def __init__(self, texts: list[bytes]):
        self.inputs = {"text": np.array([[t] for t in texts], dtype=object)}  # [batch, 1], as dims: [1]


def fake_backend_utils() -> types.ModuleType:
    """What the model uses of Triton's ``triton_python_backend_utils``."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = _FakeTensor
    pb.InferenceResponse = _FakeResponse
    pb.TritonError = lambda message: message
    pb.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request.inputs[name])
    return pb


@pytest.fixture
def tokenizer_model(repo, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_backend_utils())
    folder = repo / "sentiment_tokenizer"
    spec = importlib.util.spec_from_file_location("mmsenti_triton_tokenizer_model", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_repository": str(folder), "model_version": "1", "model_name": "sentiment_tokenizer",
                      "model_config": (folder / CONFIG_NAME).read_text()})
    return model


def test_tokenizer_model_tokenizes_exactly_as_the_predictor(repo, tokenizer_model):
    predictor = Predictor.load(repo / "sentiment" / "1", threads=1)
    assert predictor.normalize("Great phone, battery LASTS!") == "great phone battery lasts"  # the rule is in play
    # one request holding the batch
    (response,) = tokenizer_model.execute([_FakeRequest([t.encode() for t in TEXTS])])
    assert response.error is None
    expected = predictor.encode_text(TEXTS)
    for name in ("input_ids", "attention_mask"):
        assert response.outputs[name].dtype == np.int64
        np.testing.assert_array_equal(response.outputs[name], expected[name])
    assert expected["input_ids"].shape[1] == predictor.manifest["tokenizer"]["max_length"]  # truncation reached
    # requests the dynamic batcher grouped: tokenised together (one padded length), each its own rows
    responses = tokenizer_model.execute([_FakeRequest([t.encode() for t in TEXTS[:2]]), _FakeRequest([TEXTS[2].encode()])])
    joint = predictor.encode_text(TEXTS[:3])
    np.testing.assert_array_equal(responses[0].outputs["input_ids"], joint["input_ids"][:2])
    np.testing.assert_array_equal(responses[1].outputs["attention_mask"], joint["attention_mask"][2:])


TORCH_FREE_TOKENIZER = """
import importlib.util, sys, types
import numpy as np
for name in ("torch", "transformers", "lightning", "onnxruntime"):
    sys.modules[name] = None  # a Triton Python environment has none of them
pb = types.ModuleType("triton_python_backend_utils")
pb.Tensor = lambda name, array: (name, array)
pb.InferenceResponse = lambda output_tensors, error=None: dict(output_tensors)
pb.TritonError = str
pb.get_input_tensor_by_name = lambda request, name: types.SimpleNamespace(as_numpy=lambda: request)
sys.modules["triton_python_backend_utils"] = pb
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location("model", folder + "/1/model.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.TritonPythonModel()
model.initialize({"model_repository": folder, "model_version": "1"})
(out,) = model.execute([np.array([[b"Fine, thanks!"]], dtype=object)])
print(out["input_ids"].tolist())
"""


def test_tokenizer_model_needs_no_torch(repo):
    result = subprocess.run([sys.executable, "-c", TORCH_FREE_TOKENIZER, str(repo / "sentiment_tokenizer")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    ids = json.loads(result.stdout.strip().splitlines()[-1])
    expected = Predictor.load(repo / "sentiment" / "1", threads=1).encode_text(["Fine, thanks!"])["input_ids"].tolist()
    assert ids == expected


def test_tokenizer_model_fails_a_bad_request_alone(tokenizer_model):
    good, bad, other = tokenizer_model.execute([_FakeRequest([b"nice"]), _FakeRequest([b"\xff\xfe bad"]),
                                                _FakeRequest([b"bad", b"worse"])])
    assert good.error is None and good.outputs["input_ids"].shape[0] == 1
    assert "not UTF-8" in bad.error and not bad.outputs
    assert other.error is None and other.outputs["input_ids"].shape[0] == 2


# ----------------------------------------------------------------------------- versions and errors
@pytest.fixture
def repo_copy(repo, tmp_path) -> Path:
    out = tmp_path / "models"
    shutil.copytree(repo, out)
    return out


def test_a_new_version_adds_its_folder_and_keeps_the_old(repo_copy):
    written = write_repository(repo_copy / "sentiment" / "1", repo_copy, TritonOptions(version=2, keep_versions=2))
    assert written.versions == [1, 2]
    for model in ("sentiment", "sentiment_tokenizer"):
        assert sorted(p.name for p in (repo_copy / model).iterdir()) == ["1", "2", CONFIG_NAME]
    assert read_manifest(repo_copy / "sentiment" / "2")["engine"] == "model.onnx"
    cfg = read_config(repo_copy / "sentiment")
    assert one(one(one(cfg, "version_policy"), "latest"), "num_versions") == 2
    with pytest.raises(MmsentiError, match=r"--triton-version 3"):
        write_repository(repo_copy / "sentiment" / "1", repo_copy, TritonOptions(version=2))
    write_repository(repo_copy / "sentiment" / "1", repo_copy, TritonOptions(version=2, overwrite=True))
    assert read_manifest(repo_copy / "sentiment" / "2")
    assert (repo_copy / "sentiment" / "1" / "model.onnx").is_file()  # copying never moves the source export


def test_cli_refuses_an_existing_version_before_exporting(ckpt, repo_copy, capsys):
    from mmsenti.cli import main

    before = sorted(str(p) for p in repo_copy.rglob("*"))
    assert main(["export", str(ckpt), "--format", "triton", "--variant", "text_only", "--no-data", "--out", str(repo_copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--triton-version 2" in err[0] and "--overwrite" in err[0]
    assert sorted(str(p) for p in repo_copy.rglob("*")) == before
    assert not [p for p in repo_copy.parent.iterdir() if p.name.startswith(".")]


def test_repository_errors_are_one_clear_line(repo_copy, tmp_path):
    engine = repo_copy / "sentiment" / "1"
    # another interface under the same name
    fused = tmp_path / "fused"
    shutil.copytree(engine, fused)
    manifest = json.loads((fused / "manifest.json").read_text())
    manifest["inputs"] = manifest["inputs"] + [{"name": "audio", "dtype": "float32", "shape": ["batch", "audio_frames", 74]},
                                               {"name": "audio_mask", "dtype": "bool", "shape": ["batch", "audio_frames"]}]
    manifest["variant"], manifest["modalities"] = "fused", ["text", "audio"]
    (fused / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MmsentiError, match="other inputs/outputs"):
        write_repository(fused, repo_copy, TritonOptions(name="sentiment", version=2))
    # a TensorRT engine folder
    trt = copy.deepcopy(manifest)
    trt["format"] = "tensorrt"
    (fused / "manifest.json").write_text(json.dumps(trt))
    with pytest.raises(MmsentiError, match="tensorrt export"):
        write_repository(fused, tmp_path / "repo2")
    # a folder under the model's name that this command did not write
    foreign = tmp_path / "foreign"
    (foreign / "sentiment").mkdir(parents=True)
    with pytest.raises(MmsentiError, match="holds no config.pbtxt"):
        write_repository(engine, foreign)
    for bad, match in ((TritonOptions(max_batch_size=8, preferred_batch_sizes=(16,)), "--triton-preferred-batch"),
                       (TritonOptions(name="../up"), "--triton-name"), (TritonOptions(version=0), "--triton-version"),
                       (TritonOptions(device="tpu"), "--triton-device")):
        with pytest.raises(MmsentiError, match=match):
            write_repository(engine, tmp_path / "repo3", bad)
    assert not (tmp_path / "repo2").exists() and not (tmp_path / "repo3").exists()


# ----------------------------------------------------------------------------- a real Triton server (slow)
STAND_IN_ENGINE = '''
import json
from pathlib import Path
import numpy as np
import triton_python_backend_utils as pb_utils
from mmsenti.runtime.predictor import Predictor

class TritonPythonModel:
    def initialize(self, args):
        self.predictor = Predictor.load(Path(args["model_repository"]) / args["model_version"], threads=1)

    def execute(self, requests):
        out = []
        for r in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.predictor.input_names}
            res = self.predictor.run(feeds)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(res[n])) for n in self.predictor.output_names]))
        return out
'''


def _tritonserver_dir() -> Path | None:
    """``MMSENTI_TRITONSERVER`` (a tritonserver folder: bin/, backends/), else the one in the nvidia-pytriton wheel."""
    if os.environ.get("MMSENTI_TRITONSERVER"):
        return Path(os.environ["MMSENTI_TRITONSERVER"])
    spec = importlib.util.find_spec("pytriton")
    if spec and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        return folder if (folder / "bin" / "tritonserver").is_file() else None
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_tritonserver_runs_tokenizer_and_ensemble(repo_copy, tmp_path):
    server = _tritonserver_dir()
    if server is None:
        pytest.skip("no tritonserver binary (pip install nvidia-pytriton, or set MMSENTI_TRITONSERVER to a tritonserver folder)")
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / minor / "triton_python_backend_stub"
    backends = tmp_path / "backends"
    shutil.copytree(server / "backends", backends)
    if stub.is_file():  # the wheel keeps one stub per Python; the backend wants it beside itself (a link: the
        (backends / "python" / "triton_python_backend_stub").symlink_to(stub)  # stub finds its libraries from its own place)
    # the engine in a Python-backend stand-in (this machine's Triton has no ONNX Runtime backend)
    engine = repo_copy / "sentiment"
    config = (engine / CONFIG_NAME).read_text()
    config = config.replace('backend: "onnxruntime"', 'backend: "python"')
    config = re.sub(r"default_model_filename:.*\n", "", config)
    config = config[:config.index("parameters [")]  # ORT parameters and warm-up are the ONNX backend's
    (engine / CONFIG_NAME).write_text(config)
    (engine / "1" / "model.py").write_text(STAND_IN_ENGINE)

    # The stub embeds an isolated interpreter (PYTHONPATH and user site ignored; the working folder is on
    # its path): run the server from a folder that shows this venv's packages and mmsenti, as an image
    # with `pip install` into Triton's own Python would (docs/triton.md)
    # (MMSENTI_TRITON_SITE: a folder whose packages go first, e.g. `pip install --target DIR "numpy<2"`)
    view = tmp_path / "site"
    view.mkdir()
    overlay = [Path(os.environ["MMSENTI_TRITON_SITE"])] if os.environ.get("MMSENTI_TRITON_SITE") else []
    for folder in [*overlay, Path(sysconfig.get_paths()["purelib"])]:
        for entry in folder.iterdir():
            if not entry.name.endswith(".pth") and entry.name != "mmsenti" and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    (view / "mmsenti").symlink_to(ROOT / "mmsenti")
    numpy_home = (view / "numpy").resolve().parent  # the numpy the stub will import
    numpy_version = next((p.name.split("-")[1] for p in numpy_home.glob("numpy-*.dist-info")), "0")
    if int(numpy_version.split(".")[0]) >= 2 and (server / "python_backend_stubs").is_dir():
        pytest.skip(f"the nvidia-pytriton wheel's Python-backend stub misreads TYPE_STRING inputs under numpy "
                    f"{numpy_version} (numpy 1.26 works): set MMSENTI_TRITON_SITE to a folder with numpy<2")
    http = _free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [os.path.join(sys.base_prefix, "lib"),
                                                                          os.environ.get("LD_LIBRARY_PATH")]))}
    log = open(tmp_path / "triton.log", "w")
    proc = subprocess.Popen([str(server / "bin" / "tritonserver"), f"--model-repository={repo_copy}",
                             f"--backend-directory={backends}", f"--http-port={http}", "--http-address=127.0.0.1",
                             "--allow-grpc=false", "--allow-metrics=false", "--log-verbose=0"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=view)
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"tritonserver did not become ready:\n{(tmp_path / 'triton.log').read_text()[-3000:]}")
            time.sleep(0.5)
        body = {"inputs": [{"name": "text", "shape": [len(TEXTS), 1], "datatype": "BYTES", "data": TEXTS}]}
        req = urllib.request.Request(f"{base}/v2/models/sentiment_text/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                result = {o["name"]: o for o in json.loads(r.read())["outputs"]}
        except urllib.error.HTTPError as err:
            pytest.fail(f"infer failed: {err.code} {err.read().decode()[:1000]}")
        assert result["score"]["shape"] == [len(TEXTS), 1]
        expected = Predictor.load(repo_copy / "sentiment" / "1", threads=1).predict(TEXTS)["score"]
        np.testing.assert_allclose(np.array(result["score"]["data"], np.float32), expected, atol=1e-5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
