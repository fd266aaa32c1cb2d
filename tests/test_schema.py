"""Config checks at composition: every experiment passes; a typo in any checked node fails in one line
naming the key and the valid keys, before any data or weights are loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mmsenti.errors import MmsentiError
from mmsenti.training.schema import check_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.mark.parametrize("config", ["train.yaml", "eval.yaml"])
def test_every_experiment_passes_the_checks(config):
    for exp in EXPERIMENTS:
        check_config(_compose(config, [f"experiment={exp}"]))


@pytest.mark.parametrize("overrides,message", [
    (["+data.batchsize=3"], r"unknown key 'batchsize' in data; valid keys: .*batch_size"),
    (["+model.net.audio_encoder.dmodel=3"], r"unknown key 'dmodel' in model\.net\.audio_encoder; valid keys: d_model"),
    (["model.net.fusion.name=mlt"], r"model\.net\.fusion\.name='mlt': unknown fusion; choose one of late, lmf, misa, mult, mult_paper, self_mm, text_only, tfn"),
    (["+model.net.text_encoder.topk=1"], r"unknown key 'topk' in model\.net\.text_encoder; valid keys: .*top_k"),
    (["+model.net.modalites=[text]"], r"unknown key 'modalites' in model\.net; valid keys: .*modalities"),
    (["export=onnx", "+export.variant=[fused]"], r"unknown key 'variant' in export; valid keys: .*variants"),
    (["experiment=sst2_distill", "+distill.alpah=1"], r"unknown key 'alpah' in distill; valid keys: alpha"),
    (["+model.lr=1"], r"unknown key 'lr' in model; valid keys: .*encoder_lr"),
])
def test_typos_fail_naming_the_key_and_the_valid_keys(overrides, message):
    with pytest.raises(MmsentiError, match=message) as err:
        check_config(_compose("train.yaml", overrides))
    assert "\n" not in str(err.value)


def test_train_py_refuses_a_typo_in_one_line_before_loading_anything(tmp_path):
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), "+data.batchsize=3", f"paths.log_dir={tmp_path}",
                          f"paths.data_dir={tmp_path / 'nodata'}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert run.returncode == 2
    assert "configs/data/synthetic_mosi.yaml (or an override): unknown key 'batchsize' in data" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "nodata").exists()  # the synthetic set was never written
