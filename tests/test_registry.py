"""The one registry: every buildable kind is filled, listed whole by `mmsenti info`, and refuses unknown names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmsenti import registry
from mmsenti.errors import MmsentiError

EXPECTED = {
    "sequence_encoder": {"conv_transformer", "lstm"}, "fusion": {"mult", "late", "text_only"},
    "text_backbone": {"bilstm"}, "text_architecture": {"bert", "mpnet", "distilbert"},
    "text_weights": {"minilm_l6", "mpnet_base"}, "data_source": {"synthetic", "csd", "mmsa", "label_csv", "sst2"},
    "audio_extractor": {"librosa_prosody", "egemaps"}, "face_extractor": {"face_expression"}, "face_detector": {"haar"},
    "export_format": {"onnx", "tensorrt"}, "export_variant": {"fused", "text_only"},
    "export_precision": {"fp32", "fp16", "int8"}, "quantization": {"dynamic", "static"},
}


def test_every_kind_is_filled_on_first_use():
    assert set(registry.kinds()) >= set(EXPECTED)
    for kind, names in EXPECTED.items():
        assert names <= set(registry.available(kind)), kind


def test_info_json_lists_every_kind_with_descriptions(capsys):
    from mmsenti.cli import main

    assert main(["info", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["registry"]
    for kind, names in EXPECTED.items():
        assert names <= set(table[kind]) and all(table[kind][n] for n in names), kind


def test_unknown_names_are_one_line_with_the_choices():
    with pytest.raises(MmsentiError, match=r"data\.source='pickle': unknown data source; choose one of csd, label_csv"):
        registry.check("data_source", "pickle", "data.source")


def test_the_runtime_kinds_import_no_torch():
    code = ("import sys; from mmsenti import registry; "
            "[registry.available(k) for k in ('export_format', 'export_variant', 'export_precision', 'quantization')]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
